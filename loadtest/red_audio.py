"""RED (RFC 2198) for the load-test client's audio, negotiated and sent the way Chrome does it.

Chrome answers an offer whose audio m-section lists `red/48000/2` (fmtp
`<red>/<opus>`, Opus in Opus) with red in the answer, in the offer's relative
order (RFC 3264: answers keep the offer's order), and sends with the answer's
first codec: RED when red led the offer. Each RED packet carries the current
Opus frame and the previous one again (redundancy distance 1). It accepts RED
on every audio m-section where red was negotiated.

aiortc negotiates only the codecs in aiortc.codecs.CODECS (no red, and it is
not added there: that would change every aiortc peer in the process), so:

- `add_red_to_answer` edits the answer SDP aiortc produced;
- `send_red` makes the transceiver's sender use the red payload type with
  aiortc's Opus packetizer (which passes bytes through), and tells the track to
  wrap each packet (loadtest.publisher.StampedClipTrack.use_red);
- `receive_red` registers the red payload type on the receiver, whose buffer
  (loadtest.receiver.InstrumentedBuffer) unwraps RED before aiortc's jitter buffer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters, RTCRtpSendParameters

from loadtest.receiver import buffer_of
from media.sdp_tweaks import join_sections, red_for_opus, section_mid, split_sections

RED_NAME = "red/48000/2"


@dataclass(frozen=True)
class RedCodec:
    """red negotiated on one audio m-section."""

    mid: str
    red_pt: int
    opus_pt: int
    red_first: bool  # red leads the answer's codec list: a Chrome-like sender then sends RED


def _rtpmap(section: list[str], pattern: str) -> list[int]:
    return [int(m.group(1)) for line in section if (m := re.match(rf"a=rtpmap:(\d+) {pattern}", line, re.I))]


def offered_red(offer_sdp: str) -> dict[str, tuple[int, int, list[int]]]:
    """mid -> (red PT, Opus PT, the section's payload types in order) for audio m-sections offering red for Opus."""
    found: dict[str, tuple[int, int, list[int]]] = {}
    for section in split_sections(offer_sdp)[1]:
        mid = section_mid(section)
        red = red_for_opus(section) if section[0].startswith("m=audio") else None
        if mid is not None and red is not None:
            found[mid] = (*red, [int(f) for f in section[0].split()[3:] if f.isdigit()])
    return found


def add_red_to_answer(answer_sdp: str, offer_sdp: str) -> tuple[str, dict[str, RedCodec]]:
    """The answer with red accepted wherever the offer had red for an Opus payload type the answer kept.

    red goes into the m= line where the offer had it relative to the answer's other
    payload types (first, when the offer listed it first), with its rtpmap and fmtp.
    Rejected (port 0) or red-less sections are left alone.
    """
    offered = offered_red(offer_sdp)
    session, sections = split_sections(answer_sdp)
    accepted: dict[str, RedCodec] = {}
    edited: list[list[str]] = []
    for section in sections:
        mid = section_mid(section)
        fields = section[0].split()
        if (section[0].startswith("m=audio") and mid in offered and len(fields) > 3 and fields[1] != "0"
                and not _rtpmap(section, r"red/")):
            red, opus, order = offered[mid]
            formats = [int(f) for f in fields[3:]]
            if opus in formats:
                rank = {pt: i for i, pt in enumerate(order)}
                position = next((i for i, pt in enumerate(formats) if rank.get(pt, len(order)) > rank[red]),
                                len(formats))
                formats.insert(position, red)
                section = [" ".join(fields[:3] + [str(pt) for pt in formats])] + section[1:]
                first_rtpmap = next((i for i, line in enumerate(section) if line.startswith("a=rtpmap:")),
                                    len(section))
                section[first_rtpmap:first_rtpmap] = [f"a=rtpmap:{red} {RED_NAME}", f"a=fmtp:{red} {opus}/{opus}"]
                accepted[mid] = RedCodec(mid=mid, red_pt=red, opus_pt=opus, red_first=position == 0)
        edited.append(section)
    return join_sections(session, edited), accepted


def answer_with_red(pc: RTCPeerConnection, offer_sdp: Callable[[], str], accepted: dict[str, RedCodec],
                    *, receive: bool = True) -> Callable[[], Awaitable[RTCSessionDescription]]:
    """A createAnswer for `pc` that accepts red like Chrome and wires senders (and receivers) for it.

    Install it before the first setLocalDescription: aiortc starts senders and receivers
    there, and they must know about red by then. `accepted` collects mid -> RedCodec.
    """
    create_answer = pc.createAnswer

    async def create() -> RTCSessionDescription:
        answer = await create_answer()
        sdp, red_mids = add_red_to_answer(answer.sdp, offer_sdp())
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            red = red_mids.get(mid) if mid is not None else None
            if mid is None or red is None or transceiver.kind != "audio":
                continue
            accepted[mid] = red
            if red.red_first:  # Chrome sends with the answer's first codec
                send_red(transceiver.sender, red)
            if receive:
                receive_red(transceiver.receiver, red)
        return RTCSessionDescription(sdp=sdp, type=answer.type)

    return create


def _opus_as(codec: RTCRtpCodecParameters, payload_type: int) -> RTCRtpCodecParameters:
    return replace(codec, payloadType=payload_type, rtcpFeedback=list(codec.rtcpFeedback),
                   parameters=dict(codec.parameters))


def send_red(sender: RTCRtpSender, red: RedCodec) -> None:
    """The sender sends RED (Opus primary + previous frame) once it starts, if its codec is that Opus.

    Wraps this sender's `send` (called with the negotiated RTCRtpSendParameters
    when the transceiver starts): the first codec becomes a copy of Opus under
    the red payload type, so aiortc's Opus packetizer sends the track's RED
    payloads unchanged with the red payload type.
    """
    if getattr(sender, "_loadtest_red", None) is not None:
        return  # wrapped on an earlier negotiation (aiortc starts a sender once)
    setattr(sender, "_loadtest_red", red)  # our tag on aiortc's object, read back above
    original = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        codecs = list(parameters.codecs)
        if codecs and codecs[0].payloadType == red.opus_pt and codecs[0].mimeType.lower() == "audio/opus":
            track = sender.track
            if track is not None and hasattr(track, "use_red"):
                codecs[0] = _opus_as(codecs[0], red.red_pt)
                parameters = replace(parameters, codecs=codecs)
                track.use_red(red.opus_pt)
        await original(parameters)

    sender.send = send  # type: ignore[method-assign]  # deliberately wraps aiortc's method on this sender


def receive_red(receiver: RTCRtpReceiver, red: RedCodec) -> None:
    """The receiver accepts the red payload type (aiortc drops unknown ones) and its buffer unwraps RED."""
    if getattr(receiver, "_loadtest_red", None) is not None:
        return
    setattr(receiver, "_loadtest_red", red)  # our tag on aiortc's object, read back above
    buffer = buffer_of(receiver)
    if buffer is not None:
        buffer.use_red(red)
    original = receiver.receive

    async def receive(parameters: RTCRtpReceiveParameters) -> None:
        codecs = list(parameters.codecs)
        opus = next((c for c in codecs if c.payloadType == red.opus_pt), None)
        if opus is not None and all(c.payloadType != red.red_pt for c in codecs):
            parameters = replace(parameters, codecs=codecs + [_opus_as(opus, red.red_pt)])
        await original(parameters)

    receiver.receive = receive  # type: ignore[method-assign]  # deliberately wraps aiortc's method on this receiver
