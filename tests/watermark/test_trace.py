"""The trace core (watermark/trace.py): verdicts, exit codes and the report's wording. The
whole path, export -> leak -> `python -m recorder trace`, is tests/recorder/test_watermark_store.py."""

from __future__ import annotations

from watermark.registry import IssuedWatermark
from watermark.trace import TraceResult, format_report


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
