"""Start consult-sfu.

With no flags: serves on http://127.0.0.1:8080, keeps state in ./data, creates a
demo room and prints one join link per role. Every flag has an environment
variable (CONSULT_<FLAG>, e.g. CONSULT_PORT=9000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from i18n import DEFAULT_LOCALE, LOCALES, text
from media.ice import IceConfig, IceServerConfig, restrict_host_addresses
from metrics import parse_address
from signalling.app import METRICS_KEY, build_services, create_app, prepare_shared_files
from signalling.config import ServerConfig
from signalling.http_limits import runner_options
from signalling.log_format import LOG_FORMATS, configure_logging
from signalling.registry import LIVE_WATERMARK_MODES, room_text_problem
from signalling.roles import PAGE_FOR_ROLE
from signalling.tls import self_signed_certificate, server_ssl_context
from signalling.turn import check_turn_urls
from signalling.workers import WorkerSupervisor
from webhooks import check_endpoints, secret_key

# Secrets, recordings, exports and logs this process writes are for its own user only,
# whatever the shell's umask (files that matter are also created 0600 explicitly).
PRIVATE_UMASK = 0o077
DEMO_ROOM_ID = "demo"
# The trainer's link replays this start's recordings of the demo room.
DEMO_ROLES = ("patient", "doctor", "expert", "trainer")  # each named by its role, in the room's language


def _env(name: str, default=None):
    return os.environ.get(f"CONSULT_{name}", default)


def _env_list(name: str) -> list[str]:
    value = _env(name, "")
    return [v.strip() for v in value.split(",") if v.strip()]


def _secret_from_file(p: argparse.ArgumentParser, path: Path, what: str) -> str:
    """A secret kept in a file (never on the command line, which `ps` shows); exits with why if unusable."""
    try:
        value = path.read_text().strip()
    except OSError as exc:
        p.error(f"cannot read the {what} file {path}: {exc.strerror}")
    if not value:
        p.error(f"the {what} file {path} is empty")
    return value


def worker_count(value: str, *, shared_state: bool) -> int:
    """--workers: a number, or "auto": every core this process may run on when the workers can
    share rooms (Redis), else one process as without workers."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if shared_state else 1
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"--workers is a number or auto, not {value!r}") from None
    if count < 1:
        raise ValueError("--workers is at least 1")
    return count


def parse_args(argv: list[str]) -> ServerConfig:
    p = argparse.ArgumentParser(description="consult-sfu: WebRTC SFU for video consultations")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="address to listen on (0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, default=int(_env("PORT", "8080")))
    p.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "data")),
                   help="secrets, room list and (later) recordings")
    p.add_argument("--public-url", default=_env("PUBLIC_URL"), help="base URL for join links, e.g. https://clinic.example:8443")
    p.add_argument("--tls-cert", type=Path, default=_env("TLS_CERT"))
    p.add_argument("--tls-key", type=Path, default=_env("TLS_KEY"))
    p.add_argument("--tls-self-signed", action="store_true", default=_env("TLS_SELF_SIGNED") == "1",
                   help="serve HTTPS with a generated certificate (LAN testing: phones need HTTPS for the camera)")
    p.add_argument("--ice-server", action="append", default=_env_list("ICE_SERVERS"), metavar="URL",
                   help="STUN/TURN URL given to browsers and the server (repeatable; default: none)")
    p.add_argument("--ice-username", default=_env("ICE_USERNAME"), help="TURN username")
    p.add_argument("--ice-credential-file", type=Path, default=_env("ICE_CREDENTIAL_FILE"),
                   help="file holding the TURN credential (or CONSULT_ICE_CREDENTIAL; never on the command line)")
    p.add_argument("--ice-credential", help=argparse.SUPPRESS)  # refused below, with the reason
    p.add_argument("--media-host-address", action="append", default=_env_list("MEDIA_HOST_ADDRESSES"),
                   metavar="ADDR", help="offer only these local addresses as ICE host candidates (repeatable)")
    p.add_argument("--no-demo-room", action="store_true", default=_env("NO_DEMO_ROOM") == "1")
    p.add_argument("--processors", default=_env("PROCESSORS", "face-analysis"),
                   help="frame processors for new rooms, comma-separated ('' for none; default: face-analysis)")
    p.add_argument("--live-watermark", default=_env("LIVE_WATERMARK", "off"), choices=LIVE_WATERMARK_MODES,
                   help="live video watermark for new rooms and the demo room: off, page (the page draws the "
                        "viewer's label) or server (visible + forensic marks burned in per viewer; default: off)")
    p.add_argument("--language", default=_env("ROOM_LANGUAGE"), choices=LOCALES,
                   help="the demo room's language (its prompts, the pages its links open); default: each browser's")
    p.add_argument("--clinic-contact", default=_env("CLINIC_CONTACT"), metavar="TEXT",
                   help="how patients reach the clinic, e.g. 'Call 021-5555 0123', on the patient page's waiting "
                        "room and error screens of rooms without a contact of their own and of links that name no "
                        "room (default: none)")
    p.add_argument("--turn-url", action="append", default=_env_list("TURN_URLS"), metavar="URL",
                   help="TURN relay for browsers, e.g. turn:turn.clinic.example:3478?transport=tcp (repeatable), with "
                        "per-session credentials for coturn's use-auth-secret (docs/DEPLOY.md)")
    p.add_argument("--turn-secret-file", type=Path, default=_env("TURN_SECRET_FILE"),
                   help="file holding coturn's static-auth-secret (default: generated in the data dir)")
    p.add_argument("--turn-ttl", type=int, default=int(_env("TURN_TTL", str(6 * 3600))), metavar="S",
                   help="how long a session's TURN credential is valid (seconds; default: 21600)")
    p.add_argument("--webhook", action="append", default=_env_list("WEBHOOKS"), metavar="URL",
                   help="POST consultation events here, signed (repeatable; docs/DEPLOY.md; default: none)")
    p.add_argument("--webhook-secret-file", type=Path, default=_env("WEBHOOK_SECRET_FILE"),
                   help="file holding the webhook signing secret (default: generated in the data dir)")
    p.add_argument("--webhook-retry-max", type=float, default=float(_env("WEBHOOK_RETRY_MAX", "300")), metavar="S",
                   help="longest wait between two attempts of a webhook (seconds; default: 300)")
    p.add_argument("--metrics-address", default=_env("METRICS_ADDRESS"), metavar="HOST:PORT",
                   help="serve Prometheus /metrics there, without a key (default: /metrics on the main port, "
                        "behind the admin key)")
    p.add_argument("--redis-url", default=_env("REDIS_URL"), metavar="URL",
                   help="redis://[:password@]host:port/db shared by several nodes: the room list and revoked links "
                        "(docs/DEPLOY.md; a password belongs in CONSULT_REDIS_URL, not the command line)")
    p.add_argument("--node-url", default=_env("NODE_URL"), metavar="URL",
                   help="with --redis-url: where the other nodes reach this one (joins relayed to the node running "
                        "the room); default: the public URL")
    p.add_argument("--drain-grace", type=float, default=float(_env("DRAIN_GRACE", "600")), metavar="S",
                   help="on SIGTERM: take no new rooms (with --redis-url), let calls end for up to S seconds, "
                        "then move what is left (its pages rejoin) and stop (default 600)")
    p.add_argument("--workers", default=_env("WORKERS", "auto"), metavar="N",
                   help="with --redis-url: N worker processes on this machine, each a node, sharing the port "
                        "(one process forwards on one core); default auto: one per core this process may use "
                        "with --redis-url, else 1")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    p.add_argument("--internal-port", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--internal-host", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    p.add_argument("--log-format", default=_env("LOG_FORMAT", "text"), choices=LOG_FORMATS,
                   help="text (default) or json: one JSON object a line with room, participant and request ids")
    a = p.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.ice_credential is not None:
        p.error("--ice-credential is not accepted: a command line is visible to every user of the machine "
                "(ps); set CONSULT_ICE_CREDENTIAL or pass --ice-credential-file")
    credential = _env("ICE_CREDENTIAL")
    if a.ice_credential_file is not None:
        credential = _secret_from_file(p, a.ice_credential_file, "TURN credential")
    try:
        check_turn_urls(a.turn_url)
    except ValueError as exc:
        p.error(str(exc))
    turn_secret = None if a.turn_secret_file is None else _secret_from_file(p, a.turn_secret_file, "TURN secret")
    if (problem := room_text_problem("contact", a.clinic_contact or None)) is not None:
        p.error(problem.replace("'contact'", "--clinic-contact"))
    if a.turn_ttl < 60:
        p.error("--turn-ttl is at least 60 seconds")
    try:
        check_endpoints(a.webhook)
    except ValueError as exc:
        p.error(str(exc))
    webhook_secret = None
    if a.webhook_secret_file is not None:
        webhook_secret = _secret_from_file(p, a.webhook_secret_file, "webhook secret")
        try:
            secret_key(webhook_secret)
        except ValueError as exc:
            p.error(f"the webhook secret file {a.webhook_secret_file}: {exc}")
    if a.metrics_address:
        try:
            parse_address(a.metrics_address)
        except ValueError as exc:
            p.error(str(exc))
    if a.redis_url is not None and not a.redis_url.startswith(("redis://", "rediss://", "unix://")):
        p.error("--redis-url must be a redis://, rediss:// or unix:// URL")
    try:
        a.workers = worker_count(a.workers, shared_state=a.redis_url is not None)
    except ValueError as exc:
        p.error(str(exc))
    if a.workers > 1 and a.redis_url is None:
        p.error("--workers above 1 needs --redis-url: the workers share rooms and links through it")
    if a.drain_grace < 0:
        p.error("--drain-grace is 0 seconds or more")
    if a.webhook_retry_max < 1:
        p.error("--webhook-retry-max is at least 1 second")
    try:
        configure_logging(a.log_level, a.log_format)  # secrets masked in both formats (signalling/log_format.py)
    except ValueError as exc:
        p.error(str(exc))
    from media.processors.face_processor import CATALOGUE as PROCESSORS

    unknown = [n for n in a.processors.split(",") if n.strip() and n.strip() not in PROCESSORS]
    if unknown:
        p.error(f"unknown processors {unknown}; available: {', '.join(PROCESSORS)}")
    servers = [IceServerConfig(urls=[url], username=a.ice_username, credential=credential)
               for url in a.ice_server]
    return ServerConfig(
        host=a.host, port=a.port, data_dir=a.data_dir, public_url=a.public_url,
        tls_cert=a.tls_cert, tls_key=a.tls_key, tls_self_signed=a.tls_self_signed,
        ice=IceConfig(servers=servers, host_addresses=a.media_host_address),
        demo_room=not a.no_demo_room,
        demo_language=a.language,
        default_processors=[name.strip() for name in a.processors.split(",") if name.strip()],
        default_live_watermark=a.live_watermark,
        clinic_contact=a.clinic_contact or None,
        turn_urls=tuple(a.turn_url),
        turn_secret=turn_secret,
        turn_ttl_s=a.turn_ttl,
        webhook_urls=tuple(a.webhook),
        webhook_secret=webhook_secret,
        webhook_retry_max_s=a.webhook_retry_max,
        metrics_address=a.metrics_address,
        redis_url=a.redis_url,
        node_url=a.node_url,
        drain_grace_s=a.drain_grace,
        workers=a.workers,
        worker_index=a.worker_index,
        internal_port=a.internal_port,
        internal_host=a.internal_host,
    )


async def demo_links(services) -> dict[str, str]:
    registry = services.registry
    # A new instance per start: links printed by an earlier run stop working (stale_link)
    # and its recordings stay with its own trainer links.
    room = await registry.get_room(DEMO_ROOM_ID)
    if room is not None and room.open and services.shared is not None:
        # several nodes share it: a node starting must not end a call another node runs
        return _demo_links_for(services, room)
    if room is not None and room.open:
        await services.rooms.close_room(DEMO_ROOM_ID)
    room = await registry.create_room("Demo consultation", DEMO_ROOM_ID, services.config.max_participants,
                                      processors=services.config.default_processors,
                                      language=services.config.demo_language,
                                      live_watermark=services.config.default_live_watermark)
    return _demo_links_for(services, room)


def _demo_links_for(services, room) -> dict[str, str]:
    links = {}
    for role in DEMO_ROLES:
        name = text(f"role.{role}", room.language or DEFAULT_LOCALE)
        token = services.issuer.mint(room=room.id, identity=f"demo-{role}", name=name, role=role,
                                     ttl_s=services.config.link_ttl_s, instance=room.instance,
                                     language=room.language)
        links[role] = f"{services.config.base_url()}{PAGE_FOR_ROLE[role]}#token={token}"
    return links


async def serve(config: ServerConfig) -> None:
    restrict_host_addresses(config.ice.host_addresses)
    services = build_services(config)
    app = create_app(services)
    ssl_context = None
    if config.tls_self_signed:
        ssl_context = server_ssl_context(*self_signed_certificate(config.data_dir, [config.host]))
    elif config.tls_cert:
        assert config.tls_key is not None  # parse_args takes --tls-cert only together with --tls-key
        ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
    runner = web.AppRunner(app, access_log=None, **runner_options(app))  # header timeout (signalling/http_limits.py)
    await runner.setup()
    worker = config.worker_index is not None  # the workers share the port; the kernel spreads connections
    await web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context, reuse_port=worker).start()
    if config.internal_port is not None:  # where the other workers reach this one (relays, admin calls)
        await web.TCPSite(runner, config.internal_host, config.internal_port).start()
    metrics_runner = None
    if config.metrics_address:
        metrics_host, metrics_port = parse_address(config.metrics_address)
        metrics_runner = await app[METRICS_KEY].serve(metrics_host, metrics_port)

    print(f"consult-sfu listening on {config.base_url()}", flush=True)
    if config.demo_room:
        links = await demo_links(services)
        print(f"Demo room '{DEMO_ROOM_ID}' - join links (valid {config.link_ttl_s // 3600} h):")
        for role, url in links.items():
            print(f"  {role + ':':8} {url}")
    print(f"Admin API key: {config.data_dir / 'admin.key'} (Authorization: Bearer <key>)", flush=True)
    if config.metrics_address:
        print(f"Metrics: http://{metrics_host}:{metrics_port}/metrics (no key: bind it where only Prometheus reaches)",
              flush=True)
    stop = asyncio.Event()

    async def drain_then_stop() -> None:
        try:
            await services.rooms.drain(config.drain_grace_s)
        finally:
            stop.set()

    # SIGTERM (a service manager stopping it, an upgrade): drain first; Ctrl-C stops at once
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(drain_then_stop()))
    try:
        await stop.wait()
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    os.umask(PRIVATE_UMASK)
    args = sys.argv[1:] if argv is None else argv
    config = parse_args(args)
    if config.workers > 1 and config.worker_index is None:
        prepare_shared_files(config)
        sys.exit(WorkerSupervisor(Path(__file__).resolve(), args, config.workers, port=config.port,
                                  metrics_address=config.metrics_address, node_url=config.node_url).run())
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
