"""Per-packet cost of the forwarding path: PublishedTrack -> DownTracks -> SRTP.

Feeds real VP8 RTP packets (encoded once with aiortc's encoder, 720p) through a
PublishedTrack with N subscribers' DownTracks whose transport does real SRTP
protection but no socket I/O (loadtest.forwarding_rig), so the figure is the server's
own per-packet work (parse excluded: aiortc's router parses once before us). Used for
before/after comparisons of media-path changes:

    python -m loadtest.bench_packet_path --subscribers 2 --packets 20000 [--transport-cc]

`--uplink-fec-loss L` makes the publisher's uplink Chrome's RED (every VP8 packet
wrapped, ULPFEC after frames at the rate our FEC sender uses for loss L; 0: RED
without FEC), arriving as the transport hands it over (media.aiortc_bridge.WirePacket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Optional

from loadtest.forwarding_rig import ForwardingRig, plain_stream, red_uplink_stream, vp8_packets


async def run(subscribers: int, packet_count: int, fec_loss: Optional[float] = None,
              uplink_fec_loss: Optional[float] = None, transport_cc: bool = False) -> dict:
    """`fec_loss`: subscribers negotiated video RED/ULPFEC and report this loss (None: plain VP8).
    `uplink_fec_loss`: the publisher sends RED, with ULPFEC as for this loss (None: plain VP8).
    `transport_cc`: subscribers negotiated transport-cc."""
    template = vp8_packets()
    rig = await ForwardingRig.start(subscribers, fec_loss=fec_loss, uplink_red=uplink_fec_loss is not None,
                                    transport_cc=transport_cc)

    # pre-build the input stream so the timed loop measures only forwarding
    stream = plain_stream(template, packet_count)
    if uplink_fec_loss is not None:
        stream = red_uplink_stream(stream, uplink_fec_loss)

    started = time.process_time()
    await rig.feed(stream)
    elapsed = time.process_time() - started
    counts = await rig.stop()
    forwarded = counts["packets_forwarded"]
    return {
        "subscribers": subscribers,
        "packets_in": len(stream),
        "packets_forwarded": forwarded,
        "cpu_s": round(elapsed, 4),
        "us_per_packet_in": round(elapsed / len(stream) * 1e6, 2),
        "us_per_packet_forwarded": round(elapsed / max(1, forwarded) * 1e6, 2),
        "fec_loss": fec_loss,
        "fec_packets_sent": counts["fec_packets_sent"],
        "uplink_fec_loss": uplink_fec_loss,
        "uplink_fec_packets": counts["uplink_fec_packets"],
        "transport_cc": transport_cc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per setting")
    parser.add_argument("--fec-loss", type=float, default=None,
                        help="subscribers negotiated video RED/ULPFEC and report this loss fraction (e.g. 0.3)")
    parser.add_argument("--uplink-fec-loss", type=float, default=None,
                        help="the publisher sends RED with ULPFEC as for this loss fraction (0: RED, no FEC)")
    parser.add_argument("--transport-cc", action="store_true",
                        help="subscribers negotiated transport-cc (each packet numbered as it leaves)")
    args = parser.parse_args()
    results = []
    for n in args.subscribers:
        best = min((asyncio.run(run(n, args.packets, args.fec_loss, args.uplink_fec_loss, args.transport_cc))
                    for _ in range(args.repeat)),
                   key=lambda r: r["cpu_s"])
        results.append(best)
        print(json.dumps(best), flush=True)


if __name__ == "__main__":
    main()
