"""Plumbing for the real-browser tests: a private network namespace, the SFU server
and headless Chromium running inside it, and diagnostics for failures.

Why a namespace: Chromium never gathers ICE candidates on the loopback interface, so
a browser and the SFU that both live on ``lo`` cannot exchange media. Each test
therefore makes its own network namespace joined to the root namespace by a veth
pair on a private /30. Inside it run the server (HTTP on 127.0.0.1, media on the
namespace's veth address), chromedriver and Chromium; pages are opened at
``http://127.0.0.1:PORT`` (loopback, so a secure context for getUserMedia). Selenium
in the test process talks to chromedriver across the veth. No traffic leaves the
machine: the namespace has no route anywhere but its own /30.

Everything here is torn down by :meth:`NetNamespace.destroy` (every process in the
namespace is killed, then the namespace and the veth are deleted), which the
fixtures in ``conftest.py`` call even when a test fails.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REPO_ROOT = Path(__file__).resolve().parents[2]

# Overridable for machines where the binaries live elsewhere.
CHROMIUM = os.environ.get("CSFU_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CSFU_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"

# Private supernet the per-test /30s are carved from.
_SUPERNET = ipaddress.ip_network("10.231.0.0/16")

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1280,800",
)

# A desktop screen on which the console draws the patient's picture wider than 640 pixels:
# pages are sent no larger a simulcast layer than they draw (1280x800 gets the 640 one).
LARGE_SCREEN = (1920, 1080)

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def missing_prerequisites() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "browser tests need root (they create a network namespace and a veth pair)"
    if not shutil.which("ip"):
        return "browser tests need the `ip` command (Debian package iproute2)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"browser tests need Chromium at {CHROMIUM} (Debian package chromium)"
    if not (os.path.isfile(CHROMEDRIVER) and os.access(CHROMEDRIVER, os.X_OK)):
        return "browser tests need chromedriver (Debian package chromium-driver)"
    return None


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _tail(text: str, limit: int = 12000) -> str:
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters cut ...]\n" + text[-limit:]


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """A process in its own session, stdout and stderr captured by reader threads into
    memory and into ``<log_dir>/<name>.stdout.log`` / ``.stderr.log``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "stdout", self.stdout_path),
                             daemon=True, name=f"{name}-stdout"),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr", self.stderr_path),
                             daemon=True, name=f"{name}-stderr"),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, pipe, stream: str, path: Path) -> None:
        with open(path, "w", encoding="utf-8", errors="replace") as out:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                out.write(line + "\n")
                out.flush()
                with self._cond:
                    self._lines[stream].append(line)
                    self._cond.notify_all()
        pipe.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def lines(self, stream: str = "stdout") -> list[str]:
        with self._cond:
            return list(self._lines[stream])

    def wait_for(self, predicate: Callable[[list[str]], object], timeout: float,
                 stream: str = "stdout"):
        """Wait until ``predicate(lines of stream)`` is truthy and return its value; None
        on timeout or if the process exits first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(list(self._lines[stream]))
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not any(t.is_alive() for t in self._threads)):
                    return None
                self._cond.wait(min(remaining, 0.2))

    def output(self) -> str:
        """Both streams, for failure messages."""
        code = self.proc.poll()
        status = "running" if code is None else f"exited with {code}"
        out = "\n".join(self.lines("stdout"))
        err = "\n".join(self.lines("stderr"))
        return (f"--- {self.name} ({status}) stdout ---\n{_tail(out)}\n"
                f"--- {self.name} stderr ---\n{_tail(err)}\n--- end {self.name} ---")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # The leader is gone; make sure nothing else of its group lingers.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for t in self._threads:
            t.join(timeout=2)


# --------------------------------------------------------------------------- namespace

_live_namespaces: set["NetNamespace"] = set()


def _destroy_leftovers() -> None:  # last resort if fixtures never got to tear down
    for ns in list(_live_namespaces):
        try:
            ns.destroy()
        except Exception:
            pass


atexit.register(_destroy_leftovers)


def _pick_subnet() -> ipaddress.IPv4Network:
    """A /30 of 10.231.0.0/16 that no existing route or address on the host overlaps."""
    taken: list[ipaddress.IPv4Network] = []
    addr_lines = _ip("-4", "-o", "addr", "show").stdout.splitlines()
    route_lines = _ip("-4", "route", "show", "table", "all").stdout.splitlines()
    for line in addr_lines + route_lines:
        for tok in line.split():
            try:
                net = ipaddress.ip_network(tok, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                taken.append(net)
    for _ in range(200):
        index = secrets.randbelow(_SUPERNET.num_addresses // 4)
        candidate = ipaddress.IPv4Network((int(_SUPERNET.network_address) + 4 * index, 30))
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise RuntimeError("no free /30 left in 10.231.0.0/16")


class NetNamespace:
    """A fresh network namespace joined to the root one by a veth pair.

    ``host_address`` is the root side, ``address`` the namespace side of the /30.
    """

    def __init__(self, log_dir: Path):
        tag = secrets.token_hex(3)
        # Unique per process and per call, so parallel runs and leftovers never collide.
        self.name = f"csfu-{os.getpid()}-{tag}"
        self.host_veth = f"csfu{tag}h"  # interface names: at most 15 characters
        self.ns_veth = f"csfu{tag}n"
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []
        self._created_ns = False
        self._created_veth = False
        self._destroyed = False
        _live_namespaces.add(self)
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self) -> None:
        _ip("netns", "add", self.name)
        self._created_ns = True
        _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self.ns_veth)
        self._created_veth = True
        subnet = _pick_subnet()
        hosts = list(subnet.hosts())
        self.subnet = subnet
        self.host_address = str(hosts[0])
        self.address = str(hosts[1])
        _ip("link", "set", self.ns_veth, "netns", self.name)
        # IPv4 only inside the namespace: an IPv6 link-local address finishing duplicate
        # address detection a second after the link comes up is a "network change" to
        # Chromium, which then aborts the page's in-flight loads (net::ERR_NETWORK_CHANGED).
        conf = "/proc/sys/net/ipv6/conf"
        _ip("netns", "exec", self.name, "sh", "-c",
            f"for c in {conf}/all {conf}/default {conf}/{self.ns_veth} {conf}/lo; do "
            f"[ -e $c/disable_ipv6 ] && echo 1 > $c/disable_ipv6; done; true")
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_veth)
        _ip("link", "set", self.host_veth, "up")
        _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.ns_veth)
        _ip("-n", self.name, "link", "set", self.ns_veth, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")

    def argv(self, argv: Iterable[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Iterable[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a short command inside the namespace and wait for it."""
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              env=_clean_env(), **kw)

    def spawn(self, name: str, argv: Iterable[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> ManagedProcess:
        """Start a long-running process inside the namespace; it is stopped by destroy()."""
        proc = ManagedProcess(name, self.argv(argv), self.log_dir, cwd=cwd, env=_clean_env(env))
        self.processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        if not self._created_ns:
            return []
        res = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in res.stdout.split() if p.strip().isdigit()]

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            for proc in reversed(self.processes):
                try:
                    proc.stop()
                except Exception:
                    pass
            # Whatever is still in the namespace was started by this test (Chromium
            # children of chromedriver, mostly): kill it so the namespace can go.
            for _ in range(3):
                pids = self.pids()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.3)
            if self._created_veth:
                _ip("link", "del", self.host_veth, check=False)  # takes the peer with it
            if self._created_ns:
                _ip("netns", "del", self.name, check=False)
        finally:
            _live_namespaces.discard(self)

    def __repr__(self) -> str:
        return f"<NetNamespace {self.name} {getattr(self, 'address', '?')}>"


@dataclass
class NamespaceLink:
    """A veth pair straight between two test namespaces (no route through the host)."""

    a: NetNamespace
    b: NetNamespace
    a_veth: str
    a_address: str
    b_address: str


def link_namespaces(a: NetNamespace, b: NetNamespace) -> NamespaceLink:
    """Joins ``a`` and ``b`` by their own /30; ``b`` reaches ``a``'s media address
    (``a.address``) over it, so whatever ``a`` sends ``b`` leaves by ``a_veth``,
    where a test can shape it (tc). Removed with ``a``'s namespace."""
    tag = secrets.token_hex(3)
    a_veth, b_veth = f"csfu{tag}a", f"csfu{tag}b"
    _ip("link", "add", a_veth, "type", "veth", "peer", "name", b_veth)
    _ip("link", "set", a_veth, "netns", a.name)
    _ip("link", "set", b_veth, "netns", b.name)
    hosts = list(_pick_subnet().hosts())
    a_address, b_address = str(hosts[0]), str(hosts[1])
    conf = "/proc/sys/net/ipv6/conf"
    for ns, veth, address in ((a, a_veth, a_address), (b, b_veth, b_address)):
        _ip("netns", "exec", ns.name, "sh", "-c", f"echo 1 > {conf}/{veth}/disable_ipv6 || true")
        _ip("-n", ns.name, "addr", "add", f"{address}/30", "dev", veth)
        _ip("-n", ns.name, "link", "set", veth, "up")
    _ip("-n", b.name, "route", "add", f"{a.address}/32", "via", a_address)
    return NamespaceLink(a=a, b=b, a_veth=a_veth, a_address=a_address, b_address=b_address)


# Relays TCP connections from a local port to another address (a page's origin stays
# http://127.0.0.1:PORT, a secure context, while the server runs in another namespace).
_TCP_FORWARDER = r"""
import asyncio, sys
listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("forwarding", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def start_tcp_forwarder(netns: NetNamespace, listen_port: int, host: str, port: int,
                        timeout: float = 10.0) -> ManagedProcess:
    proc = netns.spawn("forwarder", [sys.executable, "-c", _TCP_FORWARDER, str(listen_port), host, str(port)])
    if not proc.wait_for(lambda lines: any("forwarding" in line for line in lines), timeout):
        raise RuntimeError(f"TCP forwarder did not start:\n{proc.output()}")
    return proc


# --------------------------------------------------------------------------- TURN (coturn)

TURNSERVER = os.environ.get("CSFU_TURNSERVER") or shutil.which("turnserver") or "/usr/bin/turnserver"
TURN_PORT = 3478


def start_coturn(netns: NetNamespace, address: str, secret: str, state_dir: Path,
                 allowed_peers: str = "10.231.0.0-10.231.255.255", timeout: float = 15.0) -> ManagedProcess:
    """coturn listening and relaying on ``address`` inside ``netns``, checking the REST-style
    credentials consult-sfu mints from ``secret`` (use-auth-secret), as docs/DEPLOY.md
    configures it; plain TURN over UDP and TCP (no TLS), peers only in the test supernet."""
    if not (os.path.isfile(TURNSERVER) and os.access(TURNSERVER, os.X_OK)):
        raise RuntimeError("the TURN test needs coturn's turnserver (Debian package coturn; scripts/setup.sh --test)")
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [TURNSERVER, "-n", f"--listening-ip={address}", f"--relay-ip={address}", f"--listening-port={TURN_PORT}",
            "--min-port=49160", "--max-port=49400", "--use-auth-secret", f"--static-auth-secret={secret}",
            "--realm=consult-sfu.test", "--fingerprint", "--no-tls", "--no-dtls", "--no-cli", "--no-multicast-peers",
            f"--allowed-peer-ip={allowed_peers}", "--verbose", "--log-file=stdout", "--simple-log",
            f"--pidfile={state_dir / 'turnserver.pid'}", f"--userdb={state_dir / 'turndb'}"]
    proc = netns.spawn("coturn", ["stdbuf", "-oL", *argv])  # its log is read while it runs
    if not proc.wait_for(lambda lines: any("Total General servers" in line or "relay ports initialized" in line
                                           for line in lines), timeout):
        raise RuntimeError(f"coturn did not start:\n{proc.output()}")
    return proc


# --------------------------------------------------------------------------- SFU server

_LINK_RE = re.compile(r"^\s+(patient|doctor|expert):\s+(\S+)$")
_LISTEN_RE = re.compile(r"listening on (http://\S+)")


@dataclass
class SfuServer:
    """The consult-sfu server running in a namespace, with its printed join links."""

    netns: NetNamespace
    process: ManagedProcess
    port: int
    data_dir: Path
    base_url: str
    links: dict[str, str] = field(default_factory=dict)

    @property
    def patient_url(self) -> str:
        return self.links["patient"]

    @property
    def doctor_url(self) -> str:
        return self.links["doctor"]

    @property
    def expert_url(self) -> str:
        return self.links["expert"]

    def output(self) -> str:
        return self.process.output()

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def admin_get(self, path: str):
        """An admin API call, made from inside the server's namespace."""
        return self.admin_call("GET", path)

    def admin_call(self, method: str, path: str, body: dict | None = None):
        key = (self.data_dir / "admin.key").read_text().strip()
        done = self.netns.run([sys.executable, "-c", _ADMIN_FETCH_PY, self.url(path), key, method,
                               json.dumps(body) if body is not None else ""], check=True)
        return json.loads(done.stdout)


# run in the server's namespace: the admin API listens there only
_ADMIN_FETCH_PY = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2],
                                                       "Content-Type": "application/json"},
                                 method=sys.argv[3], data=sys.argv[4].encode() or None)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(request, timeout=5).read().decode())
"""


def start_sfu_server(netns: NetNamespace, data_dir: Path, *, port: int = 8080,
                     timeout: float = 30.0, extra_args: Iterable[str] = (),
                     roles: Iterable[str] = ("patient", "doctor", "expert"),
                     run_py: Path | None = None) -> SfuServer:
    """Run ``run.py`` inside ``netns`` and wait until it has printed every join link."""
    run_py = run_py or REPO_ROOT / "run.py"
    if not run_py.is_file():
        raise RuntimeError(f"{run_py} does not exist: the server entry point is missing")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(run_py), "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--media-host-address", netns.address, *extra_args]
    # stopped with SIGTERM (ManagedProcess.stop): its calls end at once rather than after a
    # drain's grace (an env variable, which an older run.py of a --compare ignores)
    proc = netns.spawn("server", argv, cwd=REPO_ROOT, env={"CONSULT_DRAIN_GRACE": "0"})
    wanted = set(roles)

    def links_ready(lines: list[str]):
        links = {}
        for line in lines:
            m = _LINK_RE.match(line)
            if m:
                links[m.group(1)] = m.group(2)
        return links if wanted <= links.keys() else None

    links = proc.wait_for(links_ready, timeout)
    if not links:
        if not proc.alive():
            why = "exited"
        else:
            why = f"did not print all join links ({', '.join(sorted(wanted))}) within {timeout:.0f} s"
        raise RuntimeError(f"consult-sfu server {why}; command: {' '.join(argv)}\n{proc.output()}")
    base = next((m.group(1) for line in proc.lines() if (m := _LISTEN_RE.search(line))),
                f"http://127.0.0.1:{port}")
    return SfuServer(netns=netns, process=proc, port=port, data_dir=data_dir, base_url=base, links=links)


# --------------------------------------------------------------------------- Chromium


def _http_get_json(url: str, timeout: float = 2.0):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    with opener.open(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def start_chromedriver(netns: NetNamespace, *, port: int = 9515, timeout: float = 20.0) -> tuple[ManagedProcess, str]:
    """chromedriver inside ``netns``, reachable from the root namespace (and only from
    the veth's root-side address) at ``http://<netns.address>:<port>``."""
    log_path = netns.log_dir / "chromedriver.log"
    proc = netns.spawn("chromedriver", [
        CHROMEDRIVER, f"--port={port}", f"--allowed-ips={netns.host_address}",
        "--allowed-origins=*", f"--log-path={log_path}", "--log-level=INFO",
    ])
    url = f"http://{netns.address}:{port}"
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            break
        try:
            if _http_get_json(url + "/status").get("value", {}).get("ready"):
                return proc, url
        except (OSError, ValueError, urllib.error.URLError) as exc:
            last_error = exc
        time.sleep(0.1)
    raise RuntimeError(f"chromedriver at {url} not ready within {timeout:.0f} s "
                       f"(last error: {last_error})\n{proc.output()}")


class BrowserFactory:
    """Makes Chromium sessions inside a namespace: ``factory("patient")`` returns a
    selenium WebDriver. Keeps the console log of each session (chromedriver hands each
    entry out only once) and saves screenshots, console logs and page state on demand.
    """

    def __init__(self, netns: NetNamespace, artifact_dir: Path):
        self.netns = netns
        self.artifact_dir = artifact_dir
        self.drivers: dict[str, WebDriver] = {}
        self._console: dict[str, list[dict]] = {}
        self._driver_url: str | None = None
        self.diagnostics_saved = False

    def _ensure_chromedriver(self) -> str:
        if self._driver_url is None:
            _, self._driver_url = start_chromedriver(self.netns)
        return self._driver_url

    def __call__(self, label: str, extra_args: Iterable[str] = ()) -> WebDriver:
        from selenium import webdriver
        from selenium.webdriver.chromium.remote_connection import ChromiumRemoteConnection
        from selenium.webdriver.common.proxy import Proxy, ProxyType
        from selenium.webdriver.remote.client_config import ClientConfig

        if label in self.drivers:
            raise ValueError(f"a browser labelled {label!r} already exists")
        url = self._ensure_chromedriver()
        profile = self.artifact_dir / "profiles" / label
        profile.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", *extra_args):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        config = ClientConfig(remote_server_addr=url, keep_alive=True, timeout=60,
                              proxy=Proxy({"proxyType": ProxyType.DIRECT}))
        executor = ChromiumRemoteConnection(remote_server_addr=url, vendor_prefix="goog",
                                            browser_name="chrome", ignore_proxy=True, client_config=config)
        try:
            driver = webdriver.Remote(command_executor=executor, options=options)
        except Exception as exc:
            log = self.netns.log_dir / "chromedriver.log"
            tail = _tail(log.read_text(errors="replace"), 6000) if log.exists() else "(no chromedriver log)"
            raise RuntimeError(f"could not start Chromium {label!r} via chromedriver at {url}: {exc}\n"
                               f"--- chromedriver.log (tail) ---\n{tail}") from exc
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(15)
        self.drivers[label] = driver
        self._console[label] = []
        return driver

    def label_of(self, driver: WebDriver) -> str:
        for label, d in self.drivers.items():
            if d is driver:
                return label
        raise KeyError("driver not made by this factory")

    def console_log(self, label: str) -> list[dict]:
        """All console entries of that browser so far."""
        driver = self.drivers[label]
        try:
            self._console[label].extend(driver.execute("getLog", {"type": "browser"})["value"])
        except Exception as exc:  # the browser may be gone
            self._console[label].append({"level": "HARNESS", "message": f"could not read console log: {exc!r}",
                                         "timestamp": int(time.time() * 1000)})
        return self._console[label]

    def page_state(self, label: str) -> dict | str:
        try:
            return self.drivers[label].execute_script(PAGE_STATE_JS)
        except Exception as exc:
            return f"could not read page state: {exc!r}"

    def save_diagnostics(self, tag: str = "failure") -> list[Path]:
        """Screenshot, console log and page state of every browser into the artifact dir."""
        saved: list[Path] = []
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        for label, driver in self.drivers.items():
            shot = self.artifact_dir / f"{tag}-{label}.png"
            try:
                if driver.save_screenshot(str(shot)):
                    saved.append(shot)
            except Exception:
                pass
            console = self.artifact_dir / f"{tag}-{label}-console.log"
            with open(console, "w", encoding="utf-8") as out:
                for e in self.console_log(label):
                    out.write(f"{e.get('timestamp')} {e.get('level')} {e.get('source', '')} {e.get('message')}\n")
            saved.append(console)
            state = self.artifact_dir / f"{tag}-{label}-state.json"
            state.write_text(json.dumps(self.page_state(label), indent=2, default=str))
            saved.append(state)
        self.diagnostics_saved = True
        return saved

    def console_summary(self, limit_per_browser: int = 40) -> str:
        parts = []
        for label in self.drivers:
            entries = self.console_log(label)[-limit_per_browser:]
            body = "\n".join(f"  {e.get('level')} {e.get('message')}" for e in entries) or "  (empty)"
            parts.append(f"--- console of {label} (last {limit_per_browser}) ---\n{body}")
        return "\n".join(parts)

    def close(self) -> None:
        for driver in self.drivers.values():
            try:
                driver.quit()
            except Exception:
                pass
        # Profiles are big and useless after the test; diagnostics live outside them.
        shutil.rmtree(self.artifact_dir / "profiles", ignore_errors=True)


# --------------------------------------------------------------------------- page probes

# Everything the test hooks of the pages expose, plus the state of every <video>.
PAGE_STATE_JS = r"""
const vids = Array.from(document.querySelectorAll('video')).map(v => {
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const s = v.srcObject;
  return {
    id: v.id || null, className: v.className,
    participantId: v.dataset.participantId ?? null, name: v.dataset.name ?? null, role: v.dataset.role ?? null,
    videoWidth: v.videoWidth, videoHeight: v.videoHeight, currentTime: v.currentTime,
    paused: v.paused, readyState: v.readyState, muted: v.muted, autoplay: v.autoplay,
    totalVideoFrames: q ? q.totalVideoFrames : null, droppedVideoFrames: q ? q.droppedVideoFrames : null,
    tracks: s && s.getTracks
      ? s.getTracks().map(t => ({kind: t.kind, readyState: t.readyState, muted: t.muted, enabled: t.enabled}))
      : null,
    error: v.error ? String(v.error.message || v.error.code) : null,
  };
});
return {
  url: location.href.replace(/#.*/, '#…'),
  title: document.title,
  connectionState: document.body ? (document.body.dataset.connectionState ?? null) : null,
  hasConsultClient: typeof window.consultClient !== 'undefined',
  videos: vids,
  bodyText: document.body ? document.body.innerText.slice(0, 2000) : null,
};
"""

# Remote videos of one role: [{participantId, name, videoWidth, videoHeight, frames, currentTime, paused}]
REMOTE_VIDEOS_JS = r"""
const role = arguments[0];
return Array.from(document.querySelectorAll('video.remote-video'))
  .filter(v => role === null || v.dataset.role === role)
  .map(v => {
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    return {participantId: v.dataset.participantId ?? null, name: v.dataset.name ?? null,
            role: v.dataset.role ?? null, videoWidth: v.videoWidth, videoHeight: v.videoHeight,
            frames: q ? q.totalVideoFrames : null, currentTime: v.currentTime, paused: v.paused,
            readyState: v.readyState};
  });
"""


def poll(fn: Callable[[], object], timeout: float, interval: float = 0.25):
    """Call ``fn`` until it returns something truthy and return that; on timeout return
    its last (falsy) result. Exceptions from ``fn`` count as falsy and are retried."""
    deadline = time.monotonic() + timeout
    result = None
    while True:
        try:
            result = fn()
        except Exception:  # e.g. a page still loading
            result = None
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def connection_state(driver) -> str | None:
    return driver.execute_script(
        "return document.body ? (document.body.dataset.connectionState ?? null) : null;")


def remote_videos(driver, role: str | None = None) -> list[dict]:
    return driver.execute_script(REMOTE_VIDEOS_JS, role)
