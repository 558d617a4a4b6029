"""The guidance state machine: priority, hysteresis, dwell, target poses, languages, pose_reached."""

from __future__ import annotations

import numpy as np
import pytest

from i18n import LOCALES, messages
from media.processors.analysis import FaceMetrics, FrameMetrics
from media.processors.face_landmarks import FaceLandmarks
from media.processors.framing import Framing
from media.processors.guidance import Band, Guidance, GuidanceConfig, TargetPose
from media.processors.head_pose import HeadPose
from media.processors.image_quality import ColourCast, Exposure
from media.processors.prompts import Prompt, prompt_text

_DUMMY_LANDMARKS = FaceLandmarks(np.zeros((478, 3), np.float32), np.zeros((478, 2), np.float32), None, 640, 480)

GOOD = dict(height=0.5, dx=0.0, dy=0.0, yaw=0.0, pitch=0.0, roll=0.0,
            p95=180.0, clipped=0.0, chroma=3.0, sharpness=1000.0)


def frame(**changes: float) -> FrameMetrics:
    v = {**GOOD, **changes}
    face = FaceMetrics(
        _DUMMY_LANDMARKS,
        HeadPose(v["yaw"], v["pitch"], v["roll"]),
        Framing(v["height"], v["height"] * 0.75, v["height"] ** 2 * 0.75, v["dx"], v["dy"]),
        v["sharpness"],
        Exposure(20.0, 120.0, v["p95"], v["clipped"]),
    )
    return FrameMetrics(face, ColourCast(0.0, v["chroma"], v["chroma"]))


NO_FACE = FrameMetrics(None, ColourCast(0.0, 3.0, 3.0))


def run(guide: Guidance, frames: list[FrameMetrics], t0: float = 0.0, dt: float = 0.1) -> list[Prompt]:
    """Feed frames at 10 fps; the prompt shown after each."""
    return [guide.update(f, t0 + i * dt) for i, f in enumerate(frames)]


@pytest.mark.parametrize("changes,expected", [
    ({}, Prompt.PERFECT),
    ({"height": 0.2}, Prompt.MOVE_CLOSER),
    ({"height": 0.85}, Prompt.MOVE_BACK),
    ({"dx": 0.4}, Prompt.MOVE_RIGHT),  # face right of centre in the image = the patient's left
    ({"dx": -0.4}, Prompt.MOVE_LEFT),
    ({"dy": 0.4}, Prompt.MOVE_UP),  # face low in the frame
    ({"dy": -0.4}, Prompt.MOVE_DOWN),
    ({"yaw": 20.0}, Prompt.TURN_RIGHT),  # turned to their left: come back right
    ({"yaw": -20.0}, Prompt.TURN_LEFT),
    ({"pitch": 20.0}, Prompt.CHIN_DOWN),
    ({"pitch": -20.0}, Prompt.CHIN_UP),
    ({"roll": 15.0}, Prompt.STRAIGHTEN),
    ({"roll": -15.0}, Prompt.STRAIGHTEN),
    ({"p95": 60.0}, Prompt.MORE_LIGHT),
    ({"clipped": 0.2}, Prompt.TOO_BRIGHT),
    ({"chroma": 25.0}, Prompt.COLOUR_CAST),
])
def test_each_condition_has_its_prompt(changes: dict[str, float], expected: Prompt):
    assert Guidance().update(frame(**changes), 0.0) is expected


def test_no_face():
    assert Guidance().update(NO_FACE, 0.0) is Prompt.FACE_CAMERA


@pytest.mark.parametrize("target,yaw,expected", [
    (TargetPose.LEFT_45, 20.0, Prompt.TURN_LEFT),  # not far enough to their left yet
    (TargetPose.LEFT_45, 65.0, Prompt.TURN_RIGHT),
    (TargetPose.LEFT_45, 42.0, Prompt.PERFECT),
    (TargetPose.RIGHT_45, -20.0, Prompt.TURN_RIGHT),
    (TargetPose.RIGHT_45, 0.0, Prompt.TURN_RIGHT),
    (TargetPose.RIGHT_45, -47.0, Prompt.PERFECT),
    (TargetPose.FRONTAL, 45.0, Prompt.TURN_RIGHT),
])
def test_yaw_is_judged_against_the_target_pose(target: TargetPose, yaw: float, expected: Prompt):
    assert Guidance(target=target).update(frame(yaw=yaw), 0.0) is expected


def test_priority_one_prompt_at_a_time_fixing_one_problem_after_another():
    everything_wrong = dict(height=0.2, dx=0.5, yaw=25.0, pitch=20.0, roll=15.0, p95=50.0, chroma=30.0)
    fixes = [("height", 0.5), ("dx", 0.0), ("yaw", 0.0), ("pitch", 0.0), ("roll", 0.0), ("p95", 180.0), ("chroma", 3.0)]
    guide, state, t, shown = Guidance(), dict(everything_wrong), 0.0, []
    for name, good in [(None, None), *fixes]:
        if name:
            state[name] = good
        for _ in range(20):  # 2 s per step: past confirm and dwell
            guide.update(frame(**state), t)
            t += 0.1
        shown.append(guide.prompt)
    assert shown == [Prompt.MOVE_CLOSER, Prompt.MOVE_RIGHT, Prompt.TURN_RIGHT, Prompt.CHIN_DOWN, Prompt.STRAIGHTEN,
                     Prompt.MORE_LIGHT, Prompt.COLOUR_CAST, Prompt.PERFECT]


def test_no_face_outranks_everything():
    guide = Guidance(GuidanceConfig(confirm_s=0, min_dwell_s=0))
    guide.update(frame(height=0.2, p95=40.0), 0.0)
    assert guide.update(NO_FACE, 0.1) is Prompt.FACE_CAMERA


def test_a_metric_hovering_at_a_threshold_does_not_flicker():
    hovering = [frame(height=h) for h in [0.29, 0.31, 0.33, 0.30, 0.34, 0.28] * 10]  # around on=0.30, below off=0.35
    guide = Guidance()
    run(guide, [frame(height=0.2)] * 5)
    assert set(run(guide, hovering, t0=0.5)) == {Prompt.MOVE_CLOSER}
    # ...and only a clear move past `off` clears it.
    assert run(guide, [frame(height=0.4)] * 20, t0=7.0)[-1] is Prompt.PERFECT


def test_a_metric_hovering_below_the_on_threshold_never_triggers():
    guide = Guidance()
    assert set(run(guide, [frame(height=h) for h in [0.31, 0.34, 0.305, 0.33] * 15])) == {Prompt.PERFECT}


def test_without_hysteresis_or_dwell_the_same_input_would_flicker():
    # The control for the two tests above: one threshold, no timing, and the prompt toggles.
    bare = GuidanceConfig(too_far=Band(0.30, 0.30), confirm_s=0, min_dwell_s=0)
    prompts = run(Guidance(bare), [frame(height=h) for h in [0.29, 0.31] * 10])
    assert sum(a != b for a, b in zip(prompts, prompts[1:])) == 19


def test_a_one_frame_miss_does_not_change_the_prompt():
    guide = Guidance()
    frames = [frame()] * 20 + [NO_FACE] + [frame()] * 20 + [frame(yaw=30.0)] + [frame()] * 20
    assert set(run(guide, frames)) == {Prompt.PERFECT}


def test_a_new_prompt_waits_for_confirmation_and_the_minimum_dwell():
    guide = Guidance(GuidanceConfig(confirm_s=0.25, min_dwell_s=1.0))
    dt = 0.125  # exact in binary: the switch times below are exact
    assert guide.update(frame(height=0.2), 0.0) is Prompt.MOVE_CLOSER  # the first prompt shows at once
    times = [dt * i for i in range(1, 17)]
    shown = [guide.update(frame(), t) for t in times]  # fixed at 0.125 s; PERFECT is confirmed at 0.375 s ...
    assert times[shown.index(Prompt.PERFECT)] == 1.0  # ... but MOVE_CLOSER stays up for its full second
    # After the dwell, a change needs only its confirmation time.
    guide.update(frame(), 3.0)
    shown = [guide.update(frame(p95=40.0), 3.0 + dt * i) for i in range(1, 5)]
    assert shown == [Prompt.PERFECT, Prompt.PERFECT, Prompt.MORE_LIGHT, Prompt.MORE_LIGHT]


def test_hold_still_is_relative_to_the_stream_itself():
    guide = Guidance()
    run(guide, [frame(sharpness=1000.0)] * 20)
    assert run(guide, [frame(sharpness=300.0)] * 10, t0=2.0)[-1] is Prompt.HOLD_STILL  # motion blur
    assert run(guide, [frame(sharpness=950.0)] * 20, t0=3.0)[-1] is Prompt.PERFECT
    soft_camera = Guidance()  # a camera that is never sharp is not asked to hold still forever
    assert set(run(soft_camera, [frame(sharpness=s) for s in [90.0, 100.0, 110.0] * 30])) == {Prompt.PERFECT}


def test_both_languages():
    guide = Guidance(language="zh-CN")
    guide.update(frame(height=0.2), 0.0)
    assert guide.text == "请靠近一点"
    guide.language = "en"
    assert guide.text == "Move closer"
    assert prompt_text(Prompt.PERFECT, "zh") == "很好，请保持不动"
    assert prompt_text(Prompt.PERFECT, "fr") == "Perfect, hold still"  # no French: English
    assert Guidance().text is None  # nothing shown before the first frame


def test_every_prompt_has_a_text_in_every_language():
    for locale in LOCALES:
        assert all(messages(locale).get(f"prompt.{prompt.value}", "").strip() for prompt in Prompt), locale


def test_pose_reached_needs_consecutive_sharp_frames_within_tolerance():
    guide = Guidance(GuidanceConfig(hold_frames=5), target=TargetPose.LEFT_45)
    run(guide, [frame(yaw=44.0)] * 4)
    held = guide.pose_reached()
    assert not held and held.frames_held == 4 and held.frames_needed == 5
    guide.update(frame(yaw=48.0), 0.4)
    assert guide.pose_reached()
    assert not guide.pose_reached(TargetPose.FRONTAL)
    assert not guide.pose_reached(tolerance_deg=2.0)  # the latest frame is 3 degrees off

    for breaker in (NO_FACE, frame(yaw=55.0), frame(yaw=45.0, roll=9.0), frame(yaw=45.0, sharpness=400.0)):
        guide.update(breaker, 0.5)
        assert guide.pose_reached().frames_held == 0
        run(guide, [frame(yaw=45.0)] * 5, t0=0.6)
        assert guide.pose_reached()


def test_changing_the_target_changes_the_advice():
    guide = Guidance(GuidanceConfig(confirm_s=0, min_dwell_s=0))
    assert guide.update(frame(yaw=0.0), 0.0) is Prompt.PERFECT
    guide.target = TargetPose.RIGHT_45
    assert guide.update(frame(yaw=0.0), 0.1) is Prompt.TURN_RIGHT
    assert guide.update(frame(yaw=-45.0), 0.2) is Prompt.PERFECT
