"""What a recording's events say for the trainer's view (signalling/replay_timeline.py): its
kind and end, its people (one per identity, with their joins), pseudonyms in place of
identities, and face landmarks kept only around face-anchored marks.

The same, end to end through the replay API over recorded calls, is in test_replay_api.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from recorder.audit import AuditLog
from recorder.errors import RecordingIntegrityError
from recorder.keys import KeyStore
from recorder.manifest import EVENTS_TRACK_NO, TrackInfo
from recorder.reader import Event
from recorder.writer import RecordingWriter
from signalling.replay_timeline import (
    FACE_MARGIN_MS,
    FOREVER_MS,
    Pseudonyms,
    face_mark_spans,
    kind_of_manifest,
    kind_of_recording,
    media_end_if_cut_short,
    one_per_person,
    participants_by_id,
    people_with_joins,
    trim_landmarks,
)

CHEN = {"id": "p-1", "identity": "patient-7", "name": "Mrs Chen", "role": "patient"}
DOCTOR = {"id": "p-2", "identity": "doctor-1", "name": "Dr Who", "role": "doctor"}


def joined(participant: dict, kind: str = "participant-joined") -> dict:
    return {"type": kind, "participant": dict(participant)}


# --- the recording ---------------------------------------------------------------------------------


class Reader:
    """A RecordingReader's media end: a time, None (no media), or failing authentication."""

    def __init__(self, end: Optional[int] = None, tampered: bool = False) -> None:
        self.end, self.tampered = end, tampered

    def media_end_ms(self) -> Optional[int]:
        if self.tampered:
            raise RecordingIntegrityError("last segment fails authentication")
        return self.end


def test_only_a_recording_cut_short_ends_with_its_media():
    assert media_end_if_cut_short(Reader(9000), complete=False) == [9000]
    assert media_end_if_cut_short(Reader(9000), complete=True) == []  # its stop event is as late
    assert media_end_if_cut_short(Reader(None), complete=False) == []
    assert media_end_if_cut_short(Reader(tampered=True), complete=False) == []  # replaying the track says so


def manifest(*kinds: str) -> SimpleNamespace:
    tracks = [SimpleNamespace(no=EVENTS_TRACK_NO, kind="events")]
    tracks += [SimpleNamespace(no=n, kind=kind) for n, kind in enumerate(kinds, start=1)]
    return SimpleNamespace(tracks=tracks)


def test_a_photo_set_holds_image_tracks_only():
    assert kind_of_manifest(manifest("image")) == "photos"
    assert kind_of_manifest(manifest("image", "image")) == "photos"
    assert kind_of_manifest(manifest("audio", "video")) == "call"
    assert kind_of_manifest(manifest("image", "video")) == "call"
    assert kind_of_manifest(manifest()) == "call"  # events only: nothing to call it photos for


def test_the_kind_of_a_recording_on_disk(tmp_path: Path):
    data_dir = tmp_path / "data"
    keys, audit = KeyStore.open(data_dir, environ={}, create=True), AuditLog.open(data_dir, environ={}, create=True)
    made = {}
    for label, tracks in (("photos", [TrackInfo("stills", "image", "jpeg")]),
                          ("call", [TrackInfo("a", "audio", "opus"), TrackInfo("v", "video", "VP8")])):
        writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=tracks, audit=audit, actor="doctor-1",
                                       fsync=False)
        writer.close()
        made[label] = data_dir / "recordings" / writer.id
    assert kind_of_recording(made["photos"]) == "photos"
    assert kind_of_recording(made["call"]) == "call"
    assert kind_of_recording(data_dir / "recordings" / "missing") == "call"  # no manifest to say otherwise


# --- who was there ---------------------------------------------------------------------------------


def test_participants_by_id_from_participant_events():
    events = [joined(CHEN, "track-owner"), {"type": "annotation", "author": "doctor-1"}, joined(DOCTOR),
              joined({**CHEN, "name": "Mrs J Chen"}, "participant-updated"),
              {"type": "participant-joined", "participant": {"name": "no id"}},
              {"type": "participant-joined", "participant": "p-3"}]
    assert participants_by_id(events) == {"p-1": {**CHEN, "name": "Mrs J Chen"}, "p-2": DOCTOR}


def test_one_entry_per_person_in_order_of_appearance_with_the_newest_details():
    rejoined = {**CHEN, "id": "p-3", "name": "Mrs J Chen"}
    anonymous = {"id": "p-4", "identity": None, "name": "Guest", "role": "patient"}
    people = one_per_person([CHEN, DOCTOR, rejoined, anonymous])
    assert people == [rejoined, DOCTOR, anonymous]  # Mrs Chen keeps her first place


def test_people_with_their_joins_on_the_recordings_clock():
    rejoined = {**CHEN, "id": "p-3", "name": "Mrs J Chen"}
    events = [Event(1000, joined(CHEN, "track-owner")),
              Event(1500, joined(DOCTOR)),
              Event(1600, joined(CHEN)),  # the same join seen again
              Event(4000, {"type": "participant-left", "participant_id": "p-1"}),
              Event(6000, joined(rejoined)),
              Event(7000, joined({**DOCTOR, "role": "expert"}, "participant-updated")),
              Event(8000, {"type": "participant-left", "participant_id": "p-9"}),  # never joined: nothing
              Event(9000, {"type": "participant-left", "participant_id": "p-1"})]  # left already: kept
    people = people_with_joins(events, origin=1000)
    assert people == [
        {"id": "p-1", "identity": "patient-7", "name": "Mrs J Chen", "role": "patient", "ids": ["p-1", "p-3"],
         "joins": [{"id": "p-1", "from_ms": 0, "to_ms": 3000}, {"id": "p-3", "from_ms": 5000, "to_ms": None}]},
        {"id": "p-2", "identity": "doctor-1", "name": "Dr Who", "role": "expert", "ids": ["p-2"],
         "joins": [{"id": "p-2", "from_ms": 500, "to_ms": None}]},
    ]


def test_a_participant_without_an_identity_is_a_person_of_their_own():
    guest = {"id": "p-5", "name": "Guest", "role": "patient"}
    people = people_with_joins([Event(0, joined(guest)), Event(10, joined({**guest, "id": "p-6"}))], origin=0)
    assert [(p["id"], p["identity"], p["ids"]) for p in people] == [("p-5", None, ["p-5"]), ("p-6", None, ["p-6"])]


def test_an_update_alone_is_no_join():
    people = people_with_joins([Event(0, joined(CHEN, "participant-updated"))], origin=0)
    assert people == [{**CHEN, "ids": [], "joins": []}]


def test_pseudonyms_replace_identities_wherever_they_appear():
    pseudonyms = Pseudonyms()
    event = {"type": "annotation", "author": "doctor-1",
             "shape": {"id": "s1", "shapes_of": "patient-7"},
             "list": [{"participant": {"identity": "patient-7", "name": "Mrs Chen"}}, "doctor-1"],
             "identity": 7}  # not a string: not an identity
    shown = pseudonyms.apply(event)
    assert shown == {"type": "annotation", "author": "participant-1",
                     "shape": {"id": "s1", "shapes_of": "participant-2"},
                     "list": [{"participant": {"identity": "participant-2", "name": "Mrs Chen"}}, "doctor-1"],
                     "identity": 7}
    assert event["author"] == "doctor-1"  # a copy: the event is untouched
    assert pseudonyms.of("patient-7") == "participant-2" and pseudonyms.of("someone") == "participant-3"
    assert Pseudonyms().of("patient-7") == "participant-1"  # each view numbers its own


# --- face landmarks --------------------------------------------------------------------------------


def at(ms: int, event: dict) -> dict:
    return {"at_ms": ms, "event": event}


def add(ms: int, shape_id: str, anchor: Optional[str] = "face") -> dict:
    return at(ms, {"type": "annotation", "op": "add", "shape": {"id": shape_id, "anchor": anchor}})


def remove(ms: int, op: str, *ids: str) -> dict:
    return at(ms, {"type": "annotation", "op": op, "ids": list(ids)})


def snapshot(ms: int, part: int, *shapes: Any) -> dict:
    return at(ms, {"type": "annotation-snapshot", "part": part, "shapes": list(shapes)})


def metrics(ms: int) -> dict:
    return at(ms, {"type": "analysis", "kind": "face-metrics", "face": {"sharpness": 40.0, "landmarks": [[0.5, 0.5]]}})


def test_face_mark_spans_follow_adds_undos_and_clears():
    timeline = [add(1000, "a"), add(2000, "b"), remove(3000, "undo", "a"), remove(4000, "clear", "b"),
                add(5000, "c", anchor=None), add(6000, "d"), remove(7000, "undo", "d")]
    assert face_mark_spans(timeline) == [(1000, 4000), (6000, 7000)]


def test_a_face_mark_still_on_the_board_lasts_to_the_end():
    assert face_mark_spans([add(1000, "a")]) == [(1000, FOREVER_MS)]
    assert face_mark_spans([metrics(0), add(5000, "x", anchor=None)]) == []


def test_snapshots_replace_the_board_in_parts():
    timeline = [snapshot(1000, 0, {"id": "a", "anchor": "face"}),
                snapshot(2000, 0, {"id": "b"}),  # a new drawing: the face mark is gone
                snapshot(2000, 1, {"id": "c", "anchor": "face"}),  # a later part adds
                snapshot(3000, 0),  # the board cleared
                snapshot(3000, 1, "not a shape", {"id": "d"})]
    assert face_mark_spans(timeline) == [(1000, 2000), (2000, 3000)]


def test_landmarks_are_kept_only_around_face_marks():
    timeline = [metrics(t) for t in range(0, 12000, 500)]
    timeline[8:8] = [add(4000, "a")]
    timeline[15:15] = [remove(7000, "undo", "a")]
    original = [dict(item) for item in timeline]
    assert trim_landmarks(timeline) is True
    kept = [i["at_ms"] for i in timeline if "landmarks" in i["event"].get("face", {})]
    dropped = [i["at_ms"] for i in timeline if i["event"].get("kind") == "face-metrics"
               and "landmarks" not in i["event"]["face"]]
    assert kept == list(range(4000 - FACE_MARGIN_MS, 7000 + FACE_MARGIN_MS + 1, 500))
    assert dropped and all(t < 3000 or t > 8000 for t in dropped)
    assert all(i["event"]["face"]["sharpness"] == 40.0 for i in timeline if i["event"].get("kind") == "face-metrics")
    assert all("landmarks" in i["event"]["face"] for i in original if i["event"].get("kind") == "face-metrics")


def test_without_face_marks_every_landmark_goes():
    timeline = [metrics(0), metrics(200), add(300, "x", anchor=None),
                at(400, {"type": "analysis", "kind": "face-metrics", "face": None})]
    assert trim_landmarks(timeline) is False
    assert [i["event"]["face"] for i in timeline if i["event"].get("kind") == "face-metrics"] == \
        [{"sharpness": 40.0}, {"sharpness": 40.0}, None]
