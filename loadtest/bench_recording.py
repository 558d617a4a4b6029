"""Throughput of the segment writer (encrypt + append [+ fdatasync]) and of verification.

    python -m loadtest.bench_recording [--mb 512] [--dir /tmp] [--frame-bytes 6000]

Frames are pre-generated random payloads of a realistic encoded-video size, so the
figure is the writer's cost, not the generator's. Reported in MB/s of payload.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.reader import RecordingReader
from recorder.writer import RecordingWriter


def run(directory: Path, total_mb: int, frame_bytes: int, fsync: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        data_dir = Path(tmp)
        keys = KeyStore.open(data_dir, environ={}, create=True)
        writer = RecordingWriter.start(data_dir, keys, room="bench", tracks=[TrackInfo("v", "video", "VP8", 90000)],
                                       audit=None, actor="bench", fsync=fsync)
        pool = [os.urandom(frame_bytes) for _ in range(64)]
        frames = total_mb * 1024 * 1024 // frame_bytes
        wall, cpu = time.perf_counter(), time.process_time()
        for n in range(frames):
            writer.write_frame("v", n * 33, n * 3000, n % 60 == 0, pool[n % 64])
        writer.close()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        mb = frames * frame_bytes / 1e6
        reader = RecordingReader.open(data_dir, writer.id, keys)
        t = time.perf_counter()
        report = reader.verify()
        verify_s = time.perf_counter() - t
        assert report.status == "complete"
        return {"mb": mb, "segments": writer.segments_written, "write_mb_s": mb / wall, "write_cpu_mb_s": mb / cpu,
                "verify_mb_s": mb / verify_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=512, help="payload to write per run")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where to write (its file system is measured)")
    p.add_argument("--frame-bytes", type=int, default=6000, help="payload per frame (720p VP8 ~1.5 Mbit/s: ~6 KB)")
    a = p.parse_args()
    print(f"{a.mb} MB of {a.frame_bytes}-byte frames into {a.dir}, 64 KiB segments, AES-256-GCM")
    for fsync in (False, True):
        r = run(a.dir, a.mb, a.frame_bytes, fsync)
        print(f"  fdatasync per segment {'on ' if fsync else 'off'}: write {r['write_mb_s']:7.0f} MB/s "
              f"(CPU-bound limit {r['write_cpu_mb_s']:.0f} MB/s), {r['segments']} segments; "
              f"verify {r['verify_mb_s']:.0f} MB/s")


if __name__ == "__main__":
    main()
