"""Refused replay requests and the audit log: callers without valid credentials cannot grow
it (their refusals are counted and summarised, at most one entry per interval, nothing of
their choosing kept); a valid credential's refusal is still audited on its own, with who.

The replay API is served with the real routes on the `sfu` server's services (a second
app, so the summary interval can be short) and writes the real audit log.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from recorder.audit import Action, AuditLog
from signalling.replay_api import ReplayService, replay_routes

INTERVAL_S = 0.5
ATTACKER = "A" * 180  # text of the caller's choosing


class Api:
    def __init__(self, sfu, base_url: str, service: ReplayService) -> None:
        self.sfu, self.base_url, self.service = sfu, base_url, service
        self.audit_file = sfu.services.config.data_dir / "audit.log"

    async def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with aiohttp.ClientSession() as http:
            async with http.get(self.base_url + path, headers=headers) as response:
                return response.status, json.loads(await response.read())

    def failures(self) -> list[dict]:
        if not self.audit_file.exists():
            return []
        return [e for e in AuditLog.open(self.sfu.services.config.data_dir).authentic_entries()
                if e["action"] == Action.ACCESS_FAILED]

    def audit_size(self) -> int:
        return self.audit_file.stat().st_size if self.audit_file.exists() else 0


async def serve(sfu, aiohttp_server, interval_s: float) -> Api:
    service = ReplayService(sfu.services.config.data_dir, sfu.services.issuer, refusal_summary_s=interval_s)
    app = web.Application()
    app.add_routes(replay_routes(sfu.services, service=service))
    server = await aiohttp_server(app)
    return Api(sfu, str(server.make_url("")).rstrip("/"), service)


@pytest.fixture
async def api(sfu, aiohttp_server) -> Api:
    await sfu.room()
    AuditLog.open(sfu.services.config.data_dir, create=True)  # as after the first recording
    return await serve(sfu, aiohttp_server, INTERVAL_S)


def bad_requests() -> list[tuple[str, str | None]]:
    """Requests with no credential, a forged one, or a forged media signature; 120 of them."""
    forged_media = (f"/api/replay/media/20260101T000000Z-000000000000/p-1.webm?exp=99999999999&sub={ATTACKER}"
                    f"&lnk={'0' * 32}&sig=xx")
    kinds = [("/api/replay/recordings", None), ("/api/replay/recordings", "not-a-jwt." + ATTACKER),
             (f"/api/replay/recordings/{ATTACKER}", None), (forged_media, None)]
    return [kinds[i % len(kinds)] for i in range(120)]


async def test_refusals_without_credentials_are_summarised(api):
    before = api.audit_size()
    results = await asyncio.gather(*(api.get(path, token) for path, token in bad_requests()))
    assert sorted({(status, body["error"]) for status, body in results}) == [
        (401, "unauthorized"), (403, "bad_signature")]  # each caller still gets a clear answer
    assert api.failures() == [] and api.audit_size() == before  # no write per request

    await asyncio.sleep(INTERVAL_S + 0.5)
    (entry,) = api.failures()
    details = entry["details"]
    assert (entry["actor"], entry["target"], details["summary"], details["refusals"]) == (
        "anonymous", "replay", True, 120)
    assert details["reasons"] == {"bad_signature": 30, "unauthorized": 90}
    assert details["remotes"] == {"127.0.0.1": 120} and details["purpose"] == Action.REPLAY
    assert ATTACKER not in api.audit_file.read_text()  # nothing the caller chose is kept
    assert api.audit_size() - before < 1500  # one entry, not 120 (~56 KB before)

    # at most one entry per interval: a second flood waits for its own
    await asyncio.gather(*(api.get("/api/replay/recordings") for _ in range(30)))
    await asyncio.sleep(INTERVAL_S / 4)
    assert len(api.failures()) == 1
    await asyncio.sleep(INTERVAL_S + 0.5)
    assert [e["details"]["refusals"] for e in api.failures()] == [120, 30]
    assert AuditLog.open(api.sfu.services.config.data_dir).verify().ok


async def test_the_summary_is_written_when_the_server_shuts_down(sfu, aiohttp_server):
    await sfu.room()
    AuditLog.open(sfu.services.config.data_dir, create=True)
    api = await serve(sfu, aiohttp_server, 3600.0)  # the interval would not end during the test
    for _ in range(5):
        assert (await api.get("/api/replay/recordings", "garbage"))[0] == 401
    assert api.failures() == []
    await sfu.services.rooms.shutdown()  # what the app's on_shutdown calls
    (entry,) = api.failures()
    assert entry["details"]["reasons"] == {"unauthorized": 5}


async def test_a_valid_credentials_refusal_is_audited_on_its_own(api):
    doctor = api.sfu.token("doctor", name="Dr Lee")  # valid, but may not replay
    status, body = await api.get("/api/replay/recordings", doctor)
    assert (status, body["error"]) == (403, "forbidden")
    (entry,) = api.failures()
    assert (entry["actor"], entry["details"]["error"]) == ("doctor-dr lee", "forbidden")

    # a revoked trainer link: refused, and audited with who tried
    trainer_link = api.sfu.services.issuer.issue(room="r1", identity="trainer-9", name="T", role="trainer",
                                                 ttl_s=600)
    assert (await api.get("/api/replay/recordings", trainer_link.token))[0] == 200
    await api.sfu.services.rooms.revocations.revoke(trainer_link.jti, trainer_link.expires_at)
    status, body = await api.get("/api/replay/recordings", trainer_link.token)
    assert (status, body["error"]) == (401, "link_revoked")
    assert [(e["actor"], e["details"]["error"]) for e in api.failures()] == [
        ("doctor-dr lee", "forbidden"), ("trainer-9", "link_revoked")]
