"""Annotation over signalling: who may draw, who sees it, late joiners, bad input."""

from __future__ import annotations

import pytest

STROKE = {"kind": "freehand", "points": [[0.40, 0.50], [0.42, 0.52], [0.45, 0.55]], "item": "filler"}


async def draw(p, shape=STROKE, ref="c-1"):
    await p.send({"type": "annotate", "op": "add", "ref": ref, "shape": shape})


async def test_doctor_draws_and_everyone_sees_it(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    expert = await sfu.join("expert", seed=3)
    await draw(doctor)
    for p in (patient, doctor, expert):
        event = await p.wait_for(lambda m: m["type"] == "annotation")
        assert event["op"] == "add" and event["author"] == "doctor-doctor"
        assert event["shape"]["points"] == STROKE["points"] and event["ref"] == "c-1"
        assert isinstance(event["t_ms"], int) and event["version"] == 1


async def test_patient_may_not_draw(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    await draw(patient)
    error = await patient.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == "forbidden" and not error["fatal"]


async def test_late_joiner_gets_the_drawing(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    await draw(doctor)
    await doctor.wait_for(lambda m: m["type"] == "annotation")
    expert = await sfu.join("expert", seed=3)
    snapshot = await expert.wait_for(lambda m: m["type"] == "annotation-snapshot")
    assert snapshot["version"] == 1 and snapshot["shapes"][0]["points"] == STROKE["points"]
    await expert.send({"type": "annotations-get"})
    again = await expert.wait_for(lambda m: m["type"] == "annotation-snapshot", start=len(expert.messages))
    assert again["version"] == 1


async def test_bad_strokes_get_typed_errors_and_change_nothing(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    bad = [
        ({"kind": "freehand", "points": [[float("nan"), 0.5]]}, "bad_annotation"),
        ({"kind": "freehand", "points": [[1.7, 0.5], [0.2, 0.2]]}, "out_of_range"),
        ({"kind": "freehand", "points": [[0.5, 0.5]] * 5000}, "too_many_points"),
        ({"kind": "spiral", "points": [[0.5, 0.5]]}, "unknown_shape"),
        # pinned to the face: [triangle, u, v] on the 852-triangle mesh, not far outside it
        ({"kind": "freehand", "anchor": "face", "points": [[852, 0.2, 0.2]]}, "out_of_range"),
        ({"kind": "freehand", "anchor": "face", "points": [[10, 0.2, -1.6]]}, "out_of_range"),
        ({"kind": "freehand", "anchor": "face", "points": [[0.5, 0.5]]}, "bad_annotation"),
        ({"kind": "circle", "anchor": "face", "center": [3, 0.2, 0.2], "edge": [True, 0.1, 0.1]}, "bad_annotation"),
        ({"kind": "arrow", "anchor": "nose", "from": [0.1, 0.1], "to": [0.2, 0.2]}, "bad_annotation"),
    ]
    for shape, code in bad:
        start = len(doctor.messages)
        await doctor.send({"type": "annotate", "op": "add", "shape": shape})
        error = await doctor.wait_for(lambda m: m["type"] == "error", start=start)
        assert error["code"] == code, (shape["kind"], error)
    assert sfu.services.rooms.live["r1"].board.version == 0


async def test_annotation_flood_is_rate_limited(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    for i in range(60):
        await draw(doctor, ref=f"c-{i}")
    error = await doctor.wait_for(lambda m: m["type"] == "error" and m["code"] == "rate_limited")
    assert not error["fatal"]
    assert sfu.services.rooms.live["r1"].board.version < 60


async def test_undo_and_moderator_clear(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    expert = await sfu.join("expert", seed=3)
    await draw(expert)
    await expert.wait_for(lambda m: m["type"] == "annotation" and m["op"] == "add")
    await expert.send({"type": "annotate", "op": "clear"})  # everything: only moderators
    error = await expert.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == "forbidden"
    await doctor.send({"type": "annotate", "op": "clear"})
    cleared = await expert.wait_for(lambda m: m["type"] == "annotation" and m["op"] == "clear")
    assert cleared["ids"] == ["a1"]


# --- face-anchored marks: the landmarks the pages need --------------------------------------

LEFT_EYE_OUTER, LEFT_MOUTH_CORNER, NOSE_TIP = 263, 291, 1


def _kind(kind):
    return lambda m: m["type"] == "analysis" and m.get("kind") == kind


async def _patient_with_face(sfu):
    import cv2
    import matplotlib.cbook
    import numpy as np

    from loadtest.participant import SyntheticParticipant
    from loadtest.sources import PhotoVideoTrack, ToneAudioTrack

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    patient = SyntheticParticipant(sfu.base_url, sfu.token("patient"), audio=ToneAudioTrack(),
                                   video=PhotoVideoTrack(photo))
    sfu.participants.append(patient)
    await patient.join()
    return patient


@pytest.mark.slow
async def test_face_anchored_marks_bring_the_patient_only_the_landmarks_they_need(sfu):
    import asyncio

    import numpy as np

    from annotate.anchoring import FACE_TRIANGLES, anchor_points

    await sfu.room(processors=["face-analysis"])
    doctor = await sfu.join("doctor", seed=2)
    patient = await _patient_with_face(sfu)
    metrics = await doctor.wait_for(lambda m: _kind("face-metrics")(m) and m["face"] is not None, timeout=30)

    # The doctor got the server's triangle table once, before the first landmarks.
    kinds = [m.get("kind") for m in doctor.messages if m["type"] == "analysis"]
    assert kinds.count("face-mesh") == 1 and kinds.index("face-mesh") < kinds.index("face-metrics")
    mesh = next(m for m in doctor.messages if _kind("face-mesh")(m))
    assert mesh["triangles"] == FACE_TRIANGLES.tolist() and mesh["participant"] == patient.id

    # No face-anchored mark yet: the patient gets no landmarks at all (nor the table).
    await asyncio.sleep(0.6)
    assert not [m for m in patient.messages if m.get("kind") in ("face-metrics", "face-landmarks", "face-mesh")]

    # The doctor pins a stroke to the patient's left cheek.
    lm = np.array(metrics["face"]["landmarks"])
    start, end = lm[LEFT_EYE_OUTER], (lm[LEFT_MOUTH_CORNER] + lm[NOSE_TIP]) / 2
    points = [start + (end - start) * k / 7 for k in range(8)]
    stroke = [[t, round(u, 5), round(v, 5)] for t, u, v in anchor_points(points, lm)]  # as sent: 5 decimals
    await doctor.send({"type": "annotate", "op": "add", "ref": "c-face",
                       "shape": {"kind": "freehand", "anchor": "face", "points": stroke, "item": "toxin"}})
    added = await patient.wait_for(lambda m: m["type"] == "annotation" and m["op"] == "add")
    assert added["shape"]["anchor"] == "face" and added["shape"]["points"] == stroke
    first = await patient.wait_for(_kind("face-landmarks"), timeout=5)

    # Just ahead of the mark (not with the next metrics, up to 200 ms later), so the page
    # can draw it as it arrives: the table, once, then only the stroke's triangles'
    # corners, the very values the doctor's metrics of that moment carry.
    at = patient.messages.index(added)
    assert [m.get("kind") for m in patient.messages[at - 2:at]] == ["face-mesh", "face-landmarks"]
    assert patient.messages[at - 1] is first
    kinds = [m.get("kind") for m in patient.messages if m["type"] == "analysis"]
    assert kinds.count("face-mesh") == 1
    wanted = sorted({int(i) for t in {a[0] for a in stroke} for i in FACE_TRIANGLES[t]})
    assert [p[0] for p in first["landmarks"]] == wanted and len(wanted) < 40
    same_moment = await doctor.wait_for(lambda m: _kind("face-metrics")(m) and m["t_ms"] == first["t_ms"])
    assert all(same_moment["face"]["landmarks"][i] == [x, y] for i, x, y in first["landmarks"])
    # ... at the metrics' rate (5 Hz), and never the 478-point metrics
    mark = len(patient.messages)
    await asyncio.sleep(1.0)
    rate = [m for m in patient.messages[mark:] if _kind("face-landmarks")(m)]
    assert 3 <= len(rate) <= 7, len(rate)
    assert not any(_kind("face-metrics")(m) for m in patient.messages)

    # Once the board has no face-anchored mark, the landmarks stop.
    await doctor.send({"type": "annotate", "op": "undo"})
    undone = await patient.wait_for(lambda m: m["type"] == "annotation" and m["op"] == "undo")
    after = patient.messages.index(undone)
    await asyncio.sleep(0.8)
    assert not any(_kind("face-landmarks")(m) for m in patient.messages[after:])
    assert sum(1 for m in doctor.messages[-4:] if _kind("face-metrics")(m)) >= 1  # the analysis goes on
