"""HTTP hardening of the app as run.py serves it: security headers, caps on WebSocket
connections that have not joined, the 64 KiB frame cap from the first frame on,
header and body timeouts, a quiet log for upgrades the client abandons, a private
data directory. Each refusal is typed, and the server goes on serving everyone else."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from signalling.app import build_services, create_app
from signalling.config import ServerConfig
from signalling.http_limits import HttpLimits, runner_options
from signalling.protocol import MAX_MESSAGE_BYTES
from tests.conftest import ServerUnderTest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
LIMITS = HttpLimits(pending_ws_per_address=3, pending_ws_total=5, header_timeout_s=1.0, body_timeout_s=1.0)

Middleware = Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]],
                      Awaitable[web.StreamResponse]]


class Served(ServerUnderTest):
    port: int

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/ws"


@pytest.fixture
async def serve(tmp_path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """serve(limits, first_middleware=None): the app on an AppRunner with run.py's options
    (not the test server, which cancels handlers when clients go: run.py does not)."""
    runners: list[web.AppRunner] = []

    async def start(limits: HttpLimits = LIMITS, first_middleware: Middleware | None = None) -> Served:
        config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[])
        services = build_services(config)
        app = create_app(services, limits)
        if first_middleware is not None:
            app.middlewares.insert(0, web.middleware(first_middleware))
        runner = web.AppRunner(app, access_log=None, **runner_options(app))
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        config.port = runner.addresses[0][1]
        served = Served(services, f"http://127.0.0.1:{config.port}")
        served.port = config.port
        return served

    yield start
    for runner in runners:
        await runner.cleanup()


async def connect(url: str, source: str = "127.0.0.1") -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
    return http, await http.ws_connect(url, max_msg_size=0)


async def next_text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg, ws.close_code)
    return json.loads(msg.data)


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> int | None:
    msg = await ws.receive(timeout=timeout)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING), msg
    return ws.close_code


async def join(ws: aiohttp.ClientWebSocketResponse, token: str) -> dict:
    await ws.send_json({"type": "join", "v": 1, "token": token})
    while (message := await next_text(ws, timeout=10))["type"] != "joined":
        assert message["type"] != "error", message
    return message


# --- headers -----------------------------------------------------------------------------------------

def index_style_hash() -> str:
    block = re.search(r"<style>(.*?)</style>", (STATIC / "index.html").read_text(), re.S)
    assert block, "index.html has no inline style any more: drop this check"
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.group(1).encode()).digest()).decode() + "'"


async def test_every_response_carries_the_security_headers(serve):
    sfu = await serve()
    paths = ["/", "/patient", "/console", "/trainer", "/static/js/client.js", "/static/css/common.css",
             "/static/fonts/DejaVuSans-subset.woff", "/api/info", "/healthz", "/api/rooms", "/no-such-page"]
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(sfu.base_url + path) as response:
                h = response.headers
                assert response.status in (200, 401, 404), (path, response.status)
                csp = {d.split()[0]: d.split()[1:] for d in h["Content-Security-Policy"].split("; ")}
                assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"], path
                assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'", index_style_hash()]
                assert csp["connect-src"] == ["'self'", f"ws://127.0.0.1:{sfu.port}", f"wss://127.0.0.1:{sfu.port}"]
                assert csp["media-src"] == ["'self'", "blob:"] and csp["img-src"] == ["'self'", "data:"]
                assert "unsafe" not in h["Content-Security-Policy"]
                assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
                assert h["Referrer-Policy"] == "no-referrer"
                policy = h["Permissions-Policy"]
                assert "camera=(self)" in policy and "microphone=(self)" in policy and "geolocation=()" in policy
                assert h["Server"] == "consult-sfu", (path, h["Server"])  # no aiohttp/Python version


async def test_a_hostile_host_header_does_not_reach_the_policy(serve):
    sfu = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", sfu.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: evil.example'; script-src *\r\nConnection: close\r\n\r\n")
    response = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    csp = re.search(r"Content-Security-Policy: (.*)\r\n", response)
    assert csp and "evil" not in csp.group(1) and "connect-src 'self';" in csp.group(1)


async def test_malformed_requests_get_a_plain_400_and_one_log_line(serve, caplog):
    sfu = await serve()
    caplog.set_level(logging.INFO)
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", sfu.port)
        writer.write(request)
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert response.startswith(b"HTTP/1.0 400") and b"\r\nServer: consult-sfu\r\n" in response, response[:300]
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 2 and "BadHttpMessage, answered 400" in lines[0] and "LineTooLong" in lines[1], lines
    async with aiohttp.ClientSession() as http:
        async with http.get(sfu.base_url + "/healthz") as response:
            assert response.status == 200


def test_the_pages_need_nothing_the_policy_forbids():
    # What the CSP above would break, checked on the files (tests/browser runs them for real).
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"{page.name}: inline script"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{page.name}: inline event handler"
        assert not re.search(r"\sstyle\s*=", html), f"{page.name}: style attribute"
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith("/static/") or url == "data:,", f"{page.name}: loads {url}"
    for script in (STATIC / "js").glob("*.js"):
        code = script.read_text()
        assert not re.search(r"\beval\(|new Function\(|setAttribute\(['\"]style|style=|new Worker\(", code), \
            script.name
        assert not re.search(r"""(?:fetch\(|new WebSocket\()\s*['"`]https?:""", code), f"{script.name}: other origin"


async def test_healthz_says_only_that_it_is_alive(serve):
    sfu = await serve()
    await sfu.room()
    async with aiohttp.ClientSession() as http:
        async with http.get(sfu.base_url + "/healthz") as response:
            assert await response.json() == {"ok": True}


# --- WebSocket connections that have not joined -------------------------------------------------------

async def expect_busy(url: str, source: str) -> None:
    http, ws = await connect(url, source)
    try:
        error = await next_text(ws)
        assert (error["type"], error["code"], error["fatal"]) == ("error", "busy", False), error
        assert await close_code(ws) == 1013  # "try again later": the page re-joins after its backoff
    finally:
        await http.close()


@pytest.mark.slow
async def test_not_yet_joined_sockets_are_capped_per_address_and_in_total(serve):
    sfu = await serve()  # 3 per address, 5 in total
    await sfu.room()
    held = [await connect(sfu.ws_url) for _ in range(3)]
    await expect_busy(sfu.ws_url, "127.0.0.1")  # this address is at its cap...
    held += [await connect(sfu.ws_url, "127.0.0.2") for _ in range(2)]  # ...another one is not
    await expect_busy(sfu.ws_url, "127.0.0.3")  # but the total is reached
    # A socket that joins no longer counts, nor does one that goes away: room for two more.
    await join(held[0][1], sfu.token("expert", permissions=["subscribe"]))
    await held[1][0].close()
    await asyncio.sleep(0.2)  # the server notices the close
    more = [await connect(sfu.ws_url) for _ in range(2)]  # 127.0.0.1: 3 waiting again, 5 in total
    await expect_busy(sfu.ws_url, "127.0.0.4")
    await join(more[1][1], sfu.token("expert", name="Second", permissions=["subscribe"]))
    more.append(await connect(sfu.ws_url, "127.0.0.4"))  # 4 waiting: admitted, and it may join
    await join(more[2][1], sfu.token("expert", name="Third", permissions=["subscribe"]))
    for http, _ in held + more:
        await http.close()


# --- frame size from the first frame on ----------------------------------------------------------------

async def raw_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(length)


async def test_a_first_frame_over_64_kib_is_refused_before_it_is_buffered(serve):
    sfu = await serve()
    await sfu.room()
    reader, writer = await raw_upgrade(sfu.port)
    # The header declares 100 KiB; only 16 bytes follow. The server must not wait for the rest.
    mask = os.urandom(4)
    writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 100 * 1024) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(b'{"type":"join",')))
    opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
    assert opcode == 0x1 and json.loads(payload)["code"] == "too_large" and json.loads(payload)["fatal"]
    opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009 and payload[2:] == b"too_large"
    writer.close()
    await join_works(sfu)  # everyone else is still served


async def join_works(sfu: Served) -> None:
    """Someone else can still connect and join room r1."""
    http, ws = await connect(sfu.ws_url)
    try:
        await join(ws, sfu.token("expert", name=f"Check {time.monotonic()}", permissions=["subscribe"]))
    finally:
        await http.close()


async def test_the_frame_cap_is_the_protocol_limit_to_the_byte(serve):
    sfu = await serve()
    frame = json.dumps({"type": "join", "v": 1, "token": "x", "pad": ""})
    http, ws = await connect(sfu.ws_url)
    try:
        await ws.send_str(frame[:-2] + "x" * (MAX_MESSAGE_BYTES - len(frame)) + '"}')  # exactly 64 KiB: read
        error = await next_text(ws)
        assert error["code"] == "unauthorized", error  # parsed as a join (with a bad token)
    finally:
        await http.close()
    http, ws = await connect(sfu.ws_url)
    try:
        await ws.send_str("x" * (MAX_MESSAGE_BYTES + 1))
        assert (await next_text(ws))["code"] == "too_large"
        assert await close_code(ws) == 1009
    finally:
        await http.close()


# --- timeouts ----------------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_headers_must_arrive_within_the_header_timeout(serve):
    sfu = await serve()  # 1 s
    reader, writer = await asyncio.open_connection("127.0.0.1", sfu.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 5 and not closed:
        writer.write(b"X-Slow: 1\r\n")  # a header every 0.2 s, never the blank line
        try:
            closed = await asyncio.wait_for(reader.read(1024), 0.2) == b""
        except asyncio.TimeoutError:
            pass
        except ConnectionError:
            closed = True
    writer.close()
    assert closed and time.monotonic() - started < 3, "a slow-headers client was not cut off"
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", sfu.port)  # sends nothing at all
    assert await asyncio.wait_for(idle_reader.read(), 3) == b""
    idle_writer.close()


@pytest.mark.slow
async def test_a_joined_socket_outlives_the_header_timeout(serve):
    sfu = await serve()
    await sfu.room()
    http, ws = await connect(sfu.ws_url)
    try:
        await join(ws, sfu.token("expert", permissions=["subscribe"]))
        await asyncio.sleep(2.5)
        await ws.send_json({"type": "ping"})
        while (await next_text(ws))["type"] != "pong":
            pass
    finally:
        await http.close()


@pytest.mark.slow
async def test_a_body_that_does_not_arrive_in_time_is_answered_408(serve, caplog):
    sfu = await serve()  # 1 s
    reader, writer = await asyncio.open_connection("127.0.0.1", sfu.port)
    writer.write(f"POST /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {sfu.services.admin_key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode())  # the body never comes
    started = time.monotonic()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3, status
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Connection: close" in head and b'"error": "body_timeout"' in await reader.read(200)
    assert await asyncio.wait_for(reader.read(), LIMITS.linger_s + 2) == b""  # and the connection is closed
    writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with aiohttp.ClientSession() as http:  # a body sent at once is not affected
        async with http.post(sfu.base_url + "/api/rooms", json={"name": "Room"},
                             headers={"Authorization": f"Bearer {sfu.services.admin_key}"}) as response:
            assert response.status in (200, 201), await response.text()


# --- an upgrade the client abandons ------------------------------------------------------------------------

async def test_an_upgrade_reset_before_the_101_logs_one_line(serve, caplog):
    gone = asyncio.Event()

    async def slow_server(request: web.Request, handler):
        # A busy server: the client has reset the connection before the handler answers.
        if request.path == "/ws" and not gone.is_set():
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.01)
            gone.set()
        return await handler(request)

    sfu = await serve(first_middleware=slow_server)
    await sfu.room()
    caplog.set_level(logging.DEBUG)
    sock = socket.create_connection(("127.0.0.1", sfu.port))
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    await asyncio.sleep(0.2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    sock.close()
    await asyncio.wait_for(gone.wait(), 5)
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], \
        [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    lines = [r.getMessage() for r in caplog.records if r.name == "signalling.http_limits"]
    assert len(lines) == 1 and "went away before the upgrade" in lines[0], lines
    await join_works(sfu)


# --- the data directory and the process -----------------------------------------------------------------

def test_an_existing_data_dir_readable_by_others_is_made_private(tmp_path, caplog):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    caplog.set_level(logging.WARNING, logger="signalling.app")
    build_services(ServerConfig(data_dir=data_dir, demo_room=False, default_processors=[]))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert any("was mode 0755" in r.getMessage() and "0700" in r.getMessage() for r in caplog.records)
    fresh = tmp_path / "new" / "data"
    build_services(ServerConfig(data_dir=fresh, demo_room=False, default_processors=[]))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_an_audit_log_that_lost_entries_is_reported_at_start(tmp_path, caplog):
    from recorder.audit import AuditLog

    data_dir = tmp_path / "data"
    audit = AuditLog.open(data_dir, environ={}, create=True)
    for i in range(3):
        audit.append("doctor-1", "replay", f"rec-{i}")
    audit.path.write_bytes(b"".join(audit.path.read_bytes().splitlines(keepends=True)[:-1]))
    caplog.set_level(logging.ERROR, logger="signalling.app")
    build_services(ServerConfig(data_dir=data_dir, demo_room=False, default_processors=[]))
    assert any("the log ends at seq 2 but audit.head records seq 3" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_run_py_runs_with_a_private_umask_and_a_private_data_dir(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSULT_")}
    proc = subprocess.Popen([sys.executable, "run.py", "--port", str(port), "--data-dir", str(data_dir),
                             "--processors", "", "--media-host-address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.umask(0o022))  # a typical shell's umask
    try:
        assert proc.stdout is not None
        output = ""
        while "Admin API key" not in output:
            line = proc.stdout.readline()
            assert line, f"run.py exited: {output}"
            output += line
        umask = re.search(r"^Umask:\s+(\d+)$", Path(f"/proc/{proc.pid}/status").read_text(), re.M)
        assert umask and umask.group(1) == "0077"
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for path in data_dir.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    finally:
        proc.terminate()
        proc.wait(timeout=10)
