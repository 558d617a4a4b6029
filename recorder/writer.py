"""RecordingWriter: encrypts encoded media frames and events into a new recording.

Frames are buffered per track in memory and sealed into a segment (AES-256-GCM) when
the segment would exceed `segment_max_bytes` (64 KiB), spans `segment_max_ms` (1 s) of
the caller's timestamps, or has waited that long by the wall clock (`flush_idle()`
covers tracks that go quiet). Plaintext exists only in those buffers; only sealed
segments are written, each with one append and, by default, an fdatasync. So a
writer killed at any moment loses at most each track's unsealed buffer plus a torn
last append, i.e. at most the last segment of each track.

On close every media track gets a final segment, then the event track gets a
`recording.stop` event listing each track's segment count, sealed as the event
track's final segment: that authenticated summary lets the reader tell a recording
cut short on disk from one that was complete. The same event carries what a replay
must know before its first frame (`media`: per track, its first and last frame time
and, for VP8, its largest keyframe's picture size), gathered as the frames went by, so
preparing a replay needs no pass over the whole recording first
(recorder/replay_render.py `plan`).

Any OSError while writing (ENOSPC, EROFS, EACCES, EIO) stops this recording: the
writer trims the file back to its last whole segment where it can, closes
everything, drops its buffers and raises RecordingStorageError, and raises it again
on every later call. The process and other recordings carry on.

Not thread-safe and it blocks on disk I/O: the media plane should feed it from one
worker thread (or executor), not from the event loop.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from media.codec_inspect import vp8_frame_size

from . import crypto
from .audit import Action, AuditLog
from .errors import RecorderError, RecordingStateError, RecordingStorageError
from .fsutil import DIR_MODE, FILE_MODE, fsync_dir, make_private_dir, write_all
from .keys import DATA_KEY_FILE, KeyStore
from .manifest import (
    EVENTS_TRACK_ID,
    EVENTS_TRACK_NO,
    Manifest,
    ManifestTrack,
    TrackInfo,
    new_recording_id,
    utc_now_iso,
)
from .segments import FRAME_HEADER, MAX_PAYLOAD, append_frame, encode_segment

log = logging.getLogger(__name__)

SEGMENT_MAX_BYTES = 64 * 1024
SEGMENT_MAX_MS = 1000
MAX_EVENT_BYTES = 64 * 1024
WRITER_LOCK_FILE = "writer.lock"
RESERVED_EVENT_PREFIX = "recording."  # event types the writer itself emits
STOP_EVENT = "recording.stop"

SegmentObserver = Callable[[float, int], None]  # (seconds the seal took, bytes written)
# Told of every segment any writer in this process seals (in the writer's thread): the metrics
# service (metrics/) counts recording bytes and seal latency here. A tuple, replaced whole, so a
# writer thread never sees it change under it.
_segment_observers: tuple[SegmentObserver, ...] = ()


def observe_segments(observer: SegmentObserver) -> None:
    global _segment_observers
    _segment_observers = (*_segment_observers, observer)


def stop_observing_segments(observer: SegmentObserver) -> None:
    global _segment_observers
    _segment_observers = tuple(o for o in _segment_observers if o != observer)  # equal: bound methods are new each time


@dataclass
class _Track:
    meta: ManifestTrack
    fd: int
    buf: bytearray = field(default_factory=bytearray)
    index: int = 0  # next segment index
    first_ts: int = 0  # timestamp of the first buffered frame
    started: float = 0.0  # clock() when the first buffered frame arrived
    good_offset: int = 0  # end of the last whole segment in the file
    first_ms: Optional[int] = None  # the track's first and last frame time (the stop event's `media`)
    last_ms: Optional[int] = None
    size: Optional[tuple[int, int]] = None  # the largest VP8 keyframe's picture (width, height)


def _media_summary(track: _Track) -> dict[str, Any]:
    summary: dict[str, Any] = {"first_ms": track.first_ms, "last_ms": track.last_ms}
    if track.size is not None:
        summary["size"] = list(track.size)
    return summary


class RecordingWriter:
    def __init__(self, recording_dir: Path, manifest: Manifest, cipher: crypto.SegmentCipher, lock_fd: int, *,
                 audit: Optional[AuditLog], actor: str, fsync: bool, clock: Callable[[], float]) -> None:
        self.dir = recording_dir
        self.id = manifest.id
        self.manifest = manifest
        self._cipher = cipher
        self._lock_fd: Optional[int] = lock_fd
        self._audit = audit
        self._actor = actor
        self._fsync = fsync
        self._clock = clock
        self._t0 = clock()
        self._max_bytes = manifest.segment_max_bytes
        self._max_ms = manifest.segment_max_ms
        self._tracks: dict[str, _Track] = {}
        self._last_ts = 0
        self._failure: Optional[RecordingStorageError] = None
        self._closed = False
        self.bytes_written = 0
        self.segments_written = 0
        # called with (track id, index, final) after a segment is written
        self.on_segment: Optional[Callable[[str, int, bool], None]] = None

    # -- starting ----------------------------------------------------------------------------------

    @classmethod
    def start(cls, data_dir: Path, keys: KeyStore, *, room: str, tracks: Iterable[TrackInfo] = (),
              audit: Optional[AuditLog], actor: str, segment_max_bytes: int = SEGMENT_MAX_BYTES,
              segment_max_ms: int = SEGMENT_MAX_MS, fsync: bool = True,
              clock: Callable[[], float] = time.monotonic, continues: Optional[str] = None,
              part: int = 1) -> "RecordingWriter":
        """Create a new recording under `<data_dir>/recordings/`. Raises RecordingStorageError if it
        cannot be created (nothing is left behind) and KeyUnavailableError without a usable KEK.
        `continues`, `part`: this recording carries on that one, as its part (recorder/manifest.py)."""
        tracks = list(tracks)
        rid = new_recording_id()
        recording_dir = data_dir / "recordings" / rid
        created = audited = False
        lock_fd: Optional[int] = None
        writer: Optional[RecordingWriter] = None
        try:
            make_private_dir(recording_dir.parent)
            recording_dir.mkdir(mode=DIR_MODE)
            created = True
            lock_fd = os.open(recording_dir / WRITER_LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held while recording; the kernel drops it if we die
            if audit is not None:
                # Audited before any media exists: no recording without a record.start entry.
                details: dict[str, Any] = {"room": room, "tracks": [t.track_id for t in tracks]}
                if continues is not None:  # the chain of parts can be followed in the audit log too
                    details |= {"continues": continues, "part": part}
                audit.append(actor, Action.RECORD_START, rid, details)
                audited = True
            data_key = crypto.new_key()
            keys.store_new_data_key(recording_dir, rid, data_key)
            cipher = crypto.SegmentCipher(data_key, rid)
            manifest = Manifest(id=rid, created=utc_now_iso(), room=room, data_key=DATA_KEY_FILE,
                                segment_max_bytes=segment_max_bytes, segment_max_ms=segment_max_ms,
                                continues=continues, part=part if continues is not None else 1)
            writer = cls(recording_dir, manifest, cipher, lock_fd, audit=audit, actor=actor, fsync=fsync, clock=clock)
            writer._add(ManifestTrack(EVENTS_TRACK_NO, EVENTS_TRACK_ID, "events", "json", None, "track-0.seg"))
            for info in tracks:
                writer._add(writer._new_track(info))
            manifest.write(recording_dir, cipher)
            fsync_dir(recording_dir)
        except BaseException as exc:
            # Nothing half-made stays behind: no key without media, no media without a manifest.
            if writer is not None:
                writer._release()
            elif lock_fd is not None:
                os.close(lock_fd)
            if created:
                shutil.rmtree(recording_dir, ignore_errors=True)
            error: BaseException = exc
            if isinstance(exc, OSError):
                error = RecordingStorageError.from_os_error(f"cannot start a recording in {recording_dir.parent}", exc)
            if audited and audit is not None:
                try:
                    audit.append(actor, Action.RECORD_FAILED, rid, {"error": str(error)})
                except RecorderError:
                    pass
            if error is exc:
                raise
            raise error from exc
        log.info("recording %s started (room %s)", rid, room)
        return writer

    def _new_track(self, info: TrackInfo) -> ManifestTrack:
        if info.track_id in self._tracks or not info.track_id:
            raise ValueError(f"track id {info.track_id!r} is empty or already in use")
        no = len(self._tracks)
        return ManifestTrack(no, info.track_id, info.kind, info.codec, info.clock_rate, f"track-{no}.seg")

    def _add(self, meta: ManifestTrack) -> None:
        fd = os.open(self.dir / meta.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
        self._tracks[meta.track_id] = _Track(meta, fd)
        self.manifest.tracks.append(meta)

    def add_track(self, info: TrackInfo) -> None:
        """A track that appears mid-recording (someone joins later)."""
        self._check_open()
        meta = self._new_track(info)
        try:
            self._add(meta)
            self.manifest.write(self.dir, self._cipher)
        except OSError as exc:
            raise self._fail(exc, f"cannot add track {info.track_id!r}") from exc

    # -- writing -----------------------------------------------------------------------------------

    def now_ms(self) -> int:
        """A session clock (ms since the writer started) for callers without their own."""
        return int((self._clock() - self._t0) * 1000)

    def write_frame(self, track_id: str, timestamp_ms: int, rtp_timestamp: int, keyframe: bool,
                    payload: bytes) -> None:
        """One encoded frame as received, with its session timestamp (ms) and RTP timestamp."""
        self._check_open()
        track = self._tracks.get(track_id)
        if track is None or track.meta.no == EVENTS_TRACK_NO:
            raise RecordingStateError(f"recording {self.id}: no media track {track_id!r}")
        if not isinstance(rtp_timestamp, int) or not 0 <= rtp_timestamp < 2**32:
            raise ValueError("rtp_timestamp must fit 32 bits")
        self._append(track, timestamp_ms, rtp_timestamp, keyframe, payload)
        if track.first_ms is None:
            track.first_ms = timestamp_ms
        track.last_ms = timestamp_ms if track.last_ms is None else max(track.last_ms, timestamp_ms)
        if keyframe and track.meta.kind == "video" and track.meta.codec.lower() == "vp8":
            size = vp8_frame_size(payload)
            if size is not None and (track.size is None or size[0] * size[1] > track.size[0] * track.size[1]):
                track.size = size

    def write_event(self, timestamp_ms: int, event: Mapping[str, Any]) -> None:
        """A join, annotation or analysis event on the same session clock as the frames."""
        self._check_open()
        if not isinstance(event, Mapping):
            raise ValueError("an event is a dict")
        if str(event.get("type", "")).startswith(RESERVED_EVENT_PREFIX):
            raise ValueError(f"event types starting with {RESERVED_EVENT_PREFIX!r} are reserved")
        self._write_event(timestamp_ms, event)

    def _write_event(self, timestamp_ms: int, event: Mapping[str, Any]) -> None:
        try:
            data = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode()
        except TypeError as exc:
            raise ValueError(f"event is not JSON-serialisable: {exc}") from None
        if len(data) > MAX_EVENT_BYTES:
            raise ValueError("event too large")
        self._append(self._tracks[EVENTS_TRACK_ID], timestamp_ms, 0, False, data)

    def _append(self, track: _Track, timestamp_ms: int, rtp_timestamp: int, keyframe: bool, payload: bytes) -> None:
        if not isinstance(timestamp_ms, int) or not 0 <= timestamp_ms < 2**63:
            raise ValueError("timestamp_ms must be a non-negative integer")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"frame larger than {MAX_PAYLOAD} bytes")
        size = FRAME_HEADER.size + len(payload)
        if track.buf and (len(track.buf) + size > self._max_bytes or timestamp_ms - track.first_ts >= self._max_ms
                          or self._clock() - track.started >= self._max_ms / 1000):
            self._seal(track, final=False)
        if not track.buf:
            track.first_ts, track.started = timestamp_ms, self._clock()
        append_frame(track.buf, timestamp_ms, rtp_timestamp, keyframe, payload)
        self._last_ts = max(self._last_ts, timestamp_ms)
        if len(track.buf) >= self._max_bytes:
            self._seal(track, final=False)  # full, or one frame larger than a segment: alone

    def flush_idle(self) -> None:
        """Seal buffers older than the segment duration (call about every 100 ms-1 s)."""
        self._check_open()
        now = self._clock()
        for track in self._tracks.values():
            if track.buf and now - track.started >= self._max_ms / 1000:
                self._seal(track, final=False)

    def _seal(self, track: _Track, final: bool) -> None:
        began = time.perf_counter()  # the seal's latency: encryption, append, fdatasync
        ciphertext = self._cipher.seal(track.meta.no, track.meta.track_id, track.index, final, track.buf)
        record = encode_segment(track.index, final, ciphertext)
        try:
            write_all(track.fd, record)
            if self._fsync:
                os.fdatasync(track.fd)
        except OSError as exc:
            raise self._fail(exc, f"cannot write track {track.meta.track_id!r}", track) from exc
        track.good_offset += len(record)
        track.buf.clear()
        track.index += 1
        self.bytes_written += len(record)
        self.segments_written += 1
        for observe in _segment_observers:
            try:
                observe(time.perf_counter() - began, len(record))
            except Exception:  # counting must never stop a recording
                log.exception("a segment observer failed")
        if self.on_segment is not None:
            self.on_segment(track.meta.track_id, track.index - 1, final)

    # -- ending ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Seal every track with a final segment and audit the stop. Idempotent."""
        if self._closed or self._failure is not None:
            return
        media = [t for t in self._tracks.values() if t.meta.no != EVENTS_TRACK_NO]
        for track in media:
            self._seal(track, final=True)
        self._write_event(self._last_ts, {"type": STOP_EVENT,
                                          "segments": {t.meta.track_id: t.index for t in media},
                                          "media": {t.meta.track_id: _media_summary(t) for t in media}})
        events = self._tracks[EVENTS_TRACK_ID]
        self._seal(events, final=True)
        segments = {t.meta.track_id: t.index for t in self._tracks.values()}
        self._release()
        self._closed = True
        log.info("recording %s stopped (%d segments, %d bytes)", self.id, self.segments_written, self.bytes_written)
        self._audit_best_effort(Action.RECORD_STOP, {"segments": segments, "bytes": self.bytes_written})

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def failed(self) -> Optional[RecordingStorageError]:
        return self._failure

    def _check_open(self) -> None:
        if self._failure is not None:
            raise RecordingStorageError(str(self._failure), errno=self._failure.errno, path=self._failure.path)
        if self._closed:
            raise RecordingStateError(f"recording {self.id} is closed")

    def _fail(self, exc: OSError, what: str, track: Optional[_Track] = None) -> RecordingStorageError:
        error = RecordingStorageError.from_os_error(f"recording {self.id} stopped: {what}", exc)
        self._failure = error
        if track is not None:
            try:  # leave whole segments only (and give back the space of a partial one)
                os.ftruncate(track.fd, track.good_offset)
            except OSError:
                pass  # read-only or gone: the reader treats a partial last segment as torn
        self._release()
        log.error("%s", error)
        self._audit_best_effort(Action.RECORD_FAILED, {"error": str(error), "errno": error.errno})
        return error

    def _release(self) -> None:
        for track in self._tracks.values():
            track.buf.clear()  # drop plaintext we will never write
            try:
                os.close(track.fd)
            except OSError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """An entry about this recording by someone else than who started it. Raises RecorderError."""
        if self._audit is not None:
            self._audit.append(actor, action, self.id, details)

    def _audit_best_effort(self, action: str, details: dict[str, Any]) -> None:
        # The audit log may sit on the same full disk; failing to log a stop must not mask it.
        if self._audit is None:
            return  # started without an audit log
        try:
            self._audit.append(self._actor, action, self.id, details)
        except RecorderError as exc:
            log.error("recording %s: could not audit %s: %s", self.id, action, exc)
