"""Chrome's initial bandwidth probes from the load test's simulcast publisher (loadtest/initial_probes.py)."""

from __future__ import annotations

import fractions
import math
import time

import pytest
from aiortc import clock
from aiortc.rtp import RTCP_PSFB_APP, RTCP_RTPFB_NACK, RtcpPsfbPacket, RtcpRtpfbPacket, RtpPacket, pack_remb_fci

from loadtest.initial_probes import (
    FRAME_GAP_S,
    MIN_PROBE_PACKETS,
    PADDING_BYTES,
    PROBE_DURATION_S,
    ClusterSent,
    InitialProber,
    send_cluster,
)
from loadtest.simulcast_allocation import LayerAllocator
from loadtest.simulcast_sender import PROBES_ENV, SimulcastSender, probe_mode
from media.uplink_probes import ABS_SEND_TIME_MS, ABS_SEND_TIME_WRAP, ProbeBursts
from tests.loadtest.test_simulcast import (
    FPS,
    LAYERS,
    RTX,
    VP8,
    Wire,
    by_rid,
    extensions_map,
    layer,
    new_sender,
    parameters,
    plan,
)

RATES_720P = [302_000, 522_000, 1_491_000]  # l, m, h as the 720p load test's layers send


class FakeTime:
    """A monotonic clock (and the NTP clock abs-send-time is read from) that asyncio-like sleeps move:
    whole milliseconds, a little late, as epoll wakes; each send takes a little time too."""

    def __init__(self, late_s: float = 0.0002, send_s: float = 0.00002) -> None:
        self.t = time.monotonic()  # near the real clock: the sender's RTCP handling reads that one
        self.late_s, self.send_s = late_s, send_s
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.t += math.ceil(max(delay, 0.0) * 1000) / 1000 + self.late_s

    def ntp(self) -> int:
        return int(self.t * (1 << 32))


class TimedWire(Wire):
    """Records each packet's (fake) send time."""

    def __init__(self, fake: FakeTime) -> None:
        super().__init__()
        self.fake = fake
        self.times: list[float] = []

    async def send_rtp(self, data: bytes) -> None:
        self.fake.t += self.fake.send_s
        self.times.append(self.fake.t)
        await super().send_rtp(data)


def sender_with_fake_time(monkeypatch, wire: TimedWire, probes: str = "on", layers=LAYERS) -> SimulcastSender:
    monkeypatch.setattr(clock, "current_ntp_time", wire.fake.ntp)  # abs-send-time from the fake clock
    return SimulcastSender(new_sender(wire), plan(layers), parameters(), probes=probes)


def send_result(bitrate: float, further: bool = False) -> ClusterSent:
    return ClusterSent(bitrate=bitrate, packets=16, bytes=16 * PADDING_BYTES, span_s=0.015, further=further)


def unwrapped_ms(abs_times: list[int]) -> list[float]:
    out, total = [0.0], 0.0
    for a, b in zip(abs_times, abs_times[1:]):
        total += ((b - a) % ABS_SEND_TIME_WRAP) * ABS_SEND_TIME_MS
        out.append(total)
    return out


def judged(packets: list[RtpPacket], times: list[float]) -> tuple[ProbeBursts, list]:
    """The server's burst detector fed `packets`, arriving when sent, then a packet 30 ms later to close the run."""
    bursts = ProbeBursts()
    results = [bursts.add(abs_send_time=p.extensions.abs_send_time, arrival_time_ms=int(t * 1000),
                          size=len(p.payload) + p.padding_size) for p, t in zip(packets, times)]
    last_abs = packets[-1].extensions.abs_send_time
    later = (last_abs + round(30 / ABS_SEND_TIME_MS)) % ABS_SEND_TIME_WRAP
    results.append(bursts.add(abs_send_time=later, arrival_time_ms=int(times[-1] * 1000) + 30, size=1000))
    return bursts, results


async def first_frame(sender: SimulcastSender) -> None:
    """What the RTP loop does with the first frame tick: l (300 kbit/s: the only layer on) sends frame 0."""
    for stream in sender.lowest_first:
        data = stream.frame_data(0)
        if data is not None:
            await sender.send_frame(stream, data, 0, fractions.Fraction(1, FPS), time.monotonic())
            sender._last_sent = stream
    sender.prober.start(time.monotonic())


# --- the packets of a cluster, and its pacing ------------------------------------------------------------------


@pytest.mark.parametrize("cluster", [0, 1])  # the 3x (900 kbit/s) and the 6x (1.8 Mbit/s) cluster
async def test_a_probe_cluster_is_rtx_padding_paced_at_its_rate_and_the_server_times_it(monkeypatch, cluster):
    fake = FakeTime()
    wire = TimedWire(fake)
    sender = sender_with_fake_time(monkeypatch, wire)
    await first_frame(sender)
    l_stream = by_rid(sender)["l"]
    media = len(wire.rtp)
    rtx_seq = l_stream.rtx_seq
    for _ in range(cluster + 1):
        start = fake.t
        wire.rtp[media:], wire.times[media:] = [], []
        await sender.probe_after_frame(monotonic=fake.now, sleep=fake.sleep)
    target = 900_000 * (cluster + 1)
    raw, times = wire.rtp[media:], wire.times[media:]
    assert times[0] - start >= FRAME_GAP_S  # in the gap after the frame tick
    packets = [RtpPacket.parse(d, extensions_map()) for d in raw]
    assert len(packets) >= MIN_PROBE_PACKETS
    assert len(packets) * PADDING_BYTES >= target * PROBE_DURATION_S / 8
    # libwebrtc's padding-only packet on the layer's RTX SSRC
    first_seq = packets[0].sequence_number
    if cluster == 0:
        assert first_seq == rtx_seq  # the layer's own RTX numbering
    for i, (data, p) in enumerate(zip(raw, packets)):
        assert data[0] & 0x20  # the padding bit
        assert data[-1] == PADDING_BYTES and p.padding_size == PADDING_BYTES and p.payload == b""
        assert p.payload_type == RTX.payloadType and p.ssrc == l_stream.rtx_ssrc and p.marker == 0
        assert p.sequence_number == (first_seq + i) & 0xFFFF
        assert p.timestamp == l_stream.rtp_timestamp  # the media's last RTP timestamp
        assert p.extensions.mid == "1" and p.extensions.repaired_rtp_stream_id == "l"
        assert p.extensions.rtp_stream_id is None
    # abs-send-time stamped at send: rising, over at least 10 ms
    sent_ms = unwrapped_ms([p.extensions.abs_send_time for p in packets])
    assert all(b > a for a, b in zip(sent_ms, sent_ms[1:]))
    assert sent_ms[-1] >= 10.0
    assert sent_ms[-1] == pytest.approx((times[-1] - times[0]) * 1000, abs=0.05)
    # the cluster's rate over its span (after the first packet, as a receiver times it): within 20 %
    rate = (len(packets) - 1) * PADDING_BYTES * 8 / (sent_ms[-1] / 1000)
    assert rate == pytest.approx(target, rel=0.2)
    # media/uplink_probes.py reads it as a burst that got through, at about that rate
    bursts, results = judged(packets, times)
    (burst,) = bursts.bursts
    assert burst.got_through and burst.packets == len(packets) and burst.send_span_ms >= 10
    assert results[-1] == bursts.best_bps == pytest.approx(target, rel=0.2)
    # counted, for the JSON
    counters = sender.counters()["initial_probing"]
    assert counters["clusters"] == cluster + 1 and counters["sent"][-1]["target_kbps"] == target // 1000
    assert counters["packets"] == l_stream.padding_packets == sum(c["packets"] for c in counters["sent"])
    assert counters["bytes"] == PADDING_BYTES * counters["packets"]
    assert sender.counters()["layers"][2]["padding_packets"] == l_stream.padding_packets


async def test_retransmissions_and_padding_share_the_rtx_sequence_numbers(monkeypatch):
    fake = FakeTime()
    wire = TimedWire(fake)
    sender = sender_with_fake_time(monkeypatch, wire)
    await first_frame(sender)
    l_stream = by_rid(sender)["l"]
    original = wire.packets()[0]
    await sender.probe_after_frame(monotonic=fake.now, sleep=fake.sleep)
    await sender.handle_rtcp_packet(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=5, media_ssrc=l_stream.ssrc,
                                                    lost=[original.sequence_number]))
    rtx = [p for p in wire.packets() if p.ssrc == l_stream.rtx_ssrc]
    assert rtx[-1].payload[:2] == original.sequence_number.to_bytes(2, "big")  # the retransmission...
    assert [p.sequence_number for p in rtx] == [(rtx[0].sequence_number + i) & 0xFFFF for i in range(len(rtx))]


async def test_a_cluster_paced_by_the_event_loop_gets_through_as_a_burst():
    """Real time, the real loop: ~1 ms sleeps. Wider margins than the fake clock's (a busy machine wakes late);
    a loop stalled past the burst detector's 5 ms gap splits the burst, so three tries are allowed."""
    for _ in range(3):
        bursts = ProbeBursts()
        sent: list[tuple[int, int]] = []

        async def send_padding() -> int:
            now_ms = time.monotonic() * 1000
            sent.append((round(now_ms / ABS_SEND_TIME_MS) % ABS_SEND_TIME_WRAP, int(now_ms)))
            return PADDING_BYTES

        cluster = await send_cluster(1_800_000, send_padding)
        assert cluster.packets == len(sent) >= MIN_PROBE_PACKETS and cluster.span_s >= 0.010
        assert cluster.bps <= 1.2 * 1_800_000  # never faster than asked: paced from the cluster's start
        for abs_time, arrival in sent:
            bursts.add(abs_send_time=abs_time, arrival_time_ms=arrival, size=PADDING_BYTES)
        bursts.add(abs_send_time=(sent[-1][0] + round(30 / ABS_SEND_TIME_MS)) % ABS_SEND_TIME_WRAP,
                   arrival_time_ms=sent[-1][1] + 30, size=1000)
        if bursts.best_bps and cluster.bps >= 0.8 * 1_800_000:
            break
    assert bursts.best_bps == pytest.approx(cluster.bps, rel=0.15)
    assert cluster.bps == pytest.approx(1_800_000, rel=0.2)


async def test_without_rtx_the_padding_goes_on_the_media_ssrc(monkeypatch):
    fake = FakeTime()
    wire = TimedWire(fake)
    monkeypatch.setattr(clock, "current_ntp_time", fake.ntp)
    params = parameters()
    params.codecs = [VP8]
    sender = SimulcastSender(new_sender(wire), plan(), params, probes="on")
    await first_frame(sender)
    l_stream = by_rid(sender)["l"]
    seq = l_stream.seq
    media = len(wire.rtp)
    await sender.probe_after_frame(monotonic=fake.now, sleep=fake.sleep)
    padding = [RtpPacket.parse(d, extensions_map()) for d in wire.rtp[media:]]
    assert padding and all(p.ssrc == l_stream.ssrc and p.payload_type == VP8.payloadType for p in padding)
    assert padding[0].sequence_number == seq and all(p.extensions.rtp_stream_id == "l" for p in padding)


# --- which clusters, when --------------------------------------------------------------------------------------


def test_the_initial_clusters_are_3x_and_6x_the_start_then_further_while_the_estimate_keeps_up():
    prober = InitialProber(300_000, sum(RATES_720P))
    assert prober.next_cluster() is None  # nothing before the first frame
    prober.start(9.9)
    prober.start(9.95)  # once
    assert [prober.next_cluster(), prober.next_cluster(), prober.next_cluster()] == [
        (900_000, False), (1_800_000, False), None]
    cluster = send_result(1_800_000)
    prober.record(cluster, 10.0)
    prober.on_estimate(1_200_000, 10.1)  # under 70 % of 1.8 Mbit/s: no further probe
    assert prober.next_cluster() is None
    prober.on_estimate(1_800_000, 10.2)
    assert prober.next_cluster() == (3_600_000, True)
    prober.record(send_result(3_600_000, further=True), 10.3)
    prober.on_estimate(3_600_000, 10.4)  # 7.2 Mbit/s is capped at 2x the layers' 2315 kbit/s: the last one
    assert prober.next_cluster() == (2 * sum(RATES_720P), True)
    prober.record(send_result(2 * sum(RATES_720P), further=True), 10.5)
    prober.on_estimate(5_000_000, 10.6)
    assert prober.next_cluster() is None
    assert prober.counters()["clusters"] == 3 and prober.counters()["further_clusters"] == 2
    assert prober.counters()["early_targets"] == [{"at_ms": 200, "kbps": 1200}, {"at_ms": 300, "kbps": 1800},
                                                  {"at_ms": 500, "kbps": 3600}, {"at_ms": 700, "kbps": 5000}]


def test_further_probes_wait_at_most_a_second_for_the_result_and_can_be_left_out():
    prober = InitialProber(300_000, sum(RATES_720P))
    prober.start(9.9)
    prober.next_cluster(), prober.next_cluster()
    prober.record(send_result(1_800_000), 10.0)
    prober.on_estimate(1_800_000, 11.5)  # too late: probing is over
    prober.on_estimate(1_800_000, 11.6)
    assert prober.next_cluster() is None
    initial_only = InitialProber(300_000, sum(RATES_720P), further=False)
    initial_only.start(9.9)
    initial_only.next_cluster(), initial_only.next_cluster()
    initial_only.record(send_result(1_800_000), 10.0)
    initial_only.on_estimate(1_800_000, 10.1)
    assert initial_only.next_cluster() is None
    off = InitialProber(300_000, sum(RATES_720P), enabled=False)
    off.start(9.9)
    assert off.next_cluster() is None and off.counters()["enabled"] is False


def test_the_probe_mode_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(PROBES_ENV, raising=False)
    assert probe_mode() == "on"
    monkeypatch.setenv(PROBES_ENV, "OFF")
    assert probe_mode() == "off" and probe_mode("initial") == "initial"
    monkeypatch.setenv(PROBES_ENV, "sometimes")
    with pytest.raises(ValueError):
        probe_mode()


async def test_with_probes_off_the_sender_sends_none(monkeypatch):
    fake = FakeTime()
    wire = TimedWire(fake)
    sender = sender_with_fake_time(monkeypatch, wire, probes="off")
    await first_frame(sender)
    media = len(wire.rtp)
    await sender.probe_after_frame(monotonic=fake.now, sleep=fake.sleep)
    assert len(wire.rtp) == media and sender.counters()["initial_probing"]["clusters"] == 0


# --- what the REMB after the probes does ---------------------------------------------------------------------


def test_a_high_early_remb_turns_on_every_layer_that_fits_at_once():
    allocator = LayerAllocator(RATES_720P)
    assert allocator.active == 1  # 300 kbit/s: l
    assert allocator.on_remb(900_000, 0.1) == 2  # the 3x cluster's REMB: l + m (824) fit
    assert allocator.on_remb(1_800_000, 0.2) == 3  # the 6x one: h does not fit yet, but there is headroom: probed
    assert allocator.probes == 1 and allocator._probing
    assert allocator.on_remb(3_600_000, 0.3) == 3 and not allocator._probing  # a further probe's: it fits
    straight = LayerAllocator(RATES_720P)
    assert straight.on_remb(3_600_000, 0.2) == 3 and straight.switches == 1  # all at once, each from a keyframe
    assert straight.probes == 0


async def test_the_remb_after_the_probes_starts_the_layers_and_asks_for_a_further_probe(monkeypatch):
    fake = FakeTime()
    wire = TimedWire(fake)
    layers = (layer(1, 1491, 1.0), layer(2, 522, 0.667), layer(3, 302, 0.5))
    sender = sender_with_fake_time(monkeypatch, wire, layers=layers)
    await first_frame(sender)
    for _ in range(2):
        await sender.probe_after_frame(monotonic=fake.now, sleep=fake.sleep)
    streams = by_rid(sender)
    await sender.handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=5, media_ssrc=0,
                                                   fci=pack_remb_fci(1_800_000, [streams["l"].ssrc])))
    assert {rid for rid, s in streams.items() if s.active} == {"l", "m"}  # m fits (h comes on the next REMB)
    assert streams["m"].frame_data(7) == layers[1].keyframes.packets[7]  # it starts on a keyframe
    # within a second of the 1.8 Mbit/s cluster, over 70 % of it: a further probe at twice the estimate
    assert sender.prober.next_cluster() == (3_600_000, True)
