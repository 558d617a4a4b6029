"""Clips for the load test: encoded once (VP8 or H.264, Opus), cached, and identifiable on arrival.

Differences from loadtest.preencoded (whose EncodedClip and cache format this reuses):

- H.264 as well as VP8 (libx264, constrained baseline, no B-frames, an IDR with
  SPS/PPS at every keyframe);
- every video frame carries its clip index as a row of black/white blocks in its
  top-left corner (Manchester-coded, so each bit checks itself): a receiver
  that decodes can tell which frame it shows even through a server that
  re-encodes (the MediaRelay baseline), where bytes cannot identify frames;
- the audio is voice-like (harmonics of a gliding pitch, two moving formants, a
  syllable-rate envelope) with a little seeded noise, so that no two Opus
  packets of the clip are alike (a steady tone repeats packets every 100 ms,
  which would make arrival-to-send matching ambiguous), and encoded as Chrome
  encodes a microphone: libopus "voip", optionally with in-band FEC (LBRR;
  `opus_has_lbrr` tells which packets carry it);
- keyframe variants: every frame also encoded as a keyframe, so a publisher can
  answer PLI as a browser does (see encode_keyframe_variants);
- `frame_keys` gives, per clip frame, a short hash of the bytes a receiver
  reassembles (the packetizer's output depayloaded, exactly as aiortc's
  receiver joins it), so an SFU's receivers identify frames without decoding.
"""

from __future__ import annotations

import fractions
import hashlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

import av
import numpy as np

from loadtest.preencoded import EncodedClip

# name -> (width, height, default bitrate). 480p at 500 kbit/s is what a phone
# browser sends on a middling uplink; 720p at 1.5 Mbit/s is aiortc's VP8 ceiling
# and the forwarding benchmark's setting.
RESOLUTIONS: dict[str, tuple[int, int, int]] = {
    "480p": (854, 480, 500_000),
    "720p": (1280, 720, 1_500_000),
    "1080p": (1920, 1080, 3_000_000),
}
MARKER_BITS = 14  # clip index up to 16383 (9 minutes at 30 fps)
# A publisher that follows the bandwidth estimate switches between encodings of the
# same clip at these shares of its full bitrate, as a browser's encoder steps down.
# (share of the full bitrate, share of the full resolution): below ~40 % a browser's
# encoder also scales the picture down (WebRTC's "maintain framerate" for camera video).
LADDER = ((1.0, 1.0), (0.6, 1.0), (0.35, 2 / 3), (0.2, 1 / 2))


@dataclass(frozen=True)
class ClipSpec:
    codec: str = "vp8"  # "vp8" | "h264"
    width: int = 854
    height: int = 480
    fps: int = 30
    bitrate: int = 500_000
    seconds: float = 10.0
    keyframe_interval_s: float = 2.0
    seed: int = 1

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def keyframe_every(self) -> int:
        return max(1, round(self.keyframe_interval_s * self.fps))


@dataclass(frozen=True)
class SweepAudioSpec:
    """The audio clip (named for the sweeping tone it was before it became voice-like; see voice_like_samples)."""

    seconds: float = 10.0
    bitrate: int = 32_000  # Chrome's default for mono Opus (libwebrtc kOpusBitrateFbBps)
    seed: int = 1
    # > 0: Opus in-band FEC on, libopus told to expect this much packet loss (Chrome's
    # encoder enables FEC for useinbandfec=1 and sets the loss from receiver reports)
    fec_loss_percent: int = 0


def frame_key(data: bytes) -> bytes:
    """Short content hash identifying a reassembled frame or an audio payload."""
    return hashlib.blake2b(data, digest_size=8).digest()


# --- video frames with a visible index ----------------------------------------------------------


def marker_block(height: int) -> int:
    return max(8, height // 30)


def draw_marker(image: np.ndarray, index: int) -> None:
    """Writes `index` as MARKER_BITS cells of two blocks each: 1 = white|black, 0 = black|white."""
    b = marker_block(image.shape[0])
    for bit in range(MARKER_BITS):
        one = (index >> (MARKER_BITS - 1 - bit)) & 1
        x = 2 * bit * b
        image[0:b, x:x + b] = 255 if one else 0
        image[0:b, x + b:x + 2 * b] = 0 if one else 255


def read_marker(luma: np.ndarray) -> Optional[int]:
    """The index drawn by draw_marker, from a decoded frame's luma plane; None if unreadable."""
    b = marker_block(luma.shape[0])
    if luma.shape[1] < 2 * MARKER_BITS * b:
        return None
    q = max(1, b // 4)
    row = luma[q:b - q]
    index = 0
    for bit in range(MARKER_BITS):
        x = 2 * bit * b
        left = float(row[:, x + q:x + b - q].mean())
        right = float(row[:, x + b + q:x + 2 * b - q].mean())
        if abs(left - right) < 64:
            return None  # no contrast: not our marker, or a badly damaged picture
        index = (index << 1) | (1 if left > right else 0)
    return index


def luma_of(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def synthetic_frames(spec: ClipSpec):
    """Moving texture and a moving box (real motion for the encoder), with the frame index marker."""
    w, h = spec.width, spec.height
    rng = np.random.default_rng(spec.seed)
    margin = 320
    coarse = rng.integers(0, 255, size=((h + margin) // 8 + 1, (w + margin) // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))[: h + margin, : w + margin]
    texture = (texture // 2 + rng.integers(0, 64, size=texture.shape, dtype=np.uint8)).astype(np.uint8)
    box = max(16, min(w, h) // 4)
    for i in range(spec.frames):
        dx, dy = (i * 3) % margin, (i * 2) % margin
        image = texture[dy:dy + h, dx:dx + w].copy()
        bx = int((w - box) * (0.5 + 0.5 * math.sin(i / 20)))
        by = int((h - box) * (0.5 + 0.5 * math.cos(i / 27)))
        image[by:by + box, bx:bx + box] = (255 * ((i // 15) % 2), 128, 255 - (i * 4) % 255)
        draw_marker(image, i)
        yield image


def _video_codec_context(spec: ClipSpec) -> av.VideoCodecContext:
    time_base = fractions.Fraction(1, spec.fps)
    if spec.codec == "vp8":
        codec = av.CodecContext.create("libvpx", "w")
        codec.options = {  # realtime CBR, as aiortc's own VP8 encoder and the forwarding benchmark
            "deadline": "realtime", "cpu-used": "4", "lag-in-frames": "0", "auto-alt-ref": "0",
            "minrate": str(spec.bitrate), "maxrate": str(spec.bitrate), "bufsize": str(spec.bitrate),
            "undershoot-pct": "100", "overshoot-pct": "15", "partitions": "0",
            # aiortc's quantizer range (ffmpeg's default qmax 31 sets a bitrate floor)
            "qmin": "2", "qmax": "56",
        }
    elif spec.codec == "h264":
        codec = av.CodecContext.create("libx264", "w")
        codec.profile = "Baseline"  # what aiortc and browsers negotiate (42e01f)
        codec.options = {
            "preset": "veryfast", "tune": "zerolatency", "level": "31" if spec.height <= 720 else "40",
            "forced-idr": "1", "maxrate": str(spec.bitrate), "bufsize": str(spec.bitrate),
            "x264-params": f"keyint={spec.keyframe_every}:min-keyint={spec.keyframe_every}:scenecut=0",
        }
    else:
        raise ValueError(f"unknown video codec {spec.codec!r}")
    codec.width, codec.height = spec.width, spec.height
    codec.pix_fmt = "yuv420p"
    codec.time_base = time_base
    codec.framerate = fractions.Fraction(spec.fps)
    codec.bit_rate = spec.bitrate
    codec.gop_size = spec.keyframe_every
    codec.thread_count = 1  # multi-threaded realtime libvpx misses its bitrate by 2x, differently every run
    return codec


def _pts(packet: av.Packet) -> int:
    assert packet.pts is not None  # an encoder stamps each packet with its frame's pts
    return packet.pts


def encode_video(spec: ClipSpec) -> EncodedClip:
    codec = _video_codec_context(spec)
    time_base = fractions.Fraction(1, spec.fps)
    encoded: list[av.Packet] = []
    for index, image in enumerate(synthetic_frames(spec)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index, time_base
        if index % spec.keyframe_every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        encoded.extend(codec.encode(frame))
    encoded.extend(codec.encode(None))
    if len(encoded) != spec.frames or not encoded[0].is_keyframe:
        raise RuntimeError(f"the {spec.codec} clip has {len(encoded)} packets for {spec.frames} frames")
    encoded.sort(key=_pts)
    return EncodedClip(kind="video", codec=spec.codec, time_base=time_base, duration=spec.frames,
                       packets=[bytes(p) for p in encoded], pts=[_pts(p) for p in encoded],
                       keyframes=[bool(p.is_keyframe) for p in encoded], meta=asdict(spec))


def voice_like_samples(spec: SweepAudioSpec, sample_rate: int = 48_000, frame_size: int = 960) -> np.ndarray:
    """int16 mono samples, a whole number of frames: voiced speech as far as Opus's SILK VAD can tell.

    SILK codes LBRR (in-band FEC) only after frames its voice activity detector
    finds active, and its noise-floor tracker learns a steady tone as noise
    within ~3 s (a sweeping tone kept LBRR in ~20 % of packets). So: harmonics
    of a pitch gliding around 140 Hz shaped by two moving formants, a
    syllable-rate (~4 Hz) envelope that dips without going silent, and quiet
    seeded noise (which keeps every packet distinct).
    """
    count = max(1, round(spec.seconds * sample_rate / frame_size))
    n = count * frame_size
    t = np.arange(n) / sample_rate
    f0 = 140 + 40 * np.sin(2 * math.pi * t / spec.seconds) + 15 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / sample_rate
    f1 = 600 + 200 * np.sin(2 * math.pi * 2.9 * t)
    f2 = 1600 + 500 * np.sin(2 * math.pi * 1.7 * t + 1)
    voiced = np.zeros(n)
    for k in range(1, 30):
        fk = k * f0
        weight = np.exp(-((fk - f1) / 250) ** 2) + 0.6 * np.exp(-((fk - f2) / 350) ** 2) + 0.05
        voiced += np.where(fk < 4000, weight, 0.0) * np.sin(k * phase) / math.sqrt(k)
    syllables = np.sqrt(0.5 - 0.5 * np.cos(2 * math.pi * 4.1 * t + 0.8 * np.sin(2 * math.pi * 0.5 * t)))
    envelope = 0.2 + 0.8 * syllables
    noise = np.random.default_rng(spec.seed).normal(0, 100, n)
    return (voiced / np.max(np.abs(voiced)) * 6000 * envelope + noise).astype(np.int16)


def encode_audio(spec: SweepAudioSpec) -> EncodedClip:
    """Opus, 48 kHz mono, 20 ms packets, encoded as Chrome encodes a microphone (see SweepAudioSpec)."""
    sample_rate, frame_size = 48_000, 960
    time_base = fractions.Fraction(1, sample_rate)
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = sample_rate
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = spec.bitrate
    codec.time_base = time_base
    # libwebrtc opens mono Opus as OPUS_APPLICATION_VOIP; ffmpeg's default ("audio") picks CELT-only
    # for part of the clip, which cannot carry LBRR. LBRR needs both FEC on and an expected loss > 0.
    # (PyAV accepts unknown option names silently: tests/loadtest/test_audio_fec.py checks these act.)
    options = {"application": "voip"}
    if spec.fec_loss_percent > 0:
        options |= {"fec": "1", "packet_loss": str(spec.fec_loss_percent)}
    codec.options = options
    samples = voice_like_samples(spec, sample_rate, frame_size)
    count = len(samples) // frame_size
    encoded: list[av.Packet] = []
    for index in range(count):
        chunk = samples[index * frame_size:(index + 1) * frame_size].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, index * frame_size, time_base
        encoded.extend(codec.encode(frame))
    encoded.extend(codec.encode(None))
    packets = [bytes(p) for p in encoded][:count]
    return EncodedClip(kind="audio", codec="opus", time_base=time_base, duration=len(packets) * frame_size,
                       packets=packets, pts=[i * frame_size for i in range(len(packets))],
                       keyframes=[True] * len(packets), meta=asdict(spec))


# --- Opus in-band FEC (LBRR) ---------------------------------------------------------------------


class _RangeDecoder:
    """The start of Opus's range decoder (RFC 6716 section 4.1): init, normalize, single bits."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 1
        b0 = data[0] if data else 0  # an empty frame decodes as zeros (4.1.1)
        self.rng = 128
        self.val = 127 - (b0 >> 1)
        self._rem = b0 & 1  # the first byte's low bit, kept for the next renormalization
        self._normalize()

    def _normalize(self) -> None:
        # 4.1.2.1: until rng > 2**23, shift in a byte: the left-over bit on top, then its top 7 bits
        while self.rng <= 1 << 23:
            self.rng <<= 8
            byte = self._data[self._pos] if self._pos < len(self._data) else 0
            self._pos += 1
            sym = ((self._rem << 7) | (byte >> 1)) & 0xFF
            self._rem = byte & 1
            self.val = ((self.val << 8) + (255 - sym)) & 0x7FFFFFFF

    def bit_logp(self, logp: int) -> bool:
        """ec_dec_bit_logp (4.1.3.2): a "1" has probability 1 / 2**logp.

        It is ec_decode(ft = 2**logp) then ec_dec_update with (ft-1, ft, ft) for "1" or
        (0, ft-1, ft) for "0". With s = rng // ft, ec_decode's fs reaches ft-1 exactly when
        val // s == 0; the "1" update leaves val and sets rng = s, the "0" update
        subtracts s from both.
        """
        s = self.rng >> logp
        one = self.val < s
        if one:
            self.rng = s
        else:
            self.val -= s
            self.rng -= s
        self._normalize()
        return one


def opus_has_lbrr(payload: bytes) -> bool:
    """Whether an Opus packet carries LBRR (in-band FEC: a low-bitrate copy of the previous frame).

    TOC byte (RFC 6716 3.1): config = top 5 bits; 0-11 SILK-only (10/20/40/60 ms),
    12-15 hybrid (10/20 ms), 16-31 CELT-only (no LBRR ever); bit 2 stereo; low 2
    bits the frame-count code. Only code 0 (one frame, the rest of the packet) is
    read here - what a 20 ms Opus encoder emits. The SILK layer starts with the
    header flags (4.2.3), each ec_dec_bit_logp(1): one VAD flag per SILK frame (1
    for 10/20 ms, 2 for 40 ms, 3 for 60 ms), then the LBRR flag; for stereo the
    same again for the side channel.
    """
    if len(payload) < 2:
        return False
    toc = payload[0]
    config, stereo, code = toc >> 3, bool(toc & 0x04), toc & 0x03
    if config >= 16 or code != 0:
        return False
    silk_frames = 1 if config >= 12 else {0: 1, 1: 1, 2: 2, 3: 3}[config % 4]
    decoder = _RangeDecoder(payload[1:])
    lbrr = False
    for _channel in range(2 if stereo else 1):
        for _frame in range(silk_frames):
            decoder.bit_logp(1)  # VAD flag
        lbrr = decoder.bit_logp(1) or lbrr
    return lbrr


def lbrr_flags(clip: EncodedClip) -> str:
    """Per clip packet "1" if it carries LBRR (of the packet before it), else "0"."""
    return "".join("1" if opus_has_lbrr(p) else "0" for p in clip.packets)


def encode_keyframe_variants(spec: ClipSpec, regular: EncodedClip) -> EncodedClip:
    """Every frame of the clip encoded as a keyframe, each about the size of the clip's own keyframes.

    A publisher answers PLI by sending the next frame's keyframe variant and
    then carries on with the regular clip: the content goes on (the next inter
    frame references a slightly different picture, which decodes with a little
    drift until the next regular keyframe), and no frame is skipped or repeated.
    """
    sizes = [len(p) for p, key in zip(regular.packets, regular.keyframes) if key]
    # libvpx's rate control spends about twice the target per frame in an all-keyframe stream
    factor = 0.5 if spec.codec == "vp8" else 1.0
    all_key = replace(spec, bitrate=int(sum(sizes) / len(sizes) * 8 * spec.fps * factor),
                      keyframe_interval_s=1 / spec.fps)
    codec = _video_codec_context(all_key)
    time_base = fractions.Fraction(1, spec.fps)
    frames = list(synthetic_frames(spec))
    prime = frames[-30:]  # settle the rate control first: its first frames are several times too large
    encoded: list[av.Packet] = []
    for pts, image in enumerate(prime + frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        frame.pict_type = av.video.frame.PictureType.I
        encoded.extend(codec.encode(frame))
    encoded.extend(codec.encode(None))
    encoded = sorted(encoded, key=_pts)[len(prime):]
    if len(encoded) != spec.frames or not all(p.is_keyframe for p in encoded):
        raise RuntimeError("the keyframe variants are not one keyframe per clip frame")
    return EncodedClip(kind="video", codec=spec.codec, time_base=time_base, duration=spec.frames,
                       packets=[bytes(p) for p in encoded], pts=list(range(spec.frames)),
                       keyframes=[True] * spec.frames, meta={**asdict(spec), "variant": "keyframes"})


def _cached(name: str, spec: Any, encode: Callable[[], EncodedClip], cache_dir: Optional[Path]) -> EncodedClip:
    if cache_dir is None:
        return encode()
    key = json.dumps({"type": name, **asdict(spec), "av": av.__version__, "v": 4}, sort_keys=True)
    path = Path(cache_dir) / f"loadtest-{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.clip"
    if path.exists():
        try:
            return EncodedClip.load(path)
        except (ValueError, OSError, struct.error, json.JSONDecodeError):
            pass  # re-encode a damaged cache file
    clip = encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    clip.dump(path)
    return clip


def load_or_encode(spec: ClipSpec | SweepAudioSpec, cache_dir: Optional[Path]) -> EncodedClip:
    if isinstance(spec, ClipSpec):
        return _cached("video", spec, lambda: encode_video(spec), cache_dir)
    return _cached("audio", spec, lambda: encode_audio(spec), cache_dir)


def ladder_specs(spec: ClipSpec) -> list[ClipSpec]:
    """The same clip at each rung of LADDER, full bitrate first (same frames, same keyframe positions)."""
    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    return [replace(spec, bitrate=int(spec.bitrate * rate), width=even(spec.width * scale),
                    height=even(spec.height * scale)) for rate, scale in LADDER]


def load_or_encode_variants(spec: ClipSpec, regular: EncodedClip, cache_dir: Optional[Path]) -> EncodedClip:
    return _cached("keyframes", spec, lambda: encode_keyframe_variants(spec, regular), cache_dir)


# --- what receivers will reassemble ------------------------------------------------------------------


def frame_keys(clip: EncodedClip) -> list[bytes]:
    """Per clip packet, frame_key of the bytes a receiver reassembles from its RTP packets."""
    if clip.kind == "audio":
        return [frame_key(p) for p in clip.packets]
    from aiortc.codecs import depayload
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.vpx import Vp8Encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    encoder = Vp8Encoder() if clip.codec == "vp8" else H264Encoder()
    params = RTCRtpCodecParameters(mimeType="video/VP8" if clip.codec == "vp8" else "video/H264",
                                   clockRate=90000, payloadType=96)
    keys = []
    for data, pts in zip(clip.packets, clip.pts):
        packet = av.Packet(data)
        packet.pts, packet.time_base = pts, clip.time_base
        payloads, _ = encoder.pack(packet)
        keys.append(frame_key(b"".join(depayload(params, p) for p in payloads)))
    return keys


def key_table(*key_lists: list[bytes]) -> tuple[dict[bytes, int], int]:
    """key -> clip index, for the clip and its variants (the same index for frame i of each),
    and how many keys repeat an earlier one (such frames are attributed to the first)."""
    table: dict[bytes, int] = {}
    duplicates = 0
    for keys in key_lists:
        for index, key in enumerate(keys):
            if key in table:
                duplicates += 1
            else:
                table[key] = index
    return table, duplicates
