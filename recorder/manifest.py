"""The recording manifest: what a recording is, in the clear, authenticated.

`<recording>/manifest.json` holds the id, created time (UTC), room, the tracks (number,
id, kind, codec, clock rate, file) and a pointer to the wrapped data key. It carries no
media and no names; still it is MACed with a key derived from the recording's data key,
so a reader notices an edited track list, codec or room. It is rewritten atomically
when a track is added mid-recording.

`room` names the room as `<room id>@<instance>`: room ids are used again once a room is
closed, and the instance (one per creation of the id) says which consultation this was.
Recordings made before instances existed, and ones written by tools, hold the bare id.

A recording that carries on one whose node died or drained mid-call (several nodes:
signalling/live_recording.py) is its next *part*: `continues` names the recording it carries
on and `part` counts from 1. A first part has neither key, as manifests had before parts
existed, so their MACs still hold.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .crypto import SegmentCipher
from .errors import RecordingIntegrityError, RecordingNotFoundError
from .fsutil import atomic_write

FORMAT = 1
MANIFEST_FILE = "manifest.json"
EVENTS_TRACK_ID = "events"
EVENTS_TRACK_NO = 0
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{12}$")
ROOM_INSTANCE_SEPARATOR = "@"  # never in a room id or an instance id (A-Z a-z 0-9 _ -)


def room_label(room_id: str, instance: Optional[str]) -> str:
    """What a recording's manifest says about its room: the id and which instance of it."""
    return f"{room_id}{ROOM_INSTANCE_SEPARATOR}{instance}" if instance else room_id


def split_room_label(label: str) -> tuple[str, Optional[str]]:
    """(room id, instance or None) of a manifest's `room`."""
    room_id, separator, instance = label.partition(ROOM_INSTANCE_SEPARATOR)
    return room_id, (instance or None) if separator else None


def new_recording_id(now: Optional[dt.datetime] = None) -> str:
    """Sortable by start time and unguessable: 20250301T101500Z-3fa9c2d1e0b4."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"


def is_recording_id(value: str) -> bool:
    # Ids become path components: anything else (../, slashes) is refused before touching disk.
    return bool(_ID_RE.match(value))


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class TrackInfo:
    """A track as the media plane describes it."""
    track_id: str
    kind: str  # "audio" | "video"
    codec: str  # e.g. "opus", "VP8", "H264"
    clock_rate: Optional[int] = None  # RTP clock rate, for export


@dataclass
class ManifestTrack:
    no: int
    track_id: str
    kind: str
    codec: str
    clock_rate: Optional[int]
    file: str


@dataclass
class Manifest:
    id: str
    created: str
    room: str
    data_key: str  # file name of the wrapped data key, relative to the recording directory
    segment_max_bytes: int
    segment_max_ms: int
    tracks: list[ManifestTrack] = field(default_factory=list)
    format: int = FORMAT
    continues: Optional[str] = None  # the recording this one carries on (its part - 1), if any
    part: int = 1

    def track(self, track_id: str) -> Optional[ManifestTrack]:
        return next((t for t in self.tracks if t.track_id == track_id), None)

    def _body(self) -> dict[str, Any]:
        body = asdict(self)
        if self.continues is None:  # a first part, written (and MACed) as before parts existed
            del body["continues"], body["part"]
        return body

    def _canonical(self) -> bytes:
        return json.dumps(self._body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def write(self, recording_dir: Path, cipher: SegmentCipher) -> None:
        doc = self._body() | {"mac": cipher.manifest_mac(self._canonical())}
        atomic_write(recording_dir / MANIFEST_FILE, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())

    def verify(self, cipher: SegmentCipher, mac: str) -> None:
        if not secrets.compare_digest(cipher.manifest_mac(self._canonical()), mac):
            raise RecordingIntegrityError(f"recording {self.id}: manifest fails authentication (edited)")

    @classmethod
    def load(cls, recording_dir: Path) -> tuple["Manifest", str]:
        """The manifest and its MAC, unverified (verifying needs the data key)."""
        try:
            doc = json.loads((recording_dir / MANIFEST_FILE).read_bytes())
        except FileNotFoundError:
            raise RecordingNotFoundError(f"no recording manifest in {recording_dir}") from None
        except ValueError:
            raise RecordingIntegrityError(f"{recording_dir / MANIFEST_FILE}: not valid JSON") from None
        try:
            mac = doc.pop("mac")
            tracks = [ManifestTrack(**t) for t in doc.pop("tracks")]
            manifest = cls(tracks=tracks, **doc)
        except (KeyError, TypeError):
            raise RecordingIntegrityError(f"{recording_dir / MANIFEST_FILE}: malformed") from None
        if manifest.format != FORMAT:
            raise RecordingIntegrityError(f"{recording_dir / MANIFEST_FILE}: unsupported format {manifest.format}")
        if not _part_ok(manifest.continues, manifest.part):
            raise RecordingIntegrityError(f"{recording_dir / MANIFEST_FILE}: malformed part")
        if manifest.id != recording_dir.name:
            raise RecordingIntegrityError(
                f"{recording_dir}: manifest belongs to recording {manifest.id} (moved or spliced)")
        return manifest, mac


def _part_ok(continues: object, part: object) -> bool:
    """A first part (nothing continued), or part n > 1 naming a recording id."""
    if continues is None:
        return part == 1
    return isinstance(continues, str) and is_recording_id(continues) and type(part) is int and part > 1
