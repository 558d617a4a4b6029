"""Shared fixtures: a real server on loopback and real aiortc participants."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from loadtest.participant import SyntheticParticipant
from loadtest.sources import PatternVideoTrack, ToneAudioTrack
from media.ice import restrict_host_addresses
from signalling.app import Services, build_services, create_app
from signalling.config import ServerConfig
from tests.redis_server import RedisServer
from tests.webhooks.receiver import WebhookReceiver
from webhooks import new_webhook_secret


@pytest.fixture(autouse=True, scope="session")
def loopback_only_media() -> None:
    # Keep every ICE candidate of the server and the test peers on 127.0.0.1.
    restrict_host_addresses(["127.0.0.1"])


class ServerUnderTest:
    def __init__(self, services: Services, base_url: str) -> None:
        self.services = services
        self.base_url = base_url
        self.participants: list[SyntheticParticipant] = []
        self.instances: dict[str, str] = {}  # room id -> the instance room() created, for tokens

    async def room(self, room_id: str = "r1", name: str = "Test consultation", video_codec: str = "vp8",
                   processors: list[str] | None = None, language: str = "en"):
        record = await self.services.registry.create_room(name, room_id, video_codec=video_codec,
                                                          processors=processors, language=language)
        self.instances[room_id] = record.instance
        return record

    def token(self, role: str, room: str = "r1", name: str | None = None, ttl_s: int = 600,
              identity: str | None = None, permissions: list[str] | None = None) -> str:
        name = name or role.capitalize()
        return self.services.issuer.mint(room=room, identity=identity or f"{role}-{name}".lower(), name=name,
                                         role=role, ttl_s=ttl_s, permissions=permissions,
                                         instance=self.instances.get(room))

    def participant(self, role: str, *, publish: bool = True, room: str = "r1", seed: int = 0,
                    **token_args) -> SyntheticParticipant:
        p = SyntheticParticipant(
            self.base_url,
            self.token(role, room=room, **token_args),
            audio=ToneAudioTrack() if publish else None,
            video=PatternVideoTrack(seed=seed) if publish else None,
        )
        self.participants.append(p)
        return p

    async def join(self, role: str, **kwargs) -> SyntheticParticipant:
        p = self.participant(role, **kwargs)
        await p.join()
        return p


@contextlib.asynccontextmanager
async def running_sfu(aiohttp_server, config: ServerConfig,
                      kind: type[ServerUnderTest] = ServerUnderTest) -> AsyncIterator[ServerUnderTest]:
    """The app as signalling/app.py builds it for `config`, served on loopback; its participants
    are closed afterwards."""
    services = build_services(config)
    server = await aiohttp_server(create_app(services))
    config.port = server.port
    sut = kind(services, str(server.make_url("")).rstrip("/"))
    try:
        yield sut
    finally:
        await asyncio.gather(*(p.close() for p in sut.participants), return_exceptions=True)


@pytest.fixture
async def sfu(aiohttp_server, tmp_path) -> AsyncIterator[ServerUnderTest]:
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[])
    async with running_sfu(aiohttp_server, config) as sut:
        yield sut


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (tests/redis_server.py)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A clinic's webhook endpoint on loopback that checks signatures (tests/webhooks/receiver.py)."""
    receiver = WebhookReceiver(secret=new_webhook_secret())
    await receiver.start()
    yield receiver
    await receiver.stop()
