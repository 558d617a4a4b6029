"""run.py as an operator starts it: printed links, and HTTPS for phones on the LAN."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], timeout: float = 20.0) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    links: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(links) < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.match(r"^\s+(patient|doctor|expert):\s+(\S+)$", line)
        if match:
            links[match.group(1)] = match.group(2)
    if len(links) < 3:
        proc.kill()
        raise AssertionError(f"run.py did not print three join links: {proc.stdout.read()}")
    return proc, links


async def test_self_signed_tls_serves_pages_and_signalling_over_https(tmp_path):
    port = free_port()
    proc, links = start(["--port", str(port), "--data-dir", str(tmp_path), "--tls-self-signed",
                         "--media-host-address", "127.0.0.1"])
    try:
        assert all(url.startswith(f"https://127.0.0.1:{port}/") for url in links.values()), links
        assert links["patient"].split("#")[0].endswith("/patient")
        assert links["doctor"].split("#")[0].endswith("/console")
        cert = tmp_path / "tls-self-signed.crt"
        assert (tmp_path / "tls-self-signed.key").stat().st_mode & 0o777 == 0o600
        trust = ssl.create_default_context(cafile=str(cert))  # the phone accepting the certificate
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/api/info", ssl=trust) as response:
                assert (await response.json())["protocol_versions"] == [1]
            async with http.get(links["patient"].split("#")[0], ssl=trust) as response:
                assert response.status == 200 and "<html" in (await response.text()).lower()
            token = links["patient"].split("#token=")[1]
            async with http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trust) as ws:
                await ws.send_str(json.dumps({"type": "join", "v": 1, "token": token}))
                joined = json.loads((await ws.receive(timeout=10)).data)
                assert joined["type"] == "joined" and joined["participant"]["role"] == "patient"
                assert joined["ice_servers"] == []  # no public STUN server by default
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_secrets_are_kept_private_and_reused(tmp_path):
    port = free_port()
    proc, first = start(["--port", str(port), "--data-dir", str(tmp_path)])
    proc.terminate()
    proc.wait(timeout=10)
    for name in ("token.secret", "admin.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    secret = (tmp_path / "token.secret").read_text()
    proc, second = start(["--port", str(port), "--data-dir", str(tmp_path)])
    proc.terminate()
    proc.wait(timeout=10)
    assert (tmp_path / "token.secret").read_text() == secret  # links minted before a restart keep working


async def test_each_start_makes_a_new_demo_consultation(tmp_path):
    """The demo room is created anew at every start: a link printed by an earlier run is refused
    (stale_link), so it cannot join the next run's consultation or see its recordings."""
    from run import demo_links
    from signalling.app import build_services
    from signalling.config import ServerConfig
    from signalling.links import LinkRefused

    config = ServerConfig(data_dir=tmp_path / "data", default_processors=[])
    first = build_services(config)
    old_links = await demo_links(first)
    old_instance = (await first.registry.get_room("demo")).instance
    restarted = build_services(config)  # the same data directory, as after a restart
    new_links = await demo_links(restarted)
    room = await restarted.registry.get_room("demo")
    assert room.open and room.instance != old_instance

    def grant_of(link: str):
        return restarted.issuer.verify(link.split("#token=", 1)[1])

    assert (await restarted.rooms.links.for_live(grant_of(new_links["patient"]))).instance == room.instance
    # a trainer link too, for this start's recordings
    assert "/trainer#token=" in new_links["trainer"] and grant_of(new_links["trainer"]).allows("replay")
    with pytest.raises(LinkRefused) as refused:
        await restarted.rooms.links.for_live(grant_of(old_links["patient"]))
    assert refused.value.code == "stale_link"


def test_a_turn_credential_is_never_taken_from_the_command_line(tmp_path, monkeypatch):
    """A command line shows in `ps` to every user of the machine: the credential comes from the
    environment or a file, and the old flag is refused with the reason."""
    from run import parse_args

    base = ["--ice-server", "turn:127.0.0.1:3478", "--ice-username", "clinic"]
    with pytest.raises(SystemExit):
        parse_args([*base, "--ice-credential", "s3cret"])
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text("from-file\n")
    (server,) = parse_args([*base, "--ice-credential-file", str(secret_file)]).ice.servers
    assert (server.username, server.credential) == ("clinic", "from-file")
    monkeypatch.setenv("CONSULT_ICE_CREDENTIAL", "from-env")
    (server,) = parse_args(base).ice.servers
    assert server.credential == "from-env"
    with pytest.raises(SystemExit):
        parse_args([*base, "--ice-credential-file", str(tmp_path / "missing")])


def test_workers_are_one_per_core_with_redis_and_one_process_without(monkeypatch):
    """Workers share rooms through Redis: with it the machine's cores are used by default;
    without it one process runs, as it always did, and asking for more is refused."""
    import os

    from run import parse_args

    monkeypatch.delenv("CONSULT_WORKERS", raising=False)
    redis = ["--redis-url", "redis://127.0.0.1:6379/0"]
    assert parse_args([]).workers == 1
    assert parse_args(redis).workers == len(os.sched_getaffinity(0))
    assert parse_args([*redis, "--workers", "1"]).workers == 1
    assert parse_args([*redis, "--workers", "3"]).workers == 3
    monkeypatch.setenv("CONSULT_WORKERS", "2")
    assert parse_args(redis).workers == 2
    for wrong in (["--workers", "2"], [*redis, "--workers", "0"], [*redis, "--workers", "many"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)


def test_the_clinics_contact_line_comes_from_a_flag_or_the_environment(monkeypatch):
    """--clinic-contact / CONSULT_CLINIC_CONTACT: one printable line, bounded like a room's `contact`."""
    from run import parse_args

    monkeypatch.delenv("CONSULT_CLINIC_CONTACT", raising=False)
    assert parse_args([]).clinic_contact is None
    assert parse_args(["--clinic-contact", "Call 021-5555 0123"]).clinic_contact == "Call 021-5555 0123"
    monkeypatch.setenv("CONSULT_CLINIC_CONTACT", "请致电 021-5555 0123")
    assert parse_args([]).clinic_contact == "请致电 021-5555 0123"
    for bad in ("x" * 121, "a\nb", "   "):
        with pytest.raises(SystemExit):
            parse_args(["--clinic-contact", bad])
