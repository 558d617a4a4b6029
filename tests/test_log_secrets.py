"""The log of a whole call (issue 19): run.py started as an operator starts it, with
`--log-format json --log-level DEBUG`, a webhook to a closed port (its sender logs failures),
a TURN server with a static credential and a TURN relay with per-session ones; a call with
real aiortc peers, media both ways, a recording started and stopped, the admin API, a
trainer's signed replay URLs, forged and broken joins, an oversized message; then the server
is stopped.

Every line it wrote is JSON with the required fields, except run.py's own printout of the
demo links (stdout, on purpose: the operator needs them), which is identified line by line;
session lines name their room and participant, HTTP lines their request; and no line holds a
join token, the admin key, a secret from the data directory, the webhook secret or the
receiver's query key, a TURN credential, a peer's ICE password, or a signature of a replay URL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest

from loadtest.participant import SyntheticParticipant
from loadtest.sources import PatternVideoTrack, ToneAudioTrack

from .test_run import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("patient", "doctor", "expert", "trainer")
ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


async def start(args: list[str], log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        links = dict(re.findall(r"^  (patient|doctor|expert|trainer):\s+(\S+)$", log.read_text(), re.MULTILINE))
        if len(links) == len(ROLES) and "Admin API key:" in log.read_text():
            return proc, links
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError(f"run.py did not start: {log.read_text()}")


def printout(base: str, data_dir: Path, links: dict[str, str]) -> list[str]:
    """run.py's startup lines (serve()), exactly as printed."""
    return [f"consult-sfu listening on {base}",
            "Demo room 'demo' - join links (valid 12 h):",
            *(f"  {role + ':':8} {links[role]}" for role in ROLES),
            f"Admin API key: {data_dir / 'admin.key'} (Authorization: Bearer <key>)"]


def token_of(link: str) -> str:
    return link.split("#token=", 1)[1]


def participant(base: str, token: str, seed: int) -> SyntheticParticipant:
    return SyntheticParticipant(base, token, audio=ToneAudioTrack(), video=PatternVideoTrack(seed=seed))


async def test_a_whole_call_logs_one_json_object_a_line_with_ids_and_no_secret(tmp_path):
    port, webhook_port = free_port(), free_port()  # nothing listens on the webhook's port
    base, data_dir, log = f"http://127.0.0.1:{port}", tmp_path / "data", tmp_path / "server.log"
    turn_credential = "turn-" + secrets.token_urlsafe(18)
    hook_key = "hook-" + secrets.token_urlsafe(18)  # a receiver's key in the webhook URL's query
    env = {**os.environ, "CONSULT_ICE_CREDENTIAL": turn_credential}
    proc, links = await start(
        ["--port", str(port), "--data-dir", str(data_dir), "--processors", "", "--log-format", "json",
         "--log-level", "DEBUG", "--media-host-address", "127.0.0.1",
         "--webhook", f"http://127.0.0.1:{webhook_port}/hooks?code={hook_key}", "--webhook-retry-max", "1",
         "--ice-server", "turn:127.0.0.1:3478", "--ice-username", "clinic",
         "--turn-url", "turn:127.0.0.1:3479?transport=tcp"], log, env)  # per-session TURN credentials too
    secret_values: dict[str, str] = {f"{role} link token": token_of(url) for role, url in links.items()}
    secret_values.update({"TURN credential": turn_credential, "webhook URL key": hook_key})
    people: list[SyntheticParticipant] = []
    ids: dict[str, str] = {}
    request_ids: list[str] = []
    try:
        admin_key = (data_dir / "admin.key").read_text().strip()
        admin = {"Authorization": f"Bearer {admin_key}"}
        async with aiohttp.ClientSession(base) as http:
            # --- the admin API: list, mint (a name in Chinese), a wrong key --------------------------
            async with http.get("/api/rooms", headers={**admin, "X-Request-Id": "lb-0001"}) as response:
                assert response.status == 200 and response.headers["X-Request-Id"] == "lb-0001"
                assert [r["id"] for r in (await response.json())["rooms"]] == ["demo"]
            request_ids.append("lb-0001")
            async with http.post("/api/rooms/demo/links", headers=admin,
                                 json={"role": "expert", "name": "王医生", "identity": "expert-wang"}) as response:
                assert response.status == 201
                expert_link = await response.json()
                request_ids.append(response.headers["X-Request-Id"])
            secret_values["minted expert token"] = expert_link["token"]
            wrong_key = "wrong-" + secrets.token_urlsafe(24)
            secret_values["a wrong admin key"] = wrong_key
            async with http.get("/api/rooms", headers={"Authorization": f"Bearer {wrong_key}"}) as response:
                assert response.status == 401
            async with http.get("/metrics", headers=admin) as response:
                assert response.status == 200

            # --- the call: patient and doctor, media both ways ------------------------------------
            patient = participant(base, token_of(links["patient"]), seed=1)
            doctor = participant(base, token_of(links["doctor"]), seed=2)
            people += [patient, doctor]
            joined = [await p.join(timeout=20) for p in people]
            ids.update(patient=patient.id, doctor=doctor.id)
            for message in joined:  # TURN credentials given to the browsers, whatever form they take
                for server in message["ice_servers"]:
                    if server.get("credential"):
                        secret_values[f"ICE credential for {server['urls']}"] = server["credential"]
            assert any(s.get("credential") == turn_credential for s in joined[0]["ice_servers"])
            assert len([s for s in joined[0]["ice_servers"] if s.get("credential")]) == 2  # and the session's own
            await doctor.wait_for_frames(patient.id, "video", 20, timeout=40)
            await patient.wait_for_frames(doctor.id, "video", 20, timeout=40)

            # --- a recording, with the patient's answer -------------------------------------------
            await doctor.send({"type": "record", "action": "start"})
            on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on", timeout=20)
            await patient.send({"type": "consent", "recording_id": on["recording_id"], "given": True})
            await doctor.wait_for_frames(patient.id, "video", 45, timeout=40)
            await doctor.send({"type": "record", "action": "stop"})
            await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off", timeout=20)

            # --- error paths: a forged and a bogus token, a broken join, an oversized message -----
            forged = jwt.encode({"iss": "consult-sfu", "room": "demo", "sub": "intruder", "role": "doctor",
                                 "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "0" * 32},
                                secrets.token_urlsafe(32), algorithm="HS256")
            bogus = "bogus-" + secrets.token_hex(20)
            secret_values.update({"forged token": forged, "bogus token": bogus})
            for first in (json.dumps({"type": "join", "v": 1, "token": forged}),
                          json.dumps({"type": "join", "v": 1, "token": bogus}),
                          json.dumps({"type": "join", "v": 1, "token": bogus, "extra": 1}),
                          '{"type": "join", "v": 1, "token": "' + bogus + '"'):  # not even JSON
                async with http.ws_connect("/ws") as ws:
                    await ws.send_str(first)
                    refused = json.loads((await ws.receive(timeout=10)).data)
                    assert refused["type"] == "error" and refused["fatal"], refused
            async with http.ws_connect("/ws") as ws:  # the minted expert joins, then sends 70 KB
                await ws.send_json({"type": "join", "v": 1, "token": expert_link["token"]})
                while (message := await ws.receive_json(timeout=10))["type"] != "joined":
                    pass
                ids["expert"] = message["participant"]["id"]
                await ws.send_str(json.dumps({"type": "ping", "token": expert_link["token"], "pad": "x" * 70_000}))
                while (message := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                    pass
                assert ws.close_code == 1009

            # --- a trainer (link minted by the admin API) and signed replay URLs ------------------
            async with http.post("/api/rooms/demo/links", headers=admin, json={"role": "trainer"}) as response:
                trainer_token = (await response.json())["token"]
            secret_values["minted trainer token"] = trainer_token
            trainer = {"Authorization": f"Bearer {trainer_token}"}
            async with http.get("/api/replay/recordings", headers=trainer) as response:
                assert response.status == 200
                assert [r["id"] for r in (await response.json())["recordings"]] == [on["recording_id"]]
            async with http.get(f"/api/replay/recordings/{on['recording_id']}", headers=trainer) as response:
                assert response.status == 200, await response.text()
                media = (await response.json())["media"]
            for item in media:
                for url in (item["url"], item["status_url"]):
                    sig = parse_qs(urlsplit(url).query)["sig"][0]
                    secret_values[f"signature of {url.split('?')[0]}"] = sig
            async with http.get(media[0]["status_url"]) as response:
                assert response.status == 200
            async with http.get(media[0]["url"], headers={"Range": "bytes=0-99"}) as response:
                assert response.status in (206, 503)
            deadline = time.monotonic() + 90  # the render issues the viewer's watermark (its key made then)
            while True:
                async with http.get(media[0]["status_url"]) as response:
                    status = await response.json()
                if status.get("watermark") or status.get("error"):
                    break
                assert time.monotonic() < deadline, f"the replay never issued a watermark: {status}"
                await asyncio.sleep(0.2)
            assert status.get("watermark"), status
            forged_url = media[0]["url"].replace("sig=", "sig=AAAA")
            async with http.get(forged_url) as response:
                assert response.status == 403
            async with http.get(f"/healthz?token={bogus}&sig=x{forged[-20:]}") as response:
                assert response.status == 200

            # --- leave; the webhook sender has tried its closed port meanwhile --------------------
            for p in people:  # the peers' ICE passwords (aiortc logs SDP at DEBUG)
                assert p.pc is not None and p.pc.localDescription is not None
                for pwd in re.findall(r"^a=ice-pwd:(\S+)", p.pc.localDescription.sdp, re.MULTILINE):
                    secret_values[f"ICE password of {p.id}"] = pwd
                await p.close()
            deadline = time.monotonic() + 30
            while not re.search(r"webhooks: \S+ \S+ to .* failed", log.read_text()):
                assert time.monotonic() < deadline, "no webhook failure was logged"
                await asyncio.sleep(0.2)
    finally:
        await asyncio.gather(*(p.close() for p in people), return_exceptions=True)
        proc.send_signal(signal.SIGINT)  # as Ctrl-C: a clean shutdown, its lines too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # secrets the data directory holds (text ones; binary keys are checked as base64 too)
    for path in sorted(data_dir.iterdir()):
        if path.is_file() and (path.suffix in (".secret", ".key", ".kek") or path.name == "admin.key"):
            raw = path.read_bytes()
            try:
                secret_values[path.name] = raw.decode().strip()
            except UnicodeDecodeError:
                secret_values[path.name] = base64.b64encode(raw).decode()
    assert {"token.secret", "admin.key", "webhook.secret", "recording.kek", "audit.key", "watermark.key",
            "turn.secret"} <= set(secret_values)
    assert secret_values["webhook.secret"].startswith("whsec_")
    assert all(len(value) >= 16 for value in secret_values.values()), secret_values

    lines = log.read_text().splitlines()
    printed = printout(base, data_dir, links)
    for line in printed:
        assert lines.count(line) == 1, line
    entries = []
    for number, line in enumerate(lines, 1):
        if line in printed:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), line
        assert ISO_MS_UTC.match(entry["time"]) and entry["level"] in LEVELS, line
        for what, value in secret_values.items():
            assert value not in line, f"line {number} holds the {what}: {line}"
        entries.append(entry)
    # the safety net was needed only for aiortc's SDP at DEBUG (ICE passwords); our code logged no secret
    for entry in entries:
        text = json.dumps(entry, ensure_ascii=False)
        assert text.count("[redacted]") == text.count("a=ice-pwd:[redacted]"), entry
        assert "a=ice-pwd:" not in text or entry["logger"] == "aiortc.rtcpeerconnection", entry

    # session lines: the server's side of each peer connection, and each session's socket
    participants = set(ids.values())
    peer_lines = [e for e in entries if e["logger"].split(".")[0] in ("aiortc", "aioice")]
    assert len(peer_lines) > 20
    for entry in peer_lines:
        assert entry.get("room") == "demo" and entry.get("participant") in participants, entry
    sockets = [e for e in entries if e["logger"] == "signalling.http" and e["message"].startswith("GET /ws -> 101")]
    assert {e.get("participant") for e in sockets} >= participants
    assert all(e.get("room") == "demo" and e.get("request") for e in sockets if e.get("participant"))
    # HTTP lines: every one names its request; ours by the id we sent
    http_lines = [e for e in entries if e["logger"] == "signalling.http"]
    assert http_lines and all(e.get("request") for e in http_lines)
    for rid in request_ids:
        assert any(e.get("request") == rid for e in http_lines), rid
    # the name in Chinese was not logged (names are not log material), and webhook failures were
    assert not any("王医生" in e["message"] for e in entries)
    assert any(e["logger"] == "webhooks.delivery" and "?[query]" in e["message"] for e in entries)
