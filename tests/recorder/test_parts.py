"""A recording carried on as the next part of one cut short (its node died or drained): the
manifest names the recording it continues, authenticated like the rest; the earlier part,
its writer killed, still ends where its media ends, not where its last event was."""

from __future__ import annotations

import json

import pytest

from recorder.audit import Action
from recorder.errors import RecordingIntegrityError
from recorder.manifest import TrackInfo
from recorder.reader import RecordingReader
from recorder.store import RecordingStore
from recorder.writer import RecordingWriter


def test_a_part_names_the_recording_it_continues_authenticated(record, data_dir, keys, audit):
    first = record(duration_ms=2000)
    second = record(duration_ms=2000, continues=first.id, part=2)

    listed = {info.id: info for info in RecordingStore(data_dir).list()}
    assert (listed[first.id].continues, listed[first.id].part) == (None, 1)
    assert (listed[second.id].continues, listed[second.id].part) == (first.id, 2)
    reader = RecordingReader.open(data_dir, second.id, keys)  # authenticated
    assert (reader.manifest.continues, reader.manifest.part) == (first.id, 2)
    assert reader.verify().status == "complete"
    # a first part is written as manifests were before parts existed: their MACs still hold
    assert not {"continues", "part"} & set(json.loads((first.dir / "manifest.json").read_text()))
    starts = {e["target"]: e["details"] for e in audit.authentic_entries() if e["action"] == Action.RECORD_START}
    assert "continues" not in starts[first.id]
    assert (starts[second.id]["continues"], starts[second.id]["part"]) == (first.id, 2)

    path = second.dir / "manifest.json"
    doc = json.loads(path.read_text())
    doc["part"] = 3  # renumbered: the MAC says no
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordingIntegrityError, match="manifest fails authentication"):
        RecordingReader.open(data_dir, second.id, keys)
    doc["continues"] = None  # no longer a part, yet numbered
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordingIntegrityError, match="malformed part"):
        RecordingReader.open(data_dir, second.id, keys)


def test_a_recording_cut_short_ends_where_its_sealed_media_ends(data_dir, keys, audit):
    writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=[TrackInfo("p-1-video", "video", "VP8", 90000)],
                                   audit=audit, actor="doctor-1", fsync=False, segment_max_ms=100)
    writer.write_event(0, {"type": "track-owner", "participant": {"id": "p-1", "name": "P", "role": "patient"}})
    writer.write_event(100, {"type": "participant-left", "participant_id": "p-2"})  # seals the first; then quiet
    for t in range(0, 3000, 40):
        writer.write_frame("p-1-video", t, t * 90, t % 1000 == 0, b"\x01" * 500)
    writer._release()  # killed: the lock is gone, the unsealed tail with it

    reader = RecordingReader.open(data_dir, writer.id, keys)
    assert max(e.timestamp_ms for e in reader.events()) == 0  # its events alone say it lasted nothing
    last = max(f.timestamp_ms for f in reader.frames("p-1-video"))
    assert 2800 <= last < 3000 and reader.media_end_ms() == last
    assert RecordingStore(data_dir).list()[0].state == "open"
