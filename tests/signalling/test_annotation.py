"""Annotation over signalling: who may draw, who sees it, late joiners, bad input."""

from __future__ import annotations

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
