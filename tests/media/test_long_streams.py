"""A forwarded stream keeps flowing past any number of sequence-number wraps.

Video stopped 32768 packets into every forwarded stream (the down-track rewriter's
16-bit comparison with the start point; 3.6 minutes of 720p): short tests never got
there. This pushes 70 000 packets (more than one wrap) through the real published
track and down-track, in process, in about a second.
"""

from __future__ import annotations

import pytest

from loadtest.bench_packet_path import run

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds


async def test_seventy_thousand_packets_all_reach_the_subscriber():
    result = await run(subscribers=1, packet_count=70_000)
    assert result["packets_in"] == 70_000
    assert result["packets_forwarded"] == 70_000, result


async def test_with_fec_every_media_packet_still_arrives_and_fec_numbers_fit_between_frames():
    # FEC packets take sequence numbers after each frame: across wraps of the down-track's
    # numbering, no media packet may be lost or renumbered onto an FEC number
    result = await run(subscribers=1, packet_count=70_000, fec_loss=0.3)
    assert result["packets_forwarded"] == 70_000, result
    assert result["fec_packets_sent"] > 70_000 * 0.4, result  # a group of 2 at 30 % loss
