"""Server configuration: embedded defaults, overridable by flags or environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from media.ice import IceConfig


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    tls_self_signed: bool = False
    public_url: Optional[str] = None  # base of printed/minted links; derived if unset
    ice: IceConfig = field(default_factory=IceConfig)
    demo_room: bool = True
    demo_language: Optional[str] = None  # i18n.LOCALES: the demo room's prompts and pages; None: the browser's
    # processors for rooms created without an explicit list (admin API, demo room)
    default_processors: list[str] = field(default_factory=lambda: ["face-analysis"])
    # live video watermarking for rooms created without an explicit setting: off | page | server
    default_live_watermark: str = "off"
    link_ttl_s: int = 12 * 3600
    # how a patient reaches the clinic, on pages that cannot know the room (a garbled link) and in
    # rooms without a `contact` of their own; None: no contact line
    clinic_contact: Optional[str] = None
    max_participants: int = 8
    join_timeout_s: float = 10.0
    answer_timeout_s: float = 15.0
    # webhooks (docs/DEPLOY.md): where to POST, the signing secret (None: data_dir/webhook.secret)
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: Optional[str] = None
    webhook_retry_max_s: float = 300.0
    # TURN (docs/DEPLOY.md): relay URLs handed to browsers with per-session credentials from the
    # secret shared with coturn (None: data_dir/turn.secret)
    turn_urls: tuple[str, ...] = ()
    turn_secret: Optional[str] = None
    turn_ttl_s: int = 6 * 3600
    # HOST:PORT serving /metrics without a key; None: /metrics on the main port, behind the admin key
    metrics_address: Optional[str] = None
    # redis:// URL shared by several nodes (rooms, revoked links: signalling/redis_state.py); None: this machine alone
    redis_url: Optional[str] = None
    # where the other nodes reach this one's HTTP server (joins relayed to the room's node); None: base_url()
    node_url: Optional[str] = None
    # on SIGTERM: how long calls may go on before what is left is moved (its pages rejoin) and the node stops
    drain_grace_s: float = 600.0
    # worker processes on this machine (signalling/workers.py); this process's index among them
    # (None: not a worker) and the loopback port where the others reach it
    workers: int = 1
    worker_index: Optional[int] = None
    internal_port: Optional[int] = None
    internal_host: str = "127.0.0.1"

    @property
    def uses_tls(self) -> bool:
        return self.tls_self_signed or self.tls_cert is not None

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.uses_tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"
