"""Security headers on every response, and aiohttp's own answers to malformed requests kept
quiet and anonymous (docs/SECURITY.md)."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError

SERVER_HEADER = "consult-sfu"  # no version: it only helps someone matching exploits to it

# camera and microphone for our own pages only; the screen wake lock keeps the patient's phone on
PERMISSIONS_POLICY = ("camera=(self), microphone=(self), screen-wake-lock=(self), fullscreen=(self), "
                      "autoplay=(self), display-capture=(), geolocation=(), payment=(), usb=()")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def inline_style_hashes(static_dir: Path) -> list[str]:
    """CSP hashes of the pages' inline <style> blocks (index.html has one), so no 'unsafe-inline'."""
    hashes = set()
    for page in sorted(static_dir.glob("*.html")):
        for block in re.findall(r"<style[^>]*>(.*?)</style>", page.read_text(encoding="utf-8"), re.S):
            digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            hashes.add(f"'sha256-{digest}'")
    return sorted(hashes)


def content_security_policy(host: str, style_hashes: list[str]) -> str:
    # The pages load only their own modules and styles; media is MediaStreams and, for
    # replays, MediaSource blob: URLs; stills are data: thumbnails; the socket is /ws on
    # the page's own host ('self' covers ws: in CSP3, not in every phone's browser yet).
    sockets = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src " + " ".join(["'self'", *style_hashes]),
        "img-src 'self' data:", "media-src 'self' blob:", "font-src 'self'", f"connect-src 'self'{sockets}",
        "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    ])


def security_headers(style_hashes: list[str]) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """on_response_prepare: every response of the app (pages, static files, API, its errors, the 101)."""
    async def add(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", content_security_policy(request.host, style_hashes))
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for browsers without CSP2
        headers.setdefault("Referrer-Policy", "no-referrer")  # join links carry the token (in the fragment)
        headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    return add


def hide_server_version() -> None:
    """`Server: consult-sfu` on every response, aiohttp's own 400s for malformed requests
    included (they bypass on_response_prepare): aiohttp has no setting for it, only this
    module constant, read each time a response's headers are prepared."""
    web_response.SERVER_SOFTWARE = SERVER_HEADER


class OneLineBadRequests(logging.Filter):
    """aiohttp logs each malformed request (bad request line, header, oversized line) at
    ERROR with a traceback: a client's bad bytes are worth one INFO line, not a page."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = f"{record.getMessage()}: {type(exc).__name__}, answered {exc.code}", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in server_log.filters):
        server_log.addFilter(OneLineBadRequests())
