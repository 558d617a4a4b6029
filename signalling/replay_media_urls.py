"""Signed replay media URLs: how a trainer's <video> element is let in without a token.

A <video> element cannot send an Authorization header, and the join token must not go into
URLs (they end up in histories and logs). So the replay API (signalling/replay_api.py) hands
out media URLs that carry their own proof: an HMAC-SHA256 over the recording, the media file's
name, an expiry, the viewer's identity and their link (its jti, so revoking the link stops
its URLs), with a key made when the process starts that never leaves it. A restart therefore
invalidates every URL (they live minutes, and the page asks for fresh ones), and the
join-token secret is never used for anything else.

This module only signs and checks signatures; whether an authentic URL has expired or its
link is revoked, and how a refusal is answered and audited, is the replay API's business.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlencode

SIGNATURE_CONTEXT = "replay-media/v2"  # bumped when what is signed changes, so older URLs stop working
MAX_EXP_DIGITS = 12
MAX_IDENTITY_CHARS = 200
MAX_LINK_CHARS = 64


class UnsignedMediaUrl(Exception):
    """The URL lacks one of exp, sub, lnk and sig: nobody signed it."""


class ForgedMediaUrl(Exception):
    """The URL's signature does not match what it names (forged, altered, or from another process)."""


@dataclass(frozen=True)
class SignedClaim:
    """What an authentic media URL says: until when it is valid, for whom, through which link."""
    exp: int  # Unix time, seconds
    identity: str
    link: str  # the jti of the viewer's join token


class MediaUrlSigner:
    """Signs and checks replay media URLs with a key of its own (made here unless given)."""

    def __init__(self, key: Optional[bytes] = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def signature(self, recording_id: str, name: str, exp: int, identity: str, link: str) -> str:
        """The URL-safe base64 HMAC (without padding) over everything the URL names."""
        message = "\0".join((SIGNATURE_CONTEXT, recording_id, name, str(exp), identity, link)).encode()
        return base64.urlsafe_b64encode(hmac.new(self._key, message, hashlib.sha256).digest()).rstrip(b"=").decode()

    def url(self, recording_id: str, name: str, identity: str, link: str, exp: int, *, status: bool = False) -> str:
        """The signed path of media file `name` of a recording (or of its `/status`: the same signature,
        since both reveal the same replay to the same viewer)."""
        query = urlencode({"exp": exp, "sub": identity, "lnk": link,
                           "sig": self.signature(recording_id, name, exp, identity, link)})
        return f"/api/replay/media/{recording_id}/{name}{'/status' if status else ''}?{query}"

    def verify(self, recording_id: str, name: str, query: Mapping[str, str]) -> SignedClaim:
        """What a request's query claims, once its signature checks out (expiry not checked);
        UnsignedMediaUrl or ForgedMediaUrl otherwise. Oversized fields are refused before any HMAC."""
        exp, identity, link, sig = (query.get("exp", ""), query.get("sub", ""), query.get("lnk", ""),
                                    query.get("sig", ""))
        if not (exp and identity and link and sig):
            raise UnsignedMediaUrl("a signed media URL is required")
        if (not exp.isdigit() or len(exp) > MAX_EXP_DIGITS or len(identity) > MAX_IDENTITY_CHARS
                or len(link) > MAX_LINK_CHARS or not hmac.compare_digest(
                    sig.encode(), self.signature(recording_id, name, int(exp), identity, link).encode())):
            raise ForgedMediaUrl("the media URL's signature is not valid")
        return SignedClaim(int(exp), identity, link)
