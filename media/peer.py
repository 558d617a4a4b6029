"""One participant's peer connection: publish transceivers and receive slots.

The server always offers. A peer that may publish gets two receive-only
transceivers (audio, video) first; every remote participant it watches occupies
a *slot pair* (one audio + one video send-only transceiver sharing one msid
stream, so the browser lip-syncs each remote participant's own audio and video
and nothing else). Slots are reused when a participant leaves and another comes,
so most joins need no renegotiation on the others' connections.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional, TypeVar

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters, RTCRtpSendParameters

from .aiortc_bridge import bound_ice_receive_queue, receiver_rtcp_ssrc, take_over_receiver, take_over_sender
from .bounded_queue import DropOldestQueue
from .downlink_control import ControlledVideo, DownlinkController
from .downtrack import DownTrack
from .ice import IceConfig
from .layer_sizes import Size
from .published_track import PublishedTrack
from .receiver_reports import DEFAULT_RTT_S
from .redundancy import LossEstimate
from .sdp_simulcast import answered_layers, offer_simulcast, rid_extensions
from .sdp_transport_cc import answered_transport_cc, offer_transport_cc, transport_cc_extension
from .sdp_tweaks import answered_red_by_mid, enable_audio_resilience, offer_audio_red
from .sdp_video_fec import VideoFecPayloadTypes, offer_video_fec, video_fec_by_mid
from .send_budget import SendBudget
from .simulcast import Publication, SimulcastTrack

logger = logging.getLogger(__name__)

RtpParameters = TypeVar("RtpParameters", RTCRtpReceiveParameters, RTCRtpSendParameters)

KINDS = ("audio", "video")
MAX_SLOT_PAIRS = 16
VIDEO_CODECS = ("vp8", "h264")


def codec_preferences(kind: str, preferred: str):
    """aiortc's codecs for `kind`, the preferred one first (VP8 for desktops, H.264 where phones
    encode it in hardware)."""
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    return sorted(codecs, key=lambda c: 0 if c.mimeType.lower() == f"{kind}/{preferred}" else 1)


class AnswerRejected(Exception):
    """The client's answer cannot be applied; `code` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SlotPair:
    stream_id: str
    transceivers: dict[str, RTCRtpTransceiver]
    downtracks: dict[str, DownTrack]
    publisher_id: Optional[str] = None

    def mid(self, kind: str) -> Optional[str]:
        return self.transceivers[kind].mid


@dataclass
class PeerStats:
    renegotiations: int = 0
    answers_rejected: int = 0
    extra: dict = field(default_factory=dict)


class MediaPeer:
    def __init__(
        self,
        participant_id: str,
        *,
        publish: bool,
        subscribe: bool,
        ice: IceConfig,
        video_codec: str = "vp8",
        on_track_started: Callable[["MediaPeer", Publication], None],
        on_connection_failed: Callable[["MediaPeer"], None],
        video_priority: int = 0,
        priority_of: Callable[[str], int] = lambda publisher_id: 0,
        on_video_paused: Callable[["MediaPeer", str, bool], None] = lambda peer, publisher_id, paused: None,
        simulcast: bool = False,
        on_publisher_layers: Callable[["MediaPeer", tuple[str, ...]], None] = lambda peer, rids: None,
    ) -> None:
        """`simulcast`: ask this participant's camera for the layers of SIMULCAST_LADDER;
        `on_publisher_layers(peer, rids)`: tell it to send only those layers from now on."""
        if video_codec not in VIDEO_CODECS:
            raise ValueError(f"video codec must be one of {VIDEO_CODECS}")
        self.participant_id = participant_id
        self.video_codec = video_codec
        self.can_publish = publish
        self.can_subscribe = subscribe
        self.offers_simulcast = simulcast and publish
        self.pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[s.to_aiortc() for s in ice.servers],  # explicit: aiortc's default is a public STUN host
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            )
        )
        self._on_track_started = on_track_started
        self._on_connection_failed = on_connection_failed
        self.publish_transceivers: dict[str, RTCRtpTransceiver] = {}
        self.published: dict[str, Publication] = {}
        self.pairs: list[SlotPair] = []
        self.downlink_loss = LossEstimate()  # one transport: shared by every down-track of this peer
        # How much its remote videos matter to others (the patient's view is the clinical one).
        self.video_priority = video_priority
        self.send_budget = SendBudget()  # likewise shared: one downlink
        self._priority_of = priority_of
        self._on_video_paused = on_video_paused
        self._on_publisher_layers = on_publisher_layers
        # publisher id -> the size this participant's page draws that publisher's video at
        self._views: dict[str, Size] = {}
        self.downlink = DownlinkController(self.send_budget, self._remote_videos, self._remote_video_priority,
                                           self._remote_video_paused, name=participant_id)
        self.stats = PeerStats()
        # called once, when the connection (ICE + DTLS) first connects: the control plane times joins by it
        self.on_connected: Optional[Callable[[], None]] = None
        self.closed = False
        self._offer_pending = False
        self.receive_queue: Optional[DropOldestQueue] = None
        # mid -> (red payload type, Opus payload type), from the answer: aiortc does not negotiate RED
        self._red_by_mid: dict[str, tuple[int, int]] = {}
        # mid -> video red/ulpfec payload types, from the answer (sending and publishing sections)
        self._video_fec_by_mid: dict[str, VideoFecPayloadTypes] = {}
        # mid -> the RIDs the answer sends, lowest layer first; and the answer, for their extension ids
        self._simulcast_by_mid: dict[str, tuple[str, ...]] = {}
        # mid -> the transport-cc extension id the answer kept on a section we send on
        self._transport_cc_by_mid: dict[str, int] = {}
        self._answer_sdp = ""

        @self.pc.on("connectionstatechange")
        def _state_changed() -> None:
            if self.pc.connectionState == "connected" and self.on_connected is not None:
                connected, self.on_connected = self.on_connected, None
                connected()
            if self.pc.connectionState == "failed" and not self.closed:
                self._on_connection_failed(self)

        if publish:
            for kind in KINDS:
                self._add_publish_transceiver(kind)

    def _bound_transport_queue(self, transceiver: RTCRtpTransceiver) -> None:
        # max-bundle: every transceiver shares the first one's ICE connection
        if len(self.pc.getTransceivers()) == 1:
            self.receive_queue = bound_ice_receive_queue(transceiver)

    # --- publishing -------------------------------------------------------------

    def _add_publish_transceiver(self, kind: str) -> None:
        transceiver = self.pc.addTransceiver(kind, direction="recvonly")
        self._bound_transport_queue(transceiver)
        if kind == "video":
            # Only the publisher's choice is steered; receive slots accept every codec.
            transceiver.setCodecPreferences(codec_preferences(kind, self.video_codec))
        self.publish_transceivers[kind] = transceiver

        def make_track(parameters: RTCRtpReceiveParameters, rid: Optional[str] = None) -> PublishedTrack:
            return PublishedTrack(
                participant_id=self.participant_id,
                kind=kind,
                transport=transceiver.receiver.transport,
                parameters=parameters,
                rtcp_ssrc=receiver_rtcp_ssrc(transceiver),
                rtt_s=self.rtt_s,
                rid=rid,
            )

        def make_publication(parameters: RTCRtpReceiveParameters) -> Publication:
            parameters = self._with_video_fec(transceiver, self._with_red(transceiver, parameters))
            rids = self._simulcast_by_mid.get(transceiver.mid or "")
            if kind != "video" or not rids:
                return make_track(parameters)
            parameters = dataclasses.replace(parameters, headerExtensions=[
                *parameters.headerExtensions, *rid_extensions(self._answer_sdp, transceiver.mid or "")])
            track = SimulcastTrack(participant_id=self.participant_id, transport=transceiver.receiver.transport,
                                   parameters=parameters, rids=rids, rtcp_ssrc=receiver_rtcp_ssrc(transceiver),
                                   make_layer=lambda rid: make_track(parameters, rid))
            track.on_active_layers = lambda active: self._on_publisher_layers(self, active)
            return track

        def started(track: Publication) -> None:
            self.published[kind] = track
            self._on_track_started(self, track)

        take_over_receiver(transceiver, make_publication, started)

    def _with_red(self, transceiver: RTCRtpTransceiver, parameters: RtpParameters) -> RtpParameters:
        """The negotiated parameters plus RED, when the answer accepted it for this m-section."""
        red = self._red_by_mid.get(transceiver.mid or "")
        if red is None or any(c.payloadType == red[0] for c in parameters.codecs):
            return parameters
        codecs = list(parameters.codecs) + [
            RTCRtpCodecParameters(mimeType="audio/red", clockRate=48000, channels=2, payloadType=red[0])]
        return dataclasses.replace(parameters, codecs=codecs)

    def _with_video_fec(self, transceiver: RTCRtpTransceiver, parameters: RtpParameters) -> RtpParameters:
        """The negotiated parameters plus video red, ulpfec and RTX for red, when the answer kept them."""
        fec = self._video_fec_by_mid.get(transceiver.mid or "")
        if fec is None or transceiver.kind != "video" or any(c.payloadType == fec.red for c in parameters.codecs):
            return parameters
        extra = [RTCRtpCodecParameters(mimeType="video/red", clockRate=90000, payloadType=fec.red),
                 RTCRtpCodecParameters(mimeType="video/ulpfec", clockRate=90000, payloadType=fec.ulpfec)]
        if fec.rtx is not None:
            extra.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=fec.rtx,
                                               parameters={"apt": fec.red}))
        return dataclasses.replace(parameters, codecs=list(parameters.codecs) + extra)

    def _with_transport_cc(self, transceiver: RTCRtpTransceiver, parameters: RtpParameters) -> RtpParameters:
        """The negotiated parameters plus the transport-cc extension, when the answer kept it."""
        ext_id = self._transport_cc_by_mid.get(transceiver.mid or "")
        if ext_id is None or any(e.id == ext_id for e in parameters.headerExtensions):
            return parameters
        extensions = list(parameters.headerExtensions) + [transport_cc_extension(ext_id)]
        return dataclasses.replace(parameters, headerExtensions=extensions)

    def rtt_s(self) -> float:
        """Round-trip time to this participant, measured on the down-tracks of the same transport."""
        samples = sorted(d.rtt for p in self.pairs for d in p.downtracks.values() if d.rtt is not None)
        return samples[len(samples) // 2] if samples else DEFAULT_RTT_S

    # --- receive slots ------------------------------------------------------------

    def _remote_videos(self) -> list[ControlledVideo]:
        return [pair.downtracks["video"] for pair in self.pairs if pair.publisher_id is not None]

    def _publisher_of(self, video: ControlledVideo) -> Optional[str]:
        return next((p.publisher_id for p in self.pairs if p.downtracks["video"] is video), None)

    def _remote_video_priority(self, video: ControlledVideo) -> int:
        publisher_id = self._publisher_of(video)
        return 0 if publisher_id is None else self._priority_of(publisher_id)

    def _remote_video_paused(self, video: ControlledVideo, paused: bool) -> None:
        if paused:
            # the loss measured up to now was the congestion's, not the link's: copies would only add to it
            self.downlink_loss.reset()
        publisher_id = self._publisher_of(video)
        if publisher_id is not None:
            self._on_video_paused(self, publisher_id, paused)

    def slot_for(self, publisher_id: str) -> Optional[SlotPair]:
        return next((p for p in self.pairs if p.publisher_id == publisher_id), None)

    def claim_slot(self, publisher_id: str) -> tuple[SlotPair, bool]:
        """The slot pair carrying this publisher, and whether a renegotiation is needed."""
        pair = self.slot_for(publisher_id)
        if pair is not None:
            return pair, False
        pair = next((p for p in self.pairs if p.publisher_id is None), None)
        created = pair is None
        if pair is None:
            if len(self.pairs) >= MAX_SLOT_PAIRS:
                raise RuntimeError(f"{self.participant_id} already receives {MAX_SLOT_PAIRS} participants")
            pair = self._add_slot_pair()
        pair.publisher_id = publisher_id
        pair.downtracks["video"].set_view(self._views.get(publisher_id))
        return pair, created

    def set_view(self, publisher_id: str, view: Size) -> None:
        """This participant's page draws `publisher_id`'s video at `view` (device pixels; 0x0: hidden)."""
        self._views[publisher_id] = view
        pair = self.slot_for(publisher_id)
        if pair is not None:
            pair.downtracks["video"].set_view(view)

    def release_slot(self, publisher_id: str) -> Optional[SlotPair]:
        """The pair carrying `publisher_id` goes idle, for reuse; its down-tracks were disconnected
        by the room (media/room.py, which makes and removes every edge)."""
        pair = self.slot_for(publisher_id)
        if pair is not None:
            for downtrack in pair.downtracks.values():
                downtrack.set_view(None)
            pair.publisher_id = None
        self._views.pop(publisher_id, None)
        return pair

    def _add_slot_pair(self) -> SlotPair:
        stream_id = str(uuid.uuid4())
        transceivers: dict[str, RTCRtpTransceiver] = {}
        downtracks: dict[str, DownTrack] = {}
        for kind in KINDS:
            transceiver = self.pc.addTransceiver(kind, direction="sendonly")
            self._bound_transport_queue(transceiver)
            transceiver.sender._stream_id = stream_id  # msid: pairs this audio with this video only
            downtrack = DownTrack(
                subscriber_id=self.participant_id,
                kind=kind,
                ssrc=transceiver.sender._ssrc,
                rtx_ssrc=transceiver.sender._rtx_ssrc,
                downlink_loss=self.downlink_loss,
                budget=self.send_budget,
            )

            def prepare(parameters: RTCRtpSendParameters, t: RTCRtpTransceiver = transceiver) -> RTCRtpSendParameters:
                return self._with_transport_cc(t, self._with_video_fec(t, self._with_red(t, parameters)))

            take_over_sender(transceiver, downtrack, prepare)
            transceivers[kind] = transceiver
            downtracks[kind] = downtrack
        pair = SlotPair(stream_id=stream_id, transceivers=transceivers, downtracks=downtracks)
        self.pairs.append(pair)
        self.downlink.start()
        return pair

    # --- negotiation ----------------------------------------------------------------

    def publish_mids(self) -> Optional[dict[str, Optional[str]]]:
        """kind -> mid of the publish transceivers (a mid is None until the first offer)."""
        if not self.publish_transceivers:
            return None
        return {kind: t.mid for kind, t in self.publish_transceivers.items()}

    def pair_track_map(self, pair: SlotPair) -> dict[str, Optional[dict]]:
        return {
            mid: ({"participant": pair.publisher_id, "kind": kind} if pair.publisher_id else None)
            for kind in KINDS
            if (mid := pair.mid(kind)) is not None
        }

    def track_map(self) -> dict[str, Optional[dict]]:
        out: dict[str, Optional[dict]] = {}
        for pair in self.pairs:
            out.update(self.pair_track_map(pair))
        return out

    @property
    def has_media(self) -> bool:
        """Whether an offer would carry anything: a participant who only watches has no section
        to negotiate until someone's slot pair is claimed (an offer without one cannot be answered)."""
        return bool(self.pc.getTransceivers())

    async def create_offer(self) -> str:
        if self.closed:
            raise RuntimeError("peer closed")
        offer = await self.pc.createOffer()
        sdp = offer_video_fec(offer_audio_red(enable_audio_resilience(offer.sdp)))
        if self.offers_simulcast:
            sdp = offer_simulcast(sdp)
        await self.pc.setLocalDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self._offer_pending = True
        self.stats.renegotiations += 1
        # aiortc writes its local description anew (with the candidates) and drops what it
        # does not know, the RIDs among them: they go into what the client is sent
        sent = self.pc.localDescription.sdp
        return offer_transport_cc(offer_simulcast(sent) if self.offers_simulcast else sent)

    async def apply_answer(self, sdp_text: str) -> None:
        if not self._offer_pending:
            raise AnswerRejected("bad_state", "no offer is waiting for an answer")
        description = self._parse_answer(sdp_text)
        self._check_directions(description)
        # what the answer says is read while aiortc applies it (our tracks are made then), so it
        # is recorded first, and forgotten if aiortc refuses the answer
        said = (dict(self._red_by_mid), dict(self._video_fec_by_mid), dict(self._transport_cc_by_mid),
                dict(self._simulcast_by_mid), self._answer_sdp)
        self._red_by_mid.update(answered_red_by_mid(sdp_text))
        self._video_fec_by_mid.update(video_fec_by_mid(sdp_text))
        self._transport_cc_by_mid.update(answered_transport_cc(sdp_text))
        if self.offers_simulcast:
            self._simulcast_by_mid.update(answered_layers(sdp_text))
            self._answer_sdp = sdp_text
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp_text, type="answer"))
        except Exception as exc:  # aiortc raises a variety of errors on SDP it cannot use
            (self._red_by_mid, self._video_fec_by_mid, self._transport_cc_by_mid, self._simulcast_by_mid,
             self._answer_sdp) = said
            self.stats.answers_rejected += 1
            raise AnswerRejected("bad_sdp", f"answer could not be applied: {exc}") from exc
        self._offer_pending = False

    def _parse_answer(self, sdp_text: str) -> aiortc_sdp.SessionDescription:
        try:
            description = aiortc_sdp.SessionDescription.parse(sdp_text)
        except Exception as exc:
            self.stats.answers_rejected += 1
            raise AnswerRejected("bad_sdp", f"answer SDP does not parse: {exc}") from exc
        offered = aiortc_sdp.SessionDescription.parse(self.pc.localDescription.sdp)
        offered_mids = [(m.kind, m.rtp.muxId) for m in offered.media]
        answered_mids = [(m.kind, m.rtp.muxId) for m in description.media]
        if offered_mids != answered_mids:
            self.stats.answers_rejected += 1
            raise AnswerRejected("bad_sdp", f"answer m-lines {answered_mids} do not match the offer {offered_mids}")
        if not description.media or any(m.dtls is None or m.ice is None for m in description.media):
            self.stats.answers_rejected += 1
            raise AnswerRejected("bad_sdp", "answer lacks ICE or DTLS parameters")
        return description

    def _check_directions(self, description: aiortc_sdp.SessionDescription) -> None:
        publish_mids = set((self.publish_mids() or {}).values())
        for media in description.media:
            sends = media.direction in ("sendonly", "sendrecv")
            if sends and media.rtp.muxId not in publish_mids:
                self.stats.answers_rejected += 1
                raise AnswerRejected(
                    "forbidden",
                    f"sending on mid {media.rtp.muxId} is not allowed"
                    + ("" if self.can_publish else ": this participant has no publish permission"),
                )

    # --- teardown -------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.downlink.stop()
        await self.send_budget.pacer.close()
        await self.pc.close()  # stops transceivers, which stops our tracks and down-tracks
        # A transceiver that was never negotiated has no started receiver/sender to stop.
        for track in list(self.published.values()):
            await track.stop()
        for pair in self.pairs:
            for downtrack in pair.downtracks.values():
                await downtrack.stop()

    def __repr__(self) -> str:
        return f"MediaPeer({self.participant_id})"
