"""One published video sent as several simulcast layers, and which layer each subscriber gets.

Registered with the publisher's DTLS transport in place of aiortc's receiver (as a
single PublishedTrack is otherwise). Each layer arrives on its own SSRC, named by the
rtp-stream-id header extension of its first packets (its RTX by repaired-rtp-stream-id);
each becomes a PublishedTrack of its own (NACKs, receiver reports, keyframe requests,
uplink FEC per layer). The publisher gets one REMB for all of them, from the arrival
pattern of every layer's packets: subscribers are served by the choice of layer, so the
publisher is limited by its uplink alone.

A down-track attached here is fed by one layer at a time. `select_layer` sets the layer
it should get (media/downlink_control.py decides); the switch happens at the first
packet of a keyframe of that layer, so the subscriber's decoder never sees a frame
that refers to another layer, and the down-track's numbering runs on without a gap.
A layer the publisher stopped sending (its encoder drops the top layers when its
uplink narrows) is left for the best one still arriving.

On the packet path (media/packet_path.py) it is a `DownTrackSource` and a
`LayeredSource`: the room connects a down-track (a `PacketSink`) to it and disconnects
it; which of its layers feeds that sink meanwhile is its own business (`_feed`: off
one layer's list, `switch_feed`, onto another's), not the room's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional, Union

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, RtpPacket, pack_remb_fci

from .layer_sizes import Size, layer_for_view, layer_sizes
from .packet_path import PacketSink, disconnect
from .published_track import PublishedTrack
from .publisher_layers import PublisherLayers
from .rtcp_io import send_rtcp
from .rtp_clock import SenderReport
from .sdp_simulcast import SIMULCAST_LADDER
from .simulcast_taps import TapLayers
from .uplink_estimate import UplinkEstimator

if TYPE_CHECKING:
    from .taps import PacketTap

logger = logging.getLogger(__name__)

# A layer with no media for this long is taken as stopped: its subscribers move to the best
# layer still arriving, at that layer's next keyframe (asked for at once). Every moment of
# this is a frozen picture; a false alarm costs only a keyframe of a smaller layer.
LAYER_SILENT_S = 0.3
WATCH_INTERVAL_S = 0.1
# A new subscriber waits this long for the lowest layer before taking a larger one: a browser
# starts its layers within a few hundred milliseconds, and the larger ones come and go first.
LOWEST_WAIT_S = 0.5
# A layer sending fewer frames a second than this share of the smoothest one is not moved to.
FRAME_RATE_SHARE = 0.7
# A layer arriving this long (after a silence) is settled: subscribers may move up to it.
LAYER_SETTLED_S = 2.0
# How much smaller than the picture it is sent each layer is: a layer not sent yet has no size of its own
_SCALE_DOWN_BY_RID = {layer.rid: float(layer.scale_down) for layer in SIMULCAST_LADDER}


class SimulcastTrack:
    """The layers of one published video, lowest first (`rids` in that order)."""

    kind = "video"

    def __init__(self, *, participant_id: str, transport: RTCDtlsTransport, parameters: RTCRtpReceiveParameters,
                 rids: Sequence[str], make_layer: Callable[[str], PublishedTrack], rtcp_ssrc: int) -> None:
        if not rids:
            raise ValueError("a simulcast track needs at least one RID")
        self.participant_id = participant_id
        self.transport = transport
        self.rids = tuple(rids)
        self._parameters = parameters
        self._make_layer = make_layer
        self._rtcp_ssrc = rtcp_ssrc
        self.layers: list[Optional[PublishedTrack]] = [None] * len(self.rids)
        self._by_ssrc: dict[int, PublishedTrack] = {}
        self._estimator = UplinkEstimator(participant_id)
        self.uplink_estimate: Optional[int] = None
        self._targets: dict[PacketSink, int] = {}  # the layer each down-track should get
        self._waiting: dict[PacketSink, float] = {}  # down-tracks no layer feeds yet: since when
        # recording and processors: the best layer arriving, as one stream
        self._tap_layers = TapLayers()
        self._tap_feeds: dict[int, PacketTap] = {}  # layer index -> what feeds _tap_layers from it
        self._watch_task: Optional[asyncio.Task] = None
        self.stopped = False
        self.unrouted = 0  # packets on an SSRC no RID named (yet)
        # the layers the publisher should send, and who tells it (the control plane, `layers` message)
        self.on_active_layers: Optional[Callable[[tuple[str, ...]], None]] = None
        self.publisher_layers = PublisherLayers(len(self.rids), self._publisher_layers_changed)

    # --- wiring -------------------------------------------------------------

    def start(self) -> None:
        self.transport._register_rtp_receiver(self, self._parameters)
        self._watch_task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.transport._unregister_rtp_receiver(self)
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        for downtrack in list(self._targets):
            disconnect(downtrack, self)
        for layer in self.layers:
            if layer is not None:
                await layer.stop()
        for tap in self._tap_layers.taps:
            tap.close()
        self._tap_layers.taps.clear()

    def _layer_for(self, rid: str) -> Optional[PublishedTrack]:
        if rid not in self.rids or self.stopped:
            return None
        index = self.rids.index(rid)
        layer = self.layers[index]
        if layer is None:
            layer = self.layers[index] = self._make_layer(rid)
            layer.on_keyframe = self._keyframe_arrived
            layer.start()
            if self._tap_layers.taps:
                self._feed_taps_from(index, layer)
        return layer

    # --- called by aiortc's RTP router --------------------------------------

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        layer = self._by_ssrc.get(packet.ssrc)
        if layer is None:
            rid = packet.extensions.rtp_stream_id or packet.extensions.repaired_rtp_stream_id
            layer = None if rid is None else self._layer_for(rid)
            if layer is None:
                self.unrouted += 1
                return
            self._by_ssrc[packet.ssrc] = layer
        if packet.extensions.abs_send_time is not None:
            estimate = self._estimator.add(abs_send_time=packet.extensions.abs_send_time,
                                           arrival_time_ms=arrival_time_ms,
                                           payload_size=len(packet.payload) + packet.padding_size, ssrc=packet.ssrc)
            if estimate is not None:
                self.uplink_estimate = estimate
                await self._send_remb()
        await layer._handle_rtp_packet(packet, arrival_time_ms)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        layer = self._by_ssrc.get(getattr(packet, "ssrc", -1))
        if layer is not None:
            await layer._handle_rtcp_packet(packet)

    def _handle_disconnect(self) -> None:
        pass  # the peer's close path stops this track

    async def _send_remb(self) -> None:
        ssrcs = [layer.media_ssrc for layer in self.layers if layer is not None and layer.media_ssrc is not None]
        if self.uplink_estimate is not None and ssrcs:
            fci = pack_remb_fci(self.uplink_estimate, ssrcs)
            await send_rtcp(self.transport, [RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self._rtcp_ssrc,
                                                            media_ssrc=0, fci=fci)])

    # --- a source of down-tracks (media/packet_path.py DownTrackSource) -----------

    def add_downtrack(self, downtrack: PacketSink, keyframe: bool = True) -> None:
        """Meant for the lowest layer until the subscriber's downlink controller raises it, as
        the link shows room: nothing is known of a new subscriber's link, and the top layers of
        a call already running at once (queue full from the first second, so no queue-free
        RTT to measure against) left a phone's downlink collapsed."""
        if downtrack in self._targets:
            return
        self._targets[downtrack] = 0
        now = time.monotonic()
        best = self._best_arriving(len(self.rids) - 1, now, None)
        if best is not None:
            self._feed(downtrack, best, keyframe=True)
        else:
            self._waiting[downtrack] = now

    def remove_downtrack(self, downtrack: PacketSink) -> None:
        self._targets.pop(downtrack, None)
        self._waiting.pop(downtrack, None)
        index = self.feeding(downtrack)
        layer = None if index is None else self.layers[index]
        if layer is not None:
            layer.remove_downtrack(downtrack)

    @property
    def downtracks(self) -> list[PacketSink]:
        return list(self._targets)

    def request_keyframe(self) -> None:
        """For the control plane's taps (recording, processors): the layer they get (or will)."""
        index = self._tap_layers.current if self._tap_layers.current is not None else self._tap_layers.wanted
        layer = self.layers[index] if index is not None else self.layers[-1]
        if layer is not None:
            layer.request_keyframe()

    def offered_bps(self, now: float) -> float:
        return sum(layer.offered_bps(now) for layer in self.layers if layer is not None)

    @property
    def sender_report(self) -> Optional[SenderReport]:
        top = self.layers[-1]
        return None if top is None else top.sender_report

    @property
    def last_codec(self) -> Optional[RTCRtpCodecParameters]:
        top = self.layers[-1]
        return None if top is None else top.last_codec

    def add_tap(self, tap: PacketTap) -> None:
        self._tap_layers.add(tap)
        for index, layer in enumerate(self.layers):
            if layer is not None:
                self._feed_taps_from(index, layer)
        self._choose_tap_layer(time.monotonic())

    def remove_tap(self, tap: PacketTap) -> None:
        self._tap_layers.remove(tap)
        if not self._tap_layers.taps:  # nobody taps: no per-packet work for it
            for index, feed in self._tap_feeds.items():
                layer = self.layers[index]
                if layer is not None:
                    layer.remove_tap(feed)
            self._tap_feeds.clear()

    def _feed_taps_from(self, index: int, layer: PublishedTrack) -> None:
        if index not in self._tap_feeds:
            feed = self._tap_feeds[index] = self._tap_layers.feed(index)
            layer.add_tap(feed)

    def _choose_tap_layer(self, now: float) -> None:
        """The taps move to the best layer arriving, at its next keyframe (asked for). They start
        on the best one already running smoothly: a recording has no link to spare, and
        starting on the lowest made a call's recording open with a few frames of it."""
        current = self._tap_layers.current
        lowest = self.layers[0]
        current_or_start: Optional[int] = current
        if current is None and lowest is not None and self._arriving(lowest, now):
            current_or_start = 0  # judged as if on the lowest: up to any settled better one
        best = self._best_arriving(len(self.rids) - 1, now, current_or_start)
        if best is None or best == self._tap_layers.current:
            return
        self._tap_layers.wanted = best
        layer = self.layers[best]
        if layer is not None:
            layer.request_keyframe()

    # --- layers per down-track ----------------------------------------------------

    def layer_rates(self, now: float) -> list[float]:
        """What each layer sends now, lowest first (0: not arriving)."""
        return [0.0 if layer is None or not self._arriving(layer, now) else layer.offered_bps(now)
                for layer in self.layers]

    def layer_of(self, downtrack: PacketSink) -> Optional[int]:
        """The layer this down-track should get (it may still be waiting for its keyframe)."""
        return self._targets.get(downtrack)

    def feeding(self, downtrack: PacketSink) -> Optional[int]:
        """The layer this down-track gets now (its feed, while it is one of ours)."""
        feed = downtrack.feed
        return next((i for i, layer in enumerate(self.layers) if layer is feed and layer is not None), None)

    def select_layer(self, downtrack: PacketSink, index: int) -> None:
        if downtrack not in self._targets or not 0 <= index < len(self.rids):
            return
        self._targets[downtrack] = index
        current = self.feeding(downtrack)
        layer = self.layers[index]
        if current == index or layer is None:
            return
        if downtrack.paused and current is not None:
            # nothing of it is on screen to keep until the new layer's keyframe: move now, or
            # resuming would start on the old layer's keyframe (a 720p one floods a narrow link)
            self._feed(downtrack, index, keyframe=False)
        layer.request_keyframe()  # the switch happens at its next keyframe

    def layer_for_view(self, view: Optional[Size]) -> int:
        known = [None if layer is None else layer.frame_size for layer in self.layers]
        return layer_for_view(view, layer_sizes(known, [_SCALE_DOWN_BY_RID.get(rid) for rid in self.rids]))

    def _layers_wanted(self) -> int:
        """How many layers (the lowest) anyone takes: recording and processors the best, each
        subscriber up to what its tile needs (whether its downlink carries that now or not:
        the controller raises it without waiting for an encoder to start)."""
        if self._tap_layers.taps:
            return len(self.rids)
        return 1 + max((downtrack.layer_ceiling for downtrack in self._targets), default=0)

    def _publisher_layers_changed(self, active: int) -> None:
        rids = self.rids[:active]
        logger.info("%s: asking the publisher for layers %s", self, "/".join(rids))
        if self.on_active_layers is not None:
            self.on_active_layers(rids)

    def _keyframe_arrived(self, layer: PublishedTrack) -> None:
        """Switches wait for a keyframe of the layer switched to: no picture stops meanwhile."""
        index = self.layers.index(layer)
        now = time.monotonic()
        for downtrack, target in list(self._targets.items()):
            current = self.feeding(downtrack)
            if current is None:
                if self._may_start_on(downtrack, index, now):
                    self._feed(downtrack, index, keyframe=False)
            elif current != index and self._best_arriving(target, now, current) == index:
                self._feed(downtrack, index, keyframe=False)

    def _may_start_on(self, downtrack: PacketSink, index: int, now: float) -> bool:
        """Whether a down-track no layer feeds yet may start on layer `index`: the lowest, or any
        once it has waited LOWEST_WAIT_S for the lowest."""
        return index == 0 or now - self._waiting.get(downtrack, now) >= LOWEST_WAIT_S

    def _feed(self, downtrack: PacketSink, index: int, *, keyframe: bool) -> None:
        """Move `downtrack` to layer `index`; it starts there at a keyframe (`keyframe`: ask for one)."""
        layer = self.layers[index]
        if layer is None:
            return
        self._waiting.pop(downtrack, None)
        previous = self.feeding(downtrack)
        if previous is not None:
            old = self.layers[previous]
            if old is not None:
                old.remove_downtrack(downtrack)
        downtrack.switch_feed(layer)
        layer.add_downtrack(downtrack, keyframe=keyframe)

    @staticmethod
    def _arriving(layer: PublishedTrack, now: float) -> bool:
        return now - layer.last_packet_at < LAYER_SILENT_S

    def _best_arriving(self, at_most: int, now: float, current: Optional[int]) -> Optional[int]:
        """The layer to carry, up to `at_most`: the current one while it arrives, unless a better
        one has run smoothly for a while; else the highest arriving, else the lowest above.
        A browser starts and stops layers as its send estimate moves in a call's first
        seconds: following every change made subscribers switch and wait on keyframes
        several times (freezes of up to 3 s in a clean call)."""
        layers = {i: layer for i, layer in enumerate(self.layers) if layer is not None and self._arriving(layer, now)}
        if not layers:
            return None
        arriving = list(layers)  # lowest first
        rates = {i: layer.frame_rate(now) for i, layer in layers.items()}
        smooth = FRAME_RATE_SHARE * max(rates.values())
        # settled: arriving for a while at a frame rate like the others' (a layer the encoder is
        # just starting sends a few frames a second, choppier than a smaller one)
        settled = [i for i, layer in layers.items()
                   if now - layer.arriving_since >= LAYER_SETTLED_S and rates[i] >= smooth]
        if current is not None and current in arriving and current <= at_most:
            better = [i for i in settled if current < i <= at_most]
            return better[-1] if better else current
        if current is None:
            return arriving[0]  # a start: the lowest (never stopped), up once a better one settles
        below = [i for i in settled if i <= at_most] or [i for i in arriving if i <= at_most]
        return below[-1] if below else arriving[0]

    async def _watch(self) -> None:
        """Move down-tracks off layers the publisher stopped sending, and back when they return."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self.check_layers(time.monotonic())

    def check_layers(self, now: float) -> None:
        for downtrack, target in list(self._targets.items()):
            if target > downtrack.layer_ceiling:  # its tile shrank
                self.select_layer(downtrack, downtrack.layer_ceiling)
        self.publisher_layers.update(self._layers_wanted(), now)
        if self._tap_layers.taps:
            self._choose_tap_layer(now)
        for downtrack, target in list(self._targets.items()):
            current = self.feeding(downtrack)
            best = self._best_arriving(target, now, current)
            if best is None or best == current:
                continue
            if current is None:
                if self._may_start_on(downtrack, best, now):
                    self._feed(downtrack, best, keyframe=True)  # nothing to show yet: any keyframe will do
            else:
                best_layer = self.layers[best]
                if best_layer is not None:
                    best_layer.request_keyframe()  # there at its next keyframe (`_keyframe_arrived`)

    def summary(self) -> dict:
        """Counters for operators (admin API) and tests: the layers' added up, and each layer's."""
        per_layer = {rid: None if layer is None else layer.summary() for rid, layer in zip(self.rids, self.layers)}
        summary = _added_up([counters for counters in per_layer.values() if counters is not None])
        summary["simulcast"] = per_layer
        summary["unrouted"] = self.unrouted
        current = self._tap_layers.current
        summary["tap_layer"] = None if current is None else self.rids[current]
        summary["tap_layer_switches"] = self._tap_layers.switches
        summary["publisher_layers"] = list(self.rids[:self.publisher_layers.active])
        summary["publisher_layer_changes"] = self.publisher_layers.changes
        return summary

    def __repr__(self) -> str:
        return f"SimulcastTrack({self.participant_id}, {'/'.join(self.rids)})"


def _added_up(summaries: list[dict]) -> dict:
    """Counters summed key by key (nested ones too); anything else from the first that has it."""
    total: dict = {}
    for summary in summaries:
        for key, value in summary.items():
            previous = total.get(key)
            if isinstance(value, dict):
                total[key] = _added_up([previous, value]) if isinstance(previous, dict) else dict(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = (previous or 0) + value
            elif previous is None:
                total[key] = value
    return total


# What a participant publishes per kind: one stream, or a video in simulcast layers.
Publication = Union[PublishedTrack, SimulcastTrack]
