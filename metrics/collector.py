"""The media plane's figures, read at scrape time from the objects that already count them.

Nothing here runs per packet: the media objects keep plain counters (their `summary()`
for the admin API, a few attributes) and this collector walks the live rooms when
Prometheus scrapes. Counters go through a Tally, so they never fall when a participant
leaves (metrics/tally.py says what that may miss). Every series is aggregated across
rooms and participants: labels are only kinds, directions, roles and processor names,
never a room, a participant or a name.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media.published_track import STREAM_GAP_S, PublishedTrack
from media.simulcast import Publication, SimulcastTrack

from .spread import LOSS_BUCKETS, RTT_BUCKETS_S, gauge_histogram
from .tally import Key, Reader, Tally

if TYPE_CHECKING:
    from media.downtrack import DownTrack
    from media.peer import MediaPeer
    from media.processing import _ProcessorRunner
    from media.watermark_variant import WatermarkVariant
    from signalling.live_rooms import LiveRoom, RoomService

KINDS = ("audio", "video")
DOWNLINK_CLASSES = ("audio", "video", "recovery", "padding")
# A stream whose last packet is older than this has no current loss to report.
LOSS_STALE_S = 5.0

# name -> (help, label names): the counters summed through the Tally
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "consult_rtp_packets": (
        "RTP packets received from publishers (uplink) and sent to subscribers (downlink, retransmissions "
        "and FEC included)", ("direction", "kind")),
    "consult_downlink_bytes": ("RTP payload bytes sent to subscribers", ("kind",)),
    "consult_nacked_packets": ("Packets the uplink lost that the server asked publishers to resend (NACK)",
                               ("kind",)),
    "consult_nack_retries_withheld": (
        "NACK retries not sent because the publisher answered none of the last ones", ("kind",)),
    "consult_uplink_recovered_packets": (
        "Packets the uplink lost that came back, by how: retransmission (nack), a RED copy (red), "
        "rebuilt from ULPFEC (fec)", ("kind", "via")),
    "consult_nacks_received": ("NACK messages received from subscribers", ("kind",)),
    "consult_retransmissions": ("Packets retransmitted to subscribers in answer to their NACKs", ("kind",)),
    "consult_recovery_copies": ("Extra copies of retransmissions and audio sent over lossy downlinks", ("kind",)),
    "consult_fec_packets_sent": ("ULPFEC packets sent to subscribers", ()),
    "consult_keyframe_requests_received": ("Keyframe requests (PLI/FIR) received from subscribers", ()),
    "consult_keyframe_requests_sent": ("Keyframe requests (PLI) sent to publishers, coalesced", ()),
    "consult_video_pauses": ("Videos paused because a subscriber's downlink could not carry them", ()),
    "consult_processor_frames": ("Frames a frame processor analysed", ("processor",)),
    "consult_processor_skipped_frames": ("Frames a frame processor skipped, busy with an earlier one",
                                         ("processor",)),
    "consult_processor_failures": ("Frame processors stopped by an error", ("processor",)),
    "consult_watermark_frames": ("Frames of per-viewer watermarked copies, by outcome: encoded, skipped "
                                 "(encoder busy or over the frame-rate cap), failed", ("outcome",)),
    "consult_watermark_encode_seconds": ("Time the watermark workers spent marking and encoding "
                                         "(its rate: cores kept busy)", ()),
}


class MediaCollector(Collector):
    def __init__(self, rooms: "RoomService") -> None:
        self._rooms = rooms
        self._tally = Tally()

    def describe(self) -> Iterator[Any]:
        # names only (CollectorRegistry checks them for clashes without collecting)
        yield from self._gauges(live=[], now=0.0)
        yield from self._spreads(live=[], now=0.0)
        yield from self._counter_families({})

    def collect(self) -> Iterator[Any]:
        live = list(self._rooms.live.values())
        now = time.monotonic()
        yield from self._gauges(live, now)
        yield from self._spreads(live, now)
        yield from self._counter_families(self._tally.totals(_counted_objects(live)))

    # --- gauges: what is going on now ---------------------------------------------------------

    def _gauges(self, live: list["LiveRoom"], now: float) -> Iterator[Any]:
        yield _gauge("consult_rooms_active", "Rooms with someone in them", {(): len(live)})

        roles: dict[tuple[str, ...], float] = defaultdict(int)
        for room in live:
            for session in list(room.sessions.values()):
                if session.participant is not None:
                    roles[(session.participant.role,)] += 1
        yield _gauge("consult_participants", "Participants in a room, by role", dict(sorted(roles.items())),
                     labels=("role",))

        published: dict[tuple[str, ...], float] = {(kind,): 0 for kind in KINDS}
        uplink_bps: dict[tuple[str, ...], float] = {(kind,): 0.0 for kind in KINDS}
        forwarded: dict[tuple[str, ...], float] = {(kind, state): 0 for kind in KINDS
                                                   for state in ("forwarding", "paused")}
        downlink_bps: dict[tuple[str, ...], float] = {(name,): 0.0 for name in DOWNLINK_CLASSES}
        layers_sent: dict[tuple[str, ...], float] = defaultdict(int)
        for peer in _peers(live):
            for kind, publication in list(peer.published.items()):
                published[(kind,)] += 1
                uplink_bps[(kind,)] += publication.offered_bps(now)
                if isinstance(publication, SimulcastTrack):
                    for rid in publication.rids[:publication.publisher_layers.active]:
                        layers_sent[(rid,)] += 1
            for downtrack in _downtracks(peer):
                if downtrack.active:
                    forwarded[(downtrack.kind, "paused" if downtrack.paused else "forwarding")] += 1
            if peer.pairs:
                budget = peer.send_budget
                for name, meter in (("audio", budget.audio), ("video", budget.video),
                                    ("recovery", budget.recovery), ("padding", budget.padding)):
                    downlink_bps[(name,)] += meter.bps(now)
        yield _gauge("consult_published_streams", "Tracks participants publish (a simulcast video counts once)",
                     published, labels=("kind",))
        yield _gauge("consult_forwarded_streams", "Tracks forwarded to subscribers, and those paused for a narrow "
                     "downlink", forwarded, labels=("kind", "state"))
        yield _gauge("consult_uplink_bits_per_second", "What publishers send, over the last 3 seconds", uplink_bps,
                     labels=("kind",))
        yield _gauge("consult_simulcast_layers_asked", "Simulcast publishers asked to send each layer (a layer no "
                     "subscriber's tile needs is turned off)", dict(sorted(layers_sent.items())), labels=("rid",))
        yield _gauge("consult_downlink_bits_per_second", "What the server sends subscribers over the last second, "
                     "by class (packet overhead included)", downlink_bps, labels=("class",))

        yield _gauge("consult_recordings_active", "Rooms being recorded",
                     {(): sum(1 for room in live if room.recording is not None)})
        running: dict[tuple[str, ...], float] = defaultdict(int)
        for runner in _runners(live):
            if runner.failed is None:
                running[(runner.processor.name,)] += 1
        yield _gauge("consult_processors_running", "Frame processors running on a track",
                     dict(sorted(running.items())), labels=("processor",))
        yield _gauge("consult_watermark_copies", "Per-viewer watermarked video copies being encoded",
                     {(): sum(1 for variant in _variants(live) if not variant.stopped)})

    # --- distributions across streams: loss and RTT per direction ---------------------------------

    def _spreads(self, live: list["LiveRoom"], now: float) -> Iterator[Any]:
        loss: dict[str, list[float]] = {"uplink": [], "downlink": []}
        rtt: dict[str, list[float]] = {"uplink": [], "downlink": []}
        for peer in _peers(live):
            for track in _tracks(peer):
                if now - track.last_packet_at < LOSS_STALE_S:
                    loss["uplink"].append(track.uplink_loss)
            rtts = []
            for downtrack in _downtracks(peer):
                if downtrack.active and downtrack.rtt is not None:
                    rtts.append(downtrack.rtt)
                    rtt["downlink"].append(downtrack.rtt)
                if downtrack.active and downtrack.packets_sent:
                    loss["downlink"].append(downtrack.reported_loss)
            arriving = any(now - track.last_packet_at < STREAM_GAP_S for track in _tracks(peer))
            if rtts and arriving:
                rtt["uplink"].append(sorted(rtts)[len(rtts) // 2])
        yield gauge_histogram(
            "consult_packet_loss_ratio",
            "Packet loss of each stream now: uplink, first transmissions from the publisher (from the server's "
            "NACKs); downlink, as the subscriber reports it (RTCP receiver reports)",
            "direction", LOSS_BUCKETS, loss)
        yield gauge_histogram(
            "consult_rtt_seconds",
            "Round-trip time now: downlink, of each forwarded stream (subscriber's receiver reports); uplink, of "
            "each publishing participant's connection (the median of its streams: one connection both ways)",
            "direction", RTT_BUCKETS_S, rtt)

    # --- counters ----------------------------------------------------------------------------------

    @staticmethod
    def _counter_families(totals: dict[Key, float]) -> Iterator[Any]:
        for name, (documentation, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=list(labels))
            for (key_name, values), value in sorted(totals.items()):
                if key_name == name:
                    family.add_metric(list(values), value)
            yield family


# --- walking the rooms ----------------------------------------------------------------------------

def _gauge(name: str, documentation: str, values: dict[tuple[str, ...], float],
           labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    """A gauge family with one sample per label-value tuple (`()` for an unlabelled gauge)."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels) if labels else None)
    for label_values, value in values.items():
        family.add_metric(list(label_values), value)
    return family


def _peers(live: list["LiveRoom"]) -> Iterator["MediaPeer"]:
    for room in live:
        yield from list(room.media.peers.values())


def _downtracks(peer: "MediaPeer") -> Iterator["DownTrack"]:
    for pair in list(peer.pairs):
        yield from pair.downtracks.values()


def _tracks(peer: "MediaPeer") -> Iterator[PublishedTrack]:
    """The streams a participant publishes: its tracks, each layer of a simulcast video apart."""
    for publication in list(peer.published.values()):
        yield from _layers(publication)


def _layers(publication: Publication) -> Iterator[PublishedTrack]:
    if isinstance(publication, SimulcastTrack):
        yield from (layer for layer in publication.layers if layer is not None)
    else:
        yield publication


def _runners(live: list["LiveRoom"]) -> Iterator["_ProcessorRunner"]:
    for room in live:
        for participant_id in list(room.media.peers):
            for kind in KINDS:
                yield from room.processors.runners(participant_id, kind)


def _variants(live: list["LiveRoom"]) -> Iterator["WatermarkVariant"]:
    for room in live:
        host = room.watermarks.host
        if host is not None:
            yield from host.variants


def _counted_objects(live: list["LiveRoom"]) -> Iterator[tuple[Any, Reader]]:
    for peer in _peers(live):
        for track in _tracks(peer):
            yield track, _read_track
        for downtrack in _downtracks(peer):
            yield downtrack, _read_downtrack
        yield peer.downlink, _read_downlink
    for runner in _runners(live):
        yield runner, _read_runner
    for variant in _variants(live):
        yield variant, _read_variant


def _read_track(track: PublishedTrack) -> dict[Key, float]:
    kind = track.kind
    summary = track.summary()
    nack = summary["nack"]
    fec = summary["uplink_fec"]
    return {
        ("consult_rtp_packets", ("uplink", kind)): summary["packets"],
        ("consult_nacked_packets", (kind,)): nack["nacked"],
        ("consult_nack_retries_withheld", (kind,)): nack["retries_withheld"],
        ("consult_uplink_recovered_packets", (kind, "nack")): nack["recovered"],
        ("consult_uplink_recovered_packets", (kind, "red")): summary["red_recovered"],
        ("consult_uplink_recovered_packets", (kind, "fec")): 0 if fec is None else fec["rebuilt"],
        ("consult_keyframe_requests_sent", ()): summary["keyframe_requests"],
    }


def _read_downtrack(downtrack: "DownTrack") -> dict[Key, float]:
    kind = downtrack.kind
    return {
        ("consult_rtp_packets", ("downlink", kind)): downtrack.packets_sent,
        ("consult_downlink_bytes", (kind,)): downtrack.octets_sent,
        ("consult_nacks_received", (kind,)): downtrack.nacks_received,
        ("consult_retransmissions", (kind,)): downtrack.retransmitted,
        ("consult_recovery_copies", (kind,)): downtrack.copies_sent,
        ("consult_fec_packets_sent", ()): downtrack.summary()["fec_packets"] if kind == "video" else 0,
        ("consult_keyframe_requests_received", ()): downtrack.plis_received,
    }


def _read_downlink(controller: Any) -> dict[Key, float]:
    return {("consult_video_pauses", ()): controller.pauses}


def _read_runner(runner: "_ProcessorRunner") -> dict[Key, float]:
    name = runner.processor.name
    return {
        ("consult_processor_frames", (name,)): runner.frames_processed,
        ("consult_processor_skipped_frames", (name,)): runner.frames_skipped,
        ("consult_processor_failures", (name,)): 0 if runner.failed is None else 1,
    }


def _read_variant(variant: "WatermarkVariant") -> dict[Key, float]:
    return {
        ("consult_watermark_frames", ("encoded",)): variant.frames_encoded,
        ("consult_watermark_frames", ("skipped",)): variant.frames_skipped,
        ("consult_watermark_frames", ("failed",)): variant.failures,
        ("consult_watermark_encode_seconds", ()): variant.busy_s,
    }
