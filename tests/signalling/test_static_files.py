"""The pages and /static/ (signalling/static_files.py): br/gzip/identity negotiated from
Accept-Encoding with the right bytes after decoding, q-values, a strong ETag per variant and
304s, Vary, versioned asset URLs that are immutable and consistent across a page's module
graph, a file changed on disk served fresh, traversal and symlinks out of the directory
refused, HEAD, and the security headers on compressed answers, 304s and 404s."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from signalling import static_files
from signalling.app import build_services, create_app
from signalling.config import ServerConfig
from signalling.static_files import (
    IMMUTABLE,
    MIN_COMPRESS_BYTES,
    PAGE_CACHE,
    REVALIDATE,
    StaticSite,
    accepted_codings,
)

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
PHONE = "gzip, deflate, br"
ASSET = "/static/js/client.js"          # imports other modules: its body is rewritten
PLAIN = "/static/css/patient.css"       # references nothing: served byte for byte
PAGES = {"/patient": "patient.html", "/console": "console.html", "/trainer": "trainer.html", "/": "index.html"}
Client = TestClient


@pytest.fixture
async def client(aiohttp_client, tmp_path) -> Client:
    """The real app (create_app), with a client that leaves bodies as they came over the wire."""
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[])
    return await aiohttp_client(create_app(build_services(config)), auto_decompress=False)


@pytest.fixture
async def site_client(aiohttp_client) -> AsyncIterator[Callable[[Path], Awaitable[Client]]]:
    """A StaticSite on a directory of the test's own, served as the app serves static/."""
    async def make(root: Path) -> Client:
        site = StaticSite(root)
        app = web.Application()
        app.router.add_get("/page", site.page("page.html"))
        app.add_routes(site.routes())
        return await aiohttp_client(app, auto_decompress=False)
    yield make


def decode(encoding: str | None, body: bytes) -> bytes:
    if encoding == "br":
        return brotli.decompress(body)
    if encoding == "gzip":
        return gzip.decompress(body)
    assert encoding is None, encoding
    return body


async def fetch(client: Client, path: str, accept: str | None = "identity",
                **headers: str) -> tuple[int, CIMultiDict, bytes]:
    """Status, headers, and the body as sent; accept None sends no Accept-Encoding at all."""
    if accept is not None:
        headers["Accept-Encoding"] = accept
    skip = () if accept is not None else ("Accept-Encoding",)
    async with client.get(path, headers=headers, skip_auto_headers=skip) as response:
        return response.status, response.headers.copy(), await response.read()


def assert_security_headers(headers: CIMultiDict) -> None:
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer" and "camera=(self)" in headers["Permissions-Policy"]
    assert headers["Server"] == "consult-sfu"


# --- negotiation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("accept, encoding", [
    (PHONE, "br"), ("br", "br"), ("gzip", "gzip"), ("gzip, deflate", "gzip"), ("identity", None), (None, None),
    ("deflate", None), ("", None),
])
async def test_each_encoding_decodes_to_the_same_bytes(client, accept, encoding):
    _, _, plain = await fetch(client, ASSET, "identity")
    status, headers, body = await fetch(client, ASSET, accept)
    assert status == 200 and headers.get("Content-Encoding") == encoding
    assert int(headers["Content-Length"]) == len(body)
    assert decode(encoding, body) == plain
    assert headers["Content-Type"] == "text/javascript; charset=utf-8" and headers["Vary"] == "Accept-Encoding"
    assert_security_headers(headers)
    if encoding is not None:
        assert len(body) < len(plain) * 0.5


async def test_a_file_that_names_nothing_is_served_byte_for_byte(client):
    on_disk = (STATIC / "css/patient.css").read_bytes()
    for accept in (PHONE, "gzip", "identity"):
        _, headers, body = await fetch(client, PLAIN, accept)
        assert decode(headers.get("Content-Encoding"), body) == on_disk


@pytest.mark.parametrize("accept, encoding", [
    ("br;q=0, gzip", "gzip"),                  # refused outright
    ("br;q=0.5, gzip", "gzip"),                # preferred by q
    ("gzip;q=0.2, br;q=0.9", "br"),
    ("gzip;q=0.001, identity;q=0", "gzip"),
    ("*", "br"),                               # anything: the smallest
    ("*;q=0.5, br;q=0", "gzip"),
    ("br;q=0, gzip;q=0, *;q=0", None),         # nothing acceptable: identity rather than a 406
    ("X-GZIP", "gzip"), ("BR", "br"), (" gzip ; q=1.0 ", "gzip"),
    ("br;q=2, gzip;q=abc", None),              # malformed q-values accept nothing
    ("br;q=0.000", None),
])
async def test_q_values(client, accept, encoding):
    status, headers, body = await fetch(client, ASSET, accept)
    assert status == 200 and headers.get("Content-Encoding") == encoding, accept
    assert decode(encoding, body).startswith(b"//") or b"import" in decode(encoding, body)


def test_accept_encoding_parsing():
    assert accepted_codings(None) == {"identity": 1.0}
    assert accepted_codings("gzip;q=0.5, br") == {"gzip": 0.5, "br": 1.0}
    assert accepted_codings("br;level=3;q=0.25,,") == {"br": 0.25}
    assert accepted_codings("gzip, gzip;q=0") == {"gzip": 1.0}  # the first mention counts


async def test_no_brotli_package_means_gzip(site_client, tmp_path, monkeypatch):
    monkeypatch.setattr(static_files, "_brotli", None)
    (tmp_path / "a.js").write_text("export const a = 1;\n" * 100)
    client = await site_client(tmp_path)
    assert (await fetch(client, "/static/a.js", PHONE))[1]["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in (await fetch(client, "/static/a.js", "br"))[1]


async def test_small_and_already_compressed_files_are_sent_as_they_are(client):
    for path in ("/static/fonts/DejaVuSans-subset.woff", "/static/js/index.js"):
        status, headers, body = await fetch(client, path, PHONE)
        assert status == 200 and "Content-Encoding" not in headers and "Vary" not in headers, path
        assert body == (STATIC / path.removeprefix("/static/")).read_bytes() or path.endswith(".js")
    assert (STATIC / "js/index.js").stat().st_size < MIN_COMPRESS_BYTES
    assert (await fetch(client, "/static/fonts/DejaVuSans-subset.woff"))[1]["Content-Type"] == "font/woff"


# --- ETags and 304 ---------------------------------------------------------------------------------------

async def test_every_variant_has_its_own_etag_and_revalidates_to_304(client):
    tags = {}
    for accept in ("br", "gzip", "identity"):
        _, headers, _ = await fetch(client, ASSET, accept)
        tag = tags[accept] = headers["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{20}(-br|-gzip)?"', tag), tag
        status, again, body = await fetch(client, ASSET, accept, **{"If-None-Match": tag})
        assert status == 304 and body == b"" and again["ETag"] == tag
        assert again["Vary"] == "Accept-Encoding" and again["Cache-Control"] == REVALIDATE
        assert "Content-Length" not in again or again["Content-Length"] == "0"
        assert_security_headers(again)
        weak = await fetch(client, ASSET, accept, **{"If-None-Match": f'"other", W/{tag}'})
        assert weak[0] == 304
        assert (await fetch(client, ASSET, accept, **{"If-None-Match": '"other"'}))[0] == 200
    assert len(set(tags.values())) == 3


async def test_a_cached_variant_the_client_still_accepts_is_not_sent_again(client):
    _, headers, _ = await fetch(client, ASSET, "gzip")
    gzip_tag = headers["ETag"]
    status, again, _ = await fetch(client, ASSET, PHONE, **{"If-None-Match": gzip_tag})
    assert status == 304 and again["ETag"] == gzip_tag  # its gzip copy is as good as br
    status, again, body = await fetch(client, ASSET, "br", **{"If-None-Match": gzip_tag})
    assert status == 200 and again["Content-Encoding"] == "br"  # it no longer takes gzip
    assert (await fetch(client, ASSET, PHONE, **{"If-None-Match": "*"}))[0] == 304


async def test_head_answers_the_headers_of_get(client):
    _, get_headers, body = await fetch(client, ASSET, "br")
    async with client.head(ASSET, headers={"Accept-Encoding": "br"}) as response:
        assert response.status == 200 and await response.read() == b""
        assert response.headers["Content-Length"] == str(len(body))
        assert response.headers["ETag"] == get_headers["ETag"] and response.headers["Content-Encoding"] == "br"
        assert_security_headers(response.headers.copy())


async def test_a_range_request_gets_the_whole_file(client):
    status, headers, body = await fetch(client, PLAIN, "identity", Range="bytes=0-9")
    assert status == 200 and body == (STATIC / "css/patient.css").read_bytes()


# --- pages and versioned assets -----------------------------------------------------------------------------

async def test_pages_are_not_stored_and_name_their_assets_by_version(client):
    for path, name in PAGES.items():
        status, headers, body = await fetch(client, path, PHONE)
        assert status == 200 and headers["Cache-Control"] == PAGE_CACHE and headers["Content-Encoding"] == "br"
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert_security_headers(headers)
        html = decode("br", body).decode()
        original = (STATIC / name).read_text()
        assert re.sub(r"\?v=[0-9a-f]{16}", "", html) == original  # only the URLs changed (CSP hashes hold)
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert urls and all(re.search(r"\?v=[0-9a-f]{16}$", u) for u in urls), urls


async def graph(client: Client, page: str) -> dict[str, set[str]]:
    """Every URL a page loads, transitively, as a browser resolves them: file path -> the URLs naming it."""
    _, _, html = await fetch(client, page)
    todo = re.findall(r'(?:src|href)="(/static/[^"]+)"', html.decode())
    named: dict[str, set[str]] = {}
    while todo:
        url = todo.pop()
        path = url.split("?")[0]
        if url in named.get(path, set()):
            continue
        named.setdefault(path, set()).add(url)
        status, headers, body = await fetch(client, url)
        assert status == 200 and headers["Cache-Control"] == IMMUTABLE, (url, headers["Cache-Control"])
        text = body.decode("utf-8", errors="replace")
        directory = path.rsplit("/", 1)[0]
        for spec in re.findall(r"""(?:\bfrom|\bimport)\s*\(?\s*['"]((?:\.{0,2}/)[^'"]*)['"]""", text):
            assert spec.startswith("./"), (path, spec)  # only the form the pages use (static_files rewrites more)
            todo.append(directory + "/" + spec[2:])
        todo += re.findall(r"""url\(\s*["']?(/static/[^"')]+)""", text)
    return named


@pytest.mark.parametrize("page", list(PAGES))
async def test_each_module_of_a_page_has_one_versioned_immutable_url(client, page):
    named = await graph(client, page)
    assert all(len(urls) == 1 for urls in named.values()), named  # one module instance each
    assert all(re.search(r"\?v=[0-9a-f]{16}$", url) for urls in named.values() for url in urls)
    if page == "/patient":
        assert "/static/js/client.js" in named and "/static/fonts/DejaVuSans-subset.woff" in named
        assert len(named) >= 15


async def test_an_unversioned_or_old_url_gets_the_current_file_to_revalidate(client):
    _, _, versioned = await fetch(client, "/patient")
    url = re.search(r'src="(/static/js/patient.js\?v=[0-9a-f]+)"', versioned.decode())
    assert url
    _, headers, body = await fetch(client, url.group(1))
    for other in ("/static/js/patient.js", "/static/js/patient.js?v=0000000000000000"):
        status, other_headers, other_body = await fetch(client, other)
        assert status == 200 and other_headers["Cache-Control"] == REVALIDATE and other_body == body
        assert other_headers["ETag"] == headers["ETag"]


# --- a change on disk ------------------------------------------------------------------------------------

def write(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a distinct mtime even on a coarse clock


async def test_a_file_changed_on_disk_is_served_fresh_and_renames_what_reaches_it(site_client, tmp_path):
    root = tmp_path / "static"
    (root / "js").mkdir(parents=True)
    write(root / "page.html", '<script type="module" src="/static/js/main.js"></script>\n', 1)
    write(root / "js/main.js", "import {x} from './dep.js';\nconsole.log(x);\n" + "// main\n" * 60, 1)
    write(root / "js/dep.js", "export const x = 'first';\n" + "// dep\n" * 60, 1)
    client = await site_client(root)

    async def current() -> tuple[str, bytes, str]:
        _, _, html = await fetch(client, "/page")
        main_url = re.search(r'src="([^"]+)"', html.decode()).group(1)
        _, headers, main = await fetch(client, main_url, "br")
        dep_url = "/static/js/" + re.search(r"from '\./([^']+)'", decode("br", main).decode()).group(1)
        status, dep_headers, dep = await fetch(client, dep_url, "gzip")
        assert status == 200 and dep_headers["Cache-Control"] == IMMUTABLE
        return main_url, decode("gzip", dep), headers["ETag"]

    main_url, dep, main_tag = await current()
    assert dep.startswith(b"export const x = 'first'")
    write(root / "js/dep.js", "export const x = 'second';\n" + "// dep\n" * 60, 2)
    new_main_url, new_dep, new_main_tag = await current()
    assert new_dep.startswith(b"export const x = 'second'")
    assert new_main_url != main_url and new_main_tag != main_tag  # main.js did not change, its import did
    status, headers, _ = await fetch(client, main_url, "br", **{"If-None-Match": main_tag})
    assert status == 200 and headers["Cache-Control"] == REVALIDATE  # the old URL: not immutable any more

    (root / "js/dep.js").unlink()
    assert (await fetch(client, "/static/js/dep.js"))[0] == 404
    _, _, main = await fetch(client, "/static/js/main.js")
    assert b"from './dep.js';" in main  # a missing import is left as it was


async def test_a_file_that_appears_is_versioned_in_what_names_it(site_client, tmp_path):
    write(tmp_path / "page.html", '<link rel="stylesheet" href="/static/late.css">\n', 1)
    client = await site_client(tmp_path)
    assert b'href="/static/late.css"' in (await fetch(client, "/page"))[2]
    write(tmp_path / "late.css", "body { color: black; }\n", 2)
    assert re.search(rb'href="/static/late.css\?v=[0-9a-f]{16}"', (await fetch(client, "/page"))[2])


async def test_large_files_are_streamed_from_disk(site_client, tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(static_files.MAX_CACHED_BYTES + 1))
    client = await site_client(tmp_path)
    status, headers, body = await fetch(client, "/static/big.bin", PHONE, Range="bytes=0-9")
    assert status == 206 and len(body) == 10 and "Content-Encoding" not in headers


# --- what must never be served -------------------------------------------------------------------------------

async def raw_get(port: int, target: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


TRAVERSALS = [
    "/static/../signalling/app.py", "/static/js/../../signalling/app.py",
    "/static/%2e%2e/signalling/app.py", "/static/%2E%2E%2Fsignalling%2Fapp.py",
    "/static/js/..%2f..%2fsignalling%2fapp.py", "/static/..%5csignalling%5capp.py",
    "/static/%252e%252e/signalling/app.py", "/static/.%2e/signalling/app.py",
    "/static//work/main/signalling/app.py", "/static/" + str(ROOT / "signalling/app.py"),
    "/static/js/%00../../signalling/app.py", "/static/./js/client.js", "/static/js//client.js",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_paths_out_of_static_are_refused(client, target):
    response = await raw_get(client.port, target)
    status = int(response.split(b" ", 2)[1])
    assert status in (400, 403, 404), (target, response[:200])
    assert b"create_app" not in response and b"import" not in response
    if status != 400:  # aiohttp's parser answers 400 itself, before the app (and its headers)
        assert b"\r\nContent-Security-Policy: " in response


async def test_symlinks_out_of_the_directory_and_hidden_files_are_refused(site_client, tmp_path):
    root, outside = tmp_path / "static", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.js").write_text("export const secret = 'from outside';\n")
    (root / "inside.js").write_text("export const inside = 1;\n")
    (root / "escape.js").symlink_to(outside / "secret.js")
    (root / "dir").symlink_to(outside, target_is_directory=True)
    (root / "alias.js").symlink_to(root / "inside.js")
    (root / ".hidden.js").write_text("export const hidden = 1;\n")
    write(root / "page.html", '<script type="module" src="/static/escape.js"></script>\n', 1)
    client = await site_client(root)
    for path in ("/static/escape.js", "/static/dir/secret.js", "/static/.hidden.js"):
        status, _, body = await fetch(client, path)
        assert status == 404 and b"secret" not in body and b"hidden" not in body, path
    assert (await fetch(client, "/static/alias.js"))[0] == 200  # a link that stays inside is fine
    assert b'src="/static/escape.js"' in (await fetch(client, "/page"))[2]  # never versioned, never read

    (root / "inside.js").unlink()
    (root / "inside.js").symlink_to(outside / "secret.js")  # swapped after it was cached
    assert (await fetch(client, "/static/inside.js"))[0] == 404
    assert (await fetch(client, "/static/alias.js"))[0] == 404


async def test_404s_carry_the_security_headers(client):
    status, headers, _ = await fetch(client, "/static/no-such-file.js", PHONE)
    assert status == 404
    assert_security_headers(headers)


# --- bodies made at run time (the catalogue's proposed path) ---------------------------------------------

async def test_bodies_made_at_run_time_are_negotiated_the_same_way(aiohttp_client):
    bodies = static_files.CompressedBodies(keep=2)
    current = {"text": b'{"messages": {"hello": "Hello"}}' * 40}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await bodies.respond(request, current["text"], "application/json; charset=utf-8")

    app = web.Application()
    app.router.add_get("/c.json", handler)
    client = await aiohttp_client(app, auto_decompress=False)
    status, headers, body = await fetch(client, "/c.json", PHONE)
    assert status == 200 and headers["Content-Encoding"] == "br" and decode("br", body) == current["text"]
    assert headers["Cache-Control"] == REVALIDATE and headers["Vary"] == "Accept-Encoding"
    assert (await fetch(client, "/c.json", PHONE, **{"If-None-Match": headers["ETag"]}))[0] == 304
    current["text"] = b'{"messages": {"hello": "Hi"}}' * 40
    status, changed, body = await fetch(client, "/c.json", PHONE, **{"If-None-Match": headers["ETag"]})
    assert status == 200 and changed["ETag"] != headers["ETag"] and decode("br", body) == current["text"]
    for n in range(3):
        current["text"] = b"[%d]" % n * 100
        await fetch(client, "/c.json", PHONE)
    assert len(bodies._variants) == 2
