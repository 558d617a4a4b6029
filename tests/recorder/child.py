"""A separate process that records, for the crash and storage-failure tests.

    python -m tests.recorder.child forever DATA_DIR COUNTERS   # record until killed
    python -m tests.recorder.child forever-large DATA_DIR      # 8 MB frames until killed
    python -m tests.recorder.child disk-full DATA_DIR          # record until the disk is full, then carry on
    python -m tests.recorder.child unwritable DATA_DIR         # try to record into a directory we cannot write

`forever` publishes progress through a shared memory-mapped file (survives SIGKILL, no
pipe to block on): per track, the number of frames/events handed to the writer and the
number of segments written. The other modes print one JSON object with what happened.
"""

from __future__ import annotations

import json
import mmap
import shutil
import struct
import sys
from pathlib import Path

from recorder.audit import AuditLog
from recorder.errors import RecordingStorageError
from recorder.keys import KeyStore
from recorder.reader import RecordingReader
from recorder.writer import RecordingWriter

from . import synthetic

TRACK_IDS = ["events"] + [t.track_id for t in synthetic.tracks()]
COUNTER = struct.Struct("<QQ")  # handed over, segments written


def _writer(data_dir: Path, **kwargs) -> RecordingWriter:
    keys = KeyStore.open(data_dir, environ={}, create=True)
    audit = AuditLog.open(data_dir, environ={}, create=True)
    return RecordingWriter.start(data_dir, keys, room="r1", tracks=synthetic.tracks(), audit=audit,
                                 actor="doctor-1", **kwargs)


def forever(data_dir: Path, counters: Path) -> None:
    counters.write_bytes(b"\0" * COUNTER.size * len(TRACK_IDS))
    with open(counters, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 0)
    slot = {track_id: i * COUNTER.size for i, track_id in enumerate(TRACK_IDS)}
    writer = _writer(data_dir)

    def on_segment(track_id: str, index: int, final: bool) -> None:
        handed, _ = COUNTER.unpack_from(shared, slot[track_id])
        COUNTER.pack_into(shared, slot[track_id], handed, index + 1)

    writer.on_segment = on_segment
    for item in synthetic.session(10**9):
        track_id = item.track_id if isinstance(item, synthetic.SynthFrame) else "events"
        synthetic.write(writer, [item])
        handed, sealed = COUNTER.unpack_from(shared, slot[track_id])
        COUNTER.pack_into(shared, slot[track_id], handed + 1, sealed)


def forever_large(data_dir: Path) -> None:
    # 8 MB frames (one per segment): a write() long enough for SIGKILL to land inside it.
    from recorder.manifest import TrackInfo
    keys = KeyStore.open(data_dir, environ={}, create=True)
    writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=[TrackInfo("v", "video", "VP8", 90000)],
                                   audit=None, actor="test", fsync=False)
    frame = synthetic.payload(0, "v", 0, 8 * 1024 * 1024 - 100)
    print("recording", flush=True)
    for n in range(10**9):
        writer.write_frame("v", n * 33, n * 3000, True, frame)


def disk_full(data_dir: Path) -> dict:
    out: dict = {}
    writer = _writer(data_dir)
    out["id"] = writer.id
    handed = 0
    try:
        for item in synthetic.session(10**9):
            synthetic.write(writer, [item])
            handed += 1
    except RecordingStorageError as exc:
        out.update(error=str(exc), errno=exc.errno, handed=handed, failed=str(writer.failed))
    try:
        writer.write_frame("patient-audio", 10**8, 0, False, b"x")
        out["later_write"] = "accepted"
    except RecordingStorageError as exc:
        out["later_write"] = f"RecordingStorageError: {exc}"
    writer.close()  # a no-op after a failure, must not raise

    keys = KeyStore.open(data_dir, environ={})
    report = RecordingReader.open(data_dir, writer.id, keys).verify()
    out["verify"] = {"status": report.status, "problems": report.problems,
                     "frames": {t.track_id: t.frames for t in report.tracks}}

    # The process carries on: once space is freed, the next recording works.
    shutil.rmtree(data_dir / "recordings" / writer.id)
    second = _writer(data_dir)
    synthetic.write(second, synthetic.session(500, seed=1))
    second.close()
    out["after_freeing_space"] = RecordingReader.open(data_dir, second.id, keys).verify().status
    return out


def unwritable(data_dir: Path) -> dict:
    out: dict = {}
    try:
        _writer(data_dir)
        out["start"] = "started"
    except RecordingStorageError as exc:
        out["start"] = {"error": str(exc), "errno": exc.errno}
    out["left_behind"] = sorted(p.name for p in (data_dir / "recordings").iterdir())
    # Reading existing recordings needs no write access.
    keys = KeyStore.open(data_dir, environ={})
    statuses = {}
    for path in sorted((data_dir / "recordings").iterdir()):
        if path.is_dir():
            reader = RecordingReader.open(data_dir, path.name, keys)
            statuses[path.name] = [reader.verify().status, sum(1 for _ in reader.items())]
    out["existing"] = statuses
    return out


if __name__ == "__main__":
    mode, directory = sys.argv[1], Path(sys.argv[2])
    if mode == "forever":
        forever(directory, Path(sys.argv[3]))
    elif mode == "forever-large":
        forever_large(directory)
    else:
        print(json.dumps({"disk-full": disk_full, "unwritable": unwritable}[mode](directory)), flush=True)
