"""Several worker processes on one machine: a node of the service on every core.

One Python process forwards on one core. `run.py --workers N` starts N worker processes,
each a whole node (signalling/placement.py) sharing the machine's data directory and the
service's Redis: they all listen on the public port (SO_REUSEPORT: the kernel hands each
new connection to one of them), each also on a port of its own (the public one + 1 + its
index) where the others reach it, so a join that lands on a worker not running its room is relayed to the one
that does. Media goes straight to the room's worker (its own UDP ports are in its offer).

This supervisor only starts the workers, restarts one that dies (its rooms are placed
again on the rejoins, as for a node), and passes SIGTERM (drain) and SIGINT on.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Optional
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

RESTART_AFTER_S = 1.0
# Flags the supervisor sets for each worker itself.
_OWN_FLAGS = ("--workers", "--worker-index", "--internal-port", "--internal-host", "--node-url", "--metrics-address")


def worker_argv(argv: Sequence[str], index: int, internal_port: int,
                metrics_address: Optional[str] = None, node_host: str = "127.0.0.1") -> list[str]:
    """run.py's arguments for worker `index`: the operator's, without the supervisor's own
    flags, plus the worker's; only the first worker makes the demo room and prints its links.
    `metrics_address` HOST:PORT: worker n serves /metrics on PORT + n (Prometheus scrapes each).
    `node_host`: where the other nodes reach this machine (the operator's --node-url host;
    loopback when only this machine's workers need to)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    loopback = node_host in ("127.0.0.1", "localhost", "::1")
    out += ["--worker-index", str(index), "--internal-port", str(internal_port),
            "--internal-host", "127.0.0.1" if loopback else "0.0.0.0",
            "--node-url", f"http://{node_host}:{internal_port}"]
    if metrics_address is not None:
        host, _, port = metrics_address.rpartition(":")
        out += ["--metrics-address", f"{host}:{int(port) + index}"]
    if index > 0 and "--no-demo-room" not in out:
        out.append("--no-demo-room")
    return out


class WorkerSupervisor:
    def __init__(self, run_py: Path, argv: Sequence[str], count: int, *, port: int,
                 metrics_address: Optional[str] = None, node_url: Optional[str] = None) -> None:
        """Worker n's own port (where the other workers and nodes reach it) is `port` + 1 + n:
        fixed, for a firewall to open; on `node_url`'s host when given, else loopback only."""
        self.run_py = run_py
        self.argv = list(argv)
        self.count = count
        self.metrics_address = metrics_address
        self.node_host = urlsplit(node_url).hostname or "127.0.0.1" if node_url else "127.0.0.1"
        self.workers: dict[int, subprocess.Popen] = {}
        self.ports = {index: port + 1 + index for index in range(count)}
        self.restarts = 0
        self._stopping: Optional[int] = None  # the signal passed on: no more restarts

    def start(self, index: int) -> None:
        self.workers[index] = subprocess.Popen(
            [sys.executable, str(self.run_py),
             *worker_argv(self.argv, index, self.ports[index], self.metrics_address, self.node_host)])
        logger.info("worker %d started (pid %d, loopback port %d)", index, self.workers[index].pid,
                    self.ports[index])

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._pass_on)
        for index in range(self.count):
            self.start(index)
        while self.workers:
            for index, process in list(self.workers.items()):
                code = process.poll()
                if code is None:
                    continue
                del self.workers[index]
                if self._stopping is None:
                    logger.error("worker %d exited with %s: starting it again", index, code)
                    time.sleep(RESTART_AFTER_S)
                    self.restarts += 1
                    self.start(index)
            time.sleep(0.2)
        return 0

    def _pass_on(self, signum: int, frame: Optional[FrameType]) -> None:
        self._stopping = signum
        for process in self.workers.values():
            if process.poll() is None:
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass
