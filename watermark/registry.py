"""The watermark registry: which 32-bit watermark id was issued to whom, for what.

Every replay or export that shows a recording to someone gets its own watermark id,
issued here before the first frame is marked. The registry is the audit log itself:
an issue is an entry

    action "watermark.issue", target <recording id>,
    details {"watermark_id": "1a2b3c4d", "viewer": <identity>, "viewer_name": <name>,
             "purpose": "export" | "replay" | "live", "key_id": <fingerprint of the key>}

so it is as tamper-evident as everything else there (HMAC chain, MACed head): a
leaked clip cannot be pinned on someone by editing the registry, nor an entry quietly
removed, without `audit verify` noticing. Ids are random (never sequential), unique
in the log and never 0, so two issued ids differ in ~16 of their 32 bits and a clip
decodes to an issued id by chance with probability ~ issued / 2^32 (after the
payload's CRC-16 has already rejected all but 2^-16 of chance decodes).

The registry works on any log with the audit log's `append`, `authentic_entries` and
`verify` (IssueLog); the product's is recorder.audit.AuditLog, opened together with the
pattern key by recorder.watermark_store.open_registry. The pattern key: embedding and
tracing share a secret whose public fingerprint (`key_id`) is recorded at every issue;
where it is kept is recorder/watermark_store.py's business.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Protocol

ISSUE_ACTION = "watermark.issue"
TRACE_ACTION = "watermark.trace"
PURPOSES = ("export", "replay", "live")


def format_id(wm_id: int) -> str:
    return f"{wm_id:08x}"


def parse_id(text: str) -> int:
    value = int(text, 16)
    if not 0 < value < 1 << 32:
        raise ValueError(f"not a watermark id: {text!r}")
    return value


class LogCheck(Protocol):
    @property
    def problems(self) -> list[str]: ...      # empty: the log verifies


class IssueLog(Protocol):
    """The tamper-evident, append-only log the registry keeps its issues in (recorder.audit.AuditLog)."""

    def append(self, actor: str, action: str, target: str,
               details: Optional[Mapping[str, Any]] = None) -> Mapping[str, Any]: ...

    def authentic_entries(self) -> Iterator[Mapping[str, Any]]: ...

    def verify(self) -> LogCheck: ...


@dataclass(frozen=True)
class IssuedWatermark:
    wm_id: int
    viewer: str               # identity (token identity, or the operator for CLI exports)
    viewer_name: str          # display name shown in the visible mark
    purpose: str              # export | replay | live
    recording_id: str         # or the room id for a live view
    issued_at: str            # UTC, from the audit entry
    issued_by: str            # the audit entry's actor
    key_id: str
    seq: int                  # audit log sequence number of the issue entry

    @property
    def hex_id(self) -> str:
        return format_id(self.wm_id)

    def label(self) -> str:
        """The visible mark's identity part."""
        who = self.viewer_name if self.viewer_name == self.viewer else f"{self.viewer_name} ({self.viewer})"
        return who

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> "IssuedWatermark":
        d = entry["details"]
        return cls(parse_id(d["watermark_id"]), str(d.get("viewer", "")),
                   str(d.get("viewer_name", d.get("viewer", ""))), str(d.get("purpose", "")),
                   str(entry["target"]), str(entry["time"]), str(entry["actor"]), str(d.get("key_id", "")),
                   int(entry["seq"]))


class WatermarkRegistry:
    """Issue and look up watermark ids, in the audit log."""

    def __init__(self, audit: IssueLog, key: bytes) -> None:
        from .pattern import key_id  # numpy only; no OpenCV/PyAV at import

        self.audit = audit
        self.key = key
        self.key_id = key_id(key)

    def entries(self) -> Iterator[IssuedWatermark]:
        """Every authentic issue entry, in log order (`audit verify` checks the chain around them)."""
        for entry in self.audit.authentic_entries():
            if entry["action"] == ISSUE_ACTION:
                try:
                    yield IssuedWatermark.from_entry(entry)
                except (KeyError, TypeError, ValueError):
                    continue

    def issued(self) -> dict[int, IssuedWatermark]:
        out: dict[int, IssuedWatermark] = {}
        for item in self.entries():
            out.setdefault(item.wm_id, item)  # the first issue of an id is the one that counts
        return out

    def lookup(self, wm_id: int) -> Optional[IssuedWatermark]:
        return self.issued().get(wm_id)

    def issue(self, *, viewer: str, purpose: str, recording_id: str, actor: str,
              viewer_name: Optional[str] = None, details: Optional[Mapping[str, Any]] = None) -> IssuedWatermark:
        """A fresh id for this viewer and purpose, recorded before it is used. Raises
        RecordingStorageError if the audit log cannot be written: nothing is shown unmarked."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}")
        if not viewer:
            raise ValueError("a watermark must name its viewer")
        taken = set(self.issued())
        while True:
            wm_id = secrets.randbits(32)
            if wm_id and wm_id not in taken:
                break
        entry = self.audit.append(actor, ISSUE_ACTION, recording_id, {
            **dict(details or {}), "watermark_id": format_id(wm_id), "viewer": viewer,
            "viewer_name": viewer_name or viewer, "purpose": purpose, "key_id": self.key_id})
        return IssuedWatermark.from_entry(entry)

    def watermarker(self, issued: IssuedWatermark, *, when=None):
        """The visible + invisible marks for an issued id (`.frame_hook` for export_recording).
        The visible label: '<viewer> · WM <id> · <UTC time>' (the time of issue for an export,
        the current time for a replay or live view)."""
        import datetime as dt

        from .embed import Watermarker, viewer_label

        if when is None and issued.purpose == "export":
            when = dt.datetime.fromisoformat(issued.issued_at.replace("Z", "+00:00"))
        return Watermarker(self.key, issued.wm_id, viewer_label(issued.label(), issued.wm_id, when))

