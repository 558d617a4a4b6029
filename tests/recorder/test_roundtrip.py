"""Write -> verify -> read back a realistic session; what lands on disk."""

from __future__ import annotations

import os
import stat
from collections import defaultdict

import pytest

from recorder.errors import RecordingStateError
from recorder.manifest import TrackInfo
from recorder.reader import Event, Frame, RecordingReader
from recorder.segments import HEADER
from recorder.writer import RecordingWriter

from . import synthetic


def expected_by_track(duration_ms: int, seed: int = 0) -> tuple[dict[str, list], list]:
    frames: dict[str, list] = defaultdict(list)
    events = []
    for item in synthetic.session(duration_ms, seed=seed):
        if isinstance(item, synthetic.SynthFrame):
            frames[item.track_id].append((item.timestamp_ms, item.rtp_timestamp, item.keyframe, item.payload))
        else:
            events.append((item.timestamp_ms, item.data))
    return frames, events


def test_round_trip_of_a_realistic_session(record, data_dir, keys):
    writer = record(duration_ms=20_000)
    reader = RecordingReader.open(data_dir, writer.id, keys)

    report = reader.verify()
    assert report.status == "complete" and report.problems == []
    assert [t.track_id for t in report.tracks] == [
        "events", "patient-video", "patient-audio", "doctor-video", "doctor-audio"]
    assert all(t.final and t.torn_bytes == 0 for t in report.tracks)
    assert report.stop_summary == {t.track_id: t.segments for t in report.tracks if t.track_id != "events"}

    frames, events = expected_by_track(20_000)
    for track_id, expected in frames.items():
        got = [(f.timestamp_ms, f.rtp_timestamp, f.keyframe, f.payload) for f in reader.frames(track_id)]
        assert got == expected, track_id
    got_events = [(e.timestamp_ms, e.data) for e in reader.events()]
    assert got_events[:-1] == events
    assert got_events[-1][1]["type"] == "recording.stop"

    # items(): everything, merged in timestamp order.
    items = list(reader.items())
    assert len(items) == sum(map(len, frames.values())) + len(events) + 1
    assert [i.timestamp_ms for i in items] == sorted(i.timestamp_ms for i in items)
    assert {type(i) for i in items} == {Frame, Event}

    # Segment sizing: ~1.5 Mbit/s video splits at 64 KiB, 64 kbit/s audio at 1 s.
    video = next(t for t in report.tracks if t.track_id == "patient-video")
    audio = next(t for t in report.tracks if t.track_id == "patient-audio")
    assert video.segments > 20_000 / 1000 * 2
    assert 20 <= audio.segments <= 21


def test_segments_respect_size_and_duration_limits(record, data_dir, keys):
    writer = record(duration_ms=10_000)
    reader = RecordingReader.open(data_dir, writer.id, keys)
    for track in reader.manifest.tracks:
        data = (data_dir / "recordings" / writer.id / track.file).read_bytes()
        offset, index = 0, 0
        while offset < len(data):
            _, idx, _, length = HEADER.unpack_from(data, offset)
            assert idx == index
            offset += HEADER.size + length
            index += 1
        assert offset == len(data)
    # Every segment holds <= 64 KiB of frames or one larger frame, spanning < 1 s of timestamps.
    for track in reader.manifest.tracks[1:]:
        sizes = _segment_contents(reader, track)
        for frames in sizes:
            span = frames[-1][0] - frames[0][0] if frames else 0
            size = sum(17 + n for _, n in frames)
            assert span < 1000
            assert size <= 64 * 1024 or len(frames) == 1


def _segment_contents(reader, track):
    from recorder.segments import SegmentScanner, decode_frames
    with open(reader.dir / track.file, "rb") as f:
        out = []
        for raw in SegmentScanner(f, os.fstat(f.fileno()).st_size, "t"):
            pt = reader._cipher.open(track.no, track.track_id, raw.index, raw.final, raw.ciphertext)
            out.append([(ts, len(p)) for ts, _, _, p in decode_frames(pt, "t")])
        return out


def test_no_plaintext_on_disk_and_private_permissions(record, data_dir):
    writer = record(duration_ms=3000)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    blob = b"".join(p.read_bytes() for p in files)
    # Samples of media payload and of event text must not appear anywhere on disk.
    for n in (0, 1, 45):
        assert synthetic.payload(0, "patient-video", n, 4096)[:64] not in blob
    assert "lesion".encode() not in blob and b"landmarks" not in blob and b"annotation" not in blob
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert (data_dir / "recording.kek").exists() and (data_dir / "recordings" / writer.id / "key.json").exists()


def test_track_added_mid_recording_and_quiet_tracks_flushed(data_dir, keys, audit):
    clock = [0.0]
    writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=synthetic.tracks(("patient",)), audit=audit,
                                   actor="doctor-1", clock=lambda: clock[0])
    writer.write_frame("patient-audio", 0, 0, False, b"\x01" * 100)
    writer.write_event(5, {"type": "join", "participant": "expert"})
    writer.add_track(TrackInfo("expert-video", "video", "H264", 90000))
    writer.write_frame("expert-video", 10, 900, True, os.urandom(120_000))  # larger than a segment: alone
    clock[0] = 1.5
    writer.flush_idle()  # the quiet audio track's buffer is sealed by wall-clock age
    assert writer.segments_written == 3  # audio, events, the oversized video frame
    writer.close()
    reader = RecordingReader.open(data_dir, writer.id, keys)
    assert reader.verify().status == "complete"
    assert [t.track_id for t in reader.manifest.tracks] == ["events", "patient-video", "patient-audio", "expert-video"]
    assert len(list(reader.frames("expert-video"))[0].payload) == 120_000


def test_writer_rejects_misuse(record, data_dir, keys, audit):
    writer = record(close=False, duration_ms=100)
    with pytest.raises(RecordingStateError):
        writer.write_frame("nobody-video", 0, 0, False, b"x")
    with pytest.raises(ValueError):
        writer.write_event(0, {"type": "recording.stop", "segments": {}})  # reserved for the writer
    with pytest.raises(ValueError):
        writer.write_event(0, {"x": float("nan")})
    with pytest.raises(ValueError):
        writer.write_event(0, {"x": object()})
    with pytest.raises(ValueError):
        writer.write_frame("patient-audio", -1, 0, False, b"x")
    with pytest.raises(ValueError):
        writer.write_frame("patient-audio", 1.5, 0, False, b"x")
    with pytest.raises(ValueError):
        writer.write_frame("patient-audio", 0, 2**32, False, b"x")
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RecordingStateError):
        writer.write_frame("patient-audio", 0, 0, False, b"x")
    assert RecordingReader.open(data_dir, writer.id, keys).verify().status == "complete"


def test_nonces_never_repeat_within_a_recording(record, data_dir, keys):
    # The nonce is (track number, segment index): list them all for a recording and check uniqueness,
    # and that two recordings use different data keys (identical positions, different ciphertext).
    from recorder.crypto import segment_nonce
    a = record(duration_ms=2000, seed=1)
    b = record(duration_ms=2000, seed=1)
    ra, rb = RecordingReader.open(data_dir, a.id, keys), RecordingReader.open(data_dir, b.id, keys)
    counts = {t.track_id: t.segments for t in ra.verify().tracks}
    nonces = [segment_nonce(t.no, i) for t in ra.manifest.tracks for i in range(counts[t.track_id])]
    assert len(nonces) >= 10
    assert len(nonces) == len(set(nonces))
    file = ra.manifest.tracks[1].file
    first_bytes = slice(HEADER.size, HEADER.size + 64)
    assert (ra.dir / file).read_bytes()[first_bytes] != (rb.dir / file).read_bytes()[first_bytes]
    assert list(ra.frames("doctor-audio")) == list(rb.frames("doctor-audio"))
