"""Secrets generated on first run and kept in the data directory (mode 0600)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Optional


def load_or_create_secret(path: Path, nbytes: int = 32, generate: Optional[Callable[[], str]] = None) -> str:
    """Read the secret at `path`, creating it atomically with 0600 permissions if absent
    (`generate` makes one in a form of its own; else nbytes of random, base64url)."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate() if generate is not None else secrets.token_urlsafe(nbytes)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)
    return value
