"""Roles and the permissions a join token can carry."""

from __future__ import annotations

PERMISSIONS = ("publish", "subscribe", "annotate", "record", "replay", "moderate")

DEFAULT_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "patient": ("publish", "subscribe"),
    "doctor": ("publish", "subscribe", "annotate", "record", "moderate"),
    "expert": ("publish", "subscribe", "annotate"),
    # Trainers review recordings; watching a live consultation needs the
    # patient's consent, so it is not a default.
    "trainer": ("replay",),
}

ROLES = tuple(DEFAULT_PERMISSIONS)

# Which page a join link opens for each role.
PAGE_FOR_ROLE = {"patient": "/patient", "doctor": "/console", "expert": "/console", "trainer": "/trainer"}

# Whose video a narrow downlink keeps longest: the patient's is the clinical view, the
# doctor leads the consultation, the expert advises.
VIDEO_PRIORITY = {"patient": 3, "doctor": 2, "expert": 1}
