"""Transport-wide numbering of what leaves for one subscriber (media/transport_sequence.py)."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media.rtp_writer import ABS_SEND_TIME_URI, MID_URI, TRANSPORT_CC_URI, RtpWriter
from media.transport_sequence import TransportSequencer
from media.twcc_feedback import TransportFeedback

EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
    RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
    RTCRtpHeaderExtensionParameters(id=5, uri=TRANSPORT_CC_URI),
]


def transport_seq(data: bytes) -> int:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpSendParameters(headerExtensions=EXTENSIONS))
    packet = RtpPacket.parse(data, ext_map)
    # transport-cc takes abs-send-time's place
    assert packet.extensions.mid == "2" and packet.extensions.abs_send_time is None
    return packet.extensions.transport_sequence_number


def packet(writer: RtpWriter, seq: int = 1, payload: bytes = b"x" * 100) -> bytes:
    return writer.write(payload_type=96, marker=0, sequence_number=seq, timestamp=0, ssrc=1, payload=payload,
                        abs_send_time=77)


def test_numbers_every_packet_in_the_order_it_leaves():
    sequencer = TransportSequencer()
    sequencer.enable(5)
    writer = RtpWriter(EXTENSIONS, mid="2")
    assert writer.transport_cc_id == 5
    stamped = [sequencer.stamp(packet(writer, seq)) for seq in (9, 3, 7)]
    assert [transport_seq(data) for data in stamped] == [0, 1, 2]
    assert sequencer.stamped == 3


def test_padding_is_numbered_too():
    sequencer = TransportSequencer()
    sequencer.enable(5)
    writer = RtpWriter(EXTENSIONS, mid="2")
    data = writer.write_padding(payload_type=97, sequence_number=1, timestamp=0, ssrc=2, size=200, abs_send_time=77)
    assert transport_seq(sequencer.stamp(data)) == 0


def test_abs_send_time_stays_without_transport_cc():
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpSendParameters(headerExtensions=EXTENSIONS))
    data = packet(RtpWriter(EXTENSIONS[:2], mid="2"))
    assert RtpPacket.parse(data, ext_map).extensions.abs_send_time == 77


def test_packets_without_the_slot_pass_unchanged():
    sequencer = TransportSequencer()
    sequencer.enable(5)
    plain = packet(RtpWriter(EXTENSIONS[:2], mid="2"))
    assert sequencer.stamp(plain) is plain
    other_id = TransportSequencer()
    other_id.enable(6)
    data = packet(RtpWriter(EXTENSIONS, mid="2"))
    assert other_id.stamp(data) is data
    assert TransportSequencer().stamp(data) is data  # not negotiated
    assert other_id.stamped == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_feedback_matches_send_times_and_sizes():
    clock = Clock()
    sequencer = TransportSequencer(clock)
    sequencer.enable(5)
    writer = RtpWriter(EXTENSIONS, mid="2")
    sizes = []
    for n in range(4):
        data = packet(writer, n, payload=b"y" * (100 + n))
        sizes.append(len(data))
        clock.now = 100.0 + n * 0.01
        sequencer.stamp(data)
    feedback = TransportFeedback(base_sequence=1, reference_time_us=0, feedback_count=0,
                                 arrivals=(5_000_000, None, 5_020_000, 5_030_000))
    results = sequencer.results(feedback, now=100.2, overhead=38)
    assert [(r.send_time, r.arrival_time, r.size) for r in results] == [
        (pytest.approx(100.01), 5.0, sizes[1] + 38), (pytest.approx(100.02), None, sizes[2] + 38),
        (pytest.approx(100.03), 5.02, sizes[3] + 38)]
    assert sequencer.unknown == 1  # number 4 was never sent


def test_the_sequence_wraps_and_old_laps_are_not_matched():
    clock = Clock()
    sequencer = TransportSequencer(clock)
    sequencer.enable(5)
    writer = RtpWriter(EXTENSIONS, mid="2")
    data = packet(writer)
    for n in range(65537):
        clock.now = n * 0.0001
        sequencer.stamp(data)
    clock.now = 6.6
    assert transport_seq(sequencer.stamp(data)) == 1
    feedback = TransportFeedback(base_sequence=65535, reference_time_us=0, feedback_count=0,
                                 arrivals=(1, 2, 3))
    assert len(sequencer.results(feedback, now=6.6)) == 3
    assert sequencer.results(feedback, now=60.0) == []  # those numbers went out a minute ago


def test_ids_a_one_byte_header_cannot_carry_are_refused():
    with pytest.raises(ValueError):
        TransportSequencer().enable(15)
