"""Remuxing recorded tracks into WebM / MP4 in memory (recorder/webm.py): real recordings of
live calls (aiortc peers through the server) decode frame for frame, start at a keyframe
and keep their place on the recording's clock; timing follows the RTP clock, not the
network's jitter; nothing decrypted reaches the disk."""

from __future__ import annotations

import builtins
import contextlib
import fractions
import io
import os
import random
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.keys import KeyStore
from recorder.manifest import Manifest, ManifestTrack, TrackInfo
from recorder.reader import RecordingReader
from recorder.webm import media_groups, probe_start, remux
from recorder.writer import RecordingWriter

STROKE = {"kind": "arrow", "from": [0.2, 0.8], "to": [0.5, 0.6]}


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under the roots: path -> (size, mtime_ns)."""
    found = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                found[path] = (st.st_size, st.st_mtime_ns)
    return found


@contextlib.contextmanager
def no_file_writes(tmpdir: Path, monkeypatch):
    """Records every attempt to open a file for writing (Python's open and os.open) and
    points TMPDIR at an empty directory that must stay empty."""
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    writes: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    try:
        yield writes
    finally:
        monkeypatch.setattr(builtins, "open", real_open)
        monkeypatch.setattr(io, "open", real_open)
        monkeypatch.setattr(os, "open", real_os_open)
    assert list(tmpdir.iterdir()) == []


async def record_call(sfu, *, video_codec: str = "vp8", frames: int = 60) -> tuple[str, dict]:
    """A live call recorded through the server: patient and doctor publish, the doctor draws."""
    await sfu.room(video_codec=video_codec)
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    await doctor.send({"type": "record", "action": "start"})
    await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    await doctor.send({"type": "annotate", "op": "add", "shape": STROKE})
    await doctor.wait_for_frames(patient.id, "video", frames, timeout=15)
    await doctor.send({"type": "record", "action": "stop"})
    off = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off" and "recording_id" in m)
    return off["recording_id"], {"patient": patient.id, "doctor": doctor.id}


def decode(data: bytes) -> dict[str, list]:
    """kind -> decoded frames (pts in seconds, keyframe flag), and the container duration."""
    out: dict[str, list] = {}
    with av.open(io.BytesIO(data)) as container:
        out["duration"] = container.duration / av.time_base if container.duration else None
        for stream in container.streams:
            container.seek(0, stream=stream)
            out[stream.type] = [(float(f.time), getattr(f, "key_frame", True)) for f in container.decode(stream)]
            if stream.type == "video":
                out["size"] = (stream.codec_context.width, stream.codec_context.height)
    return out


@pytest.mark.slow
async def test_remux_a_live_recording(sfu, tmp_path, monkeypatch):
    recording_id, people = await record_call(sfu)
    data_dir = sfu.services.config.data_dir
    keys = KeyStore.open(data_dir)
    reader = RecordingReader.open(data_dir, recording_id, keys)
    groups = {g.key: g for g in media_groups(reader.manifest)}
    assert set(groups) == set(people.values())  # one file per participant
    patient = groups[people["patient"]]
    assert patient.container == "webm" and patient.content_type == "video/webm"
    assert sorted(t.kind for t in patient.tracks) == ["audio", "video"]

    recorded_video = list(reader.frames(f"{people['patient']}-video"))
    recorded_audio = list(reader.frames(f"{people['patient']}-audio"))
    first_key = next(i for i, f in enumerate(recorded_video) if f.keyframe)

    before = _files(data_dir)
    with no_file_writes(tmp_path / "tmpdir", monkeypatch) as writes:
        media = remux(reader, patient)
    assert writes == [] and _files(data_dir) == before  # nothing written anywhere: memory only
    assert isinstance(media.data, bytes) and media.data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file

    # every recorded frame from the first keyframe on, and every audio packet
    assert media.packets == {f"{people['patient']}-video": len(recorded_video) - first_key,
                             f"{people['patient']}-audio": len(recorded_audio)}
    assert media.dropped[f"{people['patient']}-video"] == first_key
    decoded = decode(media.data)
    assert len(decoded["video"]) == len(recorded_video) - first_key >= 50
    assert decoded["size"] == (320, 240)
    assert decoded["video"][0][1] is True  # a keyframe first
    assert len(decoded["audio"]) >= len(recorded_audio) - 1  # Opus: one frame per packet
    # t = 0 is the file's first packet; start_ms places it on the session clock, and the probe agrees
    assert min(decoded["video"][0][0], decoded["audio"][0][0]) == 0.0
    assert media.start_ms == probe_start(reader, patient)
    first_video_ms = media.start_ms + round(decoded["video"][0][0] * 1000)
    assert abs(first_video_ms - recorded_video[first_key].timestamp_ms) <= 100  # not later than it arrived
    assert first_video_ms <= recorded_video[first_key].timestamp_ms
    # the file lasts as long as the recorded frames span
    span = (recorded_video[-1].timestamp_ms - media.start_ms) / 1000
    assert abs(decoded["duration"] - span) < 0.25, (decoded["duration"], span)
    assert abs(media.duration_ms / 1000 - decoded["duration"]) < 0.05
    # frames are spaced by their RTP timestamps (90 kHz), not by network arrival
    times = [t for t, _ in decoded["video"]]
    rtp = [f.rtp_timestamp for f in recorded_video[first_key:]]
    for i in range(1, len(times)):
        expected = ((rtp[i] - rtp[0]) % 2**32) / 90  # ms
        assert abs((times[i] - times[0]) * 1000 - expected) <= 1.01, i

    # the plaintext never reached the disk: a decoded-stream sample is in no file
    sample = recorded_video[first_key + 3].payload[:48]
    assert sample in media.data
    for path in (data_dir / "recordings" / recording_id).iterdir():
        assert sample not in path.read_bytes()


@pytest.mark.slow
async def test_h264_recording_remuxes_to_mp4(sfu):
    recording_id, people = await record_call(sfu, video_codec="h264", frames=45)
    data_dir = sfu.services.config.data_dir
    reader = RecordingReader.open(data_dir, recording_id, KeyStore.open(data_dir))
    group = next(g for g in media_groups(reader.manifest) if g.key == people["patient"])
    assert group.container == "mp4" and group.content_type == "video/mp4"
    recorded = list(reader.frames(f"{people['patient']}-video"))
    media = remux(reader, group)
    assert media.data[4:8] == b"ftyp"
    decoded = decode(media.data)
    kept = len(recorded) - media.dropped[f"{people['patient']}-video"]
    assert len(decoded["video"]) == kept >= 30
    assert decoded["video"][0][1] is True
    assert min(decoded["video"][0][0], decoded["audio"][0][0]) == 0.0
    assert len(decoded["audio"]) >= len(list(reader.frames(f"{people['patient']}-audio"))) - 1


# --- synthetic recordings of real encoded media: timing rules ---------------------------------------


def _vp8_frames(n: int, keyframe_every: int = 1000) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.framerate = 30
    enc.options = {"deadline": "realtime", "cpu-used": "8", "g": str(keyframe_every), "lag-in-frames": "0"}
    out = []
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (120, 160, 3), np.uint8)
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    return out


def _opus_packets(n: int) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "s16", 32000
    out = []
    for i in range(n):
        pcm = (np.sin(np.arange(960) / 8 + i) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [bytes(p) for p in enc.encode(frame)]
    return out


def test_timing_follows_rtp_not_jitter(data_dir, keys):
    """Frames arrive with up to 80 ms of jitter (in order); the file spaces them by RTP time,
    puts each no later than it arrived, and keeps audio and video of a participant aligned
    on the session clock. RTP timestamps wrap around 2^32 mid-track; frames before the
    first keyframe are dropped."""
    video = _vp8_frames(90)
    video[0] = (video[0][0], True)
    delta = _vp8_frames(3)[1][0]  # a delta frame of another stream: undecodable without its keyframe
    audio = _opus_packets(150)
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=None, actor="t", fsync=False,
                                   tracks=[TrackInfo("p-1-video", "video", "VP8", 90000),
                                           TrackInfo("p-1-audio", "audio", "opus", 48000)])
    rng = random.Random(7)
    items = []
    last = {}

    def arrival(track: str, ideal: float) -> int:
        t = max(round(ideal + rng.uniform(0, 80)), last.get(track, 0))  # jitter, but in order
        last[track] = t
        return t

    items.append((9990, "p-1-video", 2**32 - 3000 * 2, False, delta))  # before the first keyframe
    for i, (payload, _) in enumerate(video):  # 30 fps from 10 s on the session clock; RTP wraps at frame 40
        items.append((arrival("v", 10_000 + i * 1000 / 30), "p-1-video", (2**32 - 3000 * 40 + i * 3000) % 2**32,
                      False, payload))
    for i, payload in enumerate(audio):  # 20 ms packets from 10 s
        items.append((arrival("a", 10_000 + i * 20), "p-1-audio", (123456 + i * 960) % 2**32, False, payload))
    writer.write_event(9_900, {"type": "track-owner", "participant": {"id": "p-1", "name": "P", "role": "patient"}})
    for ts, track, rtp, key, payload in sorted(items, key=lambda x: x[0]):
        writer.write_frame(track, ts, rtp, key, payload)
    writer.close()

    reader = RecordingReader.open(data_dir, writer.id, keys)
    (group,) = media_groups(reader.manifest)
    media = remux(reader, group)
    assert media.dropped == {"p-1-video": 1}
    assert media.packets == {"p-1-video": len(video), "p-1-audio": len(audio)}
    with av.open(io.BytesIO(media.data)) as container:
        packets = {s.type: [] for s in container.streams}
        for packet in container.demux():
            if packet.size:
                packets[packet.stream.type].append(round(packet.pts * packet.time_base * 1000))
    # spacing from RTP: 33/34 ms for video, exactly 20 ms for audio, through the wrap-around
    assert {b - a for a, b in zip(packets["video"], packets["video"][1:])} <= {33, 34}
    assert {b - a for a, b in zip(packets["audio"], packets["audio"][1:])} == {20}
    # on the session clock, both tracks start within the jitter of 10 s, never after they arrived
    video_arrivals = sorted(ts for ts, track, *_ in items if track == "p-1-video")[1:]
    audio_arrivals = sorted(ts for ts, track, *_ in items if track == "p-1-audio")
    for pts, arrived in zip(packets["video"], video_arrivals):
        assert media.start_ms + pts <= arrived
    for pts, arrived in zip(packets["audio"], audio_arrivals):
        assert media.start_ms + pts <= arrived
    assert 10_000 <= media.start_ms + packets["video"][0] <= 10_080
    assert abs(packets["video"][0] - packets["audio"][0]) <= 80  # aligned to within the jitter
    decoded = decode(media.data)
    assert len(decoded["video"]) == len(video) and decoded["video"][0][1] is True
    assert len(decoded["audio"]) >= len(audio) - 1


def test_groups_per_participant_and_unsupported_codecs():
    def track(no, track_id, kind, codec):
        return ManifestTrack(no, track_id, kind, codec, 90000 if kind == "video" else 48000, f"track-{no}.seg")

    manifest = Manifest(id="20260101T000000Z-000000000000", created="", room="r1", data_key="key.json",
                        segment_max_bytes=1, segment_max_ms=1, tracks=[
                            ManifestTrack(0, "events", "events", "json", None, "track-0.seg"),
                            track(1, "p-a-audio", "audio", "opus"), track(2, "p-a-video", "video", "VP8"),
                            track(3, "p-b-video", "video", "H264"), track(4, "p-b-audio", "audio", "PCMU"),
                            track(5, "p-c-audio", "audio", "opus"), track(6, "screen", "video", "VP9")])
    groups = {g.key: g for g in media_groups(manifest)}
    assert set(groups) == {"p-a", "p-b", "p-c", "screen"}
    assert groups["screen"].tracks == () and "VP9" in groups["screen"].skipped[0]
    assert [t.track_id for t in groups["p-a"].tracks] == ["p-a-audio", "p-a-video"]
    assert groups["p-a"].content_type == "video/webm" and groups["p-a"].extension == "webm"
    assert groups["p-b"].content_type == "video/mp4" and groups["p-b"].extension == "mp4"
    assert groups["p-b"].skipped and "PCMU" in groups["p-b"].skipped[0]  # no transcoding: left out, said so
    assert groups["p-c"].content_type == "audio/webm"


def test_empty_group_has_no_media(data_dir, keys):
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=None, actor="t", fsync=False,
                                   tracks=[TrackInfo("p-1-video", "video", "VP8", 90000)])
    writer.write_frame("p-1-video", 5, 0, False, _vp8_frames(3)[1][0])  # never a keyframe
    writer.close()
    reader = RecordingReader.open(data_dir, writer.id, keys)
    group = media_groups(reader.manifest)[0]
    assert probe_start(reader, group) is None
    media = remux(reader, group)
    assert media.start_ms is None and media.data == b"" and media.dropped == {"p-1-video": 1}


def _h264_frames(n: int, keyframe_every: int = 15) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.framerate = 30
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(keyframe_every), "bf": "0"}
    base = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    return out + [(bytes(p), p.is_keyframe) for p in enc.encode(None)]


def test_an_h264_file_starts_at_a_keyframe_that_carries_its_parameter_sets(data_dir, keys):
    """The first IDR arrived without its SPS and PPS (their packets lost on the uplink): the
    MP4 muxer refused the whole file ('Invalid argument'). It now starts at the next
    keyframe that carries them, dropping what came before."""
    frames = _h264_frames(45)
    keyframes = [i for i, (_, key) in enumerate(frames) if key]
    assert keyframes[:2] == [0, 15]
    units = frames[0][0].split(b"\x00\x00\x01")
    frames[0] = (b"".join(b"\x00\x00\x01" + u for u in units if u and u[0] & 0x1F not in (7, 8)), True)
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=None, actor="t", fsync=False,
                                   tracks=[TrackInfo("p-1-video", "video", "H264", 90000)])
    writer.write_event(900, {"type": "track-owner", "participant": {"id": "p-1", "name": "P", "role": "patient"}})
    for i, (payload, key) in enumerate(frames):
        writer.write_frame("p-1-video", 1_000 + i * 33, i * 3000, key, payload)
    writer.close()
    reader = RecordingReader.open(data_dir, writer.id, keys)
    (group,) = media_groups(reader.manifest)
    media = remux(reader, group)
    assert media.data[4:8] == b"ftyp" and media.dropped == {"p-1-video": 15}
    assert len(decode(media.data)["video"]) == len(frames) - 15
