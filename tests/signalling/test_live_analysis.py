"""signalling/live_analysis.py on its own: RoomAnalysis on a stand-in call
(tests/signalling/call_room.py) with a real annotation board, fed the events a processor emits.
With the real face-analysis processor: tests/signalling/test_annotation.py and
tests/media/processors/test_face_processor.py."""

from __future__ import annotations

import time

import pytest

from annotate.board import AnnotationBoard
from annotate.face_relay import face_triangles
from media.processing import ProcessorEvent
from signalling.live_analysis import RoomAnalysis
from signalling.registry import RoomRecord

from .call_room import CallRoom

CLINICIANS = frozenset({"doctor", "expert"})
FACE_MARK = {"kind": "circle", "anchor": "face", "center": [10, 0.3, 0.3], "edge": [10, 0.4, 0.3]}


@pytest.fixture
def call() -> CallRoom:
    return CallRoom(RoomRecord(id="r1", name="Room", created_at=time.time(), instance="i1"))


def kinds(call: CallRoom, participant) -> list[str]:
    return [m.get("kind", m["type"]) for m in call.pages[participant.id]]


def face_metrics(points: int = 478) -> ProcessorEvent:
    face = {"landmarks": [[i / 1000, i / 2000] for i in range(points)]}
    return ProcessorEvent({"kind": "face-metrics", "face": face}, CLINICIANS)


def test_analysis_reaches_its_roles_and_the_recording_and_state_reaches_late_joiners(call):
    analysis = RoomAnalysis(call, "r1", AnnotationBoard(now_ms=call.session_ms))
    patient, doctor = call.join("patient"), call.join("doctor")
    analysis.relay("face-analysis", patient.id, ProcessorEvent({"kind": "guidance", "prompt": "closer"},
                                                               frozenset({"patient"})))
    analysis.relay("face-analysis", patient.id, ProcessorEvent({"kind": "capture", "state": "started"}))
    analysis.relay("face-analysis", patient.id, ProcessorEvent({"kind": "quality", "sharp": True}, CLINICIANS))
    assert kinds(call, patient) == ["guidance", "capture"] and kinds(call, doctor) == ["capture", "quality"]
    guidance = call.pages[patient.id][0]
    assert {k: guidance[k] for k in ("type", "processor", "participant", "prompt")} == {
        "type": "analysis", "processor": "face-analysis", "participant": patient.id, "prompt": "closer"}
    assert [m["kind"] for m in call.recorded] == ["guidance", "capture", "quality"]  # everything, for a replay

    # a page joining now gets the current prompt and protocol step its role may see; not metrics
    assert [m["kind"] for m in analysis.state_for("patient")] == ["guidance", "capture"]
    assert [m["kind"] for m in analysis.state_for("expert")] == ["capture"]
    analysis.relay("face-analysis", patient.id, ProcessorEvent({"kind": "guidance", "prompt": "hold still"},
                                                               frozenset({"patient"})))
    assert analysis.state_for("patient")[0]["prompt"] == "hold still"  # the latest only
    analysis.forget(patient.id)
    assert analysis.state_for("patient") == []


def test_face_metrics_go_to_their_roles_and_only_the_landmarks_face_marks_need_to_the_others(call):
    board = AnnotationBoard(now_ms=call.session_ms)
    analysis = RoomAnalysis(call, "r1", board)
    patient, doctor = call.join("patient"), call.join("doctor")
    analysis.relay("face-analysis", patient.id, face_metrics())
    analysis.relay("face-analysis", patient.id, face_metrics())
    assert kinds(call, doctor) == ["face-mesh", "face-metrics", "face-metrics"]  # the table once, first
    assert kinds(call, patient) == []  # no face-anchored marks: nothing
    assert [m["kind"] for m in call.recorded] == ["face-metrics"] * 2

    board.apply(doctor.identity, {"op": "add", "shape": FACE_MARK})
    analysis.face_mark_added()  # at once, from the newest metrics (LiveRoom.broadcast calls it)
    assert kinds(call, patient) == ["face-mesh", "face-landmarks"]
    assert kinds(call, doctor) == ["face-mesh", "face-metrics", "face-metrics"]  # it has every landmark already
    landmarks = call.pages[patient.id][1]["landmarks"]
    assert sorted(i for i, _, _ in landmarks) == sorted(face_triangles()[10])

    analysis.relay("face-analysis", patient.id, face_metrics())
    assert kinds(call, patient)[-1] == "face-landmarks" and kinds(call, patient).count("face-mesh") == 1
    analysis.forget(patient.id)  # a rejoin is a new page: it needs the table again
    analysis.relay("face-analysis", patient.id, face_metrics())
    assert kinds(call, patient).count("face-mesh") == 2


def test_a_processor_failure_is_told_to_clinicians_and_moderators_only(call):
    analysis = RoomAnalysis(call, "r1", AnnotationBoard(now_ms=call.session_ms))
    patient, expert = call.join("patient"), call.join("expert")
    moderator = call.join("patient", identity="host", permissions=["subscribe", "moderate"])
    analysis.processor_failed("face-analysis", patient.id, "model missing")
    assert call.pages[patient.id] == []
    for participant in (expert, moderator):
        assert call.pages[participant.id] == [{"type": "processor-failed", "processor": "face-analysis",
                                               "participant": patient.id, "error": "model missing"}]
