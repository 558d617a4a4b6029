"""Watermarked replays (recorder/replay_render.py, replay_cache.py, replay_spool.py,
webm_index.py): a real recording (VP8 or H.264 video of a moving photograph, Opus sound)
is decoded, marked for one viewer and encoded; the file keeps the replay's timeline, has
no holes a MediaSource would stall on, can be served while it grows, names its viewer
to the real detector, is encrypted at rest under private permissions, expires, and is
removed by a purge."""

from __future__ import annotations

import fractions
import io
import os
import stat
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from loadtest.synthetic_video import moving_photo
from recorder import replay_spool
from recorder.audit import Action, AuditLog
from recorder.errors import RecordingIntegrityError, RecordingNotFoundError, RecordingStorageError
from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.reader import RecordingReader
from recorder.replay_cache import REPLAY_CACHE_DIR, ReplayRenders
from recorder.replay_render import FILL_STEP_MS, OPUS_SILENCE_MS, opus_ms, plan, render
from recorder.replay_spool import RECORD, TAG, SpoolReader, SpoolWriter
from recorder.store import RecordingStore
from recorder.watermark_store import load_key
from recorder.webm import media_groups, probe_start
from recorder.webm_index import ClusterIndex
from recorder.writer import RecordingWriter
from watermark.registry import ISSUE_ACTION, WatermarkRegistry
from watermark.trace import trace_clip

FPS = 30


def record_real(data_dir: Path, keys: KeyStore, audit: AuditLog, *, seconds: float = 4.0, size=(640, 360),
                codec: str = "vp8", video_from_ms: int = 0, audio_hole: tuple[int, int] | None = None,
                video_hole: tuple[int, int] | None = None) -> str:
    """A recording of participant p-1: real video (a drifting photograph) from `video_from_ms`, and a
    tone in Opus from 0; frames inside a hole (ms, ms) are left out, as a stalled sender would."""
    w, h = size
    enc = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base, enc.framerate, enc.bit_rate = fractions.Fraction(1, FPS), FPS, 1_200_000
    enc.gop_size = 10 ** 4 if codec == "vp8" else 90  # browsers send keyframes rarely
    enc.options = ({"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"} if codec == "vp8" else
                   {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "repeat-headers=1"})
    aenc = av.CodecContext.create("libopus", "w")
    aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
    inside = lambda ms, hole: hole is not None and hole[0] <= ms < hole[1]  # noqa: E731
    items = []
    for i, image in enumerate(moving_photo(w, h, int(seconds * FPS), seed=21, fps=FPS)):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        for packet in enc.encode(frame):
            ms = video_from_ms + int(packet.pts * 1000 / FPS)
            if not inside(ms, video_hole):
                items.append((ms, "p-1-video", ms * 90, packet.is_keyframe, bytes(packet)))
    tone = (np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 3000).astype(np.int16)
    for n in range(int((seconds * 1000 + video_from_ms) / 20)):
        chunk = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None, :], format="s16", layout="stereo")
        chunk.sample_rate, chunk.pts = 48000, n * 960
        for packet in aenc.encode(chunk):
            if not inside(n * 20, audio_hole):
                items.append((n * 20, "p-1-audio", n * 960, False, bytes(packet)))
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1", fsync=False,
                                   tracks=[TrackInfo("p-1-video", "video", codec.upper() if codec == "vp8" else "H264",
                                                     90000),
                                           TrackInfo("p-1-audio", "audio", "opus", 48000)])
    writer.write_event(0, {"type": "track-owner", "participant": {"id": "p-1", "name": "Mrs Chen", "role": "patient"}})
    for ms, track, rtp, key, payload in sorted(items, key=lambda item: item[0]):
        writer.write_frame(track, 1000 + ms, rtp, key, payload)
    writer.close()
    return writer.id


class Sink:
    """What the muxer writes, with the cluster index and a snapshot after every write."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.index = ClusterIndex()
        self.snapshots: list[tuple[int, int, list[tuple[int, int]]]] = []

    def write(self, data: bytes) -> int:
        self.data += data
        self.index.feed(data)
        self.snapshots.append((self.index.init_bytes or 0, self.index.complete_bytes, list(self.index.points)))
        return len(data)


def decode(data: bytes) -> dict:
    out: dict = {}
    with av.open(io.BytesIO(data)) as container:
        for stream in container.streams:
            container.seek(0, stream=stream)
            frames = list(container.decode(stream))
            out[stream.type] = [(round(float(f.time) * 1000), f) for f in frames]
    return out


@pytest.fixture
def registry(data_dir: Path, audit: AuditLog) -> WatermarkRegistry:
    return WatermarkRegistry(audit, load_key(data_dir, environ={}, create=True))


def _render(data_dir, keys, registry, recording_id, viewer="trainer-ana", name="Dr Ana"):
    reader = RecordingReader.open(data_dir, recording_id, keys)
    (group,) = media_groups(reader.manifest)
    issued = registry.issue(viewer=viewer, viewer_name=name, purpose="replay", recording_id=recording_id, actor=viewer)
    the_plan = plan(reader, group)
    sink = Sink()
    stats = render(reader, group, the_plan, sink, mark=registry.watermarker(issued).mark_i420)
    return reader, group, the_plan, sink, stats, issued


@pytest.mark.slow
def test_a_replay_is_marked_for_its_viewer_on_the_replay_timeline(data_dir, keys, audit, registry, tmp_path):
    # video starts 300 ms after the sound (its first keyframe came late), stalls for a second;
    # the sound has a 200 ms hole
    recording_id = record_real(data_dir, keys, audit, seconds=4.0, video_from_ms=300, video_hole=(1500, 2500),
                               audio_hole=(3000, 3200))
    reader, group, the_plan, sink, stats, issued = _render(data_dir, keys, registry, recording_id)
    assert the_plan.start_ms == probe_start(reader, group) == 1000  # the page's sync is unchanged
    assert (the_plan.width, the_plan.height) == (640, 360) and the_plan.mime == 'video/webm; codecs="vp8,opus"'
    assert 4200 <= the_plan.duration_ms <= 4400

    media = decode(bytes(sink.data))
    video = [t for t, _ in media["video"]]
    audio = [t for t, _ in media["audio"]]
    assert video[0] == 0 and audio[0] == 0                      # both start at t = 0 ...
    assert max(np.diff(video)) <= FILL_STEP_MS and max(np.diff(audio)) <= OPUS_SILENCE_MS  # ... and no hole
    assert stats.repeated >= 1000 // 200 - 1 and stats.silence_packets >= 200 // OPUS_SILENCE_MS - 1
    assert video[-1] >= 4200 and audio[-1] >= 4200
    recorded = [f for f in reader.frames("p-1-video")]
    assert stats.frames - stats.repeated == len(recorded) and stats.undecodable == 0
    # the picture is the recorded one, with the viewer's label drawn over it (a band of strong changes)
    sources = {ms: image for ms, image in _recorded_pictures(recorded, start_ms=the_plan.start_ms)}
    replayed = {t: f for t, f in media["video"]}
    at = sorted(set(sources) & set(replayed))[30]
    source = cv2.cvtColor(sources[at], cv2.COLOR_BGR2GRAY).astype(np.float32)
    marked = replayed[at].to_ndarray(format="gray").astype(np.float32)
    assert 10 * np.log10(255 ** 2 / np.mean((source - marked) ** 2)) > 25
    rows = np.nonzero((np.abs(source - marked) > 40).sum(axis=1) > 5)[0]
    assert len(rows) >= 8 and rows[-1] - rows[0] < 60, rows        # one line of text, ~15 px high at 360p
    # ... and it names its viewer: the real tracer, the real registry
    clip = tmp_path / "replay.webm"
    clip.write_bytes(bytes(sink.data))
    traced = trace_clip(clip, registry)
    assert traced.verdict == "identified" and traced.issued == issued
    assert traced.issued.viewer == "trainer-ana" and traced.issued.purpose == "replay"


def _recorded_pictures(frames, start_ms: int):
    """The recorded VP8 frames decoded (unmarked), with their time on the replay's timeline."""
    decoder = av.CodecContext.create("vp8", "r")
    decoder.thread_count = 1  # as the renderer decodes: frames after the hole decode (from stale references)
    for frame in frames:
        for picture in decoder.decode(av.Packet(frame.payload)):
            yield frame.timestamp_ms - start_ms, picture.to_ndarray(format="bgr24")


@pytest.mark.slow
def test_each_picture_lasts_until_the_next_so_the_page_buffers_no_hole(data_dir, keys, audit, registry):
    """A MediaSource stalls at a hole in its buffered ranges, and it takes each block's duration
    as written: with the encoder's nominal 1/30 s, a first picture followed by one 150 ms later
    (a browser's first frames after a keyframe request) left [0, 0.033] apart from the rest."""
    recording_id = record_real(data_dir, keys, audit, seconds=2.0, video_hole=(40, 190))
    *_, sink, _, _ = _render(data_dir, keys, registry, recording_id)
    with av.open(io.BytesIO(bytes(sink.data))) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.duration) for p in container.demux(stream) if p.pts is not None]
    assert any(b[0] - a[0] > 100 for a, b in zip(packets, packets[1:]))  # the gap is there ...
    # ... and covered: no hole but the millisecond that 30 fps rounds to
    assert all(pts + duration >= following - 1 for (pts, duration), (following, _) in zip(packets, packets[1:]))


@pytest.mark.slow
def test_two_viewers_get_different_marks(data_dir, keys, audit, registry, tmp_path):
    recording_id = record_real(data_dir, keys, audit, seconds=3.0)
    verdicts = {}
    for viewer in ("trainer-ana", "trainer-ben"):
        *_, sink, _, issued = _render(data_dir, keys, registry, recording_id, viewer=viewer, name=viewer)
        clip = tmp_path / f"{viewer}.webm"
        clip.write_bytes(bytes(sink.data))
        verdicts[viewer] = (trace_clip(clip, registry).issued, issued)
    for viewer, (found, issued) in verdicts.items():
        assert found is not None and found.wm_id == issued.wm_id and found.viewer == viewer
    assert verdicts["trainer-ana"][1].wm_id != verdicts["trainer-ben"][1].wm_id


def test_an_h264_recording_replays_as_marked_vp8(data_dir, keys, audit, registry, tmp_path):
    recording_id = record_real(data_dir, keys, audit, seconds=3.0, size=(480, 272), codec="h264")
    _, _, the_plan, sink, stats, issued = _render(data_dir, keys, registry, recording_id)
    assert (the_plan.width, the_plan.height) == (634, 360) and stats.undecodable == 0  # scaled up to 360 px high
    with av.open(io.BytesIO(bytes(sink.data))) as container:
        assert {s.codec_context.name for s in container.streams} == {"vp8", "opus"}
    clip = tmp_path / "h264.webm"
    clip.write_bytes(bytes(sink.data))
    assert trace_clip(clip, registry).issued == issued


@pytest.mark.slow
def test_the_file_can_be_served_while_it_grows(data_dir, keys, audit, registry):
    """At every moment of the render, what the index calls complete is a prefix of the final file,
    and every random-access point starts, after the initialisation segment, a playable stream
    whose first picture is a keyframe at that point's time (what the page appends after a seek)."""
    recording_id = record_real(data_dir, keys, audit, seconds=5.0)
    *_, sink, _, _ = _render(data_dir, keys, registry, recording_id)
    final = bytes(sink.data)
    index = sink.index
    assert index.complete_bytes == len(final) and index.init_bytes and len(index.points) >= 3
    growing = [s for s in sink.snapshots if 0 < s[1] < len(final)]
    assert len({s[1] for s in growing}) >= 3                 # it became servable in steps, not at the end
    for init, complete, points in sink.snapshots:
        assert complete <= len(final) and all(o < complete for _, o in points)
    init = final[:index.init_bytes]
    for at_ms, offset in index.points:
        media = decode(init + final[offset:])
        video = media["video"]
        assert video[0][1].key_frame and abs(video[0][0] - at_ms) <= 40, (at_ms, video[0][0])
        assert len(video) > 10
    times = [t for t, _ in index.points]
    assert times == sorted(times) and times[0] == 0 and max(np.diff(times)) <= 2100   # a keyframe every 2 s


def test_spool_is_private_encrypted_and_authenticated(tmp_path):
    """The render process writes, the server reads what has been sealed, while it grows."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    path = folder / "x.webm.sealed"
    key, file_id = replay_spool.new_secret()
    replay_spool.create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    writer, reader = SpoolWriter(path, key, file_id), SpoolReader(path, key, file_id)
    rng = np.random.default_rng(1)
    text = b"PLAINTEXT-MARKER " * 5000                           # recognisable, compressible
    data = text + rng.integers(0, 256, 3 * RECORD, dtype=np.uint8).tobytes() + text
    for pos in range(0, len(data), 10_000):                      # written in pieces, sealed at "element ends"
        writer.append(data[pos:pos + 10_000])
        if pos % 30_000 == 0:
            reader.add(writer.seal(writer.size - 3_000))
            assert reader.size == writer.size - 3_000 and reader.read(0, reader.size) == data[:reader.size]
            with pytest.raises(ValueError):
                reader.read(0, reader.size + 1)                  # not sealed yet: not readable
    reader.add(writer.finish())
    writer.close()
    assert reader.read(0, len(data)) == data
    assert reader.read(RECORD - 5, RECORD + 5) == data[RECORD - 5:RECORD + 5]
    on_disk = path.read_bytes()
    assert len(on_disk) == reader.disk_bytes() > len(data)
    assert b"PLAINTEXT-MARKER" not in on_disk and data[RECORD:RECORD + 64] not in on_disk

    tampered = bytearray(on_disk)
    tampered[-100] ^= 1                                          # one bit of the last record
    path.write_bytes(bytes(tampered))
    assert reader.read(0, 100) == data[:100]
    with pytest.raises(RecordingIntegrityError):
        reader.read(len(data) - 10, len(data))
    path.write_bytes(on_disk[RECORD + TAG:2 * (RECORD + TAG)] + on_disk[:RECORD + TAG] + on_disk[2 * (RECORD + TAG):])
    with pytest.raises(RecordingIntegrityError):                 # records swapped
        reader.read(0, 10)
    reader.remove()
    assert not path.exists()
    with pytest.raises(RecordingStorageError):
        reader.read(0, 10)


def test_opus_packet_lengths():
    assert opus_ms(b"\xfc\xff\xfe") == 20       # CELT 20 ms, one frame (our silence)
    assert opus_ms(b"\x78\x00") == 20           # hybrid fullband 20 ms (config 15)
    assert opus_ms(b"\x08\x00") == 20           # SILK NB 20 ms
    assert opus_ms(b"\xf9\x00") == 40           # CELT 20 ms, two frames
    assert opus_ms(b"\xfb\x03") == 60           # CELT 20 ms, three frames (code 3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait(job, timeout: float = 60.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while job.state in ("queued", "rendering"):
        assert time.monotonic() < deadline, job.status()
        time.sleep(0.05)


@pytest.mark.slow
def test_replay_jobs_issue_audit_expire_and_are_purged(data_dir, keys, audit):
    recording_id = record_real(data_dir, keys, audit, seconds=2.0)
    stale = data_dir / REPLAY_CACHE_DIR / "20200101T000000Z-000000000000"
    stale.mkdir(parents=True)
    (stale / "left-by-a-crash.sealed").write_bytes(b"x")
    clock = Clock()
    renders = ReplayRenders(data_dir, environ={}, clock=clock, ttl_s=600, idle_s=60)
    assert not stale.exists()                                    # the last process's files: wiped at start
    root = data_dir / REPLAY_CACHE_DIR
    assert stat.S_IMODE(root.stat().st_mode) == 0o700

    ana = renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana")
    _wait(ana)
    assert ana.state == "ready", ana.status()
    status = ana.status()
    assert status["size"] == status["ready_bytes"] > 0 and status["progress"] == 1.0 and status["watermark"]
    assert renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana") is ana   # the same viewer: the same file
    ben = renders.job(recording_id, "p-1", "trainer-ben", "Dr Ben")
    _wait(ben)
    assert ben.watermark != ana.watermark

    entries = list(audit.authentic_entries())
    opened = [e["actor"] for e in entries if e["action"] == Action.REPLAY and e["target"] == recording_id]
    issued = [e for e in entries if e["action"] == ISSUE_ACTION]
    assert opened == ["trainer-ana", "trainer-ben"]              # each render decrypted under its viewer's name
    assert [(e["details"]["viewer"], e["details"]["viewer_name"], e["details"]["purpose"], e["details"]["participant"],
             e["details"]["watermark_id"]) for e in issued] == [
        ("trainer-ana", "Dr Ana", "replay", "p-1", ana.watermark),
        ("trainer-ben", "Dr Ben", "replay", "p-1", ben.watermark)]

    files = sorted((root / recording_id).iterdir())
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE((root / recording_id).stat().st_mode) == 0o700
    plain = ana.read(0, status["size"])
    assert plain[:4] == b"\x1a\x45\xdf\xa3"                      # a WebM ...
    assert all(plain[:64] not in f.read_bytes() and plain[5000:5064] not in f.read_bytes()
               for f in files)  # ... not on disk

    # expiry: Ben's replay unused for longer than the TTL goes, Ana's (used since) stays
    clock.now += 500
    renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana")
    clock.now += 200
    renders.sweep()
    assert [j.viewer for j in renders.jobs()] == ["trainer-ana"] and not ben.path.exists() and ana.path.exists()

    # a purge removes the cache with the recording; the job is dropped and nothing more is served
    store = RecordingStore(data_dir, keys=keys, audit=audit)
    result = store.purge(0, actor="cli:ops")
    assert result.purged == [recording_id]
    assert not (root / recording_id).exists()
    purge = [e for e in audit.authentic_entries() if e["action"] == Action.PURGE][-1]
    assert purge["details"]["replay_cache_removed"] is True
    with pytest.raises(RecordingNotFoundError):
        renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana")
    assert renders.jobs() == []
    with pytest.raises(RecordingStorageError):
        ana.read(0, 10)
    assert audit.verify().ok


def test_a_render_nobody_waits_for_is_stopped(data_dir, keys, audit):
    recording_id = record_real(data_dir, keys, audit, seconds=2.0)
    clock = Clock()
    renders = ReplayRenders(data_dir, environ={}, clock=clock, workers=1, idle_s=60)
    with renders._slots:                                         # every render slot is busy: jobs wait
        waiting = renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana")
        assert waiting.status()["state"] == "queued" and waiting.readable() == (0, None)
        clock.now += 61
        renders.sweep()                                          # nobody asked for it for a minute
    _wait(waiting)
    assert waiting.state == "stopped" and renders.jobs() == []
    assert not any(e["action"] == ISSUE_ACTION for e in audit.authentic_entries())  # no id issued for nothing


@pytest.mark.slow
def test_a_running_render_is_stopped_in_its_own_process(data_dir, keys, audit):
    """Renders run outside the server's process; dropping one (nobody polls it any more)
    terminates that process and deletes what it wrote."""
    import time

    recording_id = record_real(data_dir, keys, audit, seconds=8.0)
    clock = Clock()
    renders = ReplayRenders(data_dir, environ={}, clock=clock, idle_s=60)
    job = renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana")
    deadline = time.monotonic() + 30
    while not (job.state == "rendering" and job.points):
        assert job.state in ("queued", "rendering") and time.monotonic() < deadline, job.status()
        time.sleep(0.01)
    process = job._process
    assert process.pid != os.getpid() and process.poll() is None
    assert job.readable()[0] > 0 and job.path.exists()
    clock.now += 61
    renders.sweep()
    process.wait(5)
    assert process.returncode is not None and not job.path.exists() and renders.jobs() == []
    _wait(job)
    assert job.state == "stopped", job.status()


def test_a_recording_whose_picture_grows_replays_at_its_largest_size(data_dir, keys, audit, registry, tmp_path):
    """Browsers start small and ramp up: the replay is at the largest keyframe's size, earlier
    pictures scaled up to it, and still names its viewer."""
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1", fsync=False,
                                   tracks=[TrackInfo("p-1-video", "video", "VP8", 90000)])
    n = 0
    for (w, h), count in (((320, 180), FPS), ((640, 360), 2 * FPS)):
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base, enc.framerate, enc.bit_rate, enc.gop_size = fractions.Fraction(1, FPS), FPS, 800_000, 10 ** 4
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for i, image in enumerate(moving_photo(w, h, count, seed=5, fps=FPS)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            for packet in enc.encode(frame):
                ms = (n + int(packet.pts)) * 1000 // FPS
                writer.write_frame("p-1-video", ms, ms * 90, packet.is_keyframe, bytes(packet))
        n += count
    writer.close()
    _, _, the_plan, sink, stats, issued = _render(data_dir, keys, registry, writer.id)
    assert (the_plan.width, the_plan.height) == (640, 360) and not the_plan.has_audio
    assert the_plan.mime == 'video/webm; codecs="vp8"'
    media = decode(bytes(sink.data))
    assert {(f.width, f.height) for _, f in media["video"]} == {(640, 360)} and "audio" not in media
    assert len(media["video"]) == stats.frames == 3 * FPS
    clip = tmp_path / "ramp.webm"
    clip.write_bytes(bytes(sink.data))
    assert trace_clip(clip, registry).issued == issued


def test_blacker_than_black_pictures_still_carry_the_mark(data_dir, keys, audit, registry, tmp_path):
    """Some senders put the picture outside video range: Chromium's test camera paints its green
    as Y = 0, U = V = 0 (RGB conversion clips that to green). Players and the tracer cut off
    anything below video black, so a mark added there would vanish: the replay brings the
    picture into range first."""
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1", fsync=False,
                                   tracks=[TrackInfo("p-1-video", "video", "VP8", 90000)])
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 640, 360, "yuv420p"
    enc.time_base, enc.framerate, enc.bit_rate, enc.gop_size = fractions.Fraction(1, FPS), FPS, 800_000, 10 ** 4
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    # 8 s: on a picture this flat the mark sits at its floor strength; even so blind decoding
    # misses ~1 % of ids, which matching the issued ids recovers (docs/BENCHMARKS.md)
    for i in range(8 * FPS):  # as that camera draws it: the background at Y 0, a turning pie and a clock at Y 255
        i420 = np.zeros((540, 640), np.uint8)
        cv2.ellipse(i420[:360], (320, 180), (90, 90), 0, 12 * i, 12 * i + 300, 255, -1)
        cv2.putText(i420[:360], f"0:00:{i // FPS:02d}.{i % FPS:02d} {i}", (12, 30),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = i
        for packet in enc.encode(frame):
            ms = int(packet.pts * 1000 / FPS)
            writer.write_frame("p-1-video", ms, ms * 90, packet.is_keyframe, bytes(packet))
    writer.close()
    reader = RecordingReader.open(data_dir, writer.id, keys)
    first = next(reader.frames("p-1-video"))
    decoder = av.CodecContext.create("vp8", "r")
    assert np.mean(decoder.decode(av.Packet(first.payload))[0].to_ndarray()[:360] < 16) > 0.7  # really below black
    *_, sink, _, issued = _render(data_dir, keys, registry, writer.id)
    clip = tmp_path / "dark.webm"
    clip.write_bytes(bytes(sink.data))
    assert trace_clip(clip, registry).issued == issued


def record_rejoin(data_dir: Path, keys: KeyStore, audit: AuditLog) -> str:
    """Mrs Chen joins (p-1: video and sound from 0 to 2 s), loses her connection, and joins again
    as p-3 (from 3.5 to 5.5 s), the same identity both times; Dr Lee (p-2) hears it all (sound only)."""
    w, h = 640, 360
    items = []
    tone = (np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 3000).astype(np.int16)
    for pid, seed, start in (("p-1", 3, 0), ("p-3", 4, 3500)):
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base, enc.framerate, enc.bit_rate, enc.gop_size = fractions.Fraction(1, FPS), FPS, 800_000, 10 ** 4
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for i, image in enumerate(moving_photo(w, h, 2 * FPS, seed=seed, fps=FPS)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            for packet in enc.encode(frame):
                ms = int(packet.pts * 1000 / FPS)
                items.append((start + ms, f"{pid}-video", ms * 90, packet.is_keyframe, bytes(packet)))
    for pid, start, end in (("p-1", 0, 2000), ("p-2", 0, 5500), ("p-3", 3500, 5500)):
        aenc = av.CodecContext.create("libopus", "w")
        aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
        for n in range((end - start) // 20):
            chunk = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None, :], format="s16", layout="stereo")
            chunk.sample_rate, chunk.pts = 48000, n * 960
            for packet in aenc.encode(chunk):
                items.append((start + n * 20, f"{pid}-audio", n * 960, False, bytes(packet)))
    tracks = [TrackInfo("p-1-video", "video", "VP8", 90000), TrackInfo("p-1-audio", "audio", "opus", 48000),
              TrackInfo("p-2-audio", "audio", "opus", 48000),
              TrackInfo("p-3-video", "video", "VP8", 90000), TrackInfo("p-3-audio", "audio", "opus", 48000)]
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1", fsync=False,
                                   tracks=tracks)
    chen = {"name": "Mrs Chen", "role": "patient", "identity": "patient-chen"}
    writer.write_event(1000, {"type": "track-owner", "participant": {"id": "p-1", **chen}})
    writer.write_event(1000, {"type": "track-owner", "participant": {"id": "p-2", "name": "Dr Lee", "role": "doctor",
                                                                     "identity": "doctor-lee"}})
    writer.write_event(3200, {"type": "participant-left", "participant_id": "p-1", "reason": "left"})
    writer.write_event(4400, {"type": "track-owner", "participant": {"id": "p-3", **chen}})
    for ms, track, rtp, key, payload in sorted(items, key=lambda item: item[0]):
        writer.write_frame(track, 1000 + ms, rtp, key, payload)
    writer.close()
    return writer.id


@pytest.mark.slow
def test_a_person_who_joined_twice_replays_as_one_file_across_the_gap(data_dir, keys, audit, registry):
    from recorder.webm import participant_identities, person_groups

    recording_id = record_rejoin(data_dir, keys, audit)
    reader = RecordingReader.open(data_dir, recording_id, keys)
    identities = participant_identities(e.data for e in reader.events())
    assert identities == {"p-1": "patient-chen", "p-2": "doctor-lee", "p-3": "patient-chen"}
    groups = person_groups(reader.manifest, identities)
    assert [(g.key, g.members, [t.track_id for t in g.tracks]) for g in groups] == [
        ("p-1", ("p-1", "p-3"), ["p-1-video", "p-1-audio", "p-3-video", "p-3-audio"]),
        ("p-2", ("p-2",), ["p-2-audio"])]
    chen = groups[0]
    # the writer noted what the plan needs: no pass over the media, and it agrees with one
    scanned = plan(reader, chen)
    noted = plan(reader, chen, reader.stop_event())
    assert (noted.start_ms, noted.width, noted.height, noted.has_audio) == (
        scanned.start_ms, scanned.width, scanned.height, scanned.has_audio) == (1000, 640, 360, True)
    assert abs(noted.duration_ms - scanned.duration_ms) <= 40 and 5400 <= scanned.duration_ms <= 5600

    issued = registry.issue(viewer="trainer-ana", viewer_name="Dr Ana", purpose="replay", recording_id=recording_id,
                            actor="trainer-ana")
    sink = Sink()
    stats = render(reader, chen, noted, sink, mark=registry.watermarker(issued).mark_i420)
    media = decode(bytes(sink.data))
    assert set(media) == {"video", "audio"}  # one picture, one sound, across both joins
    video = [t for t, _ in media["video"]]
    audio = [t for t, _ in media["audio"]]
    assert video[0] == 0 and audio[0] == 0 and video[-1] >= 5400 and audio[-1] >= 5400
    assert max(np.diff(video)) <= FILL_STEP_MS and max(np.diff(audio)) <= OPUS_SILENCE_MS  # the gap is filled
    recorded = len(list(reader.frames("p-1-video"))) + len(list(reader.frames("p-3-video")))
    assert stats.frames - stats.repeated == recorded and stats.undecodable == 0
    assert stats.repeated >= 1500 // FILL_STEP_MS - 1 and stats.silence_packets >= 1500 // OPUS_SILENCE_MS - 1
    # between the joins the last picture holds; the second join shows its own pictures (a mirrored photo)
    gray = {t: f.to_ndarray(format="gray").astype(np.float32) for t, f in media["video"]}
    at = lambda ms: gray[min(gray, key=lambda t: abs(t - ms))]  # noqa: E731
    assert np.mean(np.abs(at(2500) - at(3300))) < 4
    assert np.mean(np.abs(at(3300) - at(3700))) > 12


@pytest.mark.slow
def test_the_first_seconds_are_rendered_first_at_normal_priority(data_dir, keys, audit):
    """A render renders its head (the first HEAD_MS, until a cluster at or after it can be served)
    at the server's priority on one core, even while every slot for the rest is taken; then the
    whole render process drops to RENDER_NICE on every core, its start slot goes to the next render,
    and it renders the rest only once it gets a slot for that. A spare process started ahead (when a
    trainer lists recordings) is the one that renders."""
    import time

    from recorder.replay_render import HEAD_MS, HEAD_SLACK_MS, RENDER_NICE

    recording_id = record_real(data_dir, keys, audit, seconds=8.0)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    renders = ReplayRenders(data_dir, environ={}, clock=Clock(), workers=1, bulk_workers=1, idle_s=600)

    def servable(job) -> int:  # how far what may be served plays, as the cluster index of its bytes says
        index = ClusterIndex()
        index.feed(job.read(0, job.readable()[0]))
        assert index.complete_ms == job.servable_ms == job.status()["servable_ms"]
        return index.complete_ms

    def wait_head(job) -> None:
        deadline = time.monotonic() + 60
        while job.head is None:
            assert job.state in ("queued", "rendering") and time.monotonic() < deadline, job.status()
            time.sleep(0.02)

    assert renders.prewarm(1)
    deadline = time.monotonic() + 30
    while renders.spares() < 1:                          # it loads everything, then waits
        assert time.monotonic() < deadline
        time.sleep(0.02)
    spare = renders._spares[0][1]
    cores = sorted(os.sched_getaffinity(0))
    with renders._bulk:                                  # every slot for the rest is busy
        ana = renders.job(recording_id, "p-1", "trainer-ana", "Dr Ana")
        wait_head(ana)
        assert ana._process is spare and renders.spares() == 0
        assert ana.head["nice"] == base and ana.head["nice_after"] == max(base, RENDER_NICE)
        if len(cores) > 1:                               # the head on one core, the rest on all of them
            assert ana.head["cpus"] == cores[-1:] and ana.head["cpus_after"] == cores
        assert servable(ana) >= ana.head["ms"] >= HEAD_MS - HEAD_SLACK_MS  # the first seconds can be served
        assert ana.state == "rendering" and ana.status()["progress"] < 0.6
        assert os.getpriority(os.PRIO_PROCESS, ana._process.pid) == max(base, RENDER_NICE)
        held = ana.readable()[0]
        # its start slot is free again: the next viewer's render gets its first seconds too
        ben = renders.job(recording_id, "p-1", "trainer-ben", "Dr Ben")
        wait_head(ben)
        assert servable(ben) >= HEAD_MS - HEAD_SLACK_MS and ben.head["nice"] == base
        assert ana.readable()[0] == held and ana.state == "rendering"  # the rest waited for a slot
    _wait(ana)
    _wait(ben)
    assert ana.state == ben.state == "ready" and ana.readable()[0] > held
    renders.close()
