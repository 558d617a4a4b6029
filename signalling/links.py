"""Whether a verified join token may still be used: for its room's instance, and not revoked.

A signature and an expiry are not enough. Room ids can be used again, so a link counts
only for the instance (creation) of the room it was minted for; and a link can be revoked
before it expires (a kick, or an admin withdrawing it). Both the WebSocket join and the
replay API ask here, after TokenIssuer.verify.
"""

from __future__ import annotations

from .registry import RoomInstance, RoomRecord, RoomRegistry, find_instance, instance_minted_at
from .revocations import RevocationStore
from .tokens import Grant

STALE_LINK = "stale_link"
LINK_REVOKED = "link_revoked"


class LinkRefused(Exception):
    """`code` is the protocol error code: wrong_room, stale_link or link_revoked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LinkGuard:
    def __init__(self, registry: RoomRegistry, revocations: RevocationStore) -> None:
        self.registry = registry
        self.revocations = revocations

    def check_not_revoked(self, grant: Grant) -> None:
        if self.revocations.is_revoked(grant.jti):
            raise LinkRefused(LINK_REVOKED, "this link has been revoked; please ask the clinic for a new link")

    async def instance_of(self, grant: Grant) -> tuple[RoomInstance, list[RoomInstance]]:
        """The room instance the link was minted for, and every instance of its room id."""
        lives = await self.registry.instances(grant.room)
        if not lives:
            raise LinkRefused("wrong_room", f"room {grant.room!r} does not exist")
        # Links without an instance claim (minted before instances, or by a caller that gave
        # none) belong to the instance that was the room's latest when they were minted.
        life = (find_instance(lives, grant.instance) if grant.instance is not None
                else instance_minted_at(lives, grant.issued_at))
        if life is None:
            raise LinkRefused(STALE_LINK, "this link was made for an earlier consultation in this room; "
                                          "please ask the clinic for a new link")
        return life, lives

    async def for_live(self, grant: Grant) -> RoomRecord:
        """The open room this link may join now."""
        self.check_not_revoked(grant)
        room = await self.registry.get_room(grant.room)
        if room is None or not room.open:
            raise LinkRefused("wrong_room", f"room {grant.room!r} does not exist or is closed")
        life, _ = await self.instance_of(grant)
        if life.instance != room.instance:
            raise LinkRefused(STALE_LINK, "this link was made for an earlier consultation in this room; "
                                          "please ask the clinic for a new link")
        return room

    async def for_replay(self, grant: Grant) -> tuple[RoomInstance, list[RoomInstance]]:
        """The instance whose recordings this (trainer) link may see; it may be closed."""
        self.check_not_revoked(grant)
        return await self.instance_of(grant)
