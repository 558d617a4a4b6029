"""Answering an offer that asks the load-test publisher for simulcast, and wiring its sender for it.

The server's `offer` message carries `simulcast` (RID, scale_down, max_bitrate per layer,
highest first) when its SDP asks for layers on the publisher's video section
(media/sdp_simulcast.py). A publisher with layer encodings prepared
(loadtest.simulcast_layers) then answers as Chrome does (loadtest.simulcast_sdp) and
its sender sends the layers (loadtest.simulcast_sender). Without `simulcast` in the
message, or without layers, the answer and the stream stay as they were.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional

from aiortc import RTCPeerConnection, RTCSessionDescription

from loadtest.publisher import StampedClipTrack
from loadtest.simulcast_layers import LayerClip, layers_for_offer
from loadtest.simulcast_sdp import add_simulcast_to_answer, offered_simulcast
from loadtest.simulcast_sender import SimulcastPlan, send_simulcast


def plan_simulcast(offer: dict[str, Any], prepared: Sequence[LayerClip], frame_count: int) -> Optional[SimulcastPlan]:
    """The layers to answer an offer message with, or None (no simulcast asked for, or none possible)."""
    wanted = {layer["rid"]: layer for layer in offer.get("simulcast") or [] if isinstance(layer, dict)}
    mid = (offer.get("publish") or {}).get("video")
    offered = offered_simulcast(offer.get("sdp", "")).get(mid) if mid is not None else None
    if not wanted or offered is None or not prepared:
        return None
    rids = tuple(rid for rid in offered.rids if rid in wanted)  # the SDP's order (highest first from our server)
    if not rids or any(len(layer.clip.packets) != frame_count for layer in prepared):
        return None
    layers, notes = layers_for_offer(prepared, [float(wanted[rid].get("scale_down") or 1) for rid in rids], rids)
    for rid, layer in zip(rids, layers):
        cap = wanted[rid].get("max_bitrate")
        if cap and layer.bitrate > cap * 1.05:
            notes.append(f"layer {rid}: the clip sends {layer.bitrate / 1000:.0f} kbit/s, over the offer's "
                         f"max_bitrate {cap / 1000:.0f} kbit/s (a fixed encoding cannot be capped)")
    return SimulcastPlan(offered=offered, rids=rids, layers=tuple(layers), notes=tuple(notes))


def answer_with_simulcast(pc: RTCPeerConnection, plan: Callable[[], Optional[SimulcastPlan]],
                          chosen: dict[str, SimulcastPlan]) -> Callable[[], Awaitable[RTCSessionDescription]]:
    """A createAnswer for `pc` that answers the current offer's `plan()` (None: unchanged) and makes the
    publishing sender send its layers. Install it before the first setLocalDescription (aiortc starts
    senders there); it wraps whatever createAnswer `pc` has. `chosen` collects mid -> plan."""
    create_answer = pc.createAnswer

    async def create() -> RTCSessionDescription:
        answer = await create_answer()
        current = plan()
        mid = current.offered.mid if current is not None else None
        transceiver = next((t for t in pc.getTransceivers() if t.mid == mid and t.kind == "video"), None)
        if (current is not None and mid is not None and mid not in chosen and transceiver is not None
                and isinstance(transceiver.sender.track, StampedClipTrack)):
            chosen[mid] = current
            send_simulcast(transceiver.sender, current)  # acts when the sender starts
        if not chosen:
            return answer
        # a sender streams its layers from its start to its end: later answers keep saying so
        return RTCSessionDescription(sdp=with_simulcast(answer.sdp, chosen), type=answer.type)

    return create


def with_simulcast(sdp: str, chosen: dict[str, SimulcastPlan]) -> str:
    """`sdp` (an answer, or aiortc's rebuilt local description) with each chosen section's simulcast lines."""
    for current in chosen.values():
        sdp = add_simulcast_to_answer(sdp, current.offered, current.rids)
    return sdp

