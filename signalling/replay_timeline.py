"""What a recording's events say, shaped for the trainer's view of it: who was there (one
entry per person), what kind of recording it is, when it ends, and its timeline made fit to
show (identities replaced by pseudonyms, face landmarks kept only where a mark needs them).

The replay API (signalling/replay_api.py) builds its listing and its view of one recording
from these; they take what recorder/ reads (a manifest, a reader, decrypted events) and give
plain dicts and lists, with no HTTP and no access control, so they are tested on their own.
They live in signalling/ rather than recorder/ because what they decide is what a trainer is
shown: recorder/ stores and reads recordings, signalling/ owns the JSON sent to pages.

One person, one entry: every join gives a participant a new id (a reload, a lost network,
another device), but the identity stays, so people are keyed by identity (or by participant
id for an event without one). Trainers see names and roles, never identities (which may be
a record number): each view replaces them with `participant-1`, `participant-2`, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

from recorder.errors import RecorderError, RecordingIntegrityError
from recorder.manifest import EVENTS_TRACK_NO, Manifest
from recorder.reader import Event, RecordingReader
from recorder.webm import PARTICIPANT_EVENTS

IDENTITY_KEYS = ("identity", "author", "shapes_of")  # event fields that hold a participant's identity
FACE_MARGIN_MS = 1000  # landmarks are kept this long around a face-anchored mark's life
FOREVER_MS = 2**62  # the end of a face-anchored mark still on the board when the recording ends


# --- the recording ---------------------------------------------------------------------------------


def media_end_if_cut_short(reader: RecordingReader, complete: bool) -> list[int]:
    """[when its media ends] for a recording cut short (its node was killed: no stop event, and
    its last event may be long before its last frame); [] for a complete one, whose stop event
    is as late as its last frame. A last segment that fails authentication adds nothing here:
    replaying that track reports it."""
    if complete:
        return []
    try:
        end = reader.media_end_ms()
    except RecordingIntegrityError:
        return []
    return [] if end is None else [end]


def kind_of_manifest(manifest: Manifest) -> str:
    """"photos" for a photo set (image tracks only: recorder/stills.py), else "call"."""
    media = [t for t in manifest.tracks if t.no != EVENTS_TRACK_NO]
    return "photos" if media and all(t.kind == "image" for t in media) else "call"


def kind_of_recording(recording_dir: Path) -> str:
    """What a recording holds, as its manifest says (read without a key, like the room it names)."""
    try:
        return kind_of_manifest(Manifest.load(recording_dir)[0])
    except RecorderError:
        return "call"


# --- who was there ---------------------------------------------------------------------------------


def participants_by_id(events: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """participant id -> {id, identity, name, role} from track-owner and participant-joined events."""
    found: dict[str, dict] = {}
    for data in events:
        if data.get("type") in PARTICIPANT_EVENTS:
            p = data.get("participant")
            if isinstance(p, dict) and isinstance(p.get("id"), str):
                found[p["id"]] = {"id": p["id"], "identity": p.get("identity"), "name": p.get("name"),
                                  "role": p.get("role")}
    return found


def one_per_person(participants: Iterable[dict]) -> list[dict]:
    """One entry per identity (each join is a participant id of its own), in order of appearance, with
    the newest name and role."""
    people: dict[str, dict] = {}
    for p in participants:
        people[p["identity"] if isinstance(p.get("identity"), str) else p["id"]] = p  # keeps its first place
    return list(people.values())


def people_with_joins(events: Iterable[Event], origin: int) -> list[dict]:
    """The recording's people, one per identity, in order of appearance: {id (their first participant
    id), identity, name, role (the newest), ids (one per join), joins: [{id, from_ms, to_ms}] on the
    recording's timeline (to_ms None: still there at its end)}. A join starts at its participant's
    first track-owner or participant-joined event and ends at its participant-left."""
    people: dict[str, dict] = {}
    joins: dict[str, dict] = {}  # participant id -> its join
    for e in events:
        data, at = e.data, max(0, e.timestamp_ms - origin)
        kind = data.get("type")
        if kind in PARTICIPANT_EVENTS:
            p = data.get("participant")
            if not isinstance(p, dict) or not isinstance(p.get("id"), str):
                continue
            identity = p.get("identity") if isinstance(p.get("identity"), str) else None
            person = people.setdefault(identity or p["id"], {"id": p["id"], "identity": identity, "ids": [],
                                                            "joins": []})
            person.update(name=p.get("name"), role=p.get("role"))
            if p["id"] not in joins and kind != "participant-updated":
                joins[p["id"]] = {"id": p["id"], "from_ms": at, "to_ms": None}
                person["ids"].append(p["id"])
                person["joins"].append(joins[p["id"]])
        elif kind == "participant-left" and isinstance(data.get("participant_id"), str):
            join = joins.get(data["participant_id"])
            if join is not None and join["to_ms"] is None:
                join["to_ms"] = at
    return [{k: person[k] for k in ("id", "identity", "name", "role", "ids", "joins")} for person in people.values()]


class Pseudonyms:
    """One recording view's stand-ins for identities: `participant-1`, `participant-2`, ... in order
    of appearance, the same for one identity wherever it appears (participants, annotation authors),
    so the page still pairs authors with names."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def of(self, identity: str) -> str:
        return self._names.setdefault(identity, f"participant-{len(self._names) + 1}")

    def apply(self, value: Any) -> Any:
        """A copy of `value` with every identity field replaced (nested objects and lists too)."""
        if isinstance(value, dict):
            return {k: (self.of(v) if k in IDENTITY_KEYS and isinstance(v, str) else self.apply(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.apply(v) for v in value]
        return value


# --- face landmarks --------------------------------------------------------------------------------


def face_mark_spans(timeline: list[dict]) -> list[tuple[int, int]]:
    """When face-anchored marks were on the board: (from, to) on the timeline."""
    board: dict[Optional[str], bool] = {}  # shape id (None if the event has none) -> face-anchored
    spans: list[tuple[int, int]] = []
    since: Optional[int] = None
    for item in timeline:
        event, at = item["event"], item["at_ms"]
        kind = event.get("type")
        if kind == "annotation-snapshot":  # in parts for a large drawing: part 0 replaces, later parts add
            if not event.get("part"):
                board = {}
            board.update((s.get("id"), s.get("anchor") == "face")
                         for s in event.get("shapes") or [] if isinstance(s, dict))
        elif kind == "annotation" and event.get("op") == "add" and isinstance(event.get("shape"), dict):
            board[event["shape"].get("id")] = event["shape"].get("anchor") == "face"
        elif kind == "annotation" and event.get("op") in ("undo", "clear"):
            for shape_id in event.get("ids") or []:
                board.pop(shape_id, None)
        else:
            continue
        any_face = any(board.values())
        if any_face and since is None:
            since = at
        elif not any_face and since is not None:
            spans.append((since, at))
            since = None
    if since is not None:
        spans.append((since, FOREVER_MS))
    return spans


def trim_landmarks(timeline: list[dict]) -> bool:
    """Drops face-metrics landmarks (478 points, 5 Hz) except around face-anchored marks,
    which need them to be drawn. True when there are such marks. Changes `timeline` in place
    (each trimmed item is replaced by a copy; the events themselves are not touched)."""
    spans = face_mark_spans(timeline)
    for index, item in enumerate(timeline):
        event = item["event"]
        face = event.get("face") if event.get("kind") == "face-metrics" else None
        if not isinstance(face, dict) or "landmarks" not in face:
            continue
        at = item["at_ms"]
        if not any(a - FACE_MARGIN_MS <= at <= b + FACE_MARGIN_MS for a, b in spans):
            timeline[index] = {**item, "event": {**event, "face": {k: v for k, v in face.items() if k != "landmarks"}}}
    return bool(spans)
