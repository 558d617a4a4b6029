"""The watermarked replay: one participant's recorded tracks, decoded, marked for one
viewer (visible drifting label + invisible forensic mark: watermark/embed.py's
`Watermarker.mark_i420`, in place on the decoder's I420 planes, so no colour
conversion either way) and encoded again into a WebM (VP8 + Opus).

Why re-encode: the recording holds the browsers' own bitstreams and recorder/webm.py
only remuxes them, so nothing a viewer saw could be traced. Every frame a trainer
is shown now carries that trainer's issued watermark id.

Timeline. Packets come from `webm.merged_packets`, the remux's timeline, so the file
starts at the same session-clock time (`start_ms`) and the page's sync and drawings
are unchanged. Opus packets are copied, not re-encoded (audio carries no mark). The
page plays the file through a MediaSource, which stalls at any hole in the buffered
ranges, so holes are filled: a video gap by repeating the last marked picture every
FILL_STEP_MS, an audio gap by Opus silence packets, and the start of a track that
begins after t = 0 likewise.

One person, one file. A participant who left and joined again has a track per join
(webm.person_groups puts them in one group): their pictures are decoded each by its own
decoder and encoded into the one VP8 stream, their Opus packets copied into the one audio
stream, and the time between two joins is filled like any gap. Joins can overlap (a
reload: the old session lingers until the server notices): the newest track that sends
is the one shown; an older one takes over again only after TAKEOVER_MS of silence.

Planning. The encoder needs the picture size (the largest keyframe's) before its first
frame, and the status the length. A recording closed properly says both in its stop
event (recorder/writer.py, gathered while it was recorded), so a render starts at once;
otherwise (cut short, or H.264, whose size the writer does not parse) a pre-pass reads
the group's packets first.

Pipeline. Three threads with small bounded queues: read + decode (+ resize) -> marks ->
VP8 encode + mux. Decoding, the marks and encoding spend most of
their time in C with the GIL released, so one render uses up to ~1.7 cores.
The server runs this in a process of its own (recorder/replay_worker.py), at normal
priority for the first seconds (HEAD_MS: the trainer is waiting for them) and at nice
RENDER_NICE after: live consultations on the same host come first, and the server's
event loop never waits for this GIL.

Encoder (measured, docs/BENCHMARKS.md "Watermarked replays"): libvpx VP8, realtime
deadline, cpu-used 16, one thread. With cpu-used < 16 libvpx's realtime mode budgets
its time against the frame rate and, fed faster than real time, slows itself down
(8: 9.5 ms per 720p frame; 16: 3 ms); its own threading was slower here than the
pipeline. A keyframe every KEYFRAME_MS gives the page a place to start after a seek
(each keyframe starts a WebM cluster, recorder/webm_index.py); the first comes after
FIRST_KEYFRAME_MS, since a cluster can be served only once the next one begins. Output is the largest
keyframe size in the recording (browsers ramp up), the shorter side capped at
MAX_SHORT_SIDE, at 2.5 Mbit/s for 720p (the export's rate), scaled by area. A sender
that dropped its resolution (a browser short of CPU or bandwidth sends 320x180) is
scaled up to MIN_SHORT_SIDE: the detector averages the mark over pixels and frames, and
a few seconds at 180p hold too few to name the viewer.
"""

from __future__ import annotations

import fractions
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import av
import numpy as np
from av.video.frame import PictureType

from media.codec_inspect import vp8_frame_size

from .errors import RecorderError
from .manifest import ManifestTrack
from .reader import RecordingReader
from .webm import (
    DEFAULT_AUDIO_MS,
    DEFAULT_VIDEO_MS,
    MediaGroup,
    TimedPacket,
    merged_packets,
    open_template,
    probe_start,
)

MS = fractions.Fraction(1, 1000)
MAX_SHORT_SIDE = 720
MIN_SHORT_SIDE = 360           # smaller pictures are scaled up: the mark needs the pixels to be traced
BITRATE_720P = 2_500_000
MIN_BITRATE = 600_000          # small pictures still get enough bits for the mark to survive
KEYFRAME_MS = 2000             # at 0.5 s, then at every multiple of this (clusters begin at 0, 0.5, 2, 4, ...)
FIRST_KEYFRAME_MS = 500        # the first cluster is short: the page can start playing sooner
FILL_GAP_MS = 400              # a longer video gap is filled ...
FILL_STEP_MS = 200             # ... with a repeated picture this often
AUDIO_GAP_MS = 40
OPUS_SILENCE = b"\xfc\xff\xfe"  # one 20 ms CELT frame of stereo silence (TOC 0xfc)
OPUS_SILENCE_MS = 20
RENDER_NICE = 10
HEAD_NICE = 0                  # the head's priority (recorder/replay_worker.py), on one core
HEAD_MS = 2000                 # rendered at normal priority: until what can be served plays this far ...
HEAD_SLACK_MS = 100            # ... to within a few frames (the cluster before the keyframe at HEAD_MS)
TAKEOVER_MS = 1000             # an older join's track is shown again after the newer one is silent this long
QUEUE_FRAMES = 4
ENCODER_OPTIONS = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}
MUXER_OPTIONS = {"cluster_size_limit": str(16 << 20), "cluster_time_limit": "5000"}
IO_BUFFER = 4096               # small, so a finished cluster reaches the sink (and the page) at once

Marker = Callable[[np.ndarray, int], None]  # marks an I420 picture (PyAV's (h*3/2, w) array) in place, at ms


class RenderError(RecorderError):
    """The recording could not be rendered (undecodable video, unsupported codec)."""


class RenderStopped(RecorderError):
    """`should_stop` said so (the viewer left, the recording was purged)."""


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


def mime_for(has_video: bool, has_audio: bool) -> str:
    """The rendered file's type with codecs, as MediaSource.addSourceBuffer wants it."""
    codecs = ",".join(c for c, on in (("vp8", has_video), ("opus", has_audio)) if on)
    return f'{"video" if has_video else "audio"}/webm; codecs="{codecs}"'


@dataclass(frozen=True)
class RenderPlan:
    start_ms: int       # session clock at the file's t = 0 (webm.probe_start gives the same)
    duration_ms: int
    width: int          # 0: no video
    height: int
    has_audio: bool

    @property
    def has_video(self) -> bool:
        return self.width > 0

    @property
    def content_type(self) -> str:
        return "video/webm" if self.has_video else "audio/webm"

    @property
    def mime(self) -> str:
        return mime_for(self.has_video, self.has_audio)

    @property
    def bitrate(self) -> int:
        return max(MIN_BITRATE, int(BITRATE_720P * self.width * self.height / (1280 * 720)))


@dataclass
class RenderStats:
    frames: int = 0            # pictures encoded, repeats included
    repeated: int = 0          # gap fillers
    undecodable: int = 0       # recorded video frames the decoder rejected
    audio_packets: int = 0
    silence_packets: int = 0
    end_ms: int = 0


def opus_ms(packet: bytes) -> float:
    """Audio length of an Opus packet from its TOC byte (RFC 6716 3.1); 20 if unreadable."""
    if not packet:
        return 20.0
    config, code = packet[0] >> 3, packet[0] & 3
    frame: float  # ms
    if config < 12:
        frame = (10, 20, 40, 60)[config % 4]
    elif config < 16:
        frame = (10, 20)[config % 2]
    else:
        frame = (2.5, 5, 10, 20)[config % 4]
    count = 1 if code == 0 else 2 if code in (1, 2) else (packet[1] & 0x3F if len(packet) > 1 else 1)
    return frame * count


# --- planning -------------------------------------------------------------------------------------


def _h264_size(payload: bytes) -> Optional[tuple[int, int]]:
    decoder = av.CodecContext.create("h264", "r")  # an IDR access unit decodes on its own
    try:
        pictures = decoder.decode(av.Packet(payload)) + decoder.decode(None)
    except av.FFmpegError:
        return None
    return (pictures[0].width, pictures[0].height) if pictures else None


def _output_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    width, height = max(sizes, key=lambda s: s[0] * s[1])
    short = min(width, height)
    scale = MAX_SHORT_SIDE / short if short > MAX_SHORT_SIDE else max(1.0, MIN_SHORT_SIDE / short)
    width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


def plan(reader: RecordingReader, group: MediaGroup, stop: Optional[dict] = None) -> Optional[RenderPlan]:
    """The group's length and picture size: from the recording's stop event (`stop`,
    RecordingReader.stop_event(): what the writer noted per track) when it covers every
    track, else from one pass over the group's packets (decryption only). None when no
    track has a packet. Raises RenderError for a video track no keyframe of which can be
    read, RecordingIntegrityError from the reader."""
    quick = _noted_plan(reader, group, stop) if stop is not None else None
    return quick if quick is not None else _scanned_plan(reader, group)


def _noted_plan(reader: RecordingReader, group: MediaGroup, stop: dict) -> Optional[RenderPlan]:
    """The plan from the stop event's `media` notes, None when they do not cover the group (an older
    recording, an H.264 track): start as the render's timeline places it (webm.probe_start reads the
    first frames only), end at the last frame's arrival (the timeline never puts a frame later)."""
    notes = stop.get("media")
    if not isinstance(notes, dict):
        return None
    sizes: list[tuple[int, int]] = []
    ends: list[int] = []
    kinds = set()
    for track in group.tracks:
        note = notes.get(track.track_id)
        if not isinstance(note, dict):
            return None
        last = note.get("last_ms")
        if last is None:
            continue  # no frame at all
        if not isinstance(last, int):
            return None
        kinds.add(track.kind)
        ends.append(last + (DEFAULT_AUDIO_MS if track.kind == "audio" else DEFAULT_VIDEO_MS))
        if track.kind == "video":
            size = note.get("size")
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 2 for v in size)):
                return None
            sizes.append((size[0], size[1]))
    start = probe_start(reader, group)
    if start is None or not ends:
        return None
    width, height = _output_size(sizes) if sizes else (0, 0)
    return RenderPlan(start, max(1, max(ends) - start), width, height, "audio" in kinds)


def _scanned_plan(reader: RecordingReader, group: MediaGroup) -> Optional[RenderPlan]:
    merged = merged_packets(reader, group)
    if merged.start is None:
        return None
    kinds = [track.kind for track, _ in merged.tracks]
    sizes: list[tuple[int, int]] = []
    end = 0
    for no, packet in merged.packets:
        end = max(end, packet.pts + packet.duration)
        track = merged.tracks[no][0]
        if track.kind == "video" and packet.keyframe:
            size = vp8_frame_size(packet.payload) if track.codec.lower() == "vp8" else _h264_size(packet.payload)
            if size and size[0] >= 2 and size[1] >= 2:
                sizes.append(size)
    width = height = 0
    if "video" in kinds:
        if not sizes:
            raise RenderError(f"{group.key}: no keyframe of the video could be read")
        width, height = _output_size(sizes)
    return RenderPlan(merged.start, end, width, height, "audio" in kinds)


# --- the pipeline ---------------------------------------------------------------------------------


@dataclass
class _Picture:
    pts: int
    image: np.ndarray  # I420, (h*3/2, w)


_END = object()


class _Run:
    """Shared by the stages: the first failure, and the flag that stops everyone."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.failure: Optional[BaseException] = None

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.abort.set()


class _Pipe:
    """Bounded hand-over between two stages; every wait gives up once the run is aborted."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.q: queue.Queue = queue.Queue(QUEUE_FRAMES)

    def put(self, item: Any) -> None:
        while not self.run.abort.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise RenderStopped("render aborted")

    def get(self) -> Any:
        while not self.run.abort.is_set():
            try:
                return self.q.get(timeout=0.2)
            except queue.Empty:
                continue
        raise RenderStopped("render aborted")


def _stage(name: str, body: Callable[[], None], run: _Run) -> threading.Thread:
    def target() -> None:
        try:
            body()
        except BaseException as exc:  # the consumer re-raises the first failure
            run.fail(exc)
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class _Shown:
    """Which of a person's tracks of one kind plays now (one per join): the newest that sends; an
    older one again only once the newer has been silent for TAKEOVER_MS (joins may overlap)."""

    def __init__(self, starts: dict[int, int]) -> None:
        self.starts = starts  # track no -> its first packet's time
        self.current: Optional[int] = None
        self.last = 0  # the current track's newest packet time

    def accept(self, no: int, at: int) -> bool:
        current = self.current
        if current is not None and no != current and self.starts[no] <= self.starts[current] \
                and at - self.last <= TAKEOVER_MS:
            return False
        self.current, self.last = no, at
        return True


def _decode_stage(packets: Iterator[tuple[int, TimedPacket]], tracks: list[ManifestTrack], starts: list[int],
                  size: tuple[int, int], out: _Pipe, stats: RenderStats, should_stop: Callable[[], bool]) -> None:
    decoders: dict[int, Any] = {}  # one per video track (a join may even have another codec)
    in_step: set[int] = set()      # tracks whose decoder has had every packet since a keyframe
    shown = {kind: _Shown({no: starts[no] for no, t in enumerate(tracks) if t.kind == kind})
             for kind in ("audio", "video")}
    for no, packet in packets:
        if should_stop():
            raise RenderStopped("render stopped")
        track = tracks[no]
        if track.kind != "video":
            if shown["audio"].accept(no, packet.pts):
                out.put((no, packet))
            continue
        if not shown["video"].accept(no, packet.pts):
            in_step.discard(no)  # it missed this packet: it can decode again from a keyframe
            continue
        if no not in in_step:
            if not packet.keyframe:
                continue
            in_step.add(no)
        decoder = decoders.get(no)
        if decoder is None:
            decoder = decoders[no] = av.CodecContext.create("vp8" if track.codec.lower() == "vp8" else "h264", "r")
            decoder.thread_count = 1  # the pipeline is the parallelism; frame threads would add delay
        try:
            pictures = decoder.decode(av.Packet(packet.payload))
        except av.FFmpegError:
            stats.undecodable += 1  # a corrupt frame: the picture holds until the decoder recovers
            continue
        for picture in pictures:
            if (picture.width, picture.height) != size or picture.format.name != "yuv420p":
                picture = picture.reformat(width=size[0], height=size[1], format="yuv420p",
                                           interpolation="AREA" if picture.width > size[0] else "BILINEAR")
            out.put(_Picture(packet.pts, legal_range(picture.to_ndarray())))
    out.put(_END)


def legal_range(i420: np.ndarray) -> np.ndarray:
    """Clamps an I420 picture to video range (Y 16-235, chroma 16-240), in place. Senders do
    emit values outside it (Chromium's test camera paints its green as Y = 0, U = V = 0); a
    mark added below black is cut off by every player and by the tracer, which convert to
    RGB or full-range grey (the BGR marks of an export clamp the same way, by converting).
    It looks the same: the conversion clipped it anyway."""
    h = i420.shape[0] * 2 // 3
    np.clip(i420[:h], 16, 235, out=i420[:h])
    np.clip(i420[h:], 16, 240, out=i420[h:])
    return i420


def _mark_stage(source: _Pipe, out: _Pipe, mark: Marker) -> None:
    while True:
        item = source.get()
        if isinstance(item, _Picture):
            mark(item.image, item.pts)
        out.put(item)
        if item is _END:
            return


class _Encoder:
    """Muxes into the sink: VP8-encodes pictures (filling gaps), copies Opus (filling gaps)."""

    def __init__(self, sink: Sink, plan_: RenderPlan, tracks: list[tuple[ManifestTrack, TimedPacket]],
                 stats: RenderStats) -> None:
        self.plan = plan_
        self.stats = stats
        self.templates: list[av.container.InputContainer] = []
        self.container = av.open(sink, "w", format="webm", options=MUXER_OPTIONS, buffer_size=IO_BUFFER)
        self.streams: dict[int, Any] = {}  # track no -> its output stream (one per kind: a person's joins share it)
        self.video = None
        audio = None
        for no, (track, first) in enumerate(tracks):
            if track.kind == "video" and self.video is not None:
                self.streams[no] = self.video
            elif track.kind != "video" and audio is not None:
                self.streams[no] = audio
            elif track.kind == "video":
                video = self.container.add_stream("libvpx", rate=30)
                video.width, video.height, video.pix_fmt = plan_.width, plan_.height, "yuv420p"
                video.bit_rate = plan_.bitrate
                cc = video.codec_context
                cc.time_base = MS
                cc.thread_count = 1
                cc.gop_size = 300  # a backstop; keyframes are forced every KEYFRAME_MS
                cc.options = dict(ENCODER_OPTIONS)
                self.video = video
                self.streams[no] = video
            else:
                template = open_template(track, first.payload)
                self.templates.append(template)
                stream = self.container.add_stream_from_template(template.streams[0])
                stream.time_base = MS
                self.streams[no] = audio = stream
        self._last: Optional[_Picture] = None
        self._held: Optional[Any] = None  # the newest encoded video packet, muxed when its duration is known
        self._next_key = 0  # a picture at or after this is a keyframe
        self._audio_end = 0
        self._audio_last = -1

    def picture(self, picture: _Picture) -> None:
        at = picture.pts
        if self._last is not None and at <= self._last.pts:
            return  # another join's picture for the same moment (their tracks overlap): one is enough
        if self._last is None and at > 0:  # the track starts after t = 0: hold its first picture from 0
            self._encode(picture.image, 0)
            self.stats.repeated += 1
            self._fill(picture.image, 0, at)
        elif self._last is not None and at - self._last.pts > FILL_GAP_MS:
            self._fill(self._last.image, self._last.pts, at)
        self._encode(picture.image, at)
        self._last = picture

    def _fill(self, image: np.ndarray, after: int, until: int) -> None:
        """Repeats `image` evenly between two encoded pictures, at most FILL_STEP_MS apart."""
        steps = -(-(until - after) // FILL_STEP_MS)
        for i in range(1, steps):
            self._encode(image, after + (until - after) * i // steps)
            self.stats.repeated += 1

    def _encode(self, image: np.ndarray, at: int) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts, frame.time_base = at, MS
        if at >= self._next_key:
            frame.pict_type = PictureType.I
            self._next_key = FIRST_KEYFRAME_MS if at < FIRST_KEYFRAME_MS else (at // KEYFRAME_MS + 1) * KEYFRAME_MS
        assert self.video is not None  # pictures come only from a video track, which added the stream
        self._mux_video(self.video.encode(frame))
        self.stats.frames += 1
        self.stats.end_ms = max(self.stats.end_ms, at)

    def audio(self, no: int, item: TimedPacket) -> None:
        # The remux stretches a packet's duration over a gap after it; what it holds is its TOC's length.
        if item.pts <= self._audio_last:
            return  # another join's packet for the same moment
        self._audio_last = item.pts
        if item.pts - self._audio_end > AUDIO_GAP_MS:
            for at in range(self._audio_end, item.pts - OPUS_SILENCE_MS + 1, OPUS_SILENCE_MS):
                self._mux_audio(self.streams[no], OPUS_SILENCE, at, OPUS_SILENCE_MS)
                self.stats.silence_packets += 1
        self._mux_audio(self.streams[no], item.payload, item.pts, max(1, round(opus_ms(item.payload))))
        self.stats.audio_packets += 1

    def _mux_audio(self, stream: Any, payload: bytes, at: int, duration: int) -> None:
        packet = av.Packet(payload)
        packet.stream, packet.time_base = stream, MS
        packet.pts = packet.dts = at
        packet.duration = duration
        self.container.mux(packet)
        self._audio_end = at + duration
        self.stats.end_ms = max(self.stats.end_ms, at)

    def finish(self) -> None:
        if self.video is not None:
            if self._last is None:
                raise RenderError("no frame of the video could be decoded")
            self._mux_video(self.video.encode(None))
            if self._held is not None:  # the last picture: the encoder's nominal frame duration
                self.container.mux(self._held)
                self._held = None
        self.close()

    def _mux_video(self, packets: list[Any]) -> None:
        """Each picture lasts until the next one: a packet is muxed once the next is encoded,
        with that as its duration. With the encoder's nominal 1/30 s instead, a picture
        followed by a gap under FILL_GAP_MS left a hole in the page's buffered ranges (the
        first picture of a track especially), where its MediaSource stalls."""
        for packet in packets:
            held = self._held
            if held is not None:
                held.duration = max(1, packet.pts - held.pts)
                self.container.mux(held)
            self._held = packet

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            for template in self.templates:
                template.close()
            self.templates = []


def render(reader: RecordingReader, group: MediaGroup, plan_: RenderPlan, sink: Sink, *, mark: Marker,
           progress: Callable[[int], None] = lambda ms: None,
           should_stop: Callable[[], bool] = lambda: False) -> RenderStats:
    """Writes the marked WebM to `sink` front to back (it never seeks); `mark` is the viewer's
    `Watermarker.mark_i420`. `progress(ms)` is called with how far the encoder has got. Raises
    RenderStopped, RenderError, or RecordingIntegrityError at a segment that fails authentication."""
    merged = merged_packets(reader, group)
    if merged.start != plan_.start_ms:
        raise RenderError("the recording changed since it was planned")
    tracks = [track for track, _ in merged.tracks]
    starts = [first.pts for _, first in merged.tracks]
    stats = RenderStats()
    run = _Run()
    decoded, marked = _Pipe(run), _Pipe(run)
    encoder = _Encoder(sink, plan_, merged.tracks, stats)
    threads = [
        _stage("replay-decode", lambda: _decode_stage(merged.packets, tracks, starts, (plan_.width, plan_.height),
                                                       decoded, stats, should_stop), run),
        _stage("replay-mark", lambda: _mark_stage(decoded, marked, mark), run),
    ]
    try:
        try:
            while True:
                item = marked.get()
                if item is _END:
                    break
                if isinstance(item, _Picture):
                    encoder.picture(item)
                    progress(item.pts)
                else:
                    encoder.audio(*item)
                    progress(item[1].pts)
            encoder.finish()
        except BaseException as exc:
            run.fail(exc)
            try:
                encoder.close()
            except (av.FFmpegError, OSError, RecorderError):
                pass  # the first error is the one to report
            assert run.failure is not None  # run.fail(exc) above keeps the first failure
            raise run.failure from None
    finally:
        run.abort.set()
        for thread in threads:
            thread.join(timeout=5)
    return stats
