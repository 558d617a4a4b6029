"""Export a recording as a standard WebM: the patient's video with the drawings
burned in at their moments, and everyone's audio mixed.

This is the one place that re-encodes (an export is a new file for people
outside the system); live media never is. `frame_hook` lets the watermarking
stage mark every frame with the viewer's identity before encoding.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Optional

import av
import cv2
import numpy as np

from annotate.render import render
from annotate.timeline import AnnotationTimeline
from media.codec_inspect import vp8_frame_size

from .errors import RecorderError
from .reader import RecordingReader

AUDIO_RATE = 48000
EXPORT_FILE_MODE = 0o600
VIDEO_BITRATE = 2_500_000
MS = fractions.Fraction(1, 1000)
VideoDecoder = Literal["vp8", "h264"]  # literal names: PyAV's stubs then know the context decodes video
DECODERS: dict[str, VideoDecoder] = {"VP8": "vp8", "H264": "h264"}

FrameHook = Callable[[np.ndarray, int], np.ndarray]  # (BGR frame, ms from start) -> frame


@dataclass
class ExportResult:
    path: Path
    video_track: str
    frames: int
    duration_ms: int
    width: int
    height: int
    annotations: int


def _owners(events: list[dict]) -> dict[str, dict]:
    """participant id -> participant (name, role), from the recording's track-owner events."""
    return {e["participant"]["id"]: e["participant"] for e in events if e.get("type") == "track-owner"}


def _pick_video_track(reader: RecordingReader, owners: dict[str, dict]) -> str:
    video = [t.track_id for t in reader.manifest.tracks if t.kind == "video"]
    if not video:
        raise RecorderError("the recording has no video track to export")
    for track_id in video:  # the patient's camera is the clinical content
        owner = owners.get(track_id.rsplit("-", 1)[0])
        if owner and owner.get("role") == "patient":
            return track_id
    return video[0]


def _mixed_audio(reader: RecordingReader, t0: int, duration_ms: int) -> np.ndarray:
    """All audio tracks decoded and summed onto one mono timeline (float32, -1..1)."""
    mix = np.zeros(int((duration_ms + 1000) * AUDIO_RATE / 1000), np.float32)
    for track in reader.manifest.tracks:
        if track.kind != "audio" or track.codec.lower() != "opus":
            continue
        decoder = av.CodecContext.create("opus", "r")
        decoder.sample_rate = AUDIO_RATE
        for frame in reader.frames(track.track_id):
            start = int((frame.timestamp_ms - t0) * AUDIO_RATE / 1000)
            try:
                decoded = decoder.decode(av.Packet(frame.payload))
            except av.FFmpegError:
                continue  # one corrupt packet is a 20 ms gap, not a failed export
            for audio in decoded:
                samples = audio.to_ndarray().astype(np.float32)
                mono = samples.mean(axis=0) if samples.ndim == 2 else samples
                if audio.format.name.startswith("s16"):
                    mono /= 32768.0
                if 0 <= start < len(mix):
                    end = min(len(mix), start + len(mono))
                    mix[start:end] += mono[: end - start]
                start += len(mono)
    return np.clip(mix, -1.0, 1.0)


def _output_size(codec: VideoDecoder, frames: list, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The largest keyframe size (the browser's first frames are often small while it ramps up)."""
    if sizes:
        width, height = max(sizes, key=lambda s: s[0] * s[1])
    else:  # H.264: ask a decoder for the first picture's size
        decoder = av.CodecContext.create(codec, "r")
        for recorded in frames:
            pictures = decoder.decode(av.Packet(recorded.payload))
            if pictures:
                width, height = pictures[0].width, pictures[0].height
                break
        else:
            raise RecorderError("no frame of the video track could be decoded")
    return width - width % 2, height - height % 2


def _encode_audio(container, stream, audio: np.ndarray, done: int, until: int) -> int:
    step = 960  # 20 ms frames
    while done + step <= min(until, len(audio)):
        chunk = av.AudioFrame.from_ndarray((audio[done:done + step] * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, done, fractions.Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(chunk))
        done += step
    return done


def export_recording(reader: RecordingReader, out: Path, *, video_track: Optional[str] = None,
                     frame_hook: Optional[FrameHook] = None) -> ExportResult:
    events = [e.data for e in reader.events()]
    owners = _owners(events)
    track_id = video_track or _pick_video_track(reader, owners)
    track = next(t for t in reader.manifest.tracks if t.track_id == track_id)
    codec = DECODERS.get(track.codec.upper())
    if codec is None:
        raise RecorderError(f"cannot export {track.codec} video")
    frames = list(reader.frames(track_id))
    first_key = next((i for i, f in enumerate(frames) if f.keyframe), None)
    if first_key is None:
        raise RecorderError(f"track {track_id} has no keyframe to start from")
    frames = frames[first_key:]
    sizes = [s for s in (vp8_frame_size(f.payload) for f in frames if f.keyframe) if s] if codec == "vp8" else []
    timeline = AnnotationTimeline(events)
    t0 = frames[0].timestamp_ms
    duration_ms = frames[-1].timestamp_ms - t0

    width, height = _output_size(codec, frames, sizes)
    audio = _mixed_audio(reader, t0, duration_ms)
    decoder = av.CodecContext.create(codec, "r")
    tmp = out.with_name(out.name + ".partial")
    file = _create_private(tmp)
    container = av.open(file, "w", format="webm")
    try:
        vstream = container.add_stream("libvpx", rate=30)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.bit_rate = VIDEO_BITRATE
        vstream.codec_context.time_base = MS
        astream = container.add_stream("libopus", rate=AUDIO_RATE)
        astream.layout = "mono"
        audio_done = 0  # samples encoded so far; audio follows the video so the muxer can interleave
        count = 0
        last_pts = -1
        for recorded in frames:
            try:
                decoded = decoder.decode(av.Packet(recorded.payload))
            except av.FFmpegError:
                continue
            for picture in decoded:
                image: np.ndarray = picture.to_ndarray(format="bgr24")  # cv2 or the hook may replace it
                if (image.shape[1], image.shape[0]) != (width, height):
                    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
                at_ms = recorded.timestamp_ms - t0
                render(image, timeline.shapes_at(recorded.timestamp_ms))
                if frame_hook is not None:
                    image = frame_hook(image, at_ms)
                pts = max(at_ms, last_pts + 1)  # strictly increasing, as the muxer wants
                last_pts = pts
                out_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                out_frame.pts, out_frame.time_base = pts, MS
                container.mux(vstream.encode(out_frame))
                count += 1
                audio_done = _encode_audio(container, astream, audio, audio_done, until=pts * AUDIO_RATE // 1000)
        if count == 0:
            raise RecorderError(f"no frame of {track_id} could be decoded")
        container.mux(vstream.encode(None))
        _encode_audio(container, astream, audio, audio_done, until=len(audio))
        container.mux(astream.encode(None))
    except BaseException:
        container.close()
        file.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    file.flush()
    os.fsync(file.fileno())  # complete on disk before it takes the final name
    file.close()
    os.replace(tmp, out)  # keeps tmp's mode: 0600 whatever `out` was
    return ExportResult(out, track_id, count, duration_ms, width, height, len(timeline))


def _create_private(path: Path) -> BinaryIO:
    """A new file only its owner may read or write: an export is decrypted patient video.
    Created 0600 with O_EXCL (a umask can only take bits away), never reopened by name."""
    path.unlink(missing_ok=True)  # a stale .partial of an interrupted export (or a planted link)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, EXPORT_FILE_MODE)
    return os.fdopen(fd, "w+b")
