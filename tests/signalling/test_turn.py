"""TURN credentials: coturn's use-auth-secret scheme, minted per session and handed out in
`joined`; TURN URLs checked before the server starts."""

from __future__ import annotations

import base64
import subprocess

import pytest

from loadtest.participant import SyntheticParticipant
from signalling.app import build_services, create_app
from signalling.config import ServerConfig
from signalling.turn import TurnService, check_turn_urls

URLS = ("turn:turn.clinic.example:3478?transport=udp", "turns:turn.clinic.example:443?transport=tcp")


def test_a_credential_is_what_coturn_computes_from_the_shared_secret():
    """Checked against OpenSSL: base64(HMAC-SHA1(secret, "<expiry>:<user>"))."""
    service = TurnService(URLS, "north-wing-secret", ttl_s=3600)
    entry = service.credentials("p-0123456789ab", now=1_800_000_000)
    assert entry["urls"] == list(URLS)
    assert entry["username"] == "1800003600:p-0123456789ab"
    digest = subprocess.run(["openssl", "dgst", "-binary", "-sha1", "-hmac", "north-wing-secret"],
                            input=entry["username"].encode(), capture_output=True, check=True).stdout
    assert entry["credential"] == base64.b64encode(digest).decode()


def test_each_session_gets_its_own_credential():
    service = TurnService(URLS, "s")
    a, b = service.credentials("p-aaaaaaaaaaaa", now=0), service.credentials("p-bbbbbbbbbbbb", now=0)
    assert a["credential"] != b["credential"]


@pytest.mark.parametrize("url", [
    "stun:turn.clinic.example:3478", "turn://turn.clinic.example", "turn:", "turn:host?transport=sctp",
    "https://turn.clinic.example",
])
def test_a_url_that_is_not_turn_is_refused(url):
    with pytest.raises(ValueError, match="TURN URL"):
        check_turn_urls([url])


def test_an_empty_secret_is_refused():
    with pytest.raises(ValueError, match="secret"):
        TurnService(URLS, "")


async def test_joined_hands_out_a_fresh_credential_for_the_session(aiohttp_server, tmp_path):
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[], turn_urls=URLS)
    services = build_services(config)
    server = await aiohttp_server(create_app(services))
    room = await services.registry.create_room("Consultation", "r1")
    token = services.issuer.mint(room="r1", identity="mrn-1", name="Patient", role="patient", ttl_s=600,
                                 instance=room.instance)
    secret = (tmp_path / "data" / "turn.secret").read_text().strip()  # generated: the operator gives it to coturn
    participant = SyntheticParticipant(str(server.make_url("")).rstrip("/"), token)
    try:
        joined = await participant.join()
    finally:
        await participant.close()
    [relay] = joined["ice_servers"]
    expiry, user = relay["username"].split(":")
    assert user == joined["participant"]["id"] and relay["urls"] == list(URLS)
    assert relay == TurnService(URLS, secret).credentials(user, now=int(expiry) - 6 * 3600)
