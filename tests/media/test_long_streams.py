"""A forwarded stream keeps flowing past any number of sequence-number wraps.

Video stopped 32768 packets into every forwarded stream (the down-track rewriter's
16-bit comparison with the start point; 3.6 minutes of 720p): short tests never got
there. This pushes 70 000 packets (more than one wrap) through the real published
track and down-track, in process, in about a second.
"""

from __future__ import annotations

from loadtest.bench_packet_path import run


async def test_seventy_thousand_packets_all_reach_the_subscriber():
    result = await run(subscribers=1, packet_count=70_000)
    assert result["packets_in"] == 70_000
    assert result["packets_forwarded"] == 70_000, result
