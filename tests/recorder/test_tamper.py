"""Every way of altering a recording on disk is detected, by verify() and by reading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recorder.errors import RecordingIntegrityError
from recorder.reader import RecordingReader
from recorder.segments import HEADER
from recorder.store import RecordingStore

VIDEO = "patient-video"


def track_path(data_dir: Path, rid: str, track_id: str) -> Path:
    manifest = json.loads((data_dir / "recordings" / rid / "manifest.json").read_text())
    return data_dir / "recordings" / rid / next(t["file"] for t in manifest["tracks"] if t["track_id"] == track_id)


def split_segments(data: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(data):
        length = HEADER.unpack_from(data, offset)[3]
        out.append(data[offset:offset + HEADER.size + length])
        offset += HEADER.size + length
    return out


def assert_tampered(data_dir: Path, rid: str, keys, match: str) -> None:
    reader = RecordingReader.open(data_dir, rid, keys)
    report = reader.verify()
    assert report.status == "tampered", report
    assert any(match in p for p in report.problems), report.problems
    with pytest.raises(RecordingIntegrityError):
        for _ in reader.items():
            pass


def test_bit_flip_in_ciphertext(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    data = bytearray(path.read_bytes())
    segments = split_segments(bytes(data))
    offset = sum(map(len, segments[:3])) + HEADER.size + 1000  # inside segment 3's ciphertext
    data[offset] ^= 0x04
    path.write_bytes(data)
    assert_tampered(data_dir, rid, keys, "segment 3: authentication failed")
    report = RecordingReader.open(data_dir, rid, keys).verify()
    assert len(report.problems) == 1  # just that segment; the others still authenticate
    assert next(t for t in report.tracks if t.track_id == VIDEO).segments == len(segments) - 1


@pytest.mark.parametrize("field_offset,bit", [(4 + 3, 0x01), (8, 0x01), (9 + 3, 0x01)],
                         ids=["index", "final-flag", "length"])
def test_bit_flip_in_segment_header(record, data_dir, keys, field_offset, bit):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    data = bytearray(path.read_bytes())
    start = len(split_segments(bytes(data))[0])  # header of segment 1
    data[start + field_offset] ^= bit
    path.write_bytes(data)
    assert_tampered(data_dir, rid, keys, "")


def test_swapped_segments(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    segments = split_segments(path.read_bytes())
    segments[2], segments[3] = segments[3], segments[2]
    path.write_bytes(b"".join(segments))
    assert_tampered(data_dir, rid, keys, "segment 3 found where segment 2 belongs")


def test_swapped_segments_with_headers_rewritten(record, data_dir, keys):
    # An attacker who fixes the clear-text indices still fails: the index is in the nonce and AAD.
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    segments = split_segments(path.read_bytes())
    s2, s3 = segments[2], segments[3]
    def fix(seg, index):
        return HEADER.pack(b"CSG1", index, seg[8], len(seg) - HEADER.size) + seg[HEADER.size:]

    segments[2], segments[3] = fix(s3, 2), fix(s2, 3)
    path.write_bytes(b"".join(segments))
    assert_tampered(data_dir, rid, keys, "segment 2: authentication failed")


def test_removed_segment(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    segments = split_segments(path.read_bytes())
    del segments[4]
    path.write_bytes(b"".join(segments))
    assert_tampered(data_dir, rid, keys, "segment 5 found where segment 4 belongs")


def test_segment_moved_to_another_track(record, data_dir, keys):
    rid = record().id
    a, b = track_path(data_dir, rid, VIDEO), track_path(data_dir, rid, "doctor-video")
    sa, sb = split_segments(a.read_bytes()), split_segments(b.read_bytes())
    sa[1] = sb[1]
    a.write_bytes(b"".join(sa))
    assert_tampered(data_dir, rid, keys, "segment 1: authentication failed")


def test_segment_spliced_from_another_recording(record, data_dir, keys):
    # Same room, same tracks, same content, same positions: only the recording differs.
    rid_a, rid_b = record(seed=3).id, record(seed=3).id
    a, b = track_path(data_dir, rid_a, VIDEO), track_path(data_dir, rid_b, VIDEO)
    sa, sb = split_segments(a.read_bytes()), split_segments(b.read_bytes())
    assert len(sa[2]) == len(sb[2])
    sa[2] = sb[2]
    a.write_bytes(b"".join(sa))
    assert_tampered(data_dir, rid_a, keys, "segment 2: authentication failed")


def test_whole_track_file_or_key_from_another_recording(record, data_dir, keys):
    rid_a, rid_b = record(seed=3).id, record(seed=3).id
    shutil.copy(track_path(data_dir, rid_b, VIDEO), track_path(data_dir, rid_a, VIDEO))
    assert_tampered(data_dir, rid_a, keys, "segment 0: authentication failed")
    # The wrapped data key is bound to its recording id: B's key in A's directory does not unwrap.
    shutil.copy(data_dir / "recordings" / rid_b / "key.json", data_dir / "recordings" / rid_a / "key.json")
    with pytest.raises(RecordingIntegrityError, match="wrapped data key fails authentication"):
        RecordingReader.open(data_dir, rid_a, keys)


def test_recording_directory_renamed(record, data_dir, keys):
    rid = record().id
    other = "20200101T000000Z-0123456789ab"
    (data_dir / "recordings" / rid).rename(data_dir / "recordings" / other)
    with pytest.raises(RecordingIntegrityError, match="manifest belongs to recording"):
        RecordingReader.open(data_dir, other, keys)


def test_edited_manifest(record, data_dir, keys):
    rid = record().id
    path = data_dir / "recordings" / rid / "manifest.json"
    doc = json.loads(path.read_text())
    doc["tracks"][1]["codec"] = "H264"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordingIntegrityError, match="manifest fails authentication"):
        RecordingReader.open(data_dir, rid, keys)


def test_truncated_mid_segment(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    # On its own a cut-off tail looks like a crash; the authenticated stop summary says otherwise.
    assert_tampered(data_dir, rid, keys, "but the recording was closed with")


def test_truncated_at_a_segment_boundary(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    segments = split_segments(path.read_bytes())
    path.write_bytes(b"".join(segments[:-3]))
    assert_tampered(data_dir, rid, keys, "but the recording was closed with")


def test_final_segment_removed_from_every_track(record, data_dir, keys, audit):
    # The strongest truncation: every track cut back by its final segment (stop summary included).
    # On disk that is indistinguishable from a crash; the audit log's record.stop is not.
    rid = record().id
    for track_file in (data_dir / "recordings" / rid).glob("track-*.seg"):
        track_file.write_bytes(b"".join(split_segments(track_file.read_bytes())[:-1]))
    assert RecordingReader.open(data_dir, rid, keys).verify().status == "incomplete"
    report = RecordingStore(data_dir, keys=keys, audit=audit).verify(rid, actor="auditor")
    assert report.status == "tampered"
    assert any("the audit log recorded" in p for p in report.problems)


def test_final_flag_cleared(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    segments = split_segments(path.read_bytes())
    last = bytearray(segments[-1])
    last[8] = 0  # "not final": the tag was computed with final=1 in the AAD
    segments[-1] = bytes(last)
    path.write_bytes(b"".join(segments))
    assert_tampered(data_dir, rid, keys, "authentication failed")


def test_data_appended_after_final(record, data_dir, keys):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    segments = split_segments(path.read_bytes())
    path.write_bytes(b"".join(segments) + segments[1])
    assert_tampered(data_dir, rid, keys, "after the final segment")


def test_track_file_deleted(record, data_dir, keys):
    rid = record().id
    track_path(data_dir, rid, VIDEO).unlink()
    report = RecordingReader.open(data_dir, rid, keys).verify()
    assert report.status == "tampered"


def test_crash_artefacts_are_not_tampering(record, data_dir, keys):
    # An unclosed recording whose last append was torn, or whose tail is zeros (power loss), is incomplete.
    writer = record(close=False)
    path = track_path(data_dir, writer.id, VIDEO)
    data = path.read_bytes()
    last = split_segments(data)[-1]
    path.write_bytes(data[:-len(last) // 2])
    report = RecordingReader.open(data_dir, writer.id, keys).verify()
    assert report.status == "recording" and not report.problems  # our writer still holds the lock
    assert next(t for t in report.tracks if t.track_id == VIDEO).torn_bytes > 0
    writer._release()  # as if the process had died
    path.write_bytes(data + b"\0" * 3000)
    reader = RecordingReader.open(data_dir, writer.id, keys)
    assert reader.verify().status == "incomplete"
    assert sum(1 for _ in reader.frames(VIDEO)) > 0
