"""TURN credentials for each session: the patient behind a firewall that lets only TCP (or
only port 443) out still reaches the call through a relay.

coturn's `use-auth-secret` scheme (the "TURN REST API" draft, as in RFC 7635's spirit):
the username is "<expiry unix time>:<who>", the password base64(HMAC-SHA1(shared secret,
username)). The server mints them per session from the secret it shares with coturn; coturn
checks them without knowing our sessions, and refuses them after the expiry. A credential
seen in one browser is worth nothing to anyone else for long.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Optional, Sequence
from urllib.parse import parse_qs

TURN_SECRET_FILE = "turn.secret"
DEFAULT_TTL_S = 6 * 3600  # a long consultation keeps its relay: coturn checks expiry on every refresh


def check_turn_urls(urls: Sequence[str]) -> None:
    """Raises ValueError, saying what is wrong, unless each is a turn:/turns: URL a browser takes."""
    for url in urls:
        scheme, sep, rest = url.partition(":")
        if scheme not in ("turn", "turns") or not sep or not rest or rest.startswith("//"):
            raise ValueError(f"a TURN URL is turn:HOST[:PORT][?transport=udp|tcp] or turns:…: {url!r}")
        address, _, query = rest.partition("?")
        transports = parse_qs(query).get("transport", ["udp"])
        if not address or any(t not in ("udp", "tcp") for t in transports):
            raise ValueError(f"a TURN URL names a host and transport udp or tcp: {url!r}")


@dataclass(frozen=True)
class TurnService:
    urls: tuple[str, ...]
    secret: str
    ttl_s: int = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        check_turn_urls(self.urls)
        if not self.secret:
            raise ValueError("the TURN shared secret is empty")

    def credentials(self, user: str, now: Optional[float] = None) -> dict:
        """An RTCIceServer entry for a browser: these URLs, a credential for `user` until now + ttl."""
        expiry = int(time.time() if now is None else now) + self.ttl_s
        username = f"{expiry}:{user}"
        digest = hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        return {"urls": list(self.urls), "username": username, "credential": base64.b64encode(digest).decode()}
