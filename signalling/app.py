"""The aiohttp application: pages, static files, the WebSocket and the admin API."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .admin import AdminApi
from .config import ServerConfig
from .live_rooms import RoomService
from .protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSIONS
from .registry import InMemoryRegistry, RoomRegistry
from .replay_api import replay_routes
from .secrets_store import load_or_create_secret
from .session import ParticipantSession
from .tokens import TokenIssuer

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# aiohttp's own hard cap on a frame; ours (64 KiB) is checked with a typed error first
WS_HARD_LIMIT = 1024 * 1024

SERVICES_KEY = web.AppKey("services", object)


@dataclass
class Services:
    config: ServerConfig
    registry: RoomRegistry
    issuer: TokenIssuer
    rooms: RoomService
    admin_key: str


def build_services(config: ServerConfig, registry: RoomRegistry | None = None) -> Services:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    registry = registry or InMemoryRegistry(config.data_dir / "rooms.json")
    issuer = TokenIssuer(load_or_create_secret(config.data_dir / "token.secret"))
    admin_key = load_or_create_secret(config.data_dir / "admin.key")
    return Services(config=config, registry=registry, issuer=issuer,
                    rooms=RoomService(registry, config.ice, config.data_dir), admin_key=admin_key)


def create_app(services: Services) -> web.Application:
    admin = AdminApi(api_key=services.admin_key, services=services)
    app = web.Application(middlewares=[admin.auth_middleware], client_max_size=64 * 1024)
    app[SERVICES_KEY] = services
    ice_servers = [s.to_browser() for s in services.config.ice.servers]

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_HARD_LIMIT, heartbeat=20.0)
        await ws.prepare(request)
        session = ParticipantSession(
            ws,
            rooms=services.rooms,
            issuer=services.issuer,
            ice_servers=ice_servers,
            join_timeout_s=services.config.join_timeout_s,
            answer_timeout_s=services.config.answer_timeout_s,
        )
        await session.run()
        return ws

    def page(name: str):
        async def handler(request: web.Request) -> web.FileResponse:
            response = web.FileResponse(STATIC_DIR / name)
            response.headers["Cache-Control"] = "no-store"
            response.headers["Referrer-Policy"] = "no-referrer"
            return response
        return handler

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"name": "consult-sfu", "protocol_versions": list(PROTOCOL_VERSIONS),
                                  "max_message_bytes": MAX_MESSAGE_BYTES})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "live_rooms": len(services.rooms.live)})

    async def on_shutdown(app: web.Application) -> None:
        await services.rooms.shutdown()

    app.add_routes([
        web.get("/ws", websocket),
        web.get("/patient", page("patient.html")),
        web.get("/console", page("console.html")),
        web.get("/", page("index.html")),
        web.get("/api/info", info),
        web.get("/healthz", health),
        *admin.routes(),
        *replay_routes(services),
        web.static("/static", STATIC_DIR),
    ])
    app.on_shutdown.append(on_shutdown)
    return app
