"""RTX unwrap (RFC 4588), fed what a browser puts on the wire and the track's router parses:
a retransmission comes back as the packet it repeats (OSN, apt, media SSRC, the rest as
sent); padding-only probes, an apt that was not negotiated and a payload too short for
the OSN give nothing to forward, without raising into the packet path."""

from __future__ import annotations

from typing import Optional

import pytest
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from loadtest.forwarding_rig import EXTENSIONS
from media.rtx_unwrap import RtxUnwrapper

MEDIA_SSRC, RTX_SSRC = 0x1111_2222, 0x3333_4444
VP8_PT, RTX_PT, RED_PT, RTX_RED_PT, ORPHAN_PT, NO_APT_PT = 96, 97, 116, 117, 119, 121


def codec(mime: str, payload_type: int, apt: Optional[int] = None) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=payload_type,
                                 parameters={} if apt is None else {"apt": apt})


VP8, RTX = codec("video/VP8", VP8_PT), codec("video/rtx", RTX_PT, apt=VP8_PT)
RED, RTX_RED = codec("video/red", RED_PT), codec("video/rtx", RTX_RED_PT, apt=RED_PT)
# an RTX payload type whose apt names nothing negotiated, and one with no apt at all
RTX_ORPHAN, RTX_NO_APT = codec("video/rtx", ORPHAN_PT, apt=120), codec("video/rtx", NO_APT_PT)
CODECS = [VP8, RTX, RED, RTX_RED, RTX_ORPHAN, RTX_NO_APT]


def signalled(*codecs: RTCRtpCodecParameters) -> RTCRtpReceiveParameters:
    """Parameters as a publisher's SDP gives them: media SSRC and its RTX SSRC paired (FID)."""
    return RTCRtpReceiveParameters(codecs=list(codecs or CODECS), headerExtensions=EXTENSIONS, encodings=[
        RTCRtpDecodingParameters(ssrc=MEDIA_SSRC, payloadType=VP8_PT, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC))])


def unsignalled() -> RTCRtpReceiveParameters:
    """A simulcast layer's: no SSRCs in the SDP (the layers are told apart by RID)."""
    return RTCRtpReceiveParameters(codecs=list(CODECS), headerExtensions=EXTENSIONS)


def wire(packet: RtpPacket) -> RtpPacket:
    """Serialized as the browser sends it, parsed as the transport's router hands it on."""
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpReceiveParameters(headerExtensions=EXTENSIONS))
    return RtpPacket.parse(packet.serialize(extensions), extensions)


def original(seq: int = 4242, payload_type: int = VP8_PT) -> RtpPacket:
    packet = RtpPacket(payload_type=payload_type, marker=1, sequence_number=seq, timestamp=0xDEAD_BEEF,
                       ssrc=MEDIA_SSRC, payload=b"\x90\x80\x12\x34" + bytes(range(40)))
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = 0x12_3456
    return packet


def retransmission(of: RtpPacket, *, payload_type: int = RTX_PT, ssrc: int = RTX_SSRC,
                   rtx_seq: int = 17, osn: Optional[bytes] = None) -> RtpPacket:
    """What a browser sends for a NACKed packet: the original's timestamp, marker and
    extensions on the RTX stream's own SSRC, payload type and numbering, OSN first."""
    rtx = RtpPacket(payload_type=payload_type, marker=of.marker, sequence_number=rtx_seq, timestamp=of.timestamp,
                    ssrc=ssrc, payload=(of.sequence_number.to_bytes(2, "big") if osn is None else osn) + of.payload)
    rtx.extensions.mid = of.extensions.mid
    rtx.extensions.abs_send_time = 0x65_4321  # stamped when resent
    return wire(rtx)


def probe(*, padding: int = 224, ssrc: int = RTX_SSRC, payload: bytes = b"") -> RtpPacket:
    """A bandwidth probe on the RTX stream: padding only (aiortc strips the padding when parsing)."""
    packet = RtpPacket(payload_type=RTX_PT, sequence_number=18, timestamp=99, ssrc=ssrc, payload=payload)
    packet.padding_size = padding
    return wire(packet)


@pytest.mark.parametrize("seq", [0, 0x0102, 4242, 0xFFFF])
def test_a_retransmission_comes_back_as_the_packet_it_repeats(seq: int) -> None:
    lost = original(seq)
    back = RtxUnwrapper(signalled()).unwrap(retransmission(lost), media_ssrc=MEDIA_SSRC)
    assert back is not None
    assert (back.sequence_number, back.payload_type, back.ssrc) == (seq, VP8_PT, MEDIA_SSRC)
    assert (back.timestamp, back.marker, back.payload) == (lost.timestamp, lost.marker, lost.payload)
    assert back.extensions.mid == "0" and back.extensions.abs_send_time == 0x65_4321  # as it arrived


def test_the_osn_is_read_big_endian_from_the_first_two_payload_bytes() -> None:
    lost = original(7)
    back = RtxUnwrapper(signalled()).unwrap(retransmission(lost, osn=b"\xab\xcd"), media_ssrc=MEDIA_SSRC)
    assert back is not None and back.sequence_number == 0xABCD and back.payload == lost.payload


def test_each_rtx_payload_type_restores_its_own_apt() -> None:
    """RTX for RED (the uplink FEC's) comes back as RED, for the FEC stage to open."""
    red = original(900, payload_type=RED_PT)
    back = RtxUnwrapper(signalled()).unwrap(retransmission(red, payload_type=RTX_RED_PT),
                                            media_ssrc=MEDIA_SSRC)
    assert back is not None and (back.payload_type, back.sequence_number) == (RED_PT, 900)


def test_every_negotiated_rtx_payload_type_is_known_and_no_other() -> None:
    unwrapper = RtxUnwrapper(signalled())
    assert unwrapper.payload_types == {RTX_PT, RTX_RED_PT, ORPHAN_PT,
                                       NO_APT_PT}
    assert RtxUnwrapper(signalled(VP8)).payload_types == frozenset()  # no RTX negotiated


def test_padding_only_probes_have_nothing_to_forward() -> None:
    unwrapper = RtxUnwrapper(signalled())
    packet = probe()
    assert packet.payload == b"" and packet.padding_size == 224
    assert unwrapper.unwrap(packet, media_ssrc=MEDIA_SSRC) is None
    # the smallest probe, one padding byte
    assert unwrapper.unwrap(probe(padding=1), media_ssrc=MEDIA_SSRC) is None


@pytest.mark.parametrize("payload", [b"", b"\x10", b"\x10\x20"], ids=["empty", "1 byte", "the OSN alone"])
def test_a_payload_with_no_media_after_the_osn_is_dropped_not_raised(payload: bytes) -> None:
    packet = wire(RtpPacket(payload_type=RTX_PT, sequence_number=5, ssrc=RTX_SSRC, payload=payload))
    assert RtxUnwrapper(signalled()).unwrap(packet, media_ssrc=MEDIA_SSRC) is None
    # one stray byte before padding too
    assert RtxUnwrapper(signalled()).unwrap(probe(payload=payload), media_ssrc=MEDIA_SSRC) is None


@pytest.mark.parametrize("payload_type", [ORPHAN_PT, NO_APT_PT], ids=["apt-not-negotiated", "no-apt"])
def test_an_rtx_payload_type_without_a_negotiated_apt_is_dropped(payload_type: int) -> None:
    packet = retransmission(original(), payload_type=payload_type)
    assert RtxUnwrapper(signalled()).unwrap(packet, media_ssrc=MEDIA_SSRC) is None


def test_a_signalled_rtx_ssrc_repairs_its_paired_media_ssrc() -> None:
    back = RtxUnwrapper(signalled()).unwrap(retransmission(original()), media_ssrc=None)
    assert back is not None and back.ssrc == MEDIA_SSRC  # from the SDP, before any media arrived
    back = RtxUnwrapper(signalled()).unwrap(retransmission(original()), media_ssrc=0x5555_6666)
    assert back is not None and back.ssrc == MEDIA_SSRC  # the pairing wins over the stream's current SSRC


def test_an_unsignalled_rtx_ssrc_repairs_the_streams_current_ssrc() -> None:
    unwrapper = RtxUnwrapper(unsignalled())
    back = unwrapper.unwrap(retransmission(original(), ssrc=0x7777_0001), media_ssrc=0x7777_0000)
    assert back is not None and back.ssrc == 0x7777_0000
    # before the stream's first packet there is no SSRC to restore: a probe there is not the layer arriving
    assert unwrapper.unwrap(retransmission(original(), ssrc=0x7777_0001), media_ssrc=None) is None

