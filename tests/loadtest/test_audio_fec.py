"""The audio clip's Opus in-band FEC (LBRR), the LBRR parser, and the FEC setting chosen per profile."""

from __future__ import annotations

import ctypes
import fractions
import glob
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np
import pytest

from loadtest.__main__ import CHROME_MAX_OPUS_LOSS_PERCENT, opus_fec_loss_percent
from loadtest.clips import SweepAudioSpec, encode_audio, lbrr_flags, opus_has_lbrr, voice_like_samples
from loadtest.impairment import PROFILES, LinkSpec, Profile
from loadtest.preencoded import EncodedClip

SECONDS = 4.0


@pytest.fixture(scope="module")
def plain_clip() -> EncodedClip:
    return encode_audio(SweepAudioSpec(seconds=SECONDS))


@pytest.fixture(scope="module")
def fec_clip() -> EncodedClip:
    return encode_audio(SweepAudioSpec(seconds=SECONDS, fec_loss_percent=30))


def _libopus_has_lbrr() -> Optional[Callable[[bytes], int]]:
    """libopus's own opus_packet_has_lbrr (libopus >= 1.5), from the copy PyAV ships, if there is one."""
    libs = glob.glob(str(Path(av.__file__).parent.parent / "av.libs" / "libopus*.so*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        if hasattr(lib, "opus_packet_has_lbrr"):
            fn = lib.opus_packet_has_lbrr
            fn.argtypes, fn.restype = [ctypes.c_char_p, ctypes.c_int32], ctypes.c_int
            return lambda packet: fn(packet, len(packet))
    return None


def test_a_clip_with_fec_has_lbrr_in_most_packets(fec_clip):
    flags = lbrr_flags(fec_clip)
    assert len(flags) == len(fec_clip.packets) == round(SECONDS * 50)
    assert flags.count("1") / len(flags) > 0.6
    assert flags[0] == "0"  # the first frame has no previous one to protect
    assert len(set(fec_clip.packets)) == len(fec_clip.packets)  # still identifiable packet by packet


def test_a_clip_without_fec_has_none_although_it_is_silk_coded(plain_clip):
    assert lbrr_flags(plain_clip).count("1") == 0
    # not trivially: "voip" keeps the voice-like clip in SILK/hybrid modes, which could carry LBRR
    silk_or_hybrid = sum(1 for p in plain_clip.packets if p[0] >> 3 < 16)
    assert silk_or_hybrid / len(plain_clip.packets) > 0.9


def test_the_parser_agrees_with_libopus(plain_clip, fec_clip):
    reference = _libopus_has_lbrr()
    if reference is None:
        pytest.skip("this libopus has no opus_packet_has_lbrr (added in 1.5)")
    for clip in (plain_clip, fec_clip):
        assert [opus_has_lbrr(p) for p in clip.packets] == [reference(p) == 1 for p in clip.packets]


def test_packets_that_cannot_carry_lbrr_here():
    assert not opus_has_lbrr(b"")
    assert not opus_has_lbrr(bytes([15 << 3]))  # a TOC byte and no frame
    assert not opus_has_lbrr(bytes([31 << 3, 0x00, 0x00]))  # CELT-only: no SILK layer
    # high range-coder input decodes "1"s (VAD, then LBRR), low input "0"s: 0x80 gives VAD=1, LBRR=0
    hybrid_lbrr = bytes([15 << 3, 0xFF, 0xFF, 0xFF])
    assert opus_has_lbrr(hybrid_lbrr)
    assert not opus_has_lbrr(bytes([15 << 3, 0x80, 0x00, 0x00]))
    assert opus_has_lbrr(bytes([9 << 3, 0xFF, 0xFF]))  # SILK-only wideband 20 ms
    for code in (1, 2, 3):  # more than one frame per packet is not read
        assert not opus_has_lbrr(bytes([(15 << 3) | code]) + hybrid_lbrr[1:])
    reference = _libopus_has_lbrr()
    if reference is not None:
        for packet in (hybrid_lbrr, bytes([15 << 3, 0x80, 0x00, 0x00]), bytes([9 << 3, 0xFF, 0xFF]),
                       bytes([11 << 3, 0xFF, 0xFF]), bytes([(15 << 3) | 4, 0xFF, 0xFF, 0xFF]),
                       bytes([(11 << 3) | 4, 0xC0, 0x00, 0x00])):
            assert opus_has_lbrr(packet) == (reference(packet) == 1), packet.hex()


@pytest.mark.parametrize("frame_ms,layout", [(20, "mono"), (40, "mono"), (60, "mono"), (20, "stereo"), (60, "stereo")])
def test_silk_packets_of_every_length_agree_with_libopus(frame_ms: int, layout: str):
    """SILK-only wideband (16 kHz input), 1-3 SILK frames per packet, mono and stereo."""
    reference = _libopus_has_lbrr()
    if reference is None:
        pytest.skip("this libopus has no opus_packet_has_lbrr (added in 1.5)")
    rate = 16_000
    samples = voice_like_samples(SweepAudioSpec(seconds=2.0))[::48_000 // rate]
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = rate, layout, "s16", 24_000
    codec.time_base = fractions.Fraction(1, rate)
    codec.options = {"application": "voip", "fec": "1", "packet_loss": "20", "frame_duration": str(frame_ms)}
    size = rate // 1000 * frame_ms
    packets: list[bytes] = []
    for i in range(len(samples) // size):
        chunk = samples[i * size:(i + 1) * size]
        data = np.stack([chunk, chunk[::-1]]).T.reshape(1, -1) if layout == "stereo" else chunk.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="s16", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, i * size, fractions.Fraction(1, rate)
        packets += [bytes(p) for p in codec.encode(frame)]
    assert all(p[0] >> 3 < 12 and p[0] & 3 == 0 for p in packets)  # SILK-only, one frame per packet
    mine = [opus_has_lbrr(p) for p in packets]
    assert any(mine) and not all(mine)
    assert mine == [reference(p) == 1 for p in packets]


def test_the_fec_loss_follows_the_profiles_uplink_as_chrome_learns_it():
    assert opus_fec_loss_percent(PROFILES["clean"]) == 0
    assert opus_fec_loss_percent(PROFILES["4g"]) == 2
    assert opus_fec_loss_percent(PROFILES["bad-wifi"]) == 10  # Gilbert-Elliott: its mean loss
    assert opus_fec_loss_percent(PROFILES["loss-30"]) == CHROME_MAX_OPUS_LOSS_PERCENT == 20  # libwebrtc's cap
    assert opus_fec_loss_percent(PROFILES["narrow"]) == 0  # a rate cap, no random loss
    # the largest of the roles' uplinks; downlinks do not matter (the server's reports are about uplinks)
    one_lossy = Profile("x", "x", downlink=LinkSpec(loss=0.5),
                        roles=(("doctor", LinkSpec(loss=0.07), LinkSpec()),
                               ("expert", LinkSpec(loss=0.03), LinkSpec())))
    assert opus_fec_loss_percent(one_lossy) == 7
