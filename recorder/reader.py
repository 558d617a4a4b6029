"""RecordingReader: authenticates and reads back a recording.

Iterating (`items()`, `frames()`, `events()`) yields only authenticated data and
raises RecordingIntegrityError at the first segment that fails; a torn last
segment (a writer that died) simply ends its track. `verify()` walks everything,
never raises for tampering, and reports per track what it found.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .crypto import SegmentCipher
from .errors import RecordingIntegrityError, RecordingNotFoundError
from .keys import KeyStore
from .manifest import EVENTS_TRACK_ID, EVENTS_TRACK_NO, Manifest, ManifestTrack, is_recording_id
from .segments import SegmentScanner, decode_frames
from .writer import STOP_EVENT, WRITER_LOCK_FILE


@dataclass(frozen=True, slots=True)
class Frame:
    track_id: str
    timestamp_ms: int
    rtp_timestamp: int
    keyframe: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class Event:
    timestamp_ms: int
    data: dict[str, Any]


Item = Union[Frame, Event]


@dataclass
class TrackReport:
    track_id: str
    kind: str
    codec: str
    segments: int = 0  # authenticated
    frames: int = 0
    payload_bytes: int = 0
    final: bool = False
    torn_bytes: int = 0  # an interrupted last append, not counted as a segment
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    recording_id: str
    room: str
    created: str
    tracks: list[TrackReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # tampering, recording-wide and per track
    live: bool = False  # a writer still holds the recording
    stop_summary: Optional[dict[str, int]] = None  # segment counts from the authenticated recording.stop event

    @property
    def complete(self) -> bool:
        return all(t.final for t in self.tracks) and self.stop_summary is not None

    @property
    def status(self) -> str:
        if self.problems:
            return "tampered"
        if self.complete:
            return "complete"
        return "recording" if self.live else "incomplete"


def writer_alive(recording_dir: Path) -> bool:
    """True while a writer holds the recording's lock (a killed writer's lock is gone)."""
    try:
        fd = os.open(recording_dir / WRITER_LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)


@dataclass
class _Seen:
    """What one pass of reading found, to compare with the stop summary at the end."""
    segments: dict[str, int] = field(default_factory=dict)
    final: dict[str, bool] = field(default_factory=dict)
    summary: Optional[dict[str, int]] = None


def _summary(event: dict[str, Any], where: str) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in event["segments"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RecordingIntegrityError(f"{where}: malformed stop summary") from None


class RecordingReader:
    def __init__(self, recording_dir: Path, keys: KeyStore) -> None:
        """Loads the manifest and data key and authenticates the manifest.

        Raises RecordingNotFoundError, KeyUnavailableError (no/wrong KEK, purged) or
        RecordingIntegrityError (altered manifest or wrapped key)."""
        self.dir = recording_dir
        self.manifest, mac = Manifest.load(recording_dir)
        self.id = self.manifest.id
        self._cipher = SegmentCipher(keys.load_data_key(recording_dir, self.id), self.id)
        self.manifest.verify(self._cipher, mac)

    @classmethod
    def open(cls, data_dir: Path, recording_id: str, keys: KeyStore) -> "RecordingReader":
        if not is_recording_id(recording_id):
            raise RecordingNotFoundError(f"not a recording id: {recording_id!r}")
        path = data_dir / "recordings" / recording_id
        if not path.is_dir():
            raise RecordingNotFoundError(f"no recording {recording_id}")
        return cls(path, keys)

    # -- reading -----------------------------------------------------------------------------------

    def _track_items(self, track: ManifestTrack, seen: "_Seen") -> Iterator[Item]:
        where = f"recording {self.id} track {track.track_id!r}"
        try:
            f = open(self.dir / track.file, "rb")
        except FileNotFoundError:
            return  # a track added just before a crash: no segment was ever written
        with f:
            for raw in SegmentScanner(f, os.fstat(f.fileno()).st_size, where):
                plaintext = self._cipher.open(track.no, track.track_id, raw.index, raw.final, raw.ciphertext)
                seg_where = f"{where} segment {raw.index}"
                for ts, rtp, keyframe, payload in decode_frames(plaintext, seg_where):
                    if track.no == EVENTS_TRACK_NO:
                        try:
                            event = Event(ts, json.loads(payload))
                        except ValueError:
                            raise RecordingIntegrityError(f"{seg_where}: authenticated but malformed event") from None
                        if raw.final and event.data.get("type") == STOP_EVENT:
                            seen.summary = _summary(event.data, seg_where)
                        yield event
                    else:
                        yield Frame(track.track_id, ts, rtp, keyframe, payload)
                seen.segments[track.track_id] = raw.index + 1
                seen.final[track.track_id] = raw.final

    def media_end_ms(self) -> Optional[int]:
        """The newest frame time in any media track (from each one's last whole segment, the only
        one decrypted), None without media. A recording cut short (its writer killed) has no stop
        event, and its events alone often end long before its media did."""
        times: list[int] = []
        for track in self.manifest.tracks:
            last = self._last_segment(track) if track.no != EVENTS_TRACK_NO else None
            if last is not None:
                times += [ts for ts, _, _, _ in last[1]]
        return max(times, default=None)

    def stop_event(self) -> Optional[dict[str, Any]]:
        """The `recording.stop` event (segment counts; per track what a replay must know first), from
        the events track's final segment alone; None for a recording that was not closed (cut short,
        or still being made). Raises RecordingIntegrityError if that segment fails authentication."""
        track = self.manifest.tracks[EVENTS_TRACK_NO]
        last = self._last_segment(track)
        if last is None or not last[0]:
            return None
        stop = None
        for _, _, _, payload in last[1]:
            try:
                event = json.loads(payload)
            except ValueError:
                raise RecordingIntegrityError(f"recording {self.id} track {track.track_id!r}: authenticated but "
                                              "malformed event in its final segment") from None
            if isinstance(event, dict) and event.get("type") == STOP_EVENT:
                stop = event
        return stop

    def _last_segment(self, track: ManifestTrack) -> Optional[tuple[bool, list[tuple[int, int, bool, bytes]]]]:
        """(whether it is final, its frames) of a track's last whole segment, the only one read and
        decrypted; None when the track has none."""
        where = f"recording {self.id} track {track.track_id!r}"
        try:
            f = open(self.dir / track.file, "rb")
        except FileNotFoundError:
            return None
        with f:
            scanner = SegmentScanner(f, os.fstat(f.fileno()).st_size, where, headers_only=True)
            last = None
            for last in scanner:
                pass
            if last is None:
                return None
            raw = scanner.read(last)
        plaintext = self._cipher.open(track.no, track.track_id, raw.index, raw.final, raw.ciphertext)
        return raw.final, list(decode_frames(plaintext, f"{where} segment {raw.index}"))

    def _check_against_summary(self, seen: "_Seen", track_ids: list[str]) -> None:
        # Raised at the end of reading: a recording closed cleanly but cut short on disk is not
        # "incomplete", it is tampered with (a crashed one has no summary, and just ends).
        if seen.summary is None:
            return
        for track_id in track_ids:
            expected = seen.summary.get(track_id)
            got = seen.segments.get(track_id, 0)
            if expected is None or got != expected or not seen.final.get(track_id):
                raise RecordingIntegrityError(
                    f"recording {self.id} track {track_id!r}: {got} segments, but the recording was closed with "
                    f"{expected}: truncated or segments removed")

    def frames(self, track_id: str) -> Iterator[Frame]:
        """One media track's frames, authenticated, in order."""
        track = self.manifest.track(track_id)
        if track is None or track.no == EVENTS_TRACK_NO:
            raise KeyError(track_id)
        seen = _Seen()
        yield from self._track_items(track, seen)  # type: ignore[misc]
        for _ in self._track_items(self.manifest.tracks[EVENTS_TRACK_NO], seen):
            pass  # the events track is small; it carries the stop summary
        self._check_against_summary(seen, [track_id])

    def events(self) -> Iterator[Event]:
        yield from self._track_items(self.manifest.tracks[EVENTS_TRACK_NO], _Seen())  # type: ignore[misc]

    def items(self) -> Iterator[Item]:
        """Every frame and event of every track, in timestamp order (ties: events first, then by track)."""
        seen = _Seen()
        yield from heapq.merge(*(self._track_items(t, seen) for t in self.manifest.tracks),
                               key=lambda item: item.timestamp_ms)
        self._check_against_summary(seen, [t.track_id for t in self.manifest.tracks if t.no != EVENTS_TRACK_NO])

    # -- verification ------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        report = VerifyReport(self.id, self.manifest.room, self.manifest.created, live=writer_alive(self.dir))
        for track in self.manifest.tracks:
            tr = TrackReport(track.track_id, track.kind, track.codec)
            report.tracks.append(tr)
            self._verify_track(track, tr, report)
        for tr in report.tracks:
            report.problems.extend(tr.problems)
        self._check_summary(report)
        return report

    def _verify_track(self, track: ManifestTrack, tr: TrackReport, report: VerifyReport) -> None:
        where = f"track {track.track_id!r}"
        try:
            f = open(self.dir / track.file, "rb")
        except FileNotFoundError:
            return
        with f:
            scanner = SegmentScanner(f, os.fstat(f.fileno()).st_size, where)
            try:
                for raw in scanner:
                    try:
                        plaintext = self._cipher.open(track.no, track.track_id, raw.index, raw.final, raw.ciphertext)
                        for ts, rtp, keyframe, payload in decode_frames(plaintext, f"{where} segment {raw.index}"):
                            tr.frames += 1
                            tr.payload_bytes += len(payload)
                            if track.no == EVENTS_TRACK_NO and raw.final:
                                event = json.loads(payload)
                                if isinstance(event, dict) and event.get("type") == STOP_EVENT:
                                    report.stop_summary = _summary(event, f"{where} segment {raw.index}")
                    except RecordingIntegrityError as exc:
                        tr.problems.append(str(exc))  # keep going: report every bad segment, not just the first
                        continue
                    except ValueError:
                        tr.problems.append(f"{where} segment {raw.index}: authenticated but malformed event")
                        continue
                    tr.segments += 1
                    tr.final = raw.final
            except RecordingIntegrityError as exc:
                tr.problems.append(str(exc))
            tr.torn_bytes = scanner.torn_bytes

    def _check_summary(self, report: VerifyReport) -> None:
        summary = report.stop_summary
        if summary is None:
            return
        media = [t for t in report.tracks if t.track_id != EVENTS_TRACK_ID]
        for tr in media:
            expected = summary.get(tr.track_id)
            if tr.problems:
                continue  # already reported; a count mismatch would only repeat it
            if expected is None:
                report.problems.append(f"track {tr.track_id!r} is not in the recording's stop summary")
            elif tr.segments != expected or not tr.final:
                report.problems.append(
                    f"track {tr.track_id!r}: {tr.segments} authenticated segments"
                    f"{'' if tr.final else ' and no final segment'}, but the recording was closed with "
                    f"{expected}: truncated or segments removed")
        for track_id in set(summary) - {t.track_id for t in media}:
            report.problems.append(f"track {track_id!r} from the stop summary is missing from the manifest")
