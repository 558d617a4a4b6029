"""Video RED + ULPFEC (RFC 2198 + RFC 5109) on the load-test client, negotiated and used as Chrome does.

The server offers `red/90000`, `ulpfec/90000` and `rtx/90000` with `apt=<red>` on
the video m-sections it sends VP8/VP9 on, and on those a participant publishes on
(media.sdp_video_fec). Chrome answers keeping them. On a section it receives, every
video packet then arrives as RED (one block: the media payload), FEC as RED with the
ulpfec block, in the same SSRC and sequence-number space, and retransmissions over
rtx-for-red; on the section it publishes, it sends the same way itself.

aiortc negotiates only the codecs in aiortc.codecs.CODECS and drops the rest, so:

- `add_video_fec_to_answer` edits the answer SDP aiortc produced (optionally
  leaving the publishing section plain: `--video-fec downlink`);
- `receive_video_fec` registers red (a copy of the video codec, RedVideoCodec)
  and rtx-for-red on the receiver, and tells its buffer
  (loadtest.receiver.InstrumentedBuffer), which unwraps RED, decodes ULPFEC
  and counts both;
- `send_video_fec` switches the publishing sender to Chrome's way of sending
  (loadtest.video_fec_sender: RED, ULPFEC at Chrome's rate, RTX for red).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters, RTCRtpSendParameters

from loadtest.receiver import buffer_of
from loadtest.video_fec_sender import ChromeVideoSender, video_fec_sender_of
from media.sdp_tweaks import join_sections, section_mid, split_sections
from media.sdp_video_fec import PROTECTABLE, VideoFecPayloadTypes, video_fec_by_mid
from media.ulpfec import zeroed_extensions  # the extensions FEC leaves out, as libwebrtc receivers zero them


@dataclass
class RedVideoCodec(RTCRtpCodecParameters):
    """Video red's payload type on a receiver: a copy of the video codec under red's payload type.

    aiortc's decoder thread picks its decoder by codec name, so frames completed by RED
    packets keep the same decoder; loadtest.receiver leaves these payloads whole for the
    buffer to unwrap.
    """


# --- the answer ---------------------------------------------------------------------------------------


def _formats(section: list[str]) -> list[int]:
    return [int(f) for f in section[0].split()[3:] if f.isdigit()]


def _codec_names(section: list[str]) -> set[str]:
    return {m.group(1).lower() for line in section if (m := re.match(r"a=rtpmap:\d+ ([^/\s]+)/", line))}


def _accepts(section: list[str], sending: bool) -> bool:
    """A live video section keeping a codec the server protects, without red of its own yet
    (and, unless `sending`, not one the client publishes on)."""
    fields = section[0].split()
    names = _codec_names(section)
    return (section[0].startswith("m=video") and len(fields) > 3 and fields[1] != "0"
            and bool(names & set(PROTECTABLE)) and "red" not in names
            and (sending or not any(line.strip() == "a=sendonly" for line in section)))


def _with_video_fec(section: list[str], fec: VideoFecPayloadTypes, offer_order: list[int]) -> list[str]:
    """The section with red, rtx-for-red and ulpfec added where the offer had them relative to the
    answer's payload types (RFC 3264: the answer keeps the offer's order)."""
    formats = _formats(section)
    lines = {fec.red: [f"a=rtpmap:{fec.red} red/90000"],
             fec.ulpfec: [f"a=rtpmap:{fec.ulpfec} ulpfec/90000"]}
    if fec.rtx is not None:
        lines[fec.rtx] = [f"a=rtpmap:{fec.rtx} rtx/90000", f"a=fmtp:{fec.rtx} apt={fec.red}"]
    rank = {pt: i for i, pt in enumerate(offer_order)}
    added = sorted((pt for pt in lines if pt not in formats), key=lambda pt: rank.get(pt, len(offer_order)))
    for pt in added:
        later = (i for i, f in enumerate(formats) if rank.get(f, len(offer_order)) > rank.get(pt, len(offer_order)))
        formats.insert(next(later, len(formats)), pt)
    fields = section[0].split()
    section = [" ".join(fields[:3] + [str(pt) for pt in formats])] + section[1:]
    last_codec_line = max((i for i, line in enumerate(section)
                           if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))), default=0)
    section[last_codec_line + 1:last_codec_line + 1] = [line for pt in added for line in lines[pt]]
    return section


def add_video_fec_to_answer(answer_sdp: str, offer_sdp: str, *, sending: bool = True
                            ) -> tuple[str, dict[str, VideoFecPayloadTypes]]:
    """The answer with red, ulpfec (and rtx-for-red) accepted on every video section whose offer had them.

    Rejected (port 0) sections, and those the answer keeps no VP8/VP9 in, are left alone;
    so are sendonly ones (the client's publishing section) unless `sending`.
    """
    offered = video_fec_by_mid(offer_sdp)
    orders = {section_mid(s): _formats(s) for s in split_sections(offer_sdp)[1]}
    session, sections = split_sections(answer_sdp)
    accepted: dict[str, VideoFecPayloadTypes] = {}
    edited: list[list[str]] = []
    for section in sections:
        mid = section_mid(section)
        fec = offered.get(mid) if mid is not None else None
        if mid is not None and fec is not None and _accepts(section, sending):
            section = _with_video_fec(section, fec, orders[mid])
            accepted[mid] = fec
        edited.append(section)
    return join_sections(session, edited), accepted


def answer_with_video_fec(pc: RTCPeerConnection, offer_sdp: Callable[[], str],
                          accepted: dict[str, VideoFecPayloadTypes], *, send: bool | Callable[[], bool] = True
                          ) -> Callable[[], Awaitable[RTCSessionDescription]]:
    """A createAnswer for `pc` that accepts video red + ulpfec like Chrome and wires receivers and senders for it.

    Install it before the first setLocalDescription (aiortc starts receivers and senders
    there); it wraps whatever createAnswer `pc` has (loadtest.red_audio's too). `accepted`
    collects mid -> payload types. Without `send`, the publishing section is answered
    without them and its sender stays plain (receive side only); a callable `send` is asked
    per answer (a simulcast publisher's layers are sent plain, loadtest.simulcast_sender).
    """
    create_answer = pc.createAnswer

    async def create() -> RTCSessionDescription:
        answer = await create_answer()
        sending = send() if callable(send) else send
        sdp, fec_mids = add_video_fec_to_answer(answer.sdp, offer_sdp(), sending=sending)
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            fec = fec_mids.get(mid) if mid is not None else None
            if mid is not None and fec is not None and transceiver.kind == "video":
                accepted[mid] = fec
                receive_video_fec(transceiver.receiver, fec)  # acts only if the receiver starts
                if sending:
                    send_video_fec(transceiver.sender, fec)  # acts only if the sender starts
        return RTCSessionDescription(sdp=sdp, type=answer.type)

    return create


# --- the receiver -------------------------------------------------------------------------------------


def with_video_fec_codecs(parameters: RTCRtpReceiveParameters, fec: VideoFecPayloadTypes
                          ) -> tuple[RTCRtpReceiveParameters, dict[int, RTCRtpCodecParameters]]:
    """The receive parameters with red (as RedVideoCodec) and rtx-for-red added, and the media
    codecs RED may carry by payload type; unchanged (and no codecs) without VP8/VP9."""
    codecs = list(parameters.codecs)
    # negotiated codecs all have payload types (aiortc's type allows None for unnegotiated ones)
    media = {c.payloadType: c for c in codecs
             if c.payloadType is not None and not is_rtx(c) and c.payloadType not in (fec.red, fec.ulpfec)}
    video = next((c for c in media.values() if c.name.lower() in PROTECTABLE), None)
    if video is None:
        return parameters, {}
    known = {c.payloadType for c in codecs}
    if fec.red not in known:
        codecs.append(RedVideoCodec(mimeType=video.mimeType, clockRate=video.clockRate, channels=video.channels,
                                    payloadType=fec.red, rtcpFeedback=list(video.rtcpFeedback),
                                    parameters=dict(video.parameters)))
    if fec.rtx is not None and fec.rtx not in known:  # aiortc unwraps RTX by apt, then sees red
        codecs.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=video.clockRate, payloadType=fec.rtx,
                                            parameters={"apt": fec.red}))
    return replace(parameters, codecs=codecs), media


def receive_video_fec(receiver: RTCRtpReceiver, fec: VideoFecPayloadTypes) -> None:
    """The receiver accepts red and rtx-for-red (aiortc drops unknown payload types) and its buffer
    unwraps RED and decodes ULPFEC, from when the receiver starts."""
    if getattr(receiver, "_loadtest_video_fec", None) is not None:
        return  # wrapped on an earlier negotiation (aiortc starts a receiver once)
    setattr(receiver, "_loadtest_video_fec", fec)  # our tag on aiortc's object, read back above
    original = receiver.receive

    async def receive(parameters: RTCRtpReceiveParameters) -> None:
        parameters, media = with_video_fec_codecs(parameters, fec)
        buffer = buffer_of(receiver)
        if buffer is not None and media:
            buffer.use_video_fec(fec, media, zeroed_extensions(parameters.headerExtensions))
        await original(parameters)

    receiver.receive = receive  # type: ignore[method-assign]  # deliberately wraps aiortc's method on this receiver


# --- the sender ---------------------------------------------------------------------------------------


def send_video_fec(sender: RTCRtpSender, fec: VideoFecPayloadTypes) -> None:
    """When the sender starts on VP8, it sends like Chrome with red + ulpfec negotiated (every packet
    RED, ULPFEC at Chrome's rate, retransmissions over rtx-for-red): loadtest.video_fec_sender.

    aiortc calls `send` with the negotiated parameters on every negotiation and starts once
    (a sender already running plain stays plain); the parameters carry no red (aiortc does not
    negotiate it), hence the payload types from the answer.
    """
    if getattr(sender, "_loadtest_video_fec", None) is not None:
        return  # wrapped on an earlier negotiation
    setattr(sender, "_loadtest_video_fec", fec)  # our tag on aiortc's object, read back above
    original = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        codec = parameters.codecs[0] if parameters.codecs else None
        payload_type = codec.payloadType if codec is not None else None  # negotiated: never None
        started = sender._RTCRtpSender__started  # type: ignore[attr-defined]  # aiortc's private started flag
        if (not started and video_fec_sender_of(sender) is None and codec is not None and payload_type is not None
                and codec.mimeType.lower() == "video/vp8" and payload_type not in (fec.red, fec.ulpfec)):
            ChromeVideoSender(sender, fec, payload_type, zeroed_extensions(parameters.headerExtensions)).install()
        await original(parameters)

    sender.send = send  # type: ignore[method-assign]  # deliberately wraps aiortc's method on this sender
