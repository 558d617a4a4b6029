"""The patient page's bytes on the wire: uncompressed (as before issue 19), first visit, repeat visit.

    python -m loadtest.bench_page_bytes [--page /patient] [--locale en] [--json /tmp/page-bytes.json]

Starts the real app (signalling.app.create_app, a throw-away data directory) on 127.0.0.1
and loads the page as a phone browser does, over one keep-alive HTTP/1.1 connection with a
raw client that counts every byte: the HTML, every `src`/`href` it names, each stylesheet's
`url()`s, every ES module's `import ... from './x.js'` followed recursively, and the
`/i18n/<locale>.json` catalogue the page fetches once its modules run. Rows, one run:

- *before (no compression)*: `Accept-Encoding: identity`, what every client got before;
- *first visit*: `Accept-Encoding: gzip, deflate, br` (a phone browser), and gzip only;
- *repeat visit*: the browser's cache after the first visit, as its headers allow it: an
  `immutable` response within its max-age costs nothing, `no-cache` is revalidated with
  `If-None-Match` (a 304 when unchanged), `no-store` and no validator are fetched again;
- *repeat visit, assets revalidated*: the alternative not chosen (plain asset URLs,
  `no-cache` + ETag): every asset revalidated, the ETags of the first visit sent back.

Bytes are HTTP/1.1 responses as sent (status line, headers, body); TCP/IP and TLS framing
are not counted. "Round trips" is the length of the longest chain of requests that each
wait for the previous answer (page, module, its import, ..., catalogue). The time at
1 Mbit/s is computed (bytes x 8 / 1e6), not measured: it leaves out round trips, TCP
slow start and TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urljoin, urlsplit

from aiohttp import web

from loadtest.harness import machine_info
from signalling.app import build_services, create_app
from signalling.config import ServerConfig

PHONE_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36")
ACCEPT = {"document": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
          "style": "text/css,*/*;q=0.1", "script": "*/*", "font": "*/*", "fetch": "*/*"}
LINK_MBIT_S = 1.0

_HTML_REF = re.compile(r"""\s(?:src|href)=["']([^"']+)["']""")
_CSS_REF = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")
_JS_REF = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*["']((?:\.{1,2}/|/)[^"']+)["']""")


@dataclass
class Fetch:
    url: str
    kind: str
    depth: int                      # requests in the chain that leads to this one (the page: 1)
    parent: str = ""                # the answer that named it (the catalogue: the last module)
    status: int = 0
    request_bytes: int = 0
    header_bytes: int = 0
    body_bytes: int = 0
    encoding: str = "identity"
    cache_control: str = ""
    etag: str = ""
    from_cache: bool = False        # a repeat visit that needed no request

    @property
    def wire_bytes(self) -> int:
        return self.header_bytes + self.body_bytes


@dataclass
class Visit:
    name: str
    fetches: list[Fetch] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        sent = [f for f in self.fetches if not f.from_cache]
        wire = sum(f.wire_bytes for f in sent)
        return {"visit": self.name, "requests": len(sent), "round_trips": max(map(self.chain, sent), default=0),
                "not_modified": sum(f.status == 304 for f in sent), "wire_bytes": wire,
                "header_bytes": sum(f.header_bytes for f in sent), "body_bytes": sum(f.body_bytes for f in sent),
                "request_bytes": sum(f.request_bytes for f in sent),
                "seconds_at_1_mbit_s": wire * 8 / (LINK_MBIT_S * 1e6)}

    def chain(self, fetch: Fetch) -> int:
        """Requests that went over the network in the chain ending at `fetch` (answers from the cache are free)."""
        by_url = {f.url: f for f in self.fetches}
        count = 0
        current: Optional[Fetch] = fetch
        while current is not None:
            count += not current.from_cache
            current = by_url.get(current.parent)
        return count


class RawClient:
    """One keep-alive HTTP/1.1 connection; every request and response counted in bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, int, dict[str, str], bytes, int]:
        """status, request bytes, response headers (lower-case names), body, header bytes."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: keep-alive",
                 *(f"{k}: {v}" for k, v in headers.items())]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        response_headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
        if response_headers.get("transfer-encoding"):
            raise RuntimeError(f"{path}: chunked answer; this client reads Content-Length bodies only")
        length = 0 if status in (204, 304) else int(response_headers.get("content-length", "0"))
        body = await self.reader.readexactly(length)
        if response_headers.get("connection", "").lower() == "close":
            await self.close()
        return status, len(request), response_headers, body, len(head)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
        self.reader = self.writer = None


def decoded(encoding: str, body: bytes) -> bytes:
    if encoding == "br":
        return bytes(importlib.import_module("brotli").decompress(body))  # Brotli ships no types
    if encoding == "gzip":
        import gzip
        return gzip.decompress(body)
    return body


def references(kind: str, url: str, text: str) -> list[tuple[str, str]]:
    """(url, kind) of everything a document, stylesheet or module loads, resolved against `url`."""
    found: list[tuple[str, str]] = []
    if kind == "document":
        for ref in _HTML_REF.findall(text):
            if ref.startswith("data:"):
                continue
            path = urlsplit(ref).path
            found.append((ref, "style" if path.endswith(".css") else "script" if path.endswith(".js") else "other"))
    elif kind == "style":
        found = [(ref, "font" if re.search(r"\.(woff2?|ttf|otf)$", urlsplit(ref).path) else "other")
                 for ref in _CSS_REF.findall(text) if not ref.startswith("data:")]
    elif kind == "script":
        found = [(ref, "script") for ref in _JS_REF.findall(text)]
    return [(urljoin(url, ref), k) for ref, k in found]


async def first_visit(client: RawClient, page: str, locale: str, accept_encoding: str, name: str) -> Visit:
    """The page and everything it loads, breadth first, each URL once (as the browser's module map)."""
    visit = Visit(name)
    seen: set[str] = set()
    queue: list[tuple[str, str, int, str]] = [(page, "document", 1, "")]
    while queue:
        url, kind, depth, parent = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        fetch = await request(client, url, kind, depth, accept_encoding)
        fetch.parent = parent
        visit.fetches.append(fetch)
        if fetch.status != 200:
            raise RuntimeError(f"{url}: HTTP {fetch.status}")
        queue += [(ref, k, depth + 1, url) for ref, k in references(kind, url, fetch_text(fetch))]
    # the catalogue is fetched once the page's modules have all loaded and run
    last = max((f for f in visit.fetches if f.kind == "script"), key=lambda f: f.depth)
    catalogue = await request(client, f"/i18n/{locale}.json", "fetch", last.depth + 1, accept_encoding)
    catalogue.parent = last.url
    visit.fetches.append(catalogue)
    return visit


_bodies: dict[str, str] = {}


def fetch_text(fetch: Fetch) -> str:
    return _bodies.get(fetch.url, "")


async def request(client: RawClient, url: str, kind: str, depth: int, accept_encoding: str,
                  if_none_match: str = "") -> Fetch:
    headers = {"User-Agent": PHONE_UA, "Accept": ACCEPT.get(kind, "*/*"), "Accept-Encoding": accept_encoding,
               "Accept-Language": "en-US,en;q=0.9"}
    if if_none_match:
        headers["If-None-Match"] = if_none_match
    status, sent, response_headers, body, head = await client.get(url, headers)
    encoding = response_headers.get("content-encoding", "identity")
    if status == 200:
        _bodies[url] = decoded(encoding, body).decode("utf-8", errors="replace")
    return Fetch(url=url, kind=kind, depth=depth, status=status, request_bytes=sent, header_bytes=head,
                 body_bytes=len(body), encoding=encoding, cache_control=response_headers.get("cache-control", ""),
                 etag=response_headers.get("etag", ""))


def fresh_in_cache(cache_control: str) -> bool:
    directives = {d.strip().split("=")[0]: d.strip() for d in cache_control.lower().split(",") if d.strip()}
    if "no-store" in directives or "no-cache" in directives or "max-age" not in directives:
        return False
    return int(directives["max-age"].split("=")[1]) > 0


async def repeat_visit(client: RawClient, first: Visit, accept_encoding: str, name: str,
                       plain_asset_urls: bool = False) -> Visit:
    """What the browser sends again after `first`, as its answers' headers allow. plain_asset_urls: the
    alternative of no versioned URLs, every /static/ asset `no-cache` + ETag (revalidated)."""
    visit = Visit(name)
    for done in first.fetches:
        plain = plain_asset_urls and done.url.startswith("/static/")
        cache_control = "no-cache" if plain else done.cache_control
        if fresh_in_cache(cache_control) and "immutable" in cache_control:
            visit.fetches.append(Fetch(url=done.url, kind=done.kind, depth=done.depth, parent=done.parent,
                                       from_cache=True, cache_control=cache_control))
            continue
        revalidate = "no-store" not in cache_control and done.etag
        fetch = await request(client, done.url.split("?")[0] if plain else done.url, done.kind, done.depth,
                              accept_encoding, if_none_match=done.etag if revalidate else "")
        fetch.url, fetch.parent = done.url, done.parent  # the chain as the first visit found it
        visit.fetches.append(fetch)
    return visit


async def run(page: str, locale: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-page-bytes-") as tmp:
        config = ServerConfig(data_dir=Path(tmp) / "data", demo_room=False, default_processors=[])
        runner = web.AppRunner(create_app(build_services(config)), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = RawClient("127.0.0.1", port)
        try:
            # a warm server, as a patient meets it: the first request after a start builds the cache
            started = time.perf_counter()
            await request(client, page, "document", 1, "gzip, deflate, br")
            build_s = time.perf_counter() - started
            before = await first_visit(client, page, locale, "identity", "before (no compression)")
            phone = await first_visit(client, page, locale, "gzip, deflate, br", "first visit (br)")
            gzip_only = await first_visit(client, page, locale, "gzip, deflate", "first visit (gzip only)")
            repeat = await repeat_visit(client, phone, "gzip, deflate, br", "repeat visit (as built)")
            revalidated = await repeat_visit(client, phone, "gzip, deflate, br",
                                             "repeat visit, assets revalidated (not chosen)", plain_asset_urls=True)
        finally:
            await client.close()
            await runner.cleanup()
    visits = [before, phone, gzip_only, repeat, revalidated]
    return {"page": page, "locale": locale, "cache_build_s": build_s, "machine": machine_info(),
            "summary": [v.summary() for v in visits],
            "by_kind": by_kind(before, phone),
            "fetches": {v.name: [asdict(f) for f in v.fetches] for v in visits}}


def by_kind(before: Visit, after: Visit) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for label, visit in (("before", before), ("after", after)):
        for f in visit.fetches:
            kind = {"document": "HTML", "style": "CSS", "script": "JS modules", "font": "font",
                    "fetch": "i18n catalogue"}.get(f.kind, f.kind)
            row = rows.setdefault(kind, {"kind": kind, "files": 0, "before": 0, "after": 0})
            row[label] += f.wire_bytes
            if label == "before":
                row["files"] += 1
    return list(rows.values())


def print_report(result: dict[str, Any]) -> None:
    print(f"{result['page']} (catalogue /i18n/{result['locale']}.json); cache built by the first request in "
          f"{result['cache_build_s'] * 1000:.0f} ms")
    print()
    print("| visit | requests | 304s | round trips | bytes on the wire | of which headers | request bytes "
          "| at 1 Mbit/s (computed) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in result["summary"]:
        print(f"| {s['visit']} | {s['requests']} | {s['not_modified']} | {s['round_trips']} | {s['wire_bytes']:,} "
              f"| {s['header_bytes']:,} | {s['request_bytes']:,} | {s['seconds_at_1_mbit_s']:.2f} s |")
    print()
    print("| first visit, by kind | files | before (identity) | after (br) | saved |")
    print("|---|---:|---:|---:|---:|")
    for row in result["by_kind"]:
        saved = 1 - row["after"] / row["before"] if row["before"] else 0.0
        print(f"| {row['kind']} | {row['files']} | {row['before']:,} | {row['after']:,} | {saved:.0%} |")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_page_bytes", description=__doc__.split("\n")[0])
    parser.add_argument("--page", default="/patient", help="the page to load (default /patient)")
    parser.add_argument("--locale", default="en", help="the catalogue the page fetches (default en)")
    parser.add_argument("--json", type=Path, help="write every request's figures here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.page, args.locale))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
