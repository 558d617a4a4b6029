"""The control plane's side of downlink adaptation: whose video matters, and telling the page."""

from __future__ import annotations

from signalling.roles import VIDEO_PRIORITY


async def test_a_paused_video_is_told_to_its_subscriber_only(sfu) -> None:
    await sfu.room()
    patient = await sfu.join("patient")
    doctor = await sfu.join("doctor")
    expert = await sfu.join("expert")
    live = sfu.services.rooms.live["r1"]

    live.video_paused(patient.id, doctor.id, True)
    paused = await patient.wait_for(lambda m: m["type"] == "video-state")
    assert paused == {"type": "video-state", "participant": doctor.id, "paused": True, "reason": "weak-connection"}
    start = len(patient.messages)
    live.video_paused(patient.id, doctor.id, False)
    resumed = await patient.wait_for(lambda m: m["type"] == "video-state", start=start)
    assert resumed == {"type": "video-state", "participant": doctor.id, "paused": False}
    assert not any(m["type"] == "video-state" for m in doctor.messages + expert.messages)
    live.video_paused("p-gone", doctor.id, True)  # a subscriber that left meanwhile: nothing happens


async def test_the_patients_video_is_kept_longest(sfu) -> None:
    await sfu.room()
    participants = {role: await sfu.join(role) for role in ("patient", "doctor", "expert")}
    peers = sfu.services.rooms.live["r1"].media.peers
    priority = {role: peers[p.id].video_priority for role, p in participants.items()}
    assert priority == {role: VIDEO_PRIORITY[role] for role in participants}
    assert priority["patient"] > priority["doctor"] > priority["expert"]
