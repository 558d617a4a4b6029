"""/metrics during a real call: aiortc participants through the real server, the scrape read
with Prometheus's parser. The main series exist, move with the media, and never fall."""

from __future__ import annotations

import pytest

from .conftest import Scrape, eventually

pytestmark = pytest.mark.slow


async def _media_flowing(metered) -> tuple:
    await metered.room()
    patient = await metered.join("patient", seed=1)
    doctor = await metered.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 10, timeout=30)
    await patient.wait_for_frames(doctor.id, "video", 10, timeout=30)
    return patient, doctor


async def test_a_call_shows_rooms_participants_streams_and_counters(metered):
    patient, doctor = await _media_flowing(metered)

    # RTT needs a sender report answered by a receiver report: wait for it rather than for a time
    async def measured() -> Scrape | None:
        scrape = await metered.scrape()
        return scrape if scrape.value("consult_rtt_seconds_gcount", direction="downlink") >= 1 else None

    scrape = await eventually(measured, timeout=30)

    assert scrape.value("consult_rooms_active") == 1
    assert scrape.value("consult_participants", role="patient") == 1
    assert scrape.value("consult_participants", role="doctor") == 1
    assert scrape.value("consult_published_streams", kind="video") == 2
    assert scrape.value("consult_published_streams", kind="audio") == 2
    assert scrape.value("consult_forwarded_streams", kind="video", state="forwarding") == 2
    assert scrape.value("consult_forwarded_streams", kind="audio", state="forwarding") == 2
    for direction in ("uplink", "downlink"):
        for kind in ("audio", "video"):
            assert scrape.value("consult_rtp_packets_total", direction=direction, kind=kind) > 0
    assert scrape.value("consult_downlink_bytes_total", kind="video") > 0
    assert scrape.value("consult_uplink_bits_per_second", kind="video") > 0
    assert scrape.value("consult_downlink_bits_per_second", **{"class": "video"}) > 0
    # a new subscriber asks for a keyframe: the server asks the publisher
    assert scrape.value("consult_keyframe_requests_sent_total") > 0
    for name in ("consult_nacked_packets_total", "consult_nacks_received_total", "consult_retransmissions_total"):
        assert scrape.total(name) >= 0 and name in scrape.text
    # loss: one sample per stream arriving (a clean loopback: all in the lowest buckets)
    assert scrape.value("consult_packet_loss_ratio_gcount", direction="uplink") == 4
    assert scrape.value("consult_packet_loss_ratio_bucket", direction="uplink", le="+Inf") == 4
    assert scrape.value("consult_packet_loss_ratio_bucket", direction="uplink", le="0.1") == 4
    assert scrape.value("consult_rtt_seconds_bucket", direction="downlink", le="1.0") >= 1

    # two joins, each timed to `joined` and to its media connection
    assert scrape.value("consult_join_seconds_count", stage="joined") == 2
    assert scrape.value("consult_join_seconds_count", stage="connected") == 2
    assert scrape.value("consult_join_seconds_sum", stage="connected") > 0
    assert scrape.value("consult_event_loop_lag_seconds_count") > 0

    # counters keep what the participants counted after they leave; the gauges go back to zero
    before = scrape.value("consult_rtp_packets_total", direction="downlink", kind="video")
    await patient.close()
    await eventually(lambda: "r1" not in metered.services.rooms.live or
                     len(metered.services.rooms.live["r1"].sessions) == 1)
    await doctor.close()
    await eventually(lambda: "r1" not in metered.services.rooms.live)
    after = await metered.scrape()
    assert after.value("consult_rooms_active") == 0
    assert after.total("consult_participants") == 0
    assert after.value("consult_forwarded_streams", kind="video", state="forwarding") == 0
    assert after.value("consult_rtp_packets_total", direction="downlink", kind="video") >= before
    assert after.value("consult_packet_loss_ratio_gcount", direction="uplink") == 0


async def test_a_recording_shows_its_bytes_and_seal_latency(metered):
    patient, doctor = await _media_flowing(metered)
    await doctor.send({"type": "record", "action": "start"})
    await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on", timeout=20)

    async def sealed() -> Scrape | None:
        scrape = await metered.scrape()
        return scrape if scrape.value("consult_recording_seal_seconds_count") >= 4 else None

    scrape = await eventually(sealed, timeout=30)
    assert scrape.value("consult_recordings_active") == 1
    assert scrape.value("consult_recording_bytes_total") > 1000
    assert scrape.value("consult_recording_segments_total") == scrape.value("consult_recording_seal_seconds_count")

    await doctor.send({"type": "record", "action": "stop"})
    await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off", timeout=20)
    stopped = await metered.scrape()
    assert stopped.value("consult_recordings_active") == 0
    assert stopped.value("consult_recording_bytes_total") >= scrape.value("consult_recording_bytes_total")


async def test_server_side_watermarking_shows_its_encoders_load(metered):
    record = await metered.services.registry.create_room("Test consultation", "r1", live_watermark="server")
    metered.instances["r1"] = record.instance
    patient = await metered.join("patient", seed=1)
    doctor = await metered.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 10, timeout=30)

    async def encoding() -> Scrape | None:
        scrape = await metered.scrape()
        return scrape if scrape.value("consult_watermark_frames_total", outcome="encoded") >= 10 else None

    scrape = await eventually(encoding, timeout=30)
    assert scrape.value("consult_watermark_copies") == 2  # the patient's video to the doctor, and back
    assert scrape.value("consult_watermark_encode_seconds_total") > 0
    assert scrape.value("consult_watermark_frames_total", outcome="failed") == 0
