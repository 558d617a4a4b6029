"""Numbers every packet sent to one subscriber, and remembers when each went.

With transport-cc negotiated (media/sdp_transport_cc.py) every RTP packet on the
subscriber's transport carries a transport-wide sequence number, written at the
moment it leaves (after the pacer, so the send time is the wire's), and the
subscriber's feedback says when each arrived. Matching the two gives the send and
arrival time of every packet, which the downlink estimate is built from.

The writer (media/rtp_writer.py) puts the extension first in the header, so it is
found and filled at a fixed offset without parsing the packet.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from typing import Optional

from .delay_based_estimate import PacketResult
from .twcc_feedback import TransportFeedback

# 12-byte fixed header, 4-byte one-byte-extension header, then the element's own byte.
ELEMENT_OFFSET = 16
SEQUENCE_SPACE = 1 << 16
# Feedback about a packet sent longer ago than this is about an earlier lap of the sequence.
MAX_FEEDBACK_AGE_S = 10.0
_u16 = struct.Struct("!H")


class TransportSequencer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # the send times' clock: the one feedback is judged on
        self.ext_id: Optional[int] = None
        self._element = -1  # the extension element's first byte: id, and length 2 (written as 1)
        self._next = 0
        self._send_times = [math.nan] * SEQUENCE_SPACE
        self._sizes = [0] * SEQUENCE_SPACE
        self.stamped = 0
        self.feedbacks = 0
        self.reported = 0  # packets the feedback said anything of
        self.unknown = 0  # packets feedback named that were never sent (or long ago)

    def enable(self, ext_id: int) -> None:
        """Every down-track of the transport writes the extension with this id."""
        if not 0 < ext_id < 15:
            raise ValueError(f"transport-cc extension id {ext_id} does not fit a one-byte header")
        self.ext_id = ext_id
        self._element = (ext_id << 4) | 1

    @property
    def enabled(self) -> bool:
        return self.ext_id is not None

    def stamp(self, data: bytes) -> bytes:
        """`data` with the next transport-wide number in its slot (unchanged without one), leaving now."""
        if len(data) <= ELEMENT_OFFSET + 2 or data[ELEMENT_OFFSET] != self._element or data[12] != 0xBE:
            return data
        seq = self._next
        self._next = (seq + 1) & 0xFFFF
        self._send_times[seq] = self._clock()
        self._sizes[seq] = len(data)
        self.stamped += 1
        return data[:ELEMENT_OFFSET + 1] + _u16.pack(seq) + data[ELEMENT_OFFSET + 3:]

    def results(self, feedback: TransportFeedback, now: float, overhead: int = 0) -> list[PacketResult]:
        """The packets a feedback describes, in sequence order: when each was sent, when it
        arrived (seconds on the subscriber's clock; None: lost) and its size plus `overhead`."""
        self.feedbacks += 1
        send_times, sizes = self._send_times, self._sizes
        results = []
        base = feedback.base_sequence
        for offset, arrival in enumerate(feedback.arrivals):
            seq = (base + offset) & 0xFFFF
            sent = send_times[seq]
            if not now - MAX_FEEDBACK_AGE_S <= sent <= now:  # NaN (never sent) fails too
                self.unknown += 1
                continue
            results.append(PacketResult(sent, None if arrival is None else arrival / 1e6, sizes[seq] + overhead))
        self.reported += len(results)
        return results

    def summary(self) -> dict:
        return {"ext_id": self.ext_id, "stamped": self.stamped, "feedbacks": self.feedbacks,
                "reported": self.reported, "unknown": self.unknown}
