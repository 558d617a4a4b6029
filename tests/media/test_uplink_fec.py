"""Video RED + ULPFEC from a publisher, as Chrome sends it, through one published track.

The track is driven with a seeded Chrome-like uplink (every VP8 packet in RED,
ULPFEC in RED after each frame, in the media's sequence space, 20 % of it lost)
and what it forwards to a subscriber and the NACKs it sends upstream are read
back. Checked: lost media that FEC can rebuild comes back byte for byte without a
NACK; FEC numbers are never NACKed; the subscriber sees no hole where FEC was,
whenever the frames around it arrived; retransmissions over RTX-for-red fill
their own places.
"""

from __future__ import annotations

import random

from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import RTCP_RTPFB_NACK, HeaderExtensionsMap, RtcpPacket, RtcpRtpfbPacket, RtpPacket

from loadtest.forwarding_rig import EXTENSIONS, RTX, VP8
from media.aiortc_bridge import WirePacket
from media.downtrack import DownTrack
from media.published_track import PublishedTrack
from media.sdp_video_fec import VideoFecPayloadTypes
from media.seqnum import seq_add, seq_diff
from media.uplink_fec import UplinkVideoFec
from media.video_fec import VideoFecSender, red_wrap
from tests.support.wire import CapturingTransport

from .test_downtrack_fec import payload_of, seq_of, started_downtrack

RED = RTCRtpCodecParameters(mimeType="video/red", clockRate=90000, payloadType=116)
ULPFEC = RTCRtpCodecParameters(mimeType="video/ulpfec", clockRate=90000, payloadType=118)
RTX_RED = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=117, parameters={"apt": 116})
PTS = VideoFecPayloadTypes(red=116, ulpfec=118, rtx=117)
MEDIA_SSRC, RTX_SSRC = 1234, 5678


class UplinkTransport(CapturingTransport):
    """Stands in for the publisher's RTCDtlsTransport: keeps the RTCP the track sends."""

    def _register_rtp_receiver(self, receiver, parameters) -> None: ...
    def _unregister_rtp_receiver(self, receiver) -> None: ...

    def nacked(self) -> set[int]:
        out: set[int] = set()
        for data in self.sent:
            for packet in RtcpPacket.parse(data):
                if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                    out.update(packet.lost)
        return out


def vp8_payload(picture_id: int, first: bool, keyframe: bool, rng: random.Random) -> bytes:
    # descriptor: X, S on a frame's first packet | I | M + 15-bit picture ID; then (first packet) P bit
    descriptor = bytes([0x80 | (0x10 if first else 0), 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF])
    header = bytes([0x00 if keyframe else 0x01]) if first else b""
    return descriptor + header + rng.randbytes(rng.randint(40, 1000))


class ChromeLikeUplink:
    """Datagrams as Chrome sends them once red/ulpfec are negotiated, FEC at a fixed loss setting."""

    def __init__(self, seed: int, loss_setting: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.extensions = HeaderExtensionsMap()
        self.extensions.configure(RTCRtpReceiveParameters(codecs=[VP8], headerExtensions=EXTENSIONS))
        self.fec = VideoFecSender(PTS)
        self.fec.update_loss(loss_setting)
        self.seq = 65_000  # wraps during the stream
        self.datagrams: list[tuple[str, int, bytes]] = []  # (kind, seq, bytes)
        self.media_payloads: dict[int, bytes] = {}

    def _packet(self, payload_type: int, marker: bool, timestamp: int, payload: bytes, send_time: int) -> bytes:
        packet = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=self.seq,
                           timestamp=timestamp, ssrc=MEDIA_SSRC, payload=payload)
        packet.extensions.abs_send_time = send_time
        packet.extensions.mid = "0"
        return packet.serialize(self.extensions)

    def frames(self, count: int) -> list[tuple[str, int, bytes]]:
        for frame in range(count):
            packets = self.rng.randint(2, 8)
            timestamp = frame * 3000
            for i in range(packets):
                payload = vp8_payload(frame % 32768, i == 0, frame == 0, self.rng)
                marker = i == packets - 1
                # the sender protects it before its pacer writes abs-send-time
                protected = self._packet(VP8.payloadType, marker, timestamp, payload, 0)
                wire = self._packet(RED.payloadType, marker, timestamp, red_wrap(VP8.payloadType, payload),
                                    self.rng.randrange(1 << 24))
                self.datagrams.append(("media", self.seq, wire))
                self.media_payloads[self.seq] = payload
                self.seq = seq_add(self.seq, 1)
                for fec_payload in self.fec.protect(protected):
                    self.datagrams.append(("fec", self.seq, self._packet(RED.payloadType, False, timestamp,
                                                                          fec_payload, self.rng.randrange(1 << 24))))
                    self.seq = seq_add(self.seq, 1)
        return self.datagrams

    def rtx(self, seq: int, rtx_seq: int) -> bytes:
        """A retransmission over RTX-for-red: the original's header, OSN + its RED payload."""
        original = RtpPacket.parse(next(d for _, s, d in self.datagrams if s == seq), self.extensions)
        packet = RtpPacket(payload_type=RTX_RED.payloadType, marker=original.marker, sequence_number=rtx_seq,
                           timestamp=original.timestamp, ssrc=RTX_SSRC,
                           payload=seq.to_bytes(2, "big") + original.payload)
        return packet.serialize(self.extensions)


async def published_track(subscriber: DownTrack) -> tuple[PublishedTrack, UplinkTransport]:
    transport = UplinkTransport()
    track = PublishedTrack(
        participant_id="patient", kind="video", transport=transport, rtcp_ssrc=1,
        parameters=RTCRtpReceiveParameters(
            codecs=[VP8, RTX, RED, ULPFEC, RTX_RED], headerExtensions=EXTENSIONS, rtcp=RTCRtcpParameters(),
            encodings=[RTCRtpDecodingParameters(ssrc=MEDIA_SSRC, payloadType=VP8.payloadType,
                                                rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC))]))
    subscriber.attach(track)
    return track, transport


async def receive(track: PublishedTrack, uplink: ChromeLikeUplink, datagram: bytes) -> None:
    await track._handle_rtp_packet(WirePacket.parse(datagram, uplink.extensions), arrival_time_ms=0)


async def test_uplink_fec_rebuilds_media_is_never_nacked_and_leaves_no_holes():
    subscriber, to_subscriber = await started_downtrack([VP8, RTX])  # takes plain VP8, no FEC
    track, upstream = await published_track(subscriber)
    uplink = ChromeLikeUplink(seed=4)
    datagrams = uplink.frames(400)  # ~2000 media packets, ~1000 FEC
    fec_seqs = {seq for kind, seq, _ in datagrams if kind == "fec"}
    loss = random.Random(8)
    lost = {seq for kind, seq, _ in datagrams[20:] if loss.random() < 0.2}
    # the publisher answers NACKs ~40 packets later (an RTT), each retransmission lost as often
    answer_at: dict[int, list[int]] = {}
    answered: set[int] = set()
    rtx_seq = 0
    for n, (kind, seq, datagram) in enumerate(datagrams):
        if seq not in lost:
            await receive(track, uplink, datagram)
        for asked in upstream.nacked() - answered - fec_seqs if n % 10 == 0 else ():
            answered.add(asked)
            answer_at.setdefault(n + 40, []).append(asked)
        for asked in answer_at.pop(n, []):
            rtx_seq += 1
            if loss.random() >= 0.2:
                await receive(track, uplink, uplink.rtx(asked, rtx_seq))

    summary = track.summary()
    assert summary["uplink_fec"]["fec_received"] == len(fec_seqs - lost)
    rebuilt = summary["uplink_fec"]["rebuilt"]
    lost_media = lost - fec_seqs
    assert rebuilt > len(lost_media) * 0.3, (rebuilt, len(lost_media))

    # what reached the subscriber is the publisher's media, byte for byte, each packet once
    forwarded = {payload_of(d): seq_of(d) for d in to_subscriber.sent}
    assert len(forwarded) == len(to_subscriber.sent)
    source_of = {payload: seq for seq, payload in uplink.media_payloads.items()}
    assert set(forwarded) <= set(source_of)
    out = {source_of[p]: s for p, s in forwarded.items()}
    sent_at = {source_of[payload_of(d)]: n for n, d in enumerate(to_subscriber.sent)}

    # NACKed: lost media (at once: FEC that came after the frame rebuilt some of it later),
    # and FEC only where it was lost together with media (its neighbours unknown when the
    # gap was seen), never FEC lost between frames that arrived
    nacked = upstream.nacked()
    assert nacked - fec_seqs <= lost_media
    # (retransmissions of what FEC rebuilt first are not sent on: each packet once, above)
    assert summary["duplicates_dropped"] > 0
    lost_runs: list[list[int]] = [[]]
    for kind, seq, _ in datagrams:
        if seq in lost:
            lost_runs[-1].append(seq)
        elif lost_runs[-1]:
            lost_runs.append([])
    in_runs_with_media = {s for run in lost_runs if set(run) - fec_seqs for s in run}
    assert nacked & fec_seqs <= in_runs_with_media
    assert len(fec_seqs & lost) > 150 and len(nacked & fec_seqs) < len(fec_seqs & lost) / 2

    # media delivered in source order, in its own places (retransmissions included)
    order = sorted(out, key=lambda s: seq_diff(s, 65_000))
    assert len(order) > len(uplink.media_payloads) * 0.97
    closed = holes_between_frames = 0
    for a, b in zip(order, order[1:]):
        assert seq_diff(out[b], out[a]) > 0
        between = [seq_add(a, k) for k in range(1, seq_diff(b, a))]
        # a media packet never loses its place
        assert seq_diff(out[b], out[a]) - 1 >= sum(1 for s in between if s not in fec_seqs)
        # the subscriber's numbering has no hole where FEC was, whenever the frame end before it
        # went out before the next frame's first packet, and that one arrived (when either came
        # back only later, the packets after it had gone out already)
        if between and all(s in fec_seqs for s in between) and b not in lost and sent_at[a] < sent_at[b]:
            holes_between_frames += seq_diff(out[b], out[a]) - 1
            closed += 1
    assert closed > 300 and holes_between_frames == 0, (closed, holes_between_frames)

    # lost FEC left the NACK list as soon as its neighbours were known: never given up on
    # (that would ask for a keyframe). Still missing: media whose one retransmission was lost,
    # and FEC in the same run of losses (its neighbours are not known yet)
    never_back = lost_media - set(out)
    runs_never_back = {s for run in lost_runs if set(run) & never_back for s in run}
    assert never_back <= set(track.nacks.generator.missing) <= runs_never_back
    assert track.nack_stats["not_media"] > 100 and track.nack_stats["given_up"] == 0
    await track.stop()
    await subscriber.stop()


def seen(fec: UplinkVideoFec, seq: int, picture_id: int, *, first: bool = False, marker: bool = False,
         timestamp: int = 0) -> None:
    payload = vp8_payload(picture_id, first, False, random.Random(0))
    fec.note_media(RtpPacket(payload_type=VP8.payloadType, sequence_number=seq, timestamp=timestamp,
                             marker=int(marker), payload=payload))


def test_a_missing_run_is_fec_only_between_a_frame_end_and_fec_or_the_next_picture():
    fec = UplinkVideoFec(PTS, {}, frozenset({VP8.payloadType}))
    seen(fec, 10, picture_id=7, marker=True, timestamp=100)
    seen(fec, 13, picture_id=8, first=True, timestamp=200)
    assert fec.holds_no_media(11, 12)  # marker of picture 7 .. start of picture 8
    seen(fec, 20, picture_id=9, marker=True, timestamp=300)
    seen(fec, 23, picture_id=11, first=True, timestamp=500)
    assert not fec.holds_no_media(21, 22)  # picture 10 is missing: the run may be it
    seen(fec, 30, picture_id=12, timestamp=600)  # not a frame end
    seen(fec, 33, picture_id=13, first=True, timestamp=700)
    assert not fec.holds_no_media(31, 32)
    seen(fec, 40, picture_id=14, marker=True, timestamp=800)
    seen(fec, 43, picture_id=15, timestamp=900)  # not a frame start
    assert not fec.holds_no_media(41, 42)
    # after FEC of a frame: more FEC of it, or the next picture
    seen(fec, 50, picture_id=16, marker=True, timestamp=1000)
    fec.note_fec(51, 1000)
    fec.note_fec(53, 1000)
    assert fec.holds_no_media(52, 52)
    seen(fec, 56, picture_id=17, first=True, timestamp=1100)
    assert fec.holds_no_media(54, 55)
    # 15-bit picture IDs wrap
    seen(fec, 60, picture_id=32767, marker=True, timestamp=1200)
    seen(fec, 62, picture_id=0, first=True, timestamp=1300)
    assert fec.holds_no_media(61, 61)
    # an unknown neighbour decides nothing
    assert not fec.holds_no_media(70, 71)


async def test_a_new_ssrc_starts_its_numbering_afresh():
    subscriber, to_subscriber = await started_downtrack([VP8, RTX])
    track, _ = await published_track(subscriber)
    rng = random.Random(2)
    for ssrc, first_seq in ((MEDIA_SSRC, 1000), (4321, 900)):  # a restarted source numbers lower
        for k in range(10):
            payload = vp8_payload(k, first=k % 2 == 0, keyframe=k == 0, rng=rng)
            packet = RtpPacket(payload_type=VP8.payloadType, marker=k % 2, sequence_number=first_seq + k,
                               timestamp=k // 2 * 3000, ssrc=ssrc, payload=payload)
            await track._handle_rtp_packet(packet, arrival_time_ms=0)
    assert len(to_subscriber.sent) == 20  # none of the new source's packets taken for duplicates
    numbers = [seq_of(d) for d in to_subscriber.sent]
    assert all(seq_diff(b, a) == 1 for a, b in zip(numbers, numbers[1:]))  # one stream for the subscriber
    assert track.summary()["duplicates_dropped"] == 0
    await track.stop()
    await subscriber.stop()


async def test_garbage_red_and_fec_from_a_publisher_are_dropped_and_counted_and_forwarding_goes_on():
    subscriber, to_subscriber = await started_downtrack([VP8, RTX])
    track, _ = await published_track(subscriber)
    uplink = ChromeLikeUplink(seed=9)
    datagrams = uplink.frames(60)
    rng = random.Random(5)
    for n, (kind, seq, datagram) in enumerate(datagrams):
        await receive(track, uplink, datagram)
        if n % 3 == 0:  # garbage between the real packets, in the stream's own numbering
            packet = WirePacket.parse(datagram, uplink.extensions)
            packet.sequence_number = (seq + 30_000) % 65536
            choice = n % 4
            if choice == 0:
                packet.payload = bytes([0x80 | RED.payloadType]) + rng.randbytes(3)  # truncated RED header
            elif choice == 1:
                packet.payload = bytes([ULPFEC.payloadType]) + rng.randbytes(rng.randint(0, 40))  # FEC garbage
            elif choice == 2:
                packet.payload = bytes([RED.payloadType]) + rng.randbytes(20)  # RED inside RED
            else:
                packet.payload = b""
            packet.raw = rng.randbytes(rng.randint(0, 30))  # and wire bytes that are not RTP
            await track._handle_rtp_packet(packet, arrival_time_ms=0)
    summary = track.summary()
    assert summary["dropped"] > 0 or summary["uplink_fec"]["malformed"] > 0
    forwarded = {payload_of(d) for d in to_subscriber.sent}
    assert set(uplink.media_payloads.values()) <= forwarded  # every real packet went on
    await track.stop()
    await subscriber.stop()
