"""A fixed-size ring of recently sent packets, for answering NACKs.

Sized in packets, not time: at 720p ~1.5 Mbit/s video runs ~150 packets/s, so
1024 entries keep several seconds, far beyond any useful retransmission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(slots=True)
class SentPacket:
    sequence_number: int
    timestamp: int
    marker: int
    payload_type: int
    payload: bytes
    audio_level: Optional[tuple[bool, int]] = None
    sent_at: float = 0.0  # monotonic time of the first transmission
    nacked: bool = False  # the subscriber has asked for it at least once
    late: bool = False  # sent after later packets (recovered upstream): the subscriber was NACKing it


class PacketCache:
    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._slots: list[Optional[SentPacket]] = [None] * size
        self.newest_sequence_number: Optional[int] = None  # of the last packet put

    @property
    def size(self) -> int:
        return self._size

    def put(self, packet: SentPacket) -> None:
        self._slots[packet.sequence_number % self._size] = packet
        self.newest_sequence_number = packet.sequence_number

    def get(self, sequence_number: int) -> Optional[SentPacket]:
        packet = self._slots[sequence_number % self._size]
        if packet is not None and packet.sequence_number == sequence_number:
            return packet
        return None

    def clear(self) -> None:
        self._slots = [None] * self._size
        self.newest_sequence_number = None
