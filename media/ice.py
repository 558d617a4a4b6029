"""ICE configuration: which STUN/TURN servers, and which host addresses to offer.

aioice never offers 127.0.0.1 as a host candidate and offers every other local
address. Tests and benchmarks must keep media on loopback (or inside a network
namespace they made), so the operator can pin the host candidates to a list of
addresses. aioice has no per-connection option for this, so the restriction is
process-wide: it wraps aioice's address discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import aioice.ice
from aiortc import RTCIceServer

_original_get_host_addresses = aioice.ice.get_host_addresses


@dataclass
class IceServerConfig:
    urls: list[str]
    username: Optional[str] = None
    credential: Optional[str] = None

    def to_aiortc(self) -> RTCIceServer:
        return RTCIceServer(urls=self.urls, username=self.username, credential=self.credential)

    def to_browser(self) -> dict:
        out: dict = {"urls": self.urls}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass
class IceConfig:
    servers: list[IceServerConfig] = field(default_factory=list)  # default: none, never a public host
    host_addresses: list[str] = field(default_factory=list)  # empty: every local address


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Offer only these local addresses as host candidates (empty: aioice's default)."""
    allowed = list(addresses)
    if not allowed:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return

    def pinned(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in allowed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = pinned
