"""RTX unwrap (RFC 4588): a retransmission turned back into the packet it repeats.

One published track's receive-side stage. A browser resends a packet we NACKed on its RTX
stream: its own SSRC, its own payload type (whose fmtp `apt` names the payload type it
repairs), and the original sequence number (OSN) in the first two payload bytes. Unwrapped,
it is the lost packet again, so NACK bookkeeping, FEC and the subscribers take it as that
packet. An RTX packet with nothing after the OSN carries no media: most are the
padding-only probes browsers send to measure the uplink.
"""

from __future__ import annotations

from typing import Optional

from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket, unwrap_rtx


class RtxUnwrapper:
    def __init__(self, parameters: RTCRtpReceiveParameters) -> None:
        codecs = {c.payloadType: c for c in parameters.codecs if c.payloadType is not None}
        # Every negotiated RTX payload type: the track tests membership here once per packet
        # (cheaper than looking at the codec's name), and never forwards these as they come.
        self.payload_types: frozenset[int] = frozenset(pt for pt, c in codecs.items() if is_rtx(c))
        # ... and what each unwraps to, where its apt names a negotiated codec (others are dropped)
        self._apt: dict[int, int] = {}
        for pt in self.payload_types:
            apt = codecs[pt].parameters.get("apt")
            if isinstance(apt, int) and apt in codecs:
                self._apt[pt] = apt
        # RTX SSRC -> media SSRC where the SDP pairs them (ssrc-group FID); a simulcast layer's
        # are not signalled, and its retransmissions repair the layer's current SSRC.
        self._media_ssrc = {e.rtx.ssrc: e.ssrc for e in parameters.encodings if e.rtx is not None}

    def unwrap(self, packet: RtpPacket, media_ssrc: Optional[int]) -> Optional[RtpPacket]:
        """The packet `packet` retransmits, on its media SSRC (`media_ssrc`, the stream's
        current one, where the RTX SSRC is not signalled). None when there is nothing to
        forward: a padding-only probe or any payload too short for the OSN, an apt that was
        not negotiated, no media SSRC yet (a probe before the stream's first packet). An OSN
        with nothing after it is padding too: forwarded, it would be an empty packet under a
        real sequence number."""
        apt = self._apt.get(packet.payload_type)
        ssrc = self._media_ssrc.get(packet.ssrc, media_ssrc)
        if apt is None or ssrc is None or len(packet.payload) <= 2:  # (the OSN)
            return None
        return unwrap_rtx(packet, payload_type=apt, ssrc=ssrc)
