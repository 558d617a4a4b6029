"""Log lines (signalling/log_format.py, signalling/log_context.py): the JSON format, the ids a
line carries, X-Request-Id, and the mask for whatever looks like a secret. The end-to-end
guarantee (a whole call through run.py, its log searched for every secret) is
tests/test_log_secrets.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from signalling import log_context
from signalling.log_context import REQUEST_ID_HEADER, ContextFilter, echo_request_id, request_ids
from signalling.log_format import REDACTED, JsonFormatter, TextFormatter, configure_logging, redact
from signalling.tokens import TokenIssuer
from webhooks import new_webhook_secret

ROOT = Path(__file__).resolve().parents[2]
ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str, *args, exc_info=None, name: str = "signalling.test") -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, exc_info)
    ContextFilter().filter(rec)
    return rec


def test_what_looks_like_a_secret_is_masked():
    token = TokenIssuer("s" * 32).mint(room="r1", identity="p-1", name="Patient", role="patient", ttl_s=600)
    whsec = new_webhook_secret()
    cases = {
        f"join with {token} refused": f"join with {REDACTED} refused",
        f"http://127.0.0.1:8080/patient#token={token}": f"http://127.0.0.1:8080/patient#token={REDACTED}",
        f"secret {whsec} loaded": f"secret {REDACTED} loaded",
        "Authorization: Bearer 3q2-7w_x.Yz=": f"Authorization: Bearer {REDACTED}",
        "GET /api/replay/media/rec/k.webm?exp=1700000000&sub=trainer-1&lnk=ab12&sig=Zm9v-_bar":
            f"GET /api/replay/media/rec/k.webm?exp=1700000000&sub=trainer-1&lnk=ab12&sig={REDACTED}",
        "https://hooks.example/x?key=abc&token=def&v=2": f"https://hooks.example/x?key={REDACTED}&token={REDACTED}&v=2",
        "ice servers [{'urls': ['turn:h:3478'], 'username': 'u', 'credential': 'pa55'}]":
            f"ice servers [{{'urls': ['turn:h:3478'], 'username': 'u', 'credential': '{REDACTED}'}}]",
        '{"password": "hunter2", "user": "x"}': f'{{"password": "{REDACTED}", "user": "x"}}',
        "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123": f"a=ice-ufrag:abcd\r\na=ice-pwd:{REDACTED}",
    }
    for text, masked in cases.items():
        assert redact(text) == masked


@pytest.mark.parametrize("text", [
    "data directory /srv/data was mode 0755 (readable by others); changed to 0700",
    "webhooks: room.started evt_1 to http://127.0.0.1:9/hook failed (attempt 1): ClientConnectorError; retrying",
    "could not read data/token.secret: permission denied",
    "GET /api/rooms/demo/links -> 201 in 3.2 ms",
    "recording 20261207T101112Z-abcdef012345 started (room demo@l4l942d_ytcZ3lBG)",
    "王医生 joined",
    "a webhook secret is whsec_ followed by base64",
    "send 'Authorization: Bearer <admin key>'",
])
def test_ordinary_lines_are_left_alone(text):
    assert redact(text) == text


def test_json_lines_carry_the_fields_ids_and_exception_on_one_line():
    async def later():
        return record("%s 加入了\u2028诊室\n", "王医生")

    async def in_a_session():
        log_context.bind(room="demo", participant="p-1a2b3c4d5e6f", request="req-1")
        return await asyncio.ensure_future(later())  # a task the session starts later carries its ids

    rec = asyncio.run(in_a_session())
    try:
        raise ValueError("bad token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    except ValueError:
        failed = record("handling %s failed", "answer", exc_info=sys.exc_info())
    lines = [JsonFormatter().format(r) for r in (rec, failed)]
    assert all("\n" not in line and len(line.splitlines()) == 1 for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert ISO_MS_UTC.match(first["time"])
    assert first == {"time": first["time"], "level": "WARNING", "logger": "signalling.test",
                     "message": "王医生 加入了\u2028诊室\n", "room": "demo", "participant": "p-1a2b3c4d5e6f",
                     "request": "req-1"}
    assert "王医生" in lines[0]  # readable, not \\u escapes
    assert "room" not in second and "request" not in second  # not known there: left out
    assert second["message"] == "handling answer failed"
    assert second["exception"].startswith("Traceback") and "ValueError: bad token" in second["exception"]
    assert "eyJ" not in second["exception"] and REDACTED in second["exception"]


def test_text_lines_keep_the_classic_format_masked():
    line = TextFormatter().format(record("joined with %s", "#token=abc.def"))
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING signalling.test: joined with #token=\[redacted\]$",
                    line)


def test_unknown_levels_and_formats_are_refused():
    with pytest.raises(ValueError):
        configure_logging("LOUD", "text")
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")


def test_run_py_takes_the_log_format_flag_and_env(monkeypatch):
    from run import parse_args

    parse_args(["--log-format", "json"])  # pytest's handlers are on the root logger: configures nothing
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])
    monkeypatch.setenv("CONSULT_LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit):
        parse_args([])


async def test_each_request_has_an_id_echoed_and_on_its_lines(aiohttp_client, caplog):
    logged: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            logged.append(rec)

    keep = Keep(logging.DEBUG)
    keep.addFilter(ContextFilter())
    logging.getLogger().addHandler(keep)

    async def hello(request: web.Request) -> web.Response:
        logging.getLogger("signalling.test").warning("hello")
        return web.Response(text="hi")

    app = web.Application(middlewares=[request_ids])
    app.on_response_prepare.append(echo_request_id)
    app.router.add_get("/hello", hello)
    client = await aiohttp_client(app)
    try:
        with caplog.at_level(logging.DEBUG, logger="signalling.http"):
            ours = await client.get("/hello", headers={REQUEST_ID_HEADER: "lb-2f1c9a7e-0001"})
            assert ours.headers[REQUEST_ID_HEADER] == "lb-2f1c9a7e-0001"
            for unsafe in ("two words", "x" * 65, 'quote"d', "eyJ.a.b\u00e9"):
                made = await client.get("/hello", headers={REQUEST_ID_HEADER: unsafe})
                assert re.match(r"^[0-9a-f]{16}$", made.headers[REQUEST_ID_HEADER])
            missing = await client.get("/nowhere?sig=abc")
            assert missing.status == 404 and re.match(r"^[0-9a-f]{16}$", missing.headers[REQUEST_ID_HEADER])
    finally:
        logging.getLogger().removeHandler(keep)
    hellos = [r for r in logged if r.getMessage() == "hello"]
    assert hellos[0].request == "lb-2f1c9a7e-0001" and len({r.request for r in hellos}) == 5
    http = [r.getMessage() for r in logged if r.name == "signalling.http"]
    assert "GET /hello -> 200" in http[0] and any("GET /nowhere -> 404" in m for m in http)
    assert not any("sig=" in m for m in http)  # the path only, never the query
    assert all(r.request for r in logged if r.name == "signalling.http")


def test_in_json_everything_on_stderr_is_json_native_lines_and_children_too():
    """MediaPipe's C++ (face analysis) and render workers write to fd 2 past logging: relayed as records."""
    script = "\n".join([
        "import logging, os, subprocess, sys, warnings",
        "from signalling.log_format import configure_logging",
        "configure_logging('INFO', 'json')",
        "os.write(2, b'W0000 00:00:1.2 native.cc:1] from C++\\nINFO: two lines at once\\n')",
        "subprocess.run([sys.executable, '-c', 'import sys; sys.stderr.write(\"a child\\\\n\")'])",
        "warnings.warn('a warning')",
        "logging.getLogger('signalling.test').info('hello %s', '王')",
        "os.write(2, b'the last words of a library')",  # no newline, and the process ends: still relayed
        "raise RuntimeError('uncaught')",
    ])
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    entries = [json.loads(line) for line in done.stderr.splitlines()]  # every line parses
    relayed = [e["message"] for e in entries if e["logger"] == "stderr"]
    assert relayed == ["W0000 00:00:1.2 native.cc:1] from C++", "INFO: two lines at once", "a child",
                       "the last words of a library"]
    by_logger = {e["logger"]: e for e in entries}
    assert "a warning" in by_logger["py.warnings"]["message"]
    assert by_logger["signalling.test"]["message"] == "hello 王"
    assert "RuntimeError: uncaught" in by_logger["consult-sfu"]["exception"]
