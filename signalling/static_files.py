"""The pages and /static/: compressed, content-versioned and cached in memory (issue 19).

A phone on a slow link pays for bytes and for round trips, so both are cut:

- **Compression** is negotiated from `Accept-Encoding`: brotli (`br`) when the client takes
  it and the Brotli package is installed, else gzip, else none (q-values honoured, `q=0`
  refuses; without the header the body goes uncompressed). Compressed bodies are made once,
  in a worker thread (never on the event loop that forwards media), and kept in memory with
  the file's stat; a file changed on disk is read and compressed again at its next request.
  Already-compressed types (fonts, images, video) and files under MIN_COMPRESS_BYTES go as
  they are, and so does a variant that saves less than a tenth.
- **Caching**: each page refers to its styles, scripts and font by a *versioned* URL,
  `/static/js/patient.js?v=<hash>`, written at serve time into the HTML attributes, the CSS
  `url()`s and the ES modules' `import`/`export ... from './x.js'`; the files on disk keep
  their plain names. The hash covers the file and everything it reaches (its imports, their
  imports, ...), so any change anywhere below gives a new URL all the way up. A request with
  the current version is answered `public, max-age=31536000, immutable`: a repeat visit costs
  the page and nothing for its assets, instead of one revalidation per module down a
  five-deep import waterfall (a round trip per level on a phone link). Any other request
  (no `v`, an old one) gets the current file with `no-cache`, so nothing stale is ever served.
- Every variant has its own strong ETag from the content hash (`If-None-Match` -> 304) and
  `Vary: Accept-Encoding` when there is more than one. The pages themselves stay `no-store`:
  they are the root that names the current versions (fetched afresh each time, ~1.5 KB
  compressed), and no-store keeps a page that showed a consultation out of Chrome's
  back/forward cache, which the pages are not written to be restored from (no pageshow handling).

Paths are checked before anything is opened: no empty, `.`, `..` or dot-file segment, and
the resolved file (symlinks followed) must lie inside the directory; anything else is a 404.
Range requests are ignored (a full 200, as HTTP allows): nothing under static/ is media.
Files over MAX_CACHED_BYTES are not cached or compressed but handed to aiohttp's
FileResponse (its own ETag and Range support). The security headers (http_headers) are added
by the app's on_response_prepare hook to every answer here, 304s and 404s included.

One StaticSite per directory serves the whole process (shared_site); the first request for a
page after a start builds the page and everything it reaches (~0.2 s of brotli on one core).
CompressedBodies gives bodies made at run time (e.g. the /i18n catalogues) the same
negotiation and ETags. Figures: docs/BENCHMARKS.md, "Patient page bytes on the wire".
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib
import mimetypes
import os
import posixpath
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Awaitable, Callable

from aiohttp import web

_brotli: ModuleType | None
try:
    _brotli = importlib.import_module("brotli")  # the Brotli package (untyped): br
except ImportError:  # br is then simply never offered
    _brotli = None

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_CACHE = "no-store"
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
VERSION_PARAM = "v"
MIN_COMPRESS_BYTES = 256
MIN_SAVING = 0.10            # keep a compressed variant only if it is at least this much smaller
MAX_CACHED_BYTES = 1 << 20   # larger files are streamed from disk by aiohttp, uncompressed
BROTLI_QUALITY = 11          # once per file version: the smallest body is worth the CPU
GZIP_LEVEL = 9
INCOMPRESSIBLE = frozenset({".woff", ".woff2", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".ico",
                            ".mp3", ".mp4", ".webm", ".ogg", ".gz", ".br", ".zip", ".zst"})
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}

# References rewritten to versioned URLs. Only these forms: nothing under static/ builds a URL
# at run time (tests/signalling/test_static_files.py checks every page's graph is versioned).
_HTML_REF = re.compile(rb"""\s(?:src|href)=(?P<q>["'])(?P<url>/static/[^"'?#\s]+)(?P=q)""")
_CSS_REF = re.compile(rb"""url\(\s*(?P<q>["']?)(?P<url>[^"'()?#\s]+)(?P=q)\s*\)""")
_JS_REF = re.compile(rb"""(?:\bfrom|\bimport)\s*\(?\s*(?P<q>["'])"""
                     rb"""(?P<url>\.{1,2}/[^"'?#\s]+|/static/[^"'?#\s]+)(?P=q)""")
_REFERENCES = {".html": _HTML_REF, ".css": _CSS_REF, ".js": _JS_REF, ".mjs": _JS_REF}
IMPLICIT_IDENTITY = 0.0001  # below the smallest q a client can write (0.001)
_QVALUE = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")

Stat = tuple[int, int, int]  # mtime_ns, size, inode: a file is read again when one changes


@dataclass(frozen=True)
class Variant:
    encoding: str  # "identity", "br" or "gzip"
    body: bytes
    etag: str      # strong, quoted


@dataclass(frozen=True)
class _Parsed:
    stat: Stat
    raw: bytes
    refs: tuple[tuple[int, str], ...]   # (offset just after the URL, the file it names); absent ones stay as they are


@dataclass
class Entry:
    rel: str
    content_type: str
    version: str                         # hash of the file and everything it reaches
    variants: tuple[Variant, ...]        # identity first
    signature: tuple[tuple[str, Stat | None], ...]
    closure: tuple[str, ...] = field(default=())
    large: Path | None = None            # served by FileResponse, not from memory


def content_type(rel: str) -> str:
    suffix = posixpath.splitext(rel)[1].lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "application/octet-stream"


def accepted_codings(header: str | None) -> dict[str, float]:
    """Accept-Encoding as {coding: q}; no header: identity only (not 'anything', in practice)."""
    if header is None:
        return {"identity": 1.0}
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        name = name.lower()
        if not name:
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.match(value) else 0.0  # a malformed q accepts nothing
        weights.setdefault("gzip" if name == "x-gzip" else name, weight)
    return weights


def coding_weight(weights: dict[str, float], coding: str) -> float:
    if coding in weights:
        return weights[coding]
    if "*" in weights:
        return weights["*"]
    # identity is acceptable unless refused, but after every coding the client listed
    return IMPLICIT_IDENTITY if coding == "identity" else 0.0


def choose_variant(variants: tuple[Variant, ...], header: str | None) -> Variant:
    """The acceptable variant with the highest q, the smallest on a tie; identity if none is."""
    weights = accepted_codings(header)
    acceptable = [v for v in variants if coding_weight(weights, v.encoding) > 0]
    if not acceptable:
        return variants[0]  # the client refused identity too: it gets identity (RFC 9110 12.5.3)
    return max(acceptable, key=lambda v: (coding_weight(weights, v.encoding), -len(v.body)))


def matching_variant(variants: tuple[Variant, ...], chosen: Variant, header: str | None,
                     accept_encoding: str | None) -> Variant | None:
    """The variant an If-None-Match names (weak comparison), if the client may still use it."""
    if header is None:
        return None
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if "*" in tags or chosen.etag in tags:
        return chosen
    weights = accepted_codings(accept_encoding)
    for variant in variants:
        if variant.etag in tags and coding_weight(weights, variant.encoding) > 0:
            return variant
    return None


def compressed_variants(body: bytes, tag: str, suffix: str) -> tuple[Variant, ...]:
    """identity, then br and gzip where they are worth it."""
    variants = [Variant("identity", body, f'"{tag}"')]
    if len(body) < MIN_COMPRESS_BYTES or suffix in INCOMPRESSIBLE:
        return tuple(variants)
    candidates = []
    if _brotli is not None:
        candidates.append(("br", _brotli.compress(body, quality=BROTLI_QUALITY)))
    candidates.append(("gzip", gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)))
    for coding, packed in candidates:
        if len(packed) <= len(body) * (1 - MIN_SAVING):
            variants.append(Variant(coding, packed, f'"{tag}-{coding}"'))
    return tuple(variants)


def negotiated_response(request: web.Request, variants: tuple[Variant, ...], content_type: str,
                        cache_control: str) -> web.Response:
    """The variant the request accepts best, or a 304 for the one its If-None-Match names."""
    accept = request.headers.get("Accept-Encoding")
    chosen = choose_variant(variants, accept)
    headers = {"Cache-Control": cache_control}
    if len(variants) > 1:
        headers["Vary"] = "Accept-Encoding"
    matched = matching_variant(variants, chosen, request.headers.get("If-None-Match"), accept)
    if matched is not None:
        headers["ETag"] = matched.etag
        return web.Response(status=304, headers=headers)
    headers["ETag"] = chosen.etag
    headers["Content-Type"] = content_type
    if chosen.encoding != "identity":
        headers["Content-Encoding"] = chosen.encoding
    return web.Response(body=chosen.body, headers=headers)


class CompressedBodies:
    """The same negotiation for bodies made at run time (e.g. the /i18n catalogues): their
    variants are made once per distinct body, in a worker thread, and the last few kept."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._variants: dict[str, tuple[Variant, ...]] = {}  # insertion order: oldest first

    async def respond(self, request: web.Request, body: bytes, content_type: str,
                      cache_control: str = REVALIDATE) -> web.Response:
        tag = hashlib.sha256(body).hexdigest()[:20]
        variants = self._variants.get(tag)
        if variants is None:
            variants = await asyncio.get_running_loop().run_in_executor(None, compressed_variants, body, tag, "")
            self._variants[tag] = variants
            while len(self._variants) > self.keep:
                del self._variants[next(iter(self._variants))]
        return negotiated_response(request, variants, content_type, cache_control)


class StaticSite:
    """One directory served as pages (page()) and under a prefix (asset()); see the module docstring."""

    prefix = "/static/"  # where asset() is routed; the URLs rewritten into pages start with it

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.real_root = self.root.resolve()
        self._entries: dict[str, Entry] = {}
        self._parsed: dict[str, _Parsed] = {}
        self._lock = threading.Lock()  # one build at a time; builds run in worker threads

    # --- serving ---------------------------------------------------------------------------------

    def page(self, name: str) -> Handler:
        """A handler for one page (e.g. "patient.html"): versioned asset URLs, never stored."""
        async def handler(request: web.Request) -> web.StreamResponse:
            entry = await self.entry(name, with_closure=True)
            if entry is None:
                raise web.HTTPNotFound()
            return self.respond(request, entry, PAGE_CACHE)
        return handler

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """The handler for `<prefix>{path:.*}`."""
        entry = await self.entry(request.match_info["path"])
        if entry is None:
            raise web.HTTPNotFound()
        if entry.rel.endswith(".html"):
            cache = PAGE_CACHE
        elif request.query.get(VERSION_PARAM) == entry.version:
            cache = IMMUTABLE
        else:
            cache = REVALIDATE
        if entry.large is not None:
            response = web.FileResponse(entry.large)
            response.headers["Cache-Control"] = REVALIDATE
            return response
        return self.respond(request, entry, cache)

    def routes(self) -> list[web.RouteDef]:
        """GET and HEAD of everything under the prefix."""
        return [web.get(self.prefix + "{path:.*}", self.asset)]

    def respond(self, request: web.Request, entry: Entry, cache_control: str) -> web.Response:
        return negotiated_response(request, entry.variants, entry.content_type, cache_control)

    # --- the cache ---------------------------------------------------------------------------------

    async def entry(self, rel: str, with_closure: bool = False) -> Entry | None:
        """The current entry of `rel` (None: no such file here); built in a thread when missing or stale.
        with_closure: also build what it reaches, so a page's assets are ready when they are asked for."""
        entry = self._entries.get(rel)
        if entry is not None and self._fresh(entry):
            return entry
        return await asyncio.get_running_loop().run_in_executor(None, self.build, rel, with_closure)

    def build(self, rel: str, with_closure: bool = False) -> Entry | None:
        """Blocking: read, rewrite, hash and compress `rel` unless a fresh entry exists."""
        with self._lock:
            entry = self._build_locked(rel)
            if entry is not None and with_closure:
                for other in entry.closure:
                    self._build_locked(other)
            return entry

    def _build_locked(self, rel: str) -> Entry | None:
        entry = self._entries.get(rel)
        if entry is not None and self._fresh(entry):
            return entry
        self._entries.pop(rel, None)
        path = self._safe_path(rel)
        if path is None:
            return None
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if size > MAX_CACHED_BYTES:
            stat = self._stat(rel)
            if stat is None:
                return None
            entry = Entry(rel, content_type(rel), "", (), ((rel, stat),), large=path)
            self._entries[rel] = entry
            return entry
        parsed = self._parse(rel)
        if parsed is None:
            return None
        closure, missing = self._closure(rel)
        body = bytearray(parsed.raw)
        for offset, target in reversed(parsed.refs):
            if target in closure:  # a name that is absent (or leads out of the root) is left as it is
                body[offset:offset] = f"?{VERSION_PARAM}={self._version(target)}".encode()
        tag = hashlib.sha256(body).hexdigest()[:20]
        # what was absent is watched too: its arrival changes the URLs written into this file
        signature = (tuple((r, self._parsed[r].stat) for r in sorted(closure))
                     + tuple((m, self._stat(m)) for m in missing))
        entry = Entry(rel, content_type(rel), self._version(rel),
                      compressed_variants(bytes(body), tag, posixpath.splitext(rel)[1].lower()),
                      signature, closure=tuple(sorted(closure - {rel})))
        self._entries[rel] = entry
        return entry

    def _fresh(self, entry: Entry) -> bool:
        return all(self._stat(rel) == stat for rel, stat in entry.signature)

    def _closure(self, rel: str) -> tuple[set[str], tuple[str, ...]]:
        """Every file `rel` reaches (itself included), and the names it reaches that do not exist."""
        seen: set[str] = set()
        missing: set[str] = set()
        stack = [rel]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            parsed = self._parse(current)
            if parsed is None:
                missing.add(current)
                continue
            seen.add(current)
            stack.extend(target for _, target in parsed.refs)
        return seen, tuple(sorted(missing))

    def _version(self, rel: str) -> str:
        digest = hashlib.sha256()
        for name in sorted(self._closure(rel)[0]):
            raw = self._parsed[name].raw
            digest.update(f"{name}\0{len(raw)}\0".encode())
            digest.update(raw)
        return digest.hexdigest()[:16]

    def _parse(self, rel: str) -> _Parsed | None:
        """The file's bytes and the files it names, read again only when its stat changed."""
        path = self._safe_path(rel)
        if path is None:
            self._parsed.pop(rel, None)
            return None
        cached = self._parsed.get(rel)
        if cached is not None and cached.stat == self._stat(rel):
            return cached
        try:
            with open(path, "rb") as file:
                info = os.fstat(file.fileno())
                if info.st_size > MAX_CACHED_BYTES:
                    return None
                raw = file.read()
        except OSError:
            return None
        refs = []
        pattern = _REFERENCES.get(posixpath.splitext(rel)[1].lower())
        if pattern is not None:
            for match in pattern.finditer(raw):
                try:
                    target = self._target(rel, match["url"].decode("utf-8"))
                except UnicodeDecodeError:
                    continue
                if target is not None:
                    refs.append((match.end("url"), target))
        parsed = _Parsed((info.st_mtime_ns, info.st_size, info.st_ino), raw, tuple(refs))
        self._parsed[rel] = parsed
        return parsed

    def _target(self, rel: str, url: str) -> str | None:
        """The file a reference in `rel` names, relative to the root; None if outside or not a plain path."""
        if "%" in url or "\\" in url:
            return None
        if url.startswith(self.prefix):
            target = url[len(self.prefix):]
        elif url.startswith(("./", "../")):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), url))
        elif not url.startswith("/") and ":" not in url and posixpath.splitext(rel)[1] == ".css":
            target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), url))
        else:
            return None
        return target if _plain(target) else None

    def _safe_path(self, rel: str) -> Path | None:
        """The file `rel` names if it is a regular file inside the root (symlinks resolved), else None."""
        if not _plain(rel):
            return None
        try:
            real = (self.root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.real_root) or not real.is_file():
            return None
        return real

    def _stat(self, rel: str) -> Stat | None:
        if not _plain(rel):
            return None
        try:
            info = os.stat(self.root / rel)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)


def _plain(rel: str) -> bool:
    """A relative path of ordinary names: no empty, '.', '..' or hidden segment, no backslash or NUL."""
    if not rel or "\\" in rel or "\0" in rel:
        return False
    return all(part and not part.startswith(".") for part in rel.split("/"))


_shared: dict[Path, StaticSite] = {}
_shared_lock = threading.Lock()


def shared_site(root: Path) -> StaticSite:
    """One StaticSite (one cache) per directory for the whole process: the app's pages and routes,
    the trainer page (replay_api) and every app a test suite creates share it."""
    key = Path(root).resolve()
    with _shared_lock:
        site = _shared.get(key)
        if site is None:
            site = _shared[key] = StaticSite(key)
        return site
