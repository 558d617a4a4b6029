"""Remuxing a recording's tracks into a playable file, in memory, without re-encoding.

Internal use only (tests, tooling): a file made here carries no watermark, so the trainer
page never gets one. Replays are rendered by recorder/replay_render.py, which decodes,
marks for the viewer and re-encodes on exactly this module's timeline (`merged_packets`).

A recording keeps every track as the codec's own bitstream (depayloaded VP8 or H.264
frames, Opus packets), each frame with its session-clock time and RTP timestamp. For
replay, one participant's tracks (`<participant>-video` + `<participant>-audio`, the
names recorder/live.py gives them) become one file a <video> element plays:

    VP8 (+ Opus)      -> WebM   (video/webm; audio/webm without video)
    H.264 (+ Opus)    -> MP4    (video/mp4; Annex B frames, the muxer writes avcC)

Nothing is decoded or encoded: PyAV only muxes the recorded packets. Each stream's
parameters come from a tiny in-memory "template" container made from the first
packet (IVF for VP8, raw Annex B for H.264, Ogg with an OpusHead for Opus), so no
encoder is ever opened (opening one, e.g. libx264, would put its own SPS/PPS in the
file). The plaintext exists only in memory: the reader decrypts into bytes, the
muxer writes into a BytesIO, and the caller gets `bytes`.

Timing. A frame's session-clock time is when the server had all of it; that jitters
with the network, and bunched timestamps make audio click and video stutter. So the
spacing within a track comes from its RTP timestamps, and the track is placed on the
session clock by the smallest delay seen (arrival − RTP time, over the first
LOOKAHEAD frames, then as a running minimum): a frame is never put later than it
arrived. A jump of the RTP clock (more than RESYNC_MS late) re-anchors at arrival.

Every file starts at t = 0 (its first packet), and `start_ms` says where that is on
the session clock. `probe_start` computes the same value from the first frames only
(the same code path, so the two always agree), for the page's sync without remuxing.
Video starts at its first keyframe; earlier frames cannot be decoded.
"""

from __future__ import annotations

import fractions
import heapq
import io
import itertools
import struct
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import av

from .errors import RecorderError
from .manifest import EVENTS_TRACK_NO, Manifest, ManifestTrack
from .reader import Frame, RecordingReader

LOOKAHEAD = 50          # frames per track used to find the smallest arrival delay
RESYNC_MS = 2000        # a frame this much later than its RTP time: the RTP clock jumped
MS = fractions.Fraction(1, 1000)
VIDEO_CODECS = {"vp8": "webm", "h264": "mp4"}
AUDIO_CODECS = {"opus"}
DEFAULT_AUDIO_MS = 20   # an Opus packet's usual duration, for a track of one packet
DEFAULT_VIDEO_MS = 33


class RemuxError(RecorderError):
    """The recorded packets could not be put into a container (unsupported or corrupt)."""


@dataclass(frozen=True)
class MediaGroup:
    """The tracks of one participant that replay as one file (of one person, `person_groups`)."""
    key: str  # the participant id ("p-…"), or the track id for a track not named <key>-<kind>
    tracks: tuple[ManifestTrack, ...]
    container: str  # "webm" | "mp4"
    skipped: tuple[str, ...] = ()  # track ids whose codec cannot be remuxed, with the reason
    members: tuple[str, ...] = ()  # person_groups: the keys of the participants' groups merged here

    @property
    def extension(self) -> str:
        return self.container

    @property
    def has_video(self) -> bool:
        return any(t.kind == "video" for t in self.tracks)

    @property
    def content_type(self) -> str:
        if self.container == "mp4":
            return "video/mp4"
        return "video/webm" if self.has_video else "audio/webm"


@dataclass
class Remuxed:
    data: bytes
    content_type: str
    start_ms: Optional[int]  # session clock at the file's t = 0; None: no packet at all
    duration_ms: int
    packets: dict[str, int] = field(default_factory=dict)  # per track id
    dropped: dict[str, int] = field(default_factory=dict)  # video frames before the first keyframe


def media_groups(manifest: Manifest) -> list[MediaGroup]:
    """A recording's tracks by participant, in manifest order; a participant whose tracks
    all have codecs that cannot be remuxed has a group without tracks (and `skipped`)."""
    grouped: dict[str, list[ManifestTrack]] = {}
    skipped: dict[str, list[str]] = {}
    for track in manifest.tracks:
        if track.no == EVENTS_TRACK_NO:
            continue
        key = track.track_id
        suffix = f"-{track.kind}"
        if track.kind in ("audio", "video") and key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
        codec = track.codec.lower()
        supported = codec in VIDEO_CODECS if track.kind == "video" else codec in AUDIO_CODECS
        if track.kind not in ("audio", "video") or not supported:
            skipped.setdefault(key, []).append(f"{track.track_id}: {track.kind} codec {track.codec} cannot be replayed")
            continue
        tracks = grouped.setdefault(key, [])
        if any(t.kind == track.kind for t in tracks):  # two video tracks for one key: keep them apart
            grouped.setdefault(track.track_id, []).append(track)
        else:
            tracks.append(track)
    groups = []
    for key in [*grouped, *(k for k in skipped if k not in grouped)]:
        tracks = grouped.get(key, [])
        video = next((t for t in tracks if t.kind == "video"), None)
        container = VIDEO_CODECS[video.codec.lower()] if video else "webm"
        groups.append(MediaGroup(key, tuple(tracks), container, tuple(skipped.get(key, ()))))
    return groups


PARTICIPANT_EVENTS = ("track-owner", "participant-joined", "participant-updated")


def participant_identities(events: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """participant id -> identity, from a recording's track-owner and participant-joined/-updated events."""
    found: dict[str, str] = {}
    for data in events:
        p = data.get("participant") if data.get("type") in PARTICIPANT_EVENTS else None
        if isinstance(p, dict) and isinstance(p.get("id"), str) and isinstance(p.get("identity"), str):
            found[p["id"]] = p["identity"]
    return found


def person_groups(manifest: Manifest, identities: Mapping[str, str]) -> list[MediaGroup]:
    """`media_groups` merged per person. Each join gives a participant a new id (a reload, a lost
    network, another device), so a person who left and came back has a group per join; one
    person is one identity, and their groups become one (the replay plays them as one file,
    with the gaps between joins filled, recorder/replay_render.py). Its key is the first of
    theirs (manifest order: the order their media began), `members` every one merged. Groups
    whose key names no identity stay as they are (`members` empty)."""
    groups = media_groups(manifest)
    people: dict[str, list[MediaGroup]] = {}
    for group in groups:
        who = identities.get(group.key)
        if who is not None:
            people.setdefault(who, []).append(group)
    out = []
    for group in groups:
        who = identities.get(group.key)
        if who is None:
            out.append(group)
            continue
        mine = people.pop(who, None)
        if mine is None:
            continue  # merged into this person's first group already
        out.append(merge_groups(mine))
    return out


def merge_groups(groups: list[MediaGroup]) -> MediaGroup:
    """One group of several (one person's joins): the first one's key, every track, in their order."""
    tracks = tuple(track for group in groups for track in group.tracks)
    video = next((t for t in tracks if t.kind == "video"), None)
    return MediaGroup(groups[0].key, tracks, VIDEO_CODECS[video.codec.lower()] if video else "webm",
                      tuple(reason for group in groups for reason in group.skipped),
                      tuple(group.key for group in groups))


# --- timing --------------------------------------------------------------------------------------


class _Unwrap:
    """32-bit RTP timestamps as a continuous count from the first one."""

    def __init__(self) -> None:
        self._last: Optional[int] = None
        self._ext = 0

    def __call__(self, ts: int) -> int:
        if self._last is not None:
            self._ext += (ts - self._last + 2**31) % 2**32 - 2**31
        self._last = ts
        return self._ext


def _vp8_keyframe(payload: bytes) -> bool:
    return len(payload) >= 10 and not payload[0] & 0x01 and payload[3:6] == b"\x9d\x01\x2a"


def _h264_nal_types(payload: bytes) -> set[int]:
    """The NAL unit types of an Annex B access unit."""
    types = set()
    pos = payload.find(b"\x00\x00\x01")
    while 0 <= pos < len(payload) - 3:
        types.add(payload[pos + 3] & 0x1F)
        pos = payload.find(b"\x00\x00\x01", pos + 3)
    return types


def _h264_keyframe(payload: bytes) -> bool:
    """An Annex B access unit with an IDR slice."""
    return 5 in _h264_nal_types(payload)


def _starts_stream(track: ManifestTrack, payload: bytes) -> bool:
    """Whether a file may start at this frame: a keyframe, and for H.264 one that carries
    its SPS and PPS (the output stream's parameters come from it: an IDR whose parameter
    sets were lost made the MP4 muxer refuse the whole file)."""
    if track.codec.lower() == "h264":
        return {5, 7, 8} <= _h264_nal_types(payload)
    return _is_keyframe(track, payload)


def _is_keyframe(track: ManifestTrack, payload: bytes) -> bool:
    codec = track.codec.lower()
    if codec == "vp8":
        return _vp8_keyframe(payload)
    if codec == "h264":
        return _h264_keyframe(payload)
    return True  # audio: every packet starts a decodable unit


@dataclass(slots=True)
class TimedPacket:
    pts: int  # ms, session clock (relative to the file's start once merged)
    keyframe: bool
    payload: bytes
    duration: int = 0



def _packets(reader: RecordingReader, track: ManifestTrack,
             dropped: dict[str, int]) -> Generator[TimedPacket, None, None]:
    """One track's packets on the session clock, strictly increasing, video from its first
    keyframe that can start a file (`_starts_stream`)."""
    frames = reader.frames(track.track_id)
    if track.kind == "video":
        skipped = 0
        for frame in frames:
            if _starts_stream(track, frame.payload):
                frames = itertools.chain([frame], frames)
                break
            skipped += 1
        else:
            frames = iter(())
        dropped[track.track_id] = skipped
    unwrap = _Unwrap()
    rate = track.clock_rate
    head = list(itertools.islice(frames, LOOKAHEAD))
    if not head:
        return
    timed: Iterator[tuple[Frame, float]]
    if rate:
        media = [unwrap(f.rtp_timestamp) * 1000 / rate for f in head]
        offset = min(f.timestamp_ms - m for f, m in zip(head, media))
        timed = itertools.chain(zip(head, media), ((f, unwrap(f.rtp_timestamp) * 1000 / rate) for f in frames))
    else:
        offset = 0.0
        timed = ((f, float(f.timestamp_ms)) for f in itertools.chain(head, frames))
    last: Optional[TimedPacket] = None
    previous_duration = 0
    for frame, media_ms in timed:
        if rate:
            at = media_ms + offset
            late = frame.timestamp_ms - at
            if late < 0 or late > RESYNC_MS:
                offset = frame.timestamp_ms - media_ms
                at = float(frame.timestamp_ms)
        else:
            at = media_ms
        pts = round(at)
        if last is not None:
            pts = max(pts, last.pts + 1)
            last.duration = previous_duration = pts - last.pts
            yield last
        last = TimedPacket(pts, track.kind != "video" or _is_keyframe(track, frame.payload), frame.payload)
    if last is not None:
        last.duration = previous_duration or (DEFAULT_AUDIO_MS if track.kind == "audio" else DEFAULT_VIDEO_MS)
        yield last


def _peek(packets: Iterator[TimedPacket]) -> tuple[Optional[TimedPacket], Iterator[TimedPacket]]:
    first = next(packets, None)
    return first, (itertools.chain([first], packets) if first is not None else packets)


def probe_start(reader: RecordingReader, group: MediaGroup) -> Optional[int]:
    """The session-clock time of the group's file t = 0 (what `remux` gives as start_ms),
    reading only the first frames of each track. None when no track has a packet."""
    starts = []
    for track in group.tracks:
        packets = _packets(reader, track, {})
        first = next(packets, None)
        packets.close()
        if first is not None:
            starts.append(first.pts)
    return min(starts) if starts else None


# --- stream templates -----------------------------------------------------------------------------


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC_TABLE = _ogg_crc_table()


def _ogg_page(data: bytes, seq: int, flags: int, granule: int) -> bytes:
    lacing = bytes([255] * (len(data) // 255) + [len(data) % 255])
    page = b"OggS" + struct.pack("<BBqIIIB", 0, flags, granule, 1, seq, 0, len(lacing)) + lacing + data
    return page[:22] + struct.pack("<I", _ogg_crc(page)) + page[26:]


def _template_bytes(track: ManifestTrack, first: bytes) -> tuple[bytes, str]:
    codec = track.codec.lower()
    if codec == "vp8":
        # IVF: 32-byte file header (size 0x0: the demuxer reads it from the keyframe), one frame
        header = b"DKIF" + struct.pack("<HH4sHHIIII", 0, 32, b"VP80", 0, 0, 1000, 1, 1, 0)
        return header + struct.pack("<IQ", len(first), 0) + first, "ivf"
    if codec == "h264":
        return first, "h264"  # Annex B; the parser takes SPS/PPS from the keyframe
    # Opus in Ogg: OpusHead (v1, 2 channels: WebRTC's opus/48000/2, no pre-skip), OpusTags, one packet
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 11) + b"consult-sfu" + struct.pack("<I", 0)
    return _ogg_page(head, 0, 0x02, 0) + _ogg_page(tags, 1, 0, 0) + _ogg_page(first, 2, 0x04, 960), "ogg"


def open_template(track: ManifestTrack, first: bytes) -> av.container.InputContainer:
    """A tiny demuxer over the track's first packet: its stream is the template of an output stream."""
    data, fmt = _template_bytes(track, first)
    try:
        container = av.open(io.BytesIO(data), "r", format=fmt)
    except av.FFmpegError as exc:
        raise RemuxError(f"track {track.track_id!r}: the first {track.codec} packet is not usable: {exc}") from None
    if not container.streams:
        container.close()
        raise RemuxError(f"track {track.track_id!r}: no {track.codec} stream in the first packet")
    return container


# --- muxing ---------------------------------------------------------------------------------------


@dataclass
class MergedTracks:
    """A group's tracks on one timeline: `packets` yields (index into `tracks`, packet) in
    time order, pts relative to `start` (the session-clock time of the file's t = 0)."""
    start: Optional[int]  # None: no track has a packet
    tracks: list[tuple[ManifestTrack, TimedPacket]]  # the tracks that have packets, with their first (session clock)
    packets: Iterator[tuple[int, TimedPacket]]
    dropped: dict[str, int]  # video frames before the first keyframe, per track id (filled as read)


def merged_packets(reader: RecordingReader, group: MediaGroup) -> MergedTracks:
    """Every packet of the group in time order, as `remux` muxes them (and the watermarked
    replay encodes them): the one place the replay timeline is made."""
    dropped: dict[str, int] = {}
    firsts: list[tuple[ManifestTrack, TimedPacket, Iterator[TimedPacket]]] = []
    for track in group.tracks:
        first, packets = _peek(_packets(reader, track, dropped))
        if first is not None:
            firsts.append((track, first, packets))
    if not firsts:
        return MergedTracks(None, [], iter(()), dropped)
    start = min(first.pts for _, first, _ in firsts)

    def tagged(no: int, packets: Iterator[TimedPacket]) -> Iterator[tuple[int, int, TimedPacket]]:
        for p in packets:
            yield p.pts - start, no, TimedPacket(p.pts - start, p.keyframe, p.payload, p.duration)

    merged = heapq.merge(*(tagged(no, packets) for no, (_, _, packets) in enumerate(firsts)))
    return MergedTracks(start, [(track, first) for track, first, _ in firsts],
                        ((no, p) for _, no, p in merged), dropped)


def remux(reader: RecordingReader, group: MediaGroup) -> Remuxed:
    """The group's tracks in one file, in memory. Raises RemuxError, or
    RecordingIntegrityError (from the reader) at a segment that fails authentication."""
    merged = merged_packets(reader, group)
    dropped = merged.dropped
    if merged.start is None:
        return Remuxed(b"", group.content_type, None, 0, {t.track_id: 0 for t in group.tracks}, dropped)
    start = merged.start
    firsts = merged.tracks

    buffer = io.BytesIO()
    templates: list[av.container.InputContainer] = []
    counts = {t.track_id: 0 for t in group.tracks}
    end = 0
    try:
        output = av.open(buffer, mode="w", format=group.container)
        try:
            streams = []
            for track, first in firsts:
                template = open_template(track, first.payload)
                templates.append(template)
                stream = output.add_stream_from_template(template.streams[0])
                stream.time_base = MS
                streams.append(stream)

            for no, item in merged.packets:
                packet = av.Packet(item.payload)
                packet.stream = streams[no]
                packet.time_base = MS
                packet.pts = packet.dts = item.pts
                packet.duration = item.duration
                packet.is_keyframe = item.keyframe
                output.mux(packet)
                counts[firsts[no][0].track_id] += 1
                end = max(end, item.pts + item.duration)
        finally:
            output.close()
    except av.FFmpegError as exc:
        raise RemuxError(f"cannot remux {group.key!r} into {group.container}: {exc}") from None
    finally:
        for template in templates:
            template.close()
    return Remuxed(buffer.getvalue(), group.content_type, start, end, counts, dropped)
