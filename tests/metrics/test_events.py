"""Event histograms: join stages, and every recording segment a writer seals (bytes, latency)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from metrics.events import JoinTimes, RecordingSegments
from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.writer import RecordingWriter


def test_join_stages_are_observed_apart_and_exist_before_any_join():
    registry = CollectorRegistry()
    joins = JoinTimes(registry)
    assert registry.get_sample_value("consult_join_seconds_count", {"stage": "connected"}) == 0
    joins.observe("joined", 0.02)
    joins.observe("connected", 0.8)
    joins.observe("connected", 1.5)
    assert registry.get_sample_value("consult_join_seconds_count", {"stage": "joined"}) == 1
    assert registry.get_sample_value("consult_join_seconds_count", {"stage": "connected"}) == 2
    assert registry.get_sample_value("consult_join_seconds_bucket", {"stage": "connected", "le": "1.0"}) == 1


def test_every_sealed_segment_is_counted_with_its_bytes_while_observing(tmp_path):
    registry = CollectorRegistry()
    segments = RecordingSegments(registry)
    data_dir = tmp_path / "data"
    keys = KeyStore.open(data_dir, environ={}, create=True)

    def record(frames: int) -> RecordingWriter:
        writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=[TrackInfo("p-video", "video", "VP8", 90000)],
                                       audit=None, actor="test", fsync=False)
        for i in range(frames):
            writer.write_frame("p-video", i * 40, i * 3600, i == 0, bytes(3000))
        writer.close()
        return writer

    segments.start()
    try:
        written = record(100)  # 300 kB in 4 s of timestamps: several segments
    finally:
        segments.stop()
    record(10)  # not observed any more

    assert registry.get_sample_value("consult_recording_segments_total") == written.segments_written > 2
    assert registry.get_sample_value("consult_recording_bytes_total") == written.bytes_written
    assert registry.get_sample_value("consult_recording_seal_seconds_count") == written.segments_written
    assert registry.get_sample_value("consult_recording_seal_seconds_sum") > 0
