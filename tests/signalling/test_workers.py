"""`run.py --workers 2`: two worker processes on one port, one call wherever its joins land.

Started as an operator would (with a real redis-server). Two aiortc participants join
through the shared port (the kernel hands each connection to either worker): they are
in one call, on one worker, and their media flows. The worker running it is killed: the
supervisor starts it again and the next join gets in. SIGTERM drains and stops all.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from loadtest.participant import SyntheticParticipant
from loadtest.sources import PatternVideoTrack, ToneAudioTrack
from signalling.placement import CLAIM_TTL_MS
from signalling.redis_state import connect
from signalling.workers import worker_argv
from tests.webhooks.receiver import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_each_worker_gets_the_operators_flags_and_its_own():
    argv = ["--port", "9000", "--workers", "3", "--redis-url=redis://r/0", "--node-url", "http://x"]
    assert worker_argv(argv, 0, 9001) == ["--port", "9000", "--redis-url=redis://r/0", "--worker-index", "0",
                                          "--internal-port", "9001", "--internal-host", "127.0.0.1",
                                          "--node-url", "http://127.0.0.1:9001"]
    # several machines: the workers are reached on this machine's address
    reachable = worker_argv(argv, 1, 9002, node_host="10.0.0.5")
    assert reachable[reachable.index("--node-url") + 1] == "http://10.0.0.5:9002"
    assert reachable[reachable.index("--internal-host") + 1] == "0.0.0.0"
    later = worker_argv(["--workers=2", "--no-demo-room"], 1, 4101)
    assert later[:1] == ["--no-demo-room"] and later.count("--no-demo-room") == 1
    assert worker_argv(["--port", "1"], 1, 4101)[-1] == "--no-demo-room"  # one demo room, made by worker 0
    # each worker its own /metrics port, whether the operator gave the flag (dropped) or the variable
    metered = worker_argv(["--metrics-address", "10.0.0.5:9464"], 2, 4102, "10.0.0.5:9464")
    assert metered.count("--metrics-address") == 1
    assert metered[metered.index("--metrics-address") + 1] == "10.0.0.5:9466"


async def nodes(redis_url: str) -> list[dict]:
    client = connect(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match="consult:node:*")]
        return [json.loads(raw) for raw in await client.mget(keys) if raw] if keys else []
    finally:
        await client.aclose()


async def until(condition, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


@pytest.mark.slow
async def test_two_workers_serve_one_call_and_a_dead_one_comes_back(tmp_path, redis_server):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    supervisor = subprocess.Popen(
        [sys.executable, "run.py", "--workers", "2", "--redis-url", redis_server.url, "--port", str(port),
         "--data-dir", str(tmp_path / "data"), "--no-demo-room", "--processors", "",
         "--media-host-address", "127.0.0.1", "--drain-grace", "0"],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    participants: list[SyntheticParticipant] = []
    try:
        async def two_workers_up() -> bool:
            return len(await nodes(redis_server.url)) == 2
        assert await until(two_workers_up, 30), log.read_text()
        key = (tmp_path / "data" / "admin.key").read_text().strip()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(url + "/api/rooms", json={"id": "r1", "name": "Room", "processors": []}) as r:
                assert r.status == 201, await r.text()
            tokens = {}
            for role in ("patient", "doctor", "expert"):
                async with http.post(url + "/api/rooms/r1/links", json={"role": role}) as r:
                    tokens[role] = (await r.json())["token"]
        patient = SyntheticParticipant(url, tokens["patient"], audio=ToneAudioTrack(), video=PatternVideoTrack(seed=1))
        doctor = SyntheticParticipant(url, tokens["doctor"], audio=ToneAudioTrack(), video=PatternVideoTrack(seed=2))
        participants += [patient, doctor]
        await patient.join()
        await doctor.join()
        await doctor.wait_for_frames(patient.id, "video", 10, timeout=20)
        await patient.wait_for_frames(doctor.id, "video", 10, timeout=20)
        async def one_call_on_one_worker() -> list[dict]:  # (as the next heartbeats say)
            states = await nodes(redis_server.url)
            return states if sorted(n["participants"] for n in states) == [0, 2] else []
        states = await until(one_call_on_one_worker, 10)
        assert states, await nodes(redis_server.url)

        # the worker running the call dies: the supervisor starts it again, the next join gets in
        owner = next(n for n in states if n["participants"] == 2)
        os.kill(owner["pid"], signal.SIGKILL)
        killed = time.monotonic()
        joined = None
        while joined is None and time.monotonic() - killed < CLAIM_TTL_MS / 1000 + 10:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(url.replace("http", "ws", 1) + "/ws") as ws:
                    await ws.send_json({"type": "join", "v": 1, "token": tokens["expert"]})
                    frame = await ws.receive(timeout=10)
                    if frame.type == aiohttp.WSMsgType.TEXT and frame.json()["type"] == "joined":
                        joined = time.monotonic() - killed
            if joined is None:
                await asyncio.sleep(0.5)
        print(f"a join got in {joined} s after the worker running the call was killed")
        assert joined is not None, log.read_text()

        async def both_back() -> bool:
            states = await nodes(redis_server.url)
            return len(states) == 2 and owner["pid"] not in {n["pid"] for n in states}
        assert await until(both_back, 20), await nodes(redis_server.url)
    finally:
        for participant in participants:
            await participant.close()
        supervisor.send_signal(signal.SIGTERM)  # drains (no grace) and stops every worker
        assert supervisor.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert await nodes(redis_server.url) == []
