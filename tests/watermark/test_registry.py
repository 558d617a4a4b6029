"""The watermark registry (watermark/registry.py) in a real audit log: ids issued at random,
looked up, and an edited entry not believed."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.audit import AuditLog
from recorder.watermark_store import load_key
from watermark.registry import ISSUE_ACTION, WatermarkRegistry, format_id


def test_issue_and_lookup_in_the_audit_log(data_dir: Path, audit: AuditLog):
    registry = WatermarkRegistry(audit, load_key(data_dir, environ={}, create=True))
    issued = [registry.issue(viewer=f"expert-{i}", viewer_name=f"Dr. {i}", purpose="replay" if i % 2 else "export",
                             recording_id=f"rec-{i % 3}", actor="cli:ops") for i in range(30)]
    ids = [i.wm_id for i in issued]
    assert len(set(ids)) == 30 and all(0 < i < 2 ** 32 for i in ids)
    assert ids != sorted(ids)                                    # random, not sequential
    found = registry.lookup(issued[7].wm_id)
    assert found == issued[7]
    assert (found.viewer, found.viewer_name, found.purpose, found.recording_id, found.issued_by) == \
        ("expert-7", "Dr. 7", "replay", "rec-1", "cli:ops")
    assert registry.lookup(0x12345678) is None or 0x12345678 in ids
    entries = [e for e in audit.authentic_entries() if e["action"] == ISSUE_ACTION]
    assert len(entries) == 30 and entries[0]["details"]["watermark_id"] == format_id(ids[0])
    assert entries[0]["details"]["key_id"] == registry.key_id
    assert audit.verify().ok
    with pytest.raises(ValueError):
        registry.issue(viewer="x", purpose="broadcast", recording_id="r", actor="a")
    with pytest.raises(ValueError):
        registry.issue(viewer="", purpose="export", recording_id="r", actor="a")


def test_an_edited_registry_entry_is_not_believed(data_dir: Path, audit: AuditLog):
    registry = WatermarkRegistry(audit, load_key(data_dir, environ={}, create=True))
    a = registry.issue(viewer="expert-a", purpose="export", recording_id="r", actor="ops")
    b = registry.issue(viewer="expert-b", purpose="export", recording_id="r", actor="ops")
    lines = audit.path.read_bytes().splitlines(keepends=True)
    # pin b's watermark on someone else
    lines[1] = lines[1].replace(b'"viewer":"expert-b"', b'"viewer":"expert-c"')
    audit.path.write_bytes(b"".join(lines))
    assert registry.lookup(b.wm_id) is None                      # the edited entry fails its HMAC
    assert registry.lookup(a.wm_id) == a
    assert not audit.verify().ok
