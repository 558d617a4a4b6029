"""The frame-processor interface and the host that runs processors for a room.

A processor declares what it wants (the track of which role, decoded at what
rate and size) and produces events for participants. The host decodes each
track once however many processors want it (one DecodedFrameTap at the highest
rate asked for), gives every processor its own worker thread with a one-frame
slot that always holds the newest image (a slow processor skips frames, it
never queues them or delays anyone else), and routes emitted events back to the
event loop. A processor that raises is stopped and reported; the call goes on.

Roles are the control plane's business: the host is told each participant's
role and which roles should receive an event, and never imports signalling/.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Optional, Protocol

import cv2
import numpy as np

from .room import MediaRoom
from .taps import DecodedFrameTap

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedInput:
    """Decoded BGR frames of one role's track, at most `fps` per second, resized to `size` (w, h)."""

    role: str
    kind: str = "video"
    fps: float = 10.0
    size: Optional[tuple[int, int]] = None


@dataclass
class ProcessorEvent:
    """What a processor emits: a payload for the participants holding `to_roles` (None: everyone)."""

    data: dict
    to_roles: Optional[frozenset[str]] = None


class ProcessorContext(Protocol):
    participant_id: str

    def emit(self, data: dict, to_roles: Optional[set[str]] = None) -> None: ...

    def keep(self, kind: str, data: bytes, meta: dict) -> None:
        """Hand a result to the consultation record (e.g. a captured still), not to participants."""

    def request_keyframe(self) -> None: ...


class FrameProcessor(Protocol):
    """Implemented by processors. `process` runs in the processor's own worker thread."""

    name: str
    wants: DecodedInput

    def start(self, context: ProcessorContext) -> None: ...

    def process(self, image: np.ndarray, timestamp: float) -> None: ...

    def command(self, command: dict) -> None:
        """A command from the control plane (e.g. start a capture), run in the worker between frames."""

    def close(self) -> None: ...


EventSink = Callable[[str, str, ProcessorEvent], None]  # (processor name, participant id, event)
KeepSink = Callable[[str, str, str, bytes, dict], None]  # (processor, participant, kind, data, meta)


@dataclass
class _Context:
    participant_id: str
    # what these return is ignored (the loop's call_soon_threadsafe handles)
    _emit: Callable[[ProcessorEvent], object]
    _keep: Callable[[str, bytes, dict], object]
    _request_keyframe: Callable[[], object]

    def emit(self, data: dict, to_roles: Optional[set[str]] = None) -> None:
        self._emit(ProcessorEvent(data, frozenset(to_roles) if to_roles is not None else None))

    def keep(self, kind: str, data: bytes, meta: dict) -> None:
        self._keep(kind, data, meta)

    def request_keyframe(self) -> None:
        self._request_keyframe()


class _ProcessorRunner:
    """One processor on one participant's track: a worker thread and a newest-frame slot."""

    def __init__(self, processor: FrameProcessor, participant_id: str, loop: asyncio.AbstractEventLoop,
                 sink: EventSink, keep: KeepSink, request_keyframe: Callable[[], None],
                 on_failure: Callable[[str], None]) -> None:
        self.processor = processor
        self.participant_id = participant_id
        self._loop = loop
        self._slot: Optional[tuple[np.ndarray, float]] = None
        self._commands: list[dict] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._next_at = 0.0
        self._on_failure = on_failure
        self.frames_processed = 0
        self.frames_skipped = 0
        self.failed: Optional[str] = None
        context = _Context(
            participant_id,
            lambda event: loop.call_soon_threadsafe(sink, processor.name, participant_id, event),
            lambda kind, data, meta: loop.call_soon_threadsafe(keep, processor.name, participant_id, kind, data, meta),
            lambda: loop.call_soon_threadsafe(request_keyframe),
        )
        processor.start(context)
        self._thread = threading.Thread(target=self._work, name=f"proc-{processor.name}", daemon=True)
        self._thread.start()

    def offer(self, image: np.ndarray, timestamp: float) -> None:
        """Called from the decoder thread: keep only the newest frame, at the processor's rate."""
        wants = self.processor.wants
        if timestamp < self._next_at:
            return
        self._next_at = timestamp + 1.0 / wants.fps
        if wants.size is not None and (image.shape[1], image.shape[0]) != wants.size:
            image = cv2.resize(image, wants.size, interpolation=cv2.INTER_AREA)
        with self._cond:
            if self._slot is not None:
                self.frames_skipped += 1
            self._slot = (image, timestamp)
            self._cond.notify()

    def command(self, command: dict) -> None:
        with self._cond:
            self._commands.append(command)
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._commands and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                commands, self._commands = self._commands, []
                frame, self._slot = self._slot, None
            try:
                for command in commands:
                    self.processor.command(command)
                if frame is not None:
                    self.processor.process(*frame)
                    self.frames_processed += 1
            except Exception as exc:
                logger.exception("processor %s failed on %s; stopped", self.processor.name, self.participant_id)
                self.failed = f"{type(exc).__name__}: {exc}"
                self._loop.call_soon_threadsafe(self._on_failure, self.failed)
                return

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)
        try:
            self.processor.close()
        except Exception:
            logger.exception("processor %s failed to close", self.processor.name)


@dataclass
class _TrackProcessing:
    tap: DecodedFrameTap
    runners: list[_ProcessorRunner] = field(default_factory=list)


class ProcessorFactory(Protocol):
    """A processor class: `wants` is a class attribute."""

    @property
    def wants(self) -> DecodedInput: ...

    def __call__(self) -> FrameProcessor: ...


class ProcessorHost:
    """Runs a room's enabled processors on the tracks they want."""

    def __init__(self, media: MediaRoom, factories: Mapping[str, ProcessorFactory], sink: EventSink,
                 on_failure: Callable[[str, str, str], None] = lambda name, pid, error: None,
                 keep: KeepSink = lambda name, pid, kind, data, meta: None) -> None:
        self._media = media
        self._factories = factories
        self._sink = sink
        self._keep = keep
        self._on_failure = on_failure
        self._tracks: dict[tuple[str, str], _TrackProcessing] = {}

    def participant_joined(self, participant_id: str, role: str) -> None:
        wanted = [(name, make) for name, make in self._factories.items() if make.wants.role == role]
        by_kind: dict[str, list] = {}
        for name, make in wanted:
            by_kind.setdefault(make.wants.kind, []).append((name, make))
        for kind, entries in by_kind.items():
            self._start(participant_id, kind, entries)

    def _start(self, participant_id: str, kind: str, entries: list) -> None:
        loop = asyncio.get_running_loop()
        fps = max(make.wants.fps for _, make in entries)
        key = (participant_id, kind)
        request_keyframe = lambda: self._request_keyframe(participant_id, kind)  # noqa: E731
        tap = DecodedFrameTap(request_keyframe=request_keyframe, fps=fps, name=f"decode-{participant_id}")
        processing = _TrackProcessing(tap)
        for name, make in entries:

            def on_failure(error: str, name: str = name) -> None:
                self._on_failure(name, participant_id, error)

            runner = _ProcessorRunner(make(), participant_id, loop, self._sink, self._keep, request_keyframe,
                                      on_failure)
            processing.runners.append(runner)
            tap.add_consumer(runner.offer)
        self._tracks[key] = processing
        self._media.add_tap(participant_id, kind, tap)

    def _request_keyframe(self, participant_id: str, kind: str) -> None:
        peer = self._media.peers.get(participant_id)
        track = peer.published.get(kind) if peer else None
        if track is not None:
            track.request_keyframe()

    def command(self, processor: str, command: dict, participant_id: Optional[str] = None) -> int:
        """Send a command to that processor (on one participant, or all); returns how many got it."""
        sent = 0
        for (pid, _), processing in self._tracks.items():
            for runner in processing.runners:
                if runner.processor.name == processor and participant_id in (None, pid) and runner.failed is None:
                    runner.command(command)
                    sent += 1
        return sent

    def running(self, processor: str) -> bool:
        """Whether that processor still runs on anyone's track."""
        return any(r.processor.name == processor and r.failed is None
                   for processing in self._tracks.values() for r in processing.runners)

    def decoded_tap(self, participant_id: str, kind: str = "video") -> Optional[DecodedFrameTap]:
        """The decoder already running on that track, for others to share (live watermarking)."""
        processing = self._tracks.get((participant_id, kind))
        return processing.tap if processing else None

    def runners(self, participant_id: str, kind: str = "video") -> list[_ProcessorRunner]:
        processing = self._tracks.get((participant_id, kind))
        return list(processing.runners) if processing else []

    async def participant_left(self, participant_id: str) -> None:
        for key in [k for k in self._tracks if k[0] == participant_id]:
            processing = self._tracks.pop(key)
            self._media.remove_tap(participant_id, key[1], processing.tap)

            def close_runners() -> None:
                for runner in processing.runners:
                    runner.close()

            # joining worker threads must not block the event loop
            await asyncio.get_running_loop().run_in_executor(None, close_runners)

    async def close(self) -> None:
        for participant_id in {k[0] for k in self._tracks}:
            await self.participant_left(participant_id)
