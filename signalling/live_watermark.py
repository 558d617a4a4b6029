"""A live room's watermark policy: who sees marked video, and with which issued id.

`live_watermark` (RoomRecord) is
- "off": video is forwarded as sent;
- "page": forwarded as sent; every page draws its viewer's name and the time over the
  remote videos (static/js/viewer-mark.js). Cheap, and it deters casual recording, but
  the picture itself is clean: anyone who edits the page or takes the stream from the
  browser gets unmarked video;
- "server": the patient's video to each clinician, and each clinician's video to the
  patient, is decoded on the server and re-encoded per viewer with that viewer's
  visible label and invisible forensic id burned in (media/watermark_host.py).
  Clinician <-> clinician video and all audio stay forwarded.

In "server" rooms every subscriber gets a watermark id before any video reaches them,
issued into the audit log like an export's (watermark/registry.py, purpose "live",
target the room id) and reused if the same identity reconnects to the same live room.
If it cannot be issued (audit log or key unavailable) the join is refused: video is
never shown unmarked where the room asks for marks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from media.taps import DecodedFrameTap
from media.watermark_host import LiveMark, WatermarkHost
from recorder.watermark_store import open_registry
from watermark.embed import viewer_label
from watermark.registry import IssuedWatermark, WatermarkRegistry

from .registry import ParticipantRecord, RoomRecord

logger = logging.getLogger(__name__)

PATIENT_ROLE = "patient"


def marked_pair(publisher_role: Optional[str], viewer_role: Optional[str]) -> bool:
    """The patient's video to anyone else, and anyone else's video to the patient."""
    return (publisher_role == PATIENT_ROLE) != (viewer_role == PATIENT_ROLE)


class WatermarkUnavailable(Exception):
    pass


class LiveWatermarks:
    def __init__(self, record: RoomRecord, data_dir: Path, role_of: Callable[[str], Optional[str]]) -> None:
        self.mode = record.live_watermark
        self._room_id = record.id
        self._data_dir = data_dir
        self._role_of = role_of
        self._registry: Optional[WatermarkRegistry] = None  # opened at the first issue
        self._by_identity: dict[str, IssuedWatermark] = {}  # reused when the identity reconnects
        self._by_participant: dict[str, IssuedWatermark] = {}
        self.host: Optional[WatermarkHost] = None

    def start_host(self, shared_decoder: Callable[[str], Optional[DecodedFrameTap]]) -> Optional[WatermarkHost]:
        """The media plane's side, for "server" rooms (None otherwise: plain forwarding)."""
        if self.mode == "server":
            self.host = WatermarkHost(self.mark_for, shared_decoder=shared_decoder)
        return self.host

    async def admit(self, participant: ParticipantRecord) -> None:
        """Issue (or reuse) the viewer's watermark id before any video reaches them.
        Raises WatermarkUnavailable when it cannot be issued."""
        if self.mode != "server" or "subscribe" not in participant.permissions:
            return
        issued = self._by_identity.get(participant.identity)
        if issued is None:
            try:
                issued = await asyncio.get_running_loop().run_in_executor(None, self._issue, participant)
            except Exception as exc:  # RecorderError, KeyUnavailableError, OSError: all mean "no marks"
                logger.error("live watermark for %s in room %s could not be issued: %s",
                             participant.identity, self._room_id, exc)
                raise WatermarkUnavailable(str(exc)) from exc
            self._by_identity[participant.identity] = issued
        self._by_participant[participant.id] = issued

    def _issue(self, participant: ParticipantRecord) -> IssuedWatermark:
        """Blocking file I/O (key, audit log): runs in an executor."""
        if self._registry is None:
            self._registry = open_registry(self._data_dir, create=True)
        return self._registry.issue(viewer=participant.identity, viewer_name=participant.name, purpose="live",
                                    recording_id=self._room_id, actor=participant.identity,
                                    details={"participant": participant.id, "role": participant.role})

    def forget(self, participant_id: str) -> None:
        self._by_participant.pop(participant_id, None)

    def issued_to(self, participant_id: str) -> Optional[IssuedWatermark]:
        return self._by_participant.get(participant_id)

    def mark_for(self, publisher_id: str, subscriber_id: str) -> Optional[LiveMark]:
        """Called by the media plane for each (video track, subscriber): the viewer's mark, or None to forward."""
        if self.mode != "server" or not marked_pair(self._role_of(publisher_id), self._role_of(subscriber_id)):
            return None
        issued = self._by_participant.get(subscriber_id)
        if issued is None:
            raise LookupError(f"no watermark was issued to {subscriber_id}")
        assert self._registry is not None  # _issue opened it before issuing any id
        return LiveMark(key=self._registry.key, wm_id=issued.wm_id, label=self._label(issued))

    @staticmethod
    def _label(issued: IssuedWatermark) -> Callable[[int], str]:
        return viewer_label(issued.label(), issued.wm_id)  # the current UTC time on every frame

    def close(self) -> None:
        if self.host is not None:
            self.host.close()
