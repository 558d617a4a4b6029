"""The aiohttp application: pages, static files, the WebSocket and the admin API.

Its HTTP hardening (docs/SECURITY.md) is in http_headers (security headers, quiet
malformed requests) and http_limits (timeouts, caps on not-yet-joined WebSockets); the
data directory is made readable by the server's user only.
"""

from __future__ import annotations

import json
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from i18n import LOCALES, page_catalogue
from metrics import Metrics
from recorder.audit import AUDIT_LOG_FILE, AuditLog
from recorder.errors import RecorderError
from webhooks import WebhookSender, WebhookSettings, new_webhook_secret
from webhooks.outbox import OUTBOX_FILE

from .admin import AdminApi
from .config import ServerConfig
from .http_headers import hide_server_version, inline_style_hashes, quiet_bad_requests, security_headers
from .http_limits import (
    LIMITS_KEY,
    HttpLimits,
    PendingSockets,
    SignallingSocket,
    body_deadline,
    refuse_busy,
    upgrade,
)
from .live_rooms import RoomService
from .log_context import echo_request_id, request_ids
from .node_relay import PLACED_HEADER, is_placed, placed_header
from .protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSIONS
from .redis_state import SharedState
from .registry import InMemoryRegistry, RoomRegistry
from .replay_api import replay_routes
from .room_events import RoomEvents
from .secrets_store import load_or_create_secret
from .session import ParticipantSession
from .static_files import CompressedBodies, shared_site
from .tls import self_signed_certificate
from .tokens import TokenIssuer
from .turn import TURN_SECRET_FILE, TurnService

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DATA_DIR_MODE = 0o700
WEBHOOK_SECRET_FILE = "webhook.secret"

SERVICES_KEY = web.AppKey("services", object)
METRICS_KEY = web.AppKey("metrics", Metrics)


@dataclass
class Services:
    config: ServerConfig
    registry: RoomRegistry
    issuer: TokenIssuer
    rooms: RoomService
    admin_key: str
    webhooks: WebhookSender | None = None
    turn: TurnService | None = None
    shared: SharedState | None = None  # Redis, with --redis-url (several nodes as one service)


def build_services(config: ServerConfig, registry: RoomRegistry | None = None) -> Services:
    ensure_private_dir(config.data_dir)
    report_audit_tail(config.data_dir)
    shared = SharedState(config.redis_url, config.node_url or config.base_url()) if config.redis_url else None
    if registry is None:
        registry = shared.registry if shared else InMemoryRegistry(config.data_dir / "rooms.json")
    issuer = TokenIssuer(load_or_create_secret(config.data_dir / "token.secret"))
    admin_key = load_or_create_secret(config.data_dir / "admin.key")
    events = RoomEvents()
    rooms = RoomService(registry, config.ice, config.data_dir, events,
                        revocations=shared.revocations if shared else None,
                        placement=shared.placement if shared else None, clinic_contact=config.clinic_contact)
    if shared is not None:
        shared.revocations.on_revoked = rooms.end_sessions_of_link  # a link revoked on another node
        shared.placement.on_lost = rooms.room_moved  # a room another node runs now
        shared.placement.directory.load = rooms.load
        shared.on_room_closed = rooms.room_closed_elsewhere  # closed through another node
    webhooks = None
    if config.webhook_urls:
        secret = config.webhook_secret or load_or_create_secret(config.data_dir / WEBHOOK_SECRET_FILE,
                                                                generate=new_webhook_secret)
        webhooks = WebhookSender(WebhookSettings(config.webhook_urls, secret, retry_cap_s=config.webhook_retry_max_s),
                                 config.data_dir,
                                 outbox_file(config.worker_index))
        events.subscribe(webhooks.on_room_event, acknowledger=webhooks.acknowledged)
        rooms.on_shutdown(webhooks.close)  # after the rooms have ended (their last events are kept)
    turn = None
    if config.turn_urls:
        turn_secret = config.turn_secret or load_or_create_secret(config.data_dir / TURN_SECRET_FILE)
        turn = TurnService(config.turn_urls, turn_secret, config.turn_ttl_s)
    return Services(config=config, registry=registry, issuer=issuer, rooms=rooms, admin_key=admin_key,
                    webhooks=webhooks, turn=turn, shared=shared)


def outbox_file(worker_index: int | None) -> str:
    """The webhook outbox of this process: a worker's own, so no two send the same event."""
    return OUTBOX_FILE if worker_index is None else f"webhooks-worker-{worker_index}.sqlite3"


def prepare_shared_files(config: ServerConfig) -> None:
    """The data directory and the secrets every worker of this machine reads, made once
    before the workers start (they would each make their own at the same moment)."""
    ensure_private_dir(config.data_dir)
    for name in ("token.secret", "admin.key"):
        load_or_create_secret(config.data_dir / name)
    if config.webhook_urls and not config.webhook_secret:
        load_or_create_secret(config.data_dir / WEBHOOK_SECRET_FILE, generate=new_webhook_secret)
    if config.turn_urls and not config.turn_secret:
        load_or_create_secret(config.data_dir / TURN_SECRET_FILE)
    if config.tls_self_signed:
        self_signed_certificate(config.data_dir, [config.host])


def ensure_private_dir(path: Path) -> None:
    """The data directory holds secrets, recordings and the audit log: 0700, also when it existed."""
    path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(DATA_DIR_MODE)
        logger.warning("data directory %s was mode %04o (readable by others); changed to %04o",
                       path, mode, DATA_DIR_MODE)


def report_audit_tail(data_dir: Path) -> None:
    """Say at start-up, not at the first recording, that the audit log lost entries at its end."""
    if not (data_dir / AUDIT_LOG_FILE).exists():
        return
    try:
        problem = AuditLog.open(data_dir).tail_problem()
    except RecorderError:
        return  # no audit key here (kept elsewhere): the first append reports it
    if problem:
        logger.error("audit log: %s; recording, replays and exports are refused until it is restored from a "
                     "backup or `python -m recorder audit reseal` records the loss", problem)


# --- the app ----------------------------------------------------------------------------------------------

def create_app(services: Services, limits: HttpLimits | None = None) -> web.Application:
    limits = limits or HttpLimits()
    hide_server_version()
    quiet_bad_requests()
    admin = AdminApi(api_key=services.admin_key, services=services)
    # request_ids first: every later middleware and handler logs under the request's id
    app = web.Application(middlewares=[request_ids, body_deadline(limits.body_timeout_s), admin.auth_middleware],
                          client_max_size=64 * 1024)
    app[SERVICES_KEY] = services
    app[LIMITS_KEY] = limits
    metrics = app[METRICS_KEY] = Metrics(services.rooms)
    app.cleanup_ctx.append(metrics.cleanup_ctx)
    app.on_response_prepare.append(security_headers(inline_style_hashes(STATIC_DIR)))
    app.on_response_prepare.append(echo_request_id)  # X-Request-Id on every response
    configured_ice = [s.to_browser() for s in services.config.ice.servers]

    def ice_servers(participant_id: str) -> list[dict]:
        relay = [services.turn.credentials(participant_id)] if services.turn is not None else []
        return relay + configured_ice
    pending = PendingSockets(limits.pending_ws_per_address, limits.pending_ws_total)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        release = pending.admit(request.remote or "unknown")
        if release is None:
            return await refuse_busy(request)
        try:
            ws = SignallingSocket(max_msg_size=limits.max_frame_bytes + 1, heartbeat=20.0)
            if not await upgrade(ws, request):
                return ws
            session = ParticipantSession(
                ws,
                rooms=services.rooms,
                issuer=services.issuer,
                ice_servers=ice_servers,
                join_timeout_s=services.config.join_timeout_s,
                answer_timeout_s=services.config.answer_timeout_s,
                on_joined=release,
                on_join_timing=metrics.observe_join,
                placed_here=services.shared is not None and is_placed(services.admin_key,
                                                                      request.headers.get(PLACED_HEADER)),
                relay_headers=lambda: placed_header(services.admin_key),
            )
            await session.run()
            return ws
        finally:
            release()

    static_site = shared_site(STATIC_DIR)  # compressed, versioned, cached in memory (static_files.py)
    page = static_site.page
    catalogues = CompressedBodies()  # the /i18n texts: compressed and revalidated like the static files

    async def info(request: web.Request) -> web.Response:
        # clinic_contact: for a page that cannot know its room (a link cut short), the server's own
        return web.json_response({"name": "consult-sfu", "protocol_versions": list(PROTOCOL_VERSIONS),
                                  "max_message_bytes": MAX_MESSAGE_BYTES,
                                  "clinic_contact": services.config.clinic_contact})

    async def catalogue(request: web.Request) -> web.Response:
        """A page's texts in one language (i18n/locales); the page picks the language."""
        locale = request.match_info["locale"]
        if locale not in LOCALES:
            return web.json_response({"error": "not_found", "message": f"languages: {', '.join(LOCALES)}"},
                                     status=404)
        body = json.dumps(page_catalogue(locale), ensure_ascii=False).encode()
        # no-cache with an ETag: never an old text after the server is updated, a 304 otherwise
        return await catalogues.respond(request, body, "application/json; charset=utf-8")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})  # liveness only: how busy the clinic is is no one's business

    async def on_startup(app: web.Application) -> None:
        if services.shared is not None:
            await services.shared.start()  # fails the start when Redis cannot be reached
        if services.webhooks is not None:
            await services.webhooks.start()

    async def on_shutdown(app: web.Application) -> None:
        await services.rooms.shutdown()
        if services.shared is not None:
            await services.shared.close()

    app.add_routes([
        web.get("/ws", websocket),
        web.get("/patient", page("patient.html")),
        web.get("/console", page("console.html")),
        web.get("/", page("index.html")),
        web.get("/api/info", info),
        web.get("/healthz", health),
        web.get("/i18n/{locale}.json", catalogue),
        *admin.routes(),
        *([] if services.config.metrics_address else metrics.routes(api_key=services.admin_key)),
        *replay_routes(services),
        *static_site.routes(),
    ])
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


