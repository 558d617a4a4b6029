"""The down-track's packet writer produces what aiortc's own parser reads back."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media.rtp_writer import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI, RtpWriter

EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
    RTCRtpHeaderExtensionParameters(id=2, uri=AUDIO_LEVEL_URI),
    RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
]


def parse(data: bytes) -> RtpPacket:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpSendParameters(headerExtensions=EXTENSIONS))
    return RtpPacket.parse(data, ext_map)


def test_round_trips_header_and_extensions():
    writer = RtpWriter(EXTENSIONS, mid="12")
    data = writer.write(payload_type=111, marker=1, sequence_number=65535, timestamp=2**32 - 1, ssrc=0xDEADBEEF,
                        payload=b"\x01\x02\x03", abs_send_time=0xABCDEF, audio_level=(True, 42))
    packet = parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence_number, packet.timestamp, packet.ssrc) == (
        111, 1, 65535, 2**32 - 1, 0xDEADBEEF)
    assert packet.payload == b"\x01\x02\x03"
    assert packet.extensions.mid == "12"
    assert packet.extensions.abs_send_time == 0xABCDEF
    assert packet.extensions.audio_level == (True, 42)


def test_matches_aiortc_serializer_byte_for_byte():
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpSendParameters(headerExtensions=EXTENSIONS))
    reference = RtpPacket(payload_type=97, marker=0, sequence_number=7, timestamp=9000, ssrc=5, payload=b"x" * 100)
    reference.extensions.mid = "3"
    reference.extensions.abs_send_time = 123456
    ours = RtpWriter(EXTENSIONS, mid="3").write(payload_type=97, marker=0, sequence_number=7, timestamp=9000, ssrc=5,
                                                payload=b"x" * 100, abs_send_time=123456)
    assert ours == reference.serialize(ext_map)


def test_without_negotiated_extensions_writes_a_plain_header():
    data = RtpWriter([], mid="0").write(payload_type=96, marker=0, sequence_number=1, timestamp=2, ssrc=3,
                                        payload=b"p", abs_send_time=1)
    assert len(data) == 13 and parse(data).payload == b"p"


def test_padding_only_packets_read_back_as_padding_with_their_extensions():
    writer = RtpWriter(EXTENSIONS, mid="3")
    data = writer.write_padding(payload_type=97, sequence_number=7, timestamp=1234, ssrc=42, size=255,
                                abs_send_time=0x123456)
    packet = parse(data)
    assert (packet.payload_type, packet.sequence_number, packet.timestamp, packet.ssrc) == (97, 7, 1234, 42)
    assert packet.payload == b"" and packet.padding_size == 255
    assert packet.extensions.mid == "3" and packet.extensions.abs_send_time == 0x123456


@pytest.mark.parametrize("size", [0, 256])
def test_padding_is_one_to_255_bytes(size):
    with pytest.raises(ValueError):
        RtpWriter(EXTENSIONS, mid="3").write_padding(payload_type=97, sequence_number=7, timestamp=0, ssrc=42,
                                                     size=size, abs_send_time=0)
