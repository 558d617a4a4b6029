"""A forwarded stream keeps flowing past any number of sequence-number wraps.

Video stopped 32768 packets into every forwarded stream (the down-track rewriter's
16-bit comparison with the start point; 3.6 minutes of 720p): short tests never got
there. This pushes 70 000 packets (more than one wrap) through the real published
track and down-track, in process, in about a second.
"""

from __future__ import annotations

import pytest

from loadtest.forwarding_rig import ForwardingRig, plain_stream, vp8_packets

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds


async def forward(packet_count: int, fec_loss: float | None = None) -> dict[str, int]:
    """`packet_count` packets of looped 720p VP8 through one published track to one subscriber."""
    rig = await ForwardingRig.start(subscribers=1, fec_loss=fec_loss)
    await rig.feed(plain_stream(vp8_packets(), packet_count))
    return await rig.stop()


async def test_seventy_thousand_packets_all_reach_the_subscriber():
    result = await forward(70_000)
    assert result["packets_in"] == 70_000
    assert result["packets_forwarded"] == 70_000, result


async def test_with_fec_every_media_packet_still_arrives_and_fec_numbers_fit_between_frames():
    # FEC packets take sequence numbers after each frame: across wraps of the down-track's
    # numbering, no media packet may be lost or renumbered onto an FEC number
    result = await forward(70_000, fec_loss=0.3)
    assert result["packets_forwarded"] == 70_000, result
    assert result["fec_packets_sent"] > 70_000 * 0.4, result  # a group of 2 at 30 % loss
