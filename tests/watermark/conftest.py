"""A data directory with its audit log, for the registry's tests (as in tests/recorder/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.audit import AuditLog


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def audit(data_dir: Path) -> AuditLog:
    return AuditLog.open(data_dir, environ={}, create=True)
