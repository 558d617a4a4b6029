"""Signed replay media URLs (signalling/replay_media_urls.py): a URL made by a signer checks
out with that signer only, and any change to what it names makes it a forgery.

Expiry, revoked links and how refusals are answered and audited are the replay API's
(test_replay_api.py, test_replay_instances.py, test_replay_refusals.py).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlparse

import pytest

from signalling.replay_media_urls import ForgedMediaUrl, MediaUrlSigner, SignedClaim, UnsignedMediaUrl

RECORDING = "20260101T120000Z-abcdef"
NAME = "p-1.webm"


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlparse(url).query))


def test_a_signed_url_names_the_media_and_checks_out():
    signer = MediaUrlSigner()
    url = signer.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000)
    assert urlparse(url).path == f"/api/replay/media/{RECORDING}/{NAME}"
    assert set(query_of(url)) == {"exp", "sub", "lnk", "sig"}
    assert signer.verify(RECORDING, NAME, query_of(url)) == SignedClaim(1_900_000_000, "doctor-1", "jti-1")


def test_the_status_url_carries_the_same_signature():
    signer = MediaUrlSigner()
    media = signer.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000)
    status = signer.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000, status=True)
    assert urlparse(status).path == f"/api/replay/media/{RECORDING}/{NAME}/status"
    assert query_of(status) == query_of(media)


def test_identity_and_link_are_url_encoded():
    signer = MediaUrlSigner()
    url = signer.url(RECORDING, NAME, "a b&c=d/é", "jti 1", 1_900_000_000)
    assert signer.verify(RECORDING, NAME, query_of(url)).identity == "a b&c=d/é"


def test_a_missing_field_is_an_unsigned_url():
    signer = MediaUrlSigner()
    query = query_of(signer.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000))
    for field in ("exp", "sub", "lnk", "sig"):
        with pytest.raises(UnsignedMediaUrl):
            signer.verify(RECORDING, NAME, {k: v for k, v in query.items() if k != field})
        with pytest.raises(UnsignedMediaUrl):
            signer.verify(RECORDING, NAME, {**query, field: ""})


def test_changing_anything_it_names_makes_it_a_forgery():
    signer = MediaUrlSigner()
    query = query_of(signer.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000))
    sig = query["sig"]
    for changed in ({"exp": "1900003600"}, {"sub": "somebody-else"}, {"lnk": "jti-2"},
                    {"sig": sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")}):
        with pytest.raises(ForgedMediaUrl):
            signer.verify(RECORDING, NAME, {**query, **changed})
    with pytest.raises(ForgedMediaUrl):
        signer.verify("20260101T120000Z-000000", NAME, query)
    with pytest.raises(ForgedMediaUrl):
        signer.verify(RECORDING, "p-2.webm", query)
    with pytest.raises(ForgedMediaUrl):
        signer.verify(RECORDING, "p-1.mp4", query)


def test_another_process_signer_does_not_accept_it():
    url = MediaUrlSigner().url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000)
    with pytest.raises(ForgedMediaUrl):
        MediaUrlSigner().verify(RECORDING, NAME, query_of(url))  # a restart: a new key


def test_the_same_key_gives_the_same_signature():
    key = bytes(range(32))
    a, b = MediaUrlSigner(key), MediaUrlSigner(key)
    assert a.signature(RECORDING, NAME, 1, "x", "y") == b.signature(RECORDING, NAME, 1, "x", "y")
    assert "=" not in a.signature(RECORDING, NAME, 1, "x", "y")  # URL-safe base64 without padding
    url = a.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000)
    assert b.verify(RECORDING, NAME, query_of(url)).link == "jti-1"


def test_malformed_or_oversized_fields_are_forgeries():
    signer = MediaUrlSigner()
    query = query_of(signer.url(RECORDING, NAME, "doctor-1", "jti-1", 1_900_000_000))
    for changed in ({"exp": "-1"}, {"exp": "1.5"}, {"exp": "1" * 13}, {"sub": "x" * 201}, {"lnk": "x" * 65}):
        with pytest.raises(ForgedMediaUrl):
            signer.verify(RECORDING, NAME, {**query, **changed})
    # at the limits, a URL that was signed still checks out
    long_url = signer.url(RECORDING, NAME, "x" * 200, "y" * 64, 999_999_999_999)
    assert signer.verify(RECORDING, NAME, query_of(long_url)) == SignedClaim(999_999_999_999, "x" * 200, "y" * 64)
