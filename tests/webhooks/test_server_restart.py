"""The server stops while its receiver is down (killed: no clean shutdown); the next start
delivers what the first one kept, once each, in order."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from webhooks.outbox import OUTBOX_FILE, WebhookOutbox

from .receiver import WebhookReceiver, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


async def start_server(data_dir: Path, receiver: WebhookReceiver, log: Path) -> tuple[subprocess.Popen, str]:
    """run.py with a webhook, as an operator starts it; returns it and the demo patient link."""
    secret_file = data_dir.parent / "webhook.secret"
    secret_file.write_text(receiver.secret + "\n")
    proc = subprocess.Popen(
        [sys.executable, "run.py", "--port", str(free_port()), "--data-dir", str(data_dir), "--processors", "",
         "--webhook", receiver.url, "--webhook-secret-file", str(secret_file), "--webhook-retry-max", "1"],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"^\s+patient:\s+(\S+)$", log.read_text(), re.MULTILINE)
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError(f"run.py did not start: {log.read_text()}")


async def join_and_leave(link: str) -> None:
    base, token = link.split("/patient#token=")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(base.replace("http", "ws", 1) + "/ws") as ws:
            await ws.send_json({"type": "join", "v": 1, "token": token})
            while (await ws.receive_json(timeout=10))["type"] != "joined":
                pass


def kept(data_dir: Path) -> int:
    outbox = WebhookOutbox(data_dir / OUTBOX_FILE)
    try:
        return sum(outbox.backlog().values())
    finally:
        outbox.close()


async def test_events_kept_before_a_crash_are_delivered_after_the_restart(tmp_path, webhook_receiver):
    receiver = webhook_receiver
    data_dir, log, log2 = tmp_path / "data", tmp_path / "first.log", tmp_path / "second.log"
    receiver.mode = "fail"
    proc, link = await start_server(data_dir, receiver, log)
    try:
        # room.started, participant.joined, participant.waiting (the patient is alone), participant.left, room.ended
        await join_and_leave(link)
        deadline = time.monotonic() + 20
        while kept(data_dir) < 5 or receiver.attempts < 2:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a crash, not a shutdown
        proc.wait()
    assert receiver.events == []

    receiver.mode = "ok"
    proc, _ = await start_server(data_dir, receiver, log2)
    try:
        events = await receiver.wait_for(5)
        await asyncio.sleep(1.0)  # nothing more comes
    finally:
        proc.terminate()
        proc.wait()
    assert [e["type"] for e in events] == ["room.started", "participant.joined", "participant.waiting",
                                           "participant.left", "room.ended"]
    assert len(receiver.events) == 5 and receiver.bad_signatures == 0
    assert kept(data_dir) == 0
    assert receiver.secret not in log.read_text() + log2.read_text()
