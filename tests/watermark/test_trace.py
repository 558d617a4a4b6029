"""The trace core (watermark/trace.py): verdicts, exit codes and the report's wording, and a
leak too degraded to decode traced by matching. The whole path, export -> leak ->
`python -m recorder trace`, is tests/recorder/test_watermark_store.py."""

from __future__ import annotations

import secrets

from loadtest.synthetic_video import decode, encode
from loadtest.watermark_leak import detect_file, export_clip
from watermark import ecc
from watermark.match import MAX_FALSE_MATCH_P
from watermark.pattern import Pattern
from watermark.registry import IssuedWatermark, WatermarkRegistry
from watermark.trace import TraceResult, format_report, trace_clip


def test_verdicts_exit_codes_and_wording():
    who = IssuedWatermark(0x1A2B3C4D, "expert-ana", "Dr. Ana", "replay", "rec-1", "2025-01-01T00:00:00Z", "ops", "k", 7)
    base = dict(clip="c.mp4", sha256="0" * 64, frames=10, size=(640, 360), sync_z=5.0, sync_p=1.0, code_ber=0.01,
                scale=(1.0, 1.0), registry_problems=[])
    cases = [
        (TraceResult(verdict="identified", wm_id=who.wm_id, issued=who, false_match_p=1e-15, **base), 0,
         "IDENTIFIED: watermark 1a2b3c4d issued to Dr. Ana (expert-ana) for replay of rec-1"),
        (TraceResult(verdict="no watermark found", wm_id=None, issued=None, false_match_p=None, **base), 1,
         "no watermark found"),
        (TraceResult(verdict="unreadable watermark", wm_id=None, issued=None, false_match_p=None, **base), 3,
         "payload could not be read"),
        (TraceResult(verdict="unidentified watermark", wm_id=5, issued=None, false_match_p=None, **base), 3,
         "never issued"),
    ]
    for result, code, text in cases:
        assert result.exit_code == code
        assert text in format_report(result)
    tampered = TraceResult(verdict="identified", wm_id=who.wm_id, issued=who, false_match_p=1e-15,
                           **(base | {"registry_problems": ["line 3: hash mismatch"]}))
    assert "WARNING: the audit log (registry) fails verification" in format_report(tampered)
    matched = TraceResult(verdict="identified", wm_id=who.wm_id, issued=who, false_match_p=3e-9,
                          **(base | {"code_ber": float("nan")}), method="matched", match_z=7.1)
    assert matched.exit_code == 0 and matched.as_dict()["method"] == "matched"
    assert "matched against the issued ids (z 7.1)" in format_report(matched)


def test_a_leak_too_degraded_to_decode_is_traced_by_matching(audit, tmp_path, monkeypatch):
    """1.5 s of an export re-encoded with H.264 at 200 kbit/s: the pilots alone are below the
    presence threshold and the Viterbi decoder gets the payload wrong (a quarter of the code
    bits are), but of the 301 ids this registry issued only the leaker's stands out. (No
    visible label: it shows the minute, and the clip must be the same on every run.)"""
    key, wm_id, fps = bytes(range(32)), 0x13572468, 12
    registry = WatermarkRegistry(audit, key)
    for _ in range(300):
        registry.issue(viewer="someone", purpose="replay", recording_id="rec-1", actor="ops")
    monkeypatch.setattr(secrets, "randbits", lambda _bits: wm_id)   # the leaker's id, as this test marked it
    leaker = registry.issue(viewer="expert-ana", purpose="export", recording_id="rec-1", actor="ops")
    monkeypatch.undo()
    frames = list(decode(export_clip(key, wm_id, 640, 360, 4, fps, visible=False).data))[: 18]
    clip = tmp_path / "leak.mp4"
    clip.write_bytes(encode(frames, "h264", 200_000, fps))
    pattern = Pattern(key)
    alone = detect_file(pattern, clip.read_bytes())
    assert alone.wm_id != wm_id and alone.ber_against(ecc.encode_payload(wm_id, pattern.layout.scramble)) > 0.2
    result = trace_clip(clip, registry)
    assert result.verdict == "identified" and result.method == "matched" and result.issued == leaker
    assert result.false_match_p is not None and result.false_match_p <= MAX_FALSE_MATCH_P
    assert result.match_z is not None and result.match_z > 6 and result.exit_code == 0
