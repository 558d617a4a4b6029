"""Tracing a leak: which viewer or export a leaked clip came from (the core of
`python -m recorder trace CLIP`, which recorder/watermark_store.py wires to the data directory).

Reads the clip (any container/codec FFmpeg decodes: WebM, MP4, MKV, MOV ...), averages
the luma of up to --max-seconds of it, looks for the forensic watermark under the
registry's key (watermark/detect.py) and looks the decoded id up in the registry
(watermark/registry.py). The command audits every trace (action "watermark.trace",
target = the clip's SHA-256).

Verdicts and exit codes
    0  identified: a payload with a valid CRC whose id this registry issued, or (when the
       payload cannot be read alone) one issued id whose codeword the clip singles out
       (watermark/match.py: it can find a mark too weak for the pilots alone)
    1  no watermark found
    3  a watermark is there but not identified: its payload could not be read (clip too
       short or too degraded), or it decodes to an id this registry never issued (another
       deployment's key, or a chance decode)
    2  error (unreadable clip, no key)

Confidence. For an identification, the chance that a clip *without* this viewer's mark
decodes to it: every decoding attempt passes the CRC-16 by chance with probability
2^-16, and a chance 32-bit value is one of the N issued ids with probability N / 2^32,
so P(false identification) <= attempts * 2^-16 * N / 2^32 (measured false positives on
clean clips: docs/BENCHMARKS.md). A matched id reports match.py's bound instead. `sync z` is
how strongly the pilots were found (~N(0,1) per hypothesis under no mark; >= 7.5 means a
mark is present whatever the payload).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .match import accepted, match_issued
from .registry import IssuedWatermark, WatermarkRegistry, format_id

EXIT_IDENTIFIED, EXIT_NOT_FOUND, EXIT_ERROR, EXIT_UNIDENTIFIED = 0, 1, 2, 3
DEFAULT_MAX_SECONDS = 60.0
CRC_CHANCE = 2.0 ** -16


class ClipError(Exception):
    """The clip cannot be traced: no video stream, or nothing in it decodes."""


@dataclass
class TraceResult:
    clip: str
    sha256: str
    frames: int
    size: tuple[int, int]
    verdict: str                         # identified | no watermark found | unidentified / unreadable watermark
    wm_id: Optional[int]
    issued: Optional[IssuedWatermark]
    false_match_p: Optional[float]       # identified only: upper bound of P(false identification)
    sync_z: float
    sync_p: float
    code_ber: float
    scale: tuple[float, float]           # clip period / nominal period for the clip's size
    registry_problems: list[str]
    method: str = ""                     # identified: "decoded" (payload and CRC read) or "matched" (see match.py)
    match_z: Optional[float] = None      # matched: the id's score above chance, in standard deviations

    @property
    def exit_code(self) -> int:
        exits = {"identified": EXIT_IDENTIFIED, "no watermark found": EXIT_NOT_FOUND}
        return exits.get(self.verdict, EXIT_UNIDENTIFIED)

    def as_dict(self) -> dict:
        return {"clip": self.clip, "sha256": self.sha256, "frames": self.frames, "size": list(self.size),
                "verdict": self.verdict, "watermark_id": format_id(self.wm_id) if self.wm_id is not None else None,
                "issued": None if self.issued is None else {
                    "viewer": self.issued.viewer, "viewer_name": self.issued.viewer_name,
                    "purpose": self.issued.purpose, "recording": self.issued.recording_id,
                    "issued_at": self.issued.issued_at, "issued_by": self.issued.issued_by,
                    "audit_seq": self.issued.seq},
                "false_match_probability": self.false_match_p, "confidence": self.confidence,
                "sync_z": round(self.sync_z, 2), "sync_p": self.sync_p,
                "code_bit_error_rate": None if self.code_ber != self.code_ber else round(self.code_ber, 4),
                "scale": [round(s, 4) for s in self.scale], "registry_problems": self.registry_problems,
                "method": self.method or None, "match_z": None if self.match_z is None else round(self.match_z, 2)}

    @property
    def confidence(self) -> Optional[float]:
        return None if self.false_match_p is None else 1.0 - self.false_match_p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_clip(path: Path, max_seconds: float = DEFAULT_MAX_SECONDS):
    """(accumulator, (width, height)) of the clip's first video stream, luma averaged."""
    import av

    from .detect import ClipAccumulator

    acc = ClipAccumulator()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = None
            for frame in container.decode(stream):
                t = frame.time
                if t is not None:
                    start = t if start is None else start
                    if t - start > max_seconds:
                        break
                acc.add(frame.to_ndarray(format="gray"))
    except av.FFmpegError as exc:
        if acc.frames == 0:
            raise ClipError(f"{path}: cannot decode: {exc}") from exc
    if acc.frames == 0:
        raise ClipError(f"{path}: no decodable video frame")
    h, w = acc.mean.shape
    return acc, (w, h)


def trace_clip(path: Path, registry: WatermarkRegistry, *, max_seconds: float = DEFAULT_MAX_SECONDS,
               check_log: bool = True) -> TraceResult:
    from .detect import detect_image
    from .pattern import CANONICAL_SIDE, Pattern

    acc, (w, h) = read_clip(path, max_seconds)
    pattern = Pattern(registry.key)
    det = detect_image(pattern, acc.mean, frames=acc.frames)
    nominal = pattern.tile * min(w, h) / CANONICAL_SIDE
    issued_ids = registry.issued()
    problems = registry.audit.verify().problems if check_log else []
    issued = issued_ids.get(det.wm_id) if det.wm_id is not None else None
    p_false = None
    wm_id, method, match_z = det.wm_id, "", None
    if issued is not None:
        verdict, method = "identified", "decoded"
        p_false = min(1.0, det.attempts * CRC_CHANCE * max(1, len(issued_ids)) / 2.0 ** 32)
    elif accepted(found := match_issued(det.soft, pattern.layout.scramble, issued_ids.keys())):
        assert found is not None  # accepted() says so
        verdict, method, match_z = "identified", "matched", found.z
        wm_id, issued, p_false = found.wm_id, issued_ids[found.wm_id], found.false_match_p
    elif det.wm_id is not None:
        verdict = "unidentified watermark"      # valid CRC, id never issued here
    elif det.present:
        verdict = "unreadable watermark"
    else:
        verdict = "no watermark found"
    return TraceResult(str(path), _sha256(path), acc.frames, (w, h), verdict, wm_id, issued, p_false,
                       det.sync_z, det.sync_p, det.code_ber, (det.period[0] / nominal, det.period[1] / nominal),
                       problems, method, match_z)


def format_report(r: TraceResult) -> str:
    lines = [f"clip {r.clip}: {r.frames} frames {r.size[0]}x{r.size[1]}, sha256 {r.sha256[:16]}…"]
    if r.verdict == "identified":
        i = r.issued
        assert i is not None and r.wm_id is not None  # trace_clip identifies only an id it found issued
        lines += [f"IDENTIFIED: watermark {format_id(r.wm_id)} issued to {i.viewer_name}"
                  + (f" ({i.viewer})" if i.viewer != i.viewer_name else "")
                  + f" for {i.purpose} of {i.recording_id} at {i.issued_at} by {i.issued_by} (audit entry {i.seq})",
                  f"confidence: 1 - {r.false_match_p:.1e} (chance that a clip without this mark is identified so: "
                  f"<= {r.false_match_p:.1e}); "
                  f"sync z {r.sync_z:.1f}, " + (
                      f"{100 * r.code_ber:.1f} % code-bit errors corrected" if r.method != "matched" else
                      f"payload too degraded to read alone: matched against the issued ids (z {r.match_z:.1f})")
                  + f", scale {r.scale[0]:.3f} x {r.scale[1]:.3f}"]
    elif r.verdict == "unidentified watermark":
        assert r.wm_id is not None  # a payload with a valid CRC was read
        lines += [f"a watermark with id {format_id(r.wm_id)} (valid CRC) that this registry never issued: "
                  "another deployment's key, or a chance decode (probability 2^-16 per clip)",
                  f"sync z {r.sync_z:.1f}"]
    elif r.verdict == "unreadable watermark":
        lines += [f"a watermark is present (sync z {r.sync_z:.1f}, chance p <= {r.sync_p:.1e}) but its payload could "
                  "not be read: try a longer or less degraded clip"]
    else:
        lines += [f"no watermark found (sync z {r.sync_z:.1f}: no more than chance)"]
    for problem in r.registry_problems:
        lines.append(f"WARNING: the audit log (registry) fails verification: {problem}")
    return "\n".join(lines)

