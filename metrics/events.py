"""Histograms of events, observed once per event: joins and recording segments.

A join is timed by the signalling session (signalling/session.py `JoinTimer`) in two
stages: `joined` (the join message to the `joined` answer: token, room, media peer) and
`connected` (to the participant's media connection, ICE + DTLS, first connected). A
recording segment is timed by the recorder's writer thread (recorder/writer.py
`observe_segments`): the seal's latency (encrypt, append, fdatasync) and the bytes it
wrote. The recorder's hook is process-wide: with several apps in one process (tests),
each counts every recording.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from recorder.writer import observe_segments, stop_observing_segments

JOIN_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
SEAL_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
JOIN_STAGES = ("joined", "connected")


class JoinTimes:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram("consult_join_seconds", "Time from a participant's join message to `joined` "
                                   "sent (stage joined) and to its media connection connected (stage connected)",
                                   ["stage"], buckets=JOIN_BUCKETS_S, registry=registry)
        for stage in JOIN_STAGES:
            self.histogram.labels(stage)  # both series from the start, at zero

    def observe(self, stage: str, seconds: float) -> None:
        """A signalling.session.JoinTimer."""
        self.histogram.labels(stage).observe(seconds)


class RecordingSegments:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.seal_seconds = Histogram("consult_recording_seal_seconds", "Time to seal and store one recording "
                                      "segment (encrypt, append, fdatasync)", buckets=SEAL_BUCKETS_S,
                                      registry=registry)
        self.bytes = Counter("consult_recording_bytes", "Bytes of sealed recording segments written",
                             registry=registry)
        self.segments = Counter("consult_recording_segments", "Recording segments sealed", registry=registry)
        self._observing = False

    def observe(self, seconds: float, nbytes: int) -> None:
        """A recorder.writer.SegmentObserver (called in writer threads: prometheus_client's metrics are
        thread-safe)."""
        self.seal_seconds.observe(seconds)
        self.bytes.inc(nbytes)
        self.segments.inc()

    def start(self) -> None:
        if not self._observing:
            observe_segments(self.observe)
            self._observing = True

    def stop(self) -> None:
        if self._observing:
            stop_observing_segments(self.observe)
            self._observing = False
