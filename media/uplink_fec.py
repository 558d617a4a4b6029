"""Video RED + ULPFEC from a publisher: unwrap it, rebuild lost media, tell FEC holes from lost media.

Once red and ulpfec are negotiated on the m-section a browser sends on, Chrome
wraps every VP8/VP9 packet in RED (one block: the media payload) and, while its
loss and RTT call for it, sends ULPFEC after a frame's last packet, RED-wrapped
too, in the same SSRC and sequence-number space. It never resends FEC. So:

- media goes on unwrapped (subscribers get RED/FEC of the server's own making
  where they negotiated it, media/video_fec.py);
- media packets, in the form FEC protected them, feed a ULPFEC decoder
  (media/ulpfec.py); what it rebuilds is delivered like a retransmission that
  arrived a round trip early;
- FEC sequence numbers must neither be NACKed (no answer comes; at the deadline
  the gap would be given up and a keyframe asked for) nor left as holes toward
  subscribers (each would NACK it and count it lost in its receiver reports).
  An FEC packet that arrives is known. One that was lost is known only by its
  neighbours: a run of missing numbers right after the end of a frame (its
  marker packet, or FEC sent after it) and right before either more FEC of that
  frame (same timestamp) or the first packet of the next picture (VP8 picture
  ID + 1) holds no media. libwebrtc's receivers skip lost FEC by the same picture
  ID continuity, and its senders turn ULPFEC off where the codec has no picture
  ID (H.264), so VP8 is where this matters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

from aiortc.rtp import RtpPacket

from .codec_inspect import PictureId, vp8_picture_id, vp8_starts_frame
from .nack_generator import NackGenerator
from .red import parse_red
from .sdp_video_fec import VideoFecPayloadTypes
from .seqnum import seq_add, seq_diff
from .ulpfec import UlpfecDecoder, rtp_header_length, zero_extensions

# Sequence numbers whose kind (media or FEC) is remembered: several seconds of video.
SEEN_WINDOW = 2048
# Frames whose picture ID is remembered by RTP timestamp (for a run that starts after FEC).
PICTURES_REMEMBERED = 256
# Longest run of missing numbers judged to be FEC: libwebrtc protects at most 48 media
# packets per FEC packet, so a frame's FEC is shorter than this.
MAX_FEC_RUN = 64


# skip(after_seq, upto_seq): the numbers after one up to the other carry no media
SkipNumbers = Callable[[int, int], None]


def _missing_run(nack: NackGenerator, seq: int, step: int) -> list[int]:
    """The missing numbers right before (step -1) or after (step 1) `seq`, in order; none if
    longer than a frame's FEC can be."""
    run: list[int] = []
    s = seq_add(seq, step)
    while nack.is_missing(s):
        if len(run) == MAX_FEC_RUN:
            return []
        run.append(s)
        s = seq_add(s, step)
    return run if step > 0 else run[::-1]


@dataclass(frozen=True, slots=True)
class _Seen:
    fec: bool
    timestamp: int
    marker: bool = False
    starts_frame: bool = False
    picture_id: Optional[PictureId] = None


class UplinkVideoFec:
    def __init__(self, payload_types: VideoFecPayloadTypes, zero_from: Mapping[int, int],
                 vp8_payload_types: frozenset[int]) -> None:
        self.payload_types = payload_types
        self._zero_from = dict(zero_from)
        self._vp8 = vp8_payload_types  # codecs whose frame starts and picture IDs we can read
        self._decoder: Optional[UlpfecDecoder] = None
        self._seen: dict[int, _Seen] = {}
        self._pictures: dict[int, PictureId] = {}  # RTP timestamp -> picture ID
        self.fec_received = 0
        self.fec_malformed = 0
        self.recovered = 0  # rebuilt packets that were still missing (counted by the track)

    @property
    def active(self) -> bool:
        """FEC has arrived: from then on media is kept for it and frame boundaries noted. Until
        then (a clean link: Chrome sends none) RED costs an unwrap and nothing more."""
        return self._decoder is not None

    @staticmethod
    def unwrap(payload: bytes) -> tuple[int, bytes]:
        """(block payload type, data) of a RED payload's primary block; RedError if malformed."""
        if payload and not payload[0] & 0x80:  # what browsers send for video: the primary alone
            return payload[0], payload[1:]
        primary = parse_red(payload)[-1]
        return primary.payload_type, primary.data

    def media_arrived(self, packet: RtpPacket, wire: Optional[bytes]) -> list[bytes]:
        """A media packet (unwrapped), once active. `wire`: the RED packet's bytes as received,
        None for a retransmission (kept out of FEC, as libwebrtc does). Returns packets FEC
        rebuilt with it."""
        self.note_media(packet)
        if wire is None:
            return []
        return self._decoder_for(packet.ssrc).add_media(self._protected(wire, packet.payload_type))

    def fec_arrived(self, sequence_number: int, timestamp: int, ssrc: int, payload: bytes) -> list[bytes]:
        """An FEC payload (unwrapped). Returns the media packets it rebuilt; UlpfecError if malformed
        (its number is still known to be no media)."""
        self.note_fec(sequence_number, timestamp)
        self.fec_received += 1
        return self._decoder_for(ssrc).add_fec(payload)

    def note_fec(self, sequence_number: int, timestamp: int) -> None:
        self._remember(sequence_number, _Seen(fec=True, timestamp=timestamp))

    def note_lost_fec(self, first: int, last: int) -> None:
        """A missing run holds_no_media found to be FEC: of the frame before it."""
        timestamp = self._seen[seq_add(first, -1)].timestamp
        for k in range(seq_diff(last, first) + 1):
            self.note_fec(seq_add(first, k), timestamp)

    def is_fec(self, sequence_number: int) -> bool:
        """Known to be FEC: arrived as FEC, or lost where only FEC could have been."""
        seen = self._seen.get(sequence_number)
        return seen is not None and seen.fec

    def note_media(self, packet: RtpPacket) -> None:
        """What the packet tells about frame boundaries (arrived, retransmitted or rebuilt)."""
        picture_id = starts = None
        if packet.payload_type in self._vp8:
            picture_id = vp8_picture_id(packet.payload)
            starts = vp8_starts_frame(packet.payload)
            if picture_id is not None:
                self._pictures[packet.timestamp] = picture_id
                if len(self._pictures) > PICTURES_REMEMBERED:
                    del self._pictures[next(iter(self._pictures))]
        self._remember(packet.sequence_number, _Seen(fec=False, timestamp=packet.timestamp, marker=bool(packet.marker),
                                                     starts_frame=bool(starts), picture_id=picture_id))

    def holds_no_media(self, first: int, last: int) -> bool:
        """Whether the missing run first..last (inclusive) can only have been FEC."""
        before = self._seen.get(seq_add(first, -1))
        after = self._seen.get(seq_add(last, 1))
        if before is None or after is None or not (before.fec or before.marker):
            return False  # the run does not start right after the end of a frame
        if after.fec:
            return after.timestamp == before.timestamp  # more FEC for the same frame
        if not after.starts_frame or after.picture_id is None:
            return False
        ended = before.picture_id if not before.fec else self._pictures.get(before.timestamp)
        if ended is None or ended[1] != after.picture_id[1]:
            return False
        return (after.picture_id[0] - ended[0]) % ended[1] == 1  # the very next picture: no frame between

    def settle(self, seq: int, new_gaps: list[int], nack: NackGenerator, skip: SkipNumbers) -> list[int]:
        """After `seq` arrived (media or FEC, noted already): missing runs next to it that can
        only be FEC leave the NACK list, and FEC numbers before it are closed up toward
        subscribers. Returns the new gaps still worth a NACK."""
        not_media: list[int] = []
        for run in (_missing_run(nack, seq, -1), _missing_run(nack, seq, 1)):
            if run and self.holds_no_media(run[0], run[-1]):
                self.note_lost_fec(run[0], run[-1])
                not_media.extend(run)
        if not_media:
            nack.forget(not_media)
        self.close_up(seq_add(seq, -1), skip)
        return [s for s in new_gaps if s not in not_media] if not_media else new_gaps

    def close_up(self, seq: int, skip: SkipNumbers) -> None:
        """If `seq` is FEC, or media followed by FEC: `skip(media before, last FEC)`, so subscribers
        number the next media packet right after that media. A down-track that did not send exactly
        that packet last keeps its numbers (StreamRewriter.skip checks)."""
        if not self.is_fec(seq) and not self.is_fec(seq_add(seq, 1)):
            return  # the common case, media next to media
        media = seq
        for _ in range(MAX_FEC_RUN):
            if not self.is_fec(media):
                break
            media = seq_add(media, -1)
        end = media
        for _ in range(MAX_FEC_RUN):
            if not self.is_fec(seq_add(end, 1)):
                break
            end = seq_add(end, 1)
        if end != media:
            skip(media, end)

    def _protected(self, wire: bytes, media_payload_type: int) -> bytes:
        """The media packet as the sender protected it: without the RED header byte, with the
        media payload type (marker kept), the extensions its pacer wrote afterwards zeroed."""
        header = rtp_header_length(wire)
        plain = wire[:1] + bytes([wire[1] & 0x80 | media_payload_type]) + wire[2:header] + wire[header + 1:]
        return zero_extensions(plain, self._zero_from)

    def _decoder_for(self, ssrc: int) -> UlpfecDecoder:
        if self._decoder is None or self._decoder.ssrc != ssrc:
            self._decoder = UlpfecDecoder(ssrc)
        return self._decoder

    def _remember(self, sequence_number: int, seen: _Seen) -> None:
        self._seen.pop(sequence_number, None)  # re-inserted as the newest
        self._seen[sequence_number] = seen
        if len(self._seen) > SEEN_WINDOW:
            del self._seen[next(iter(self._seen))]
