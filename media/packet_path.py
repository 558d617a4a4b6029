"""The packet path's two sides, and the one place an edge between them is made or removed.

A source (`DownTrackSource`: a PublishedTrack, a SimulcastTrack, a viewer's watermarked
copy) hands each packet to every sink it feeds (`PacketSink`: a subscriber's DownTrack),
synchronously; a sink asks its source for keyframes and reads its sender reports. Each side
knows the other only through these Protocols, so mypy checks both (the sources never
import media/downtrack.py, the down-track never imports a source).

Who feeds whom is the room's decision (media/room.py): it calls `connect` and
`disconnect`, which tell both sides, in the order they rely on. Neither side registers
itself with the other. The same two calls end an edge when either side ends (a source
that stops disconnects its sinks; a down-track that stops disconnects itself). Inside a
layered source the edge runs on to one of its layers at a time: the source moves a sink
between its own layers itself (`SimulcastTrack`, with `PacketSink.switch_feed`), at the
layers' keyframes.

Wiring only: nothing here is on the per-packet path (a source calls its sinks' methods
directly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from aiortc.rtp import RtpPacket

    from .layer_sizes import Size
    from .redundancy import LossEstimate
    from .rtp_clock import SenderReport


class DownTrackSource(Protocol):
    """What a down-track carries: a PublishedTrack, or a source made from one that looks
    like it (a viewer's watermarked copy, media/watermark_variant.py)."""

    def add_downtrack(self, downtrack: PacketSink) -> None:
        """Feed `downtrack` from now on (`connect` calls it, once the sink is bound to this source)."""
        ...

    def remove_downtrack(self, downtrack: PacketSink) -> None:
        """Stop feeding it (`disconnect` calls it, while the sink still names its feed)."""
        ...

    def request_keyframe(self) -> None: ...

    def offered_bps(self, now: float) -> float:
        """What the source sends (what forwarding it costs a subscriber), over a few seconds."""
        ...

    @property
    def sender_report(self) -> Optional[SenderReport]: ...


@runtime_checkable
class LayeredSource(Protocol):
    """A source sent in several layers (simulcast, media/simulcast.py): it feeds each down-track
    from one of them (`PacketSink.switch_feed`), the one `select_layer` chose, once it can."""

    def layer_rates(self, now: float) -> list[float]:
        """What each layer sends, lowest first (0: not arriving)."""
        ...

    def layer_of(self, downtrack: PacketSink) -> Optional[int]: ...

    def feeding(self, downtrack: PacketSink) -> Optional[int]: ...

    def select_layer(self, downtrack: PacketSink, index: int) -> None: ...

    def layer_for_view(self, view: Optional[Size]) -> int:
        """The smallest layer that covers a picture drawn at `view` (media/layer_sizes.py)."""
        ...

    @property
    def rids(self) -> tuple[str, ...]: ...


class PacketSink(Protocol):
    """What a source calls on each subscriber it feeds (a DownTrack, media/downtrack.py)."""

    # --- per packet --------------------------------------------------------------------

    async def forward(self, packet: RtpPacket, codec: RTCRtpCodecParameters, keyframe_start: bool,
                      abs_send_time: int, now: float, late: bool = False) -> None:
        """Send one packet on. `late`: recovered from the publisher after the subscriber NACKed it."""
        ...

    def carries(self, codec: RTCRtpCodecParameters) -> bool:
        """Whether the subscriber negotiated `codec` (a source picks RED or plain per sink)."""
        ...

    @property
    def downlink_loss(self) -> LossEstimate:
        """First-transmission loss toward the subscriber (how many copies a recovered packet earns)."""
        ...

    # --- the source's stream -------------------------------------------------------------

    def skip_source(self, after_seq: int, upto_seq: int) -> None:
        """Source numbers after `after_seq` up to `upto_seq` were the publisher's FEC: no hole for them."""
        ...

    def source_restarted(self) -> None:
        """The source's stream started over (a new SSRC): carry it on from its next keyframe."""
        ...

    def switch_feed(self, feed: DownTrackSource) -> None:
        """A layered source feeds it from `feed` (one of its layers) from now on."""
        ...

    # --- what a source reads of it ----------------------------------------------------------

    @property
    def started(self) -> bool:
        """Negotiated: something is sent to it (a source that makes its packets waits for this)."""
        ...

    @property
    def stopped(self) -> bool: ...

    @property
    def paused(self) -> bool:
        """Withheld for its downlink's sake (a layered source moves a paused sink at once)."""
        ...

    @property
    def remb_bitrate(self) -> Optional[int]:
        """The subscriber's REMB (bit/s; None: none yet)."""
        ...

    @property
    def layer_ceiling(self) -> int:
        """The best layer of a layered source the subscriber needs."""
        ...

    @property
    def source(self) -> Optional[DownTrackSource]:
        """What it carries (connected by `connect`)."""
        ...

    @property
    def feed(self) -> Optional[DownTrackSource]:
        """What sends it packets now: the source, or one of a layered source's layers."""
        ...

    # --- wiring: called by `connect` / `disconnect` only ---------------------------------------

    def bind(self, source: DownTrackSource) -> None:
        """It carries `source` from now on (its side of `connect`: nothing is asked of the source)."""
        ...

    def unbind(self) -> None:
        """It carries nothing from now on (its side of `disconnect`)."""
        ...


def connect(source: DownTrackSource, sink: PacketSink) -> None:
    """`sink` carries `source` from now on (video from its next keyframe), and no longer what it
    carried before. Nothing if the sink has stopped or already carries `source`."""
    if sink.stopped or sink.source is source:
        return
    previous = sink.source
    if previous is not None:
        # before the sink forgets it: a layered source finds the layer feeding the sink by its feed
        previous.remove_downtrack(sink)
    sink.bind(source)
    # after: a layered source may feed it from a layer at once (`switch_feed`), which needs it bound
    source.add_downtrack(sink)


def disconnect(sink: PacketSink, source: Optional[DownTrackSource] = None) -> None:
    """`sink` carries nothing from now on; with `source`, only if that is what it carries."""
    current = sink.source
    if source is not None and source is not current:
        return
    if current is not None:
        current.remove_downtrack(sink)
    sink.unbind()
