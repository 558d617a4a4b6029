"""Fixtures for the recorder tests: a data directory with its KEK and audit log, recordings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder.audit import AuditLog
from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.writer import RecordingWriter

from . import synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def keys(data_dir: Path) -> KeyStore:
    return KeyStore.open(data_dir, environ={}, create=True)


@pytest.fixture
def audit(data_dir: Path) -> AuditLog:
    return AuditLog.open(data_dir, environ={}, create=True)


RecordFn = Callable[..., RecordingWriter]


@pytest.fixture
def record(data_dir: Path, keys: KeyStore, audit: AuditLog) -> RecordFn:
    """record(duration_ms=..., seed=..., close=True): a recording of a synthetic session."""

    def make(duration_ms: int = 5000, seed: int = 0, close: bool = True,
             tracks: list[TrackInfo] | None = None, **writer_args) -> RecordingWriter:
        writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=tracks or synthetic.tracks(),
                                       audit=audit, actor="doctor-1", **writer_args)
        synthetic.write(writer, synthetic.session(duration_ms, seed=seed))
        if close:
            writer.close()
        return writer

    return make


def run_cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m recorder` as an operator runs it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONSULT_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "recorder", "--data-dir", str(data_dir), *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=60)
