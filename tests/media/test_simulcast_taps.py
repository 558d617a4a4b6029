"""TapLayers: a simulcast publication's taps see the packets of one layer as one stream."""

from __future__ import annotations

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from media.simulcast_taps import TapLayers

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)


def vp8(seq: int, ts: int, ssrc: int, keyframe: bool) -> RtpPacket:
    payload = bytes([0x10, 0x00 if keyframe else 0x01]) + seq.to_bytes(2, "big") + ssrc.to_bytes(4, "big")
    return RtpPacket(payload_type=97, marker=1, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload)


class Tap:
    def __init__(self, fail: bool = False) -> None:
        self.packets: list[RtpPacket] = []
        self.fail = fail

    def on_packet(self, packet, codec, arrived_at) -> None:
        if self.fail:
            raise RuntimeError("broken consumer")
        self.packets.append(packet)

    def close(self) -> None: ...


def test_only_the_wanted_layer_passes_and_only_from_its_keyframe():
    layers = TapLayers()
    tap = Tap()
    layers.add(tap)
    low, high = layers.feed(0), layers.feed(1)
    low.on_packet(vp8(10, 900, 1, keyframe=True), VP8, 0.0)
    assert tap.packets == []  # nothing wanted yet
    layers.wanted = 0
    low.on_packet(vp8(11, 1800, 1, keyframe=False), VP8, 0.0)
    assert tap.packets == []  # not from a frame that refers to earlier ones
    low.on_packet(vp8(12, 2700, 1, keyframe=True), VP8, 0.0)
    low.on_packet(vp8(13, 3600, 1, keyframe=False), VP8, 0.0)
    high.on_packet(vp8(500, 77_000, 2, keyframe=True), VP8, 0.0)  # not wanted
    assert [p.payload[2:4] for p in tap.packets] == [(12).to_bytes(2, "big"), (13).to_bytes(2, "big")]
    layers.wanted = 1
    low.on_packet(vp8(14, 4500, 1, keyframe=False), VP8, 0.0)  # still passed until the switch
    high.on_packet(vp8(501, 78_000, 2, keyframe=False), VP8, 0.0)
    high.on_packet(vp8(502, 79_000, 2, keyframe=True), VP8, 0.0)
    low.on_packet(vp8(15, 5400, 1, keyframe=False), VP8, 0.0)  # left behind
    high.on_packet(vp8(503, 80_000, 2, keyframe=False), VP8, 0.0)
    sources = [int.from_bytes(p.payload[4:8], "big") for p in tap.packets]
    assert sources == [1, 1, 1, 2, 2] and layers.current == 1 and layers.switches == 1
    assert len({p.ssrc for p in tap.packets}) == 1
    seqs = [p.sequence_number for p in tap.packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))


def test_a_failing_tap_is_removed_and_the_others_go_on():
    layers = TapLayers()
    broken, good = Tap(fail=True), Tap()
    layers.add(broken)
    layers.add(good)
    layers.wanted = 0
    feed = layers.feed(0)
    feed.on_packet(vp8(1, 90, 1, keyframe=True), VP8, 0.0)
    feed.on_packet(vp8(2, 180, 1, keyframe=False), VP8, 0.0)
    assert layers.taps == [good] and len(good.packets) == 2
