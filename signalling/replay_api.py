"""Replay of recorded consultations for trainers: the /trainer page and its API.

A trainer opens `/trainer#token=<join token>`; the token names one room instance (room
ids are used again; a link sees only the recordings of the instance it was minted for)
and must carry the `replay` permission (the trainer role has it by default); a revoked
link is refused. The page then calls, with `Authorization: Bearer <join token>`:

    GET /api/replay/recordings              the room's recordings, newest first
    GET /api/replay/recordings/{id}         one recording: participants, the events
                                            timeline (annotations, analysis, joins,
                                            recording on/off) on the recording's own
                                            clock (0 = its start) and one signed media
                                            URL per participant
    GET /api/replay/recordings/{id}/urls    fresh signed media and status URLs (they expire)
    GET /api/replay/media/{id}/{key}.webm/status?exp=…&sub=…&lnk=…&sig=…[&since=N]
                                            the viewer's watermarked replay of one
                                            participant: starts preparing it, reports
                                            progress, what may be fetched, and where
                                            playback may start (keyframe clusters)
    GET /api/replay/media/{id}/{key}.webm?exp=…&sub=…&lnk=…&sig=…
                                            that replay's bytes, HTTP Range; while it is
                                            prepared, ranges within what is ready
                                            (`Content-Range: bytes a-b/*`), 503 beyond

Media URLs are signed (HMAC-SHA256 over recording, participant, expiry and identity)
with a key made at start-up that never leaves the process: a <video> element cannot
send an Authorization header, and the join token must not go into URLs. They live
MEDIA_URL_TTL_S; the page asks for fresh ones when they are about to expire. Signing and
checking signatures: signalling/replay_media_urls.py.

Every replay is watermarked for its viewer (issue 6): a trainer is never served the
recorded bitstreams, only a file rendered for them (recorder/replay_cache.py,
recorder/replay_render.py): decoded, marked with a visible drifting label (their name,
the watermark id, the time) and an invisible forensic mark carrying a watermark id
issued to them in the audit log, and re-encoded (VP8 + Opus WebM). It is rendered in
the background at low CPU priority on the first request, served while it grows (the
page plays it through a MediaSource), kept encrypted on disk under a key that only
this process holds, for an hour after its last use, and deleted by a purge.

Trainers see participants' names and roles, never their identities (which may be a
record number): in a recording's view each identity is replaced by a pseudonym of that
view (`participant-1`, ...), the same wherever it appears (participants, authors).

One person, one entry. Every join gives a participant a new id (a reload, a lost network,
another device), but the identity stays: a recording's participants are its people (one
per identity, with the ids and times of their joins), and each person's media is one file
played across their joins (recorder/webm.py `person_groups`; the gaps between joins are
filled, and the page shows them as "not connected"). Photo sets (the stills of a guided
capture, recorder/stills.py) are recordings too, without sound or video: the listing says
so (`kind` "photos" and their count) rather than list them as empty recordings.

Auditing (recorder/audit.py): opening a recording and each decryption of a
participant's media go through RecordingStore.open_reader(purpose=replay), so they are
audited with the trainer's identity as actor (and refused if the entry cannot be
written); each render also issues its watermark id (`watermark.issue`, the registry
`python -m recorder trace` reads) before a frame is marked; a listing writes one
`replay` entry naming the room and the recordings whose participants it revealed.
A refusal of someone with valid credentials (no `replay` permission, a revoked or stale
link, another room's recording, an expired media URL, a recording still being made) is
audited as `access.failed` with who it was, at most FAILED_AUDIT_RATE per second
sustained (refusals over that are counted into the next entry). Refusals of requests
without valid credentials (no or bad token, missing or forged media signature) are only
counted, per reason and address, into one summary entry per REFUSAL_SUMMARY_S
(signalling/refusals.py), so nobody can grow the audit log by sending bad requests.

A recording still being written is listed (state `recording`) but cannot be opened
(409): watching a consultation live is not replay. Other recordings replay meanwhile;
the writer locks only its own directory.

This module holds the service (authorisation, auditing, caches, render jobs) and the
route handlers; what they build on has modules of its own: HTTP Range parsing and
byte-range serving (signalling/http_ranges.py), who was in a recording and the timeline
a trainer is shown (signalling/replay_timeline.py), signed media URLs
(signalling/replay_media_urls.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from aiohttp import web

from recorder.audit import Action, AuditLog
from recorder.errors import KeyUnavailableError, RecorderError, RecordingIntegrityError, RecordingNotFoundError
from recorder.keys import KeyStore
from recorder.manifest import Manifest, is_recording_id, parse_iso, split_room_label
from recorder.reader import RecordingReader, writer_alive
from recorder.replay_cache import ReplayJob, ReplayRenders
from recorder.replay_render import mime_for
from recorder.store import RecordingStore
from recorder.webm import MediaGroup, participant_identities, person_groups, probe_start
from recorder.writer import RESERVED_EVENT_PREFIX, STOP_EVENT

from .http_ranges import (
    content_range,
    not_satisfiable,
    parse_range,
    parse_ready_range,
    ranged_media_headers,
    send_byte_range,
)
from .links import LINK_REVOKED, LinkGuard, LinkRefused
from .rate_limit import TokenBucket
from .refusals import SUMMARY_INTERVAL_S, RefusalSummary
from .registry import RoomInstance, instance_at
from .replay_media_urls import ForgedMediaUrl, MediaUrlSigner, UnsignedMediaUrl
from .replay_timeline import (
    Pseudonyms,
    kind_of_manifest,
    kind_of_recording,
    media_end_if_cut_short,
    one_per_person,
    participants_by_id,
    people_with_joins,
    trim_landmarks,
)
from .static_files import shared_site
from .tokens import Grant, TokenError, TokenIssuer

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PERMISSION = "replay"
MEDIA_URL_TTL_S = 300
SUMMARY_CACHE_ITEMS = 1000
SWEEP_S = 30.0          # how often finished, abandoned and purged replays are cleaned up
PREPARING_RETRY_S = 1
FAILED_AUDIT_RATE = 5.0  # access.failed entries per second, sustained (refusals of a valid credential)
FAILED_AUDIT_BURST = 50
REFUSAL_SUMMARY_S = SUMMARY_INTERVAL_S  # at most one entry per this for refusals without credentials
MAX_AUDITED_PATH = 120  # characters of a request path kept in an access.failed entry
# Only .webm names are signed now; another extension still goes through (and fails) the
# signature check, so a forged URL is audited like any other.
_MEDIA_NAME = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,80})\.(?P<ext>webm|mp4)$")


def _error(status: int, code: str, message: str, headers: Optional[dict] = None) -> web.Response:
    response = web.json_response({"error": code, "message": message}, status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


class Refused(Exception):
    """A request refused: becomes a JSON error, audited as access.failed unless `audit` is False.
    `actor` None: the caller showed no valid credential (counted into a summary, not audited alone)."""

    def __init__(self, status: int, code: str, message: str, *, actor: Optional[str] = None,
                 target: str = "replay", audit: bool = True, details: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.actor, self.target, self.audit = actor, target, audit
        self.details = details or {}


@dataclass(frozen=True)
class Viewer:
    """A trainer whose link checked out: its grant, the room instance it may see, and every
    instance of that room id (to place recordings that name no instance)."""
    grant: Grant
    life: RoomInstance
    lives: tuple[RoomInstance, ...]

    @property
    def identity(self) -> str:
        return self.grant.identity

    def owns(self, room: str, created: str) -> bool:
        """Whether a recording (its manifest's room and created time) belongs to this viewer's instance."""
        room_id, instance = split_room_label(room)
        if room_id != self.life.room_id:
            return False
        if instance is None:  # made before recordings named their instance: the one current then
            try:
                life = instance_at(self.lives, parse_iso(created).timestamp())
            except ValueError:
                return False
            instance = life.instance if life is not None else None
        return instance == self.life.instance


@dataclass
class _Summary:
    """What a recording's (authenticated) events say, for the listing. Immutable once the writer is gone."""
    room: str  # as the manifest names it: <room id>@<instance>, or the bare id
    created: str
    complete: bool
    duration_ms: int
    participants: dict[str, dict]  # participant id -> {id, identity, name, role}
    photos: Optional[int] = None  # a photo set (image tracks only): how many stills it holds


class ReplayService:
    def __init__(self, data_dir: Path, issuer: TokenIssuer, *, links: Optional[LinkGuard] = None,
                 url_ttl_s: int = MEDIA_URL_TTL_S, renders: Optional[ReplayRenders] = None,
                 wall_clock: Callable[[], float] = time.time,
                 refusal_summary_s: float = REFUSAL_SUMMARY_S) -> None:
        self.data_dir = data_dir
        self.issuer = issuer
        self.links = links  # instances and revocations; replay_routes gives the server's if None
        self.url_ttl_s = url_ttl_s
        self.renders = renders or ReplayRenders(data_dir)
        self._now = wall_clock
        # Its key is made per process, so a restart invalidates every URL (they live minutes)
        # and the join-token secret is never used for anything else (replay_media_urls.py).
        self._url_signer = MediaUrlSigner()
        self._summaries: OrderedDict[str, _Summary] = OrderedDict()  # used from executor threads: _lock
        self._lock = threading.Lock()
        # recording id -> (room, created) from an authenticated manifest
        self._owners: dict[str, tuple[str, str]] = {}
        self._viewer_names: dict[str, str] = {}  # identity -> display name, for the visible mark
        # recording id -> {media key -> the join keys played as one (a person's)}; from authenticated events
        self._media_keys: OrderedDict[str, dict[str, tuple[str, ...]]] = OrderedDict()
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self._failed_bucket = TokenBucket(FAILED_AUDIT_RATE, FAILED_AUDIT_BURST)
        self._failed_suppressed = 0
        self._anonymous = RefusalSummary(refusal_summary_s, clock=wall_clock)
        self._summary_timer: Optional[asyncio.TimerHandle] = None

    # --- keys, audit, store (opened per use: the KEK and audit key appear with the first recording) --

    def _audit(self) -> AuditLog:
        return AuditLog.open(self.data_dir, create=True)

    def _store(self) -> RecordingStore:
        return RecordingStore(self.data_dir, keys=KeyStore.open(self.data_dir), audit=self._audit())

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    # --- refusals ---------------------------------------------------------------------------------

    async def refuse(self, request: web.Request, refused: Refused) -> web.Response:
        # The rate decisions are made here, on the event loop; only the write goes to a thread.
        if refused.audit and refused.actor is None:
            self._count_anonymous(refused, request.remote)
        elif refused.audit and not self._failed_bucket.take():
            self._failed_suppressed += 1  # a flood: counted, and the count written with the next entry
        elif refused.audit:
            details: dict[str, Any] = {"purpose": Action.REPLAY, "error": refused.code,
                                       "message": refused.message[:300], "path": request.path[:MAX_AUDITED_PATH],
                                       "remote": request.remote, **refused.details}
            if self._failed_suppressed:
                details["suppressed_before"] = self._failed_suppressed
                self._failed_suppressed = 0
            await self._run(self._audit_refusal, refused.actor, refused.target, details)
        headers = {"WWW-Authenticate": 'Bearer realm="replay"'} if refused.status == 401 else None
        return _error(refused.status, refused.code, refused.message, headers)

    def _audit_refusal(self, actor: Optional[str], target: str, details: dict[str, Any]) -> None:
        try:
            self._audit().append(actor or "anonymous", Action.ACCESS_FAILED, target, details)
        except (RecorderError, OSError) as exc:
            logger.error("could not audit a refused replay access: %s", exc)

    def _count_anonymous(self, refused: Refused, remote: Optional[str]) -> None:
        """No disk write per request: the summary is written when its interval is over."""
        if self._anonymous.count(refused.code, remote) and self._summary_timer is None:
            loop = asyncio.get_running_loop()
            self._summary_timer = loop.call_later(self._anonymous.interval_s,
                                                  lambda: asyncio.ensure_future(self.flush_refusals()))

    async def flush_refusals(self) -> None:
        """Writes the summary of refusals without credentials counted so far (if any)."""
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        details = self._anonymous.take()
        if details is not None:
            await self._run(self._audit_refusal, None, "replay", {"purpose": Action.REPLAY, **details})

    async def close(self) -> None:
        """At server shutdown: nothing counted is lost; renders and spare render processes stop."""
        await self.flush_refusals()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self._run(self.renders.close)

    def _prewarm(self) -> None:
        """A trainer is looking at recordings: render processes are started ahead (recorder/replay_cache.py)."""
        try:
            self.renders.prewarm()
        except OSError as exc:
            logger.warning("could not start spare render processes: %s", exc)

    # --- authorisation ----------------------------------------------------------------------------

    async def viewer(self, request: web.Request, target: str = "replay") -> Viewer:
        """The trainer behind the request's join token, or Refused."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "unauthorized", "send 'Authorization: Bearer <join token>'", target=target)
        try:
            grant = self.issuer.verify(token.strip())
        except TokenError as exc:
            raise Refused(401, exc.code, exc.message, target=target) from None
        if not grant.allows(PERMISSION):
            raise Refused(403, "forbidden", f"this token ({grant.role}) may not replay recordings",
                          actor=grant.identity, target=target)
        if self.links is None:
            raise RuntimeError("ReplayService needs the server's LinkGuard (replay_routes gives it)")
        try:
            life, lives = await self.links.for_replay(grant)
        except LinkRefused as exc:
            raise Refused(401 if exc.code == LINK_REVOKED else 403, exc.code, exc.message, actor=grant.identity,
                          target=target) from None
        return Viewer(grant, life, tuple(lives))

    def _recording_dir(self, recording_id: str) -> Path:
        return self.data_dir / "recordings" / recording_id

    def check_recording(self, viewer: Viewer, recording_id: str) -> None:
        """Refuses ids that are not recordings, other rooms' (or room instances') recordings and live
        ones, before any decryption (as the manifest says; the audited open checks it authenticated)."""
        if not is_recording_id(recording_id) or not self._recording_dir(recording_id).is_dir():
            raise Refused(404, "not_found", "no such recording", actor=viewer.identity, target=recording_id[:80])
        owner = self._owners.get(recording_id)
        if owner is None:
            try:
                manifest = Manifest.load(self._recording_dir(recording_id))[0]
            except RecorderError as exc:
                raise Refused(409, "unreadable", f"the recording cannot be read: {exc}", actor=viewer.identity,
                              target=recording_id) from None
            owner = manifest.room, manifest.created
        self._check_owner(viewer, recording_id, *owner)
        if writer_alive(self._recording_dir(recording_id)):
            raise Refused(409, "recording_in_progress",
                          "this recording is still being made; it can be replayed once it has stopped",
                          actor=viewer.identity, target=recording_id)

    @staticmethod
    def _check_owner(viewer: Viewer, recording_id: str, room: str, created: str) -> None:
        if not viewer.owns(room, created):
            raise Refused(403, "wrong_room", "this recording belongs to another consultation (another room, "
                          "or an earlier or later one under this room's id)", actor=viewer.identity,
                          target=recording_id)

    # --- signed media URLs ------------------------------------------------------------------------

    def media_url(self, recording_id: str, key: str, viewer: Viewer, exp: int, *, status: bool = False) -> str:
        """The signed URL of the viewer's watermarked replay of the media `key` (a person's; or of
        its status: the same signature, since both reveal the same replay to the same viewer). It
        names the viewer's link (its jti), so revoking the link stops its URLs too."""
        return self._url_signer.url(recording_id, f"{key}.webm", viewer.identity, viewer.grant.jti, exp, status=status)

    def _remember_viewer(self, viewer: Viewer) -> None:
        # Media URLs carry the identity only; the visible mark also shows the name.
        self._viewer_names[viewer.identity] = viewer.grant.name or viewer.identity

    def check_signature(self, request: web.Request, recording_id: str, name: str) -> str:
        """The identity the URL was made for; Refused when it is missing, forged or expired."""
        try:
            claim = self._url_signer.verify(recording_id, name, request.query)
        except UnsignedMediaUrl:
            raise Refused(401, "unauthorized", "a signed media URL is required (from /api/replay/recordings/{id})",
                          target=recording_id) from None
        except ForgedMediaUrl:
            raise Refused(403, "bad_signature", "the media URL's signature is not valid",
                          target=recording_id) from None
        if claim.exp < self._now():
            raise Refused(401, "url_expired", "the media URL has expired; ask for a fresh one",
                          actor=claim.identity, target=recording_id)
        if self.links is not None and self.links.revocations.is_revoked(claim.link):
            raise Refused(401, LINK_REVOKED, "this link has been revoked; please ask the clinic for a new link",
                          actor=claim.identity, target=recording_id)
        return claim.identity

    # --- listing ----------------------------------------------------------------------------------

    def list_recordings(self, viewer: Viewer) -> dict:
        try:
            keys: Optional[KeyStore] = KeyStore.open(self.data_dir)
        except KeyUnavailableError:
            keys = None
        store = RecordingStore(self.data_dir, keys=keys)
        out, revealed = [], []
        infos = sorted(store.list(), key=lambda i: (i.created if i.created != "?" else "", i.id), reverse=True)
        for info in infos:  # newest first (ids are only to the second)
            if not viewer.owns(info.room, info.created):  # the manifest's claim; opening authenticates it below
                continue
            item: dict[str, Any] = {"id": info.id, "created": info.created, "state": info.state,
                                    "kind": kind_of_recording(self._recording_dir(info.id)), "duration_ms": None,
                                    "participants": [], "tracks": info.tracks,
                                    "part": info.part, "continues": info.continues}
            if info.state in ("closed", "open") and keys is None:
                item.update(state="unreadable", error="no recording key-encryption key")
            elif info.state in ("closed", "open") and keys is not None:
                try:
                    summary = self._summary(info.id, keys)
                except RecorderError as exc:
                    item.update(state="unreadable", error=str(exc))
                else:
                    if not viewer.owns(summary.room, summary.created):
                        continue
                    item.update(state="complete" if summary.complete else "incomplete",
                                participants=[{"name": p["name"], "role": p["role"]}
                                              for p in one_per_person(summary.participants.values())])
                    if summary.photos is not None:
                        item.update(kind="photos", photos=summary.photos)  # stills: no length to speak of
                    else:
                        item.update(duration_ms=summary.duration_ms)
                    revealed.append(info.id)
            out.append(item)
        self._prewarm()
        if revealed:
            # Participants' names were decrypted for this trainer: one entry per listing.
            self._audit().append(viewer.identity, Action.REPLAY, f"room:{viewer.life.room_id}",
                                 {"what": "list", "role": viewer.grant.role, "instance": viewer.life.instance,
                                  "recordings": revealed[:200]})
        return {"room": viewer.life.room_id, "instance": viewer.life.instance, "recordings": out}

    def _summary(self, recording_id: str, keys: KeyStore) -> _Summary:
        with self._lock:
            cached = self._summaries.get(recording_id)
            if cached is not None:
                self._summaries.move_to_end(recording_id)
                return cached
        reader = RecordingReader.open(self.data_dir, recording_id, keys)  # authenticates the manifest
        events = list(reader.events())
        complete = any(e.data.get("type") == STOP_EVENT for e in events)
        stamps = [e.timestamp_ms for e in events] + media_end_if_cut_short(reader, complete)
        photos = (sum(1 for e in events if e.data.get("type") == "still")
                  if kind_of_manifest(reader.manifest) == "photos" else None)
        summary = _Summary(reader.manifest.room, reader.manifest.created, complete,
                           max(stamps) - min(stamps) if stamps else 0, participants_by_id(e.data for e in events),
                           photos)
        self._owners[recording_id] = summary.room, summary.created
        if not writer_alive(reader.dir):
            with self._lock:
                self._summaries[recording_id] = summary
                while len(self._summaries) > SUMMARY_CACHE_ITEMS:
                    self._summaries.popitem(last=False)
        return summary

    # --- one recording ----------------------------------------------------------------------------

    def open_recording(self, viewer: Viewer, recording_id: str) -> dict:
        reader = self._open_reader(viewer, recording_id)
        try:
            events = list(reader.events())
            groups = person_groups(reader.manifest, participant_identities(e.data for e in events))
            starts = {g.key: probe_start(reader, g) for g in groups}
        except RecordingIntegrityError as exc:
            raise Refused(409, "tampered", f"the recording fails authentication: {exc}", actor=viewer.identity,
                          target=recording_id) from None
        complete = any(e.data.get("type") == STOP_EVENT for e in events)
        stamps = [e.timestamp_ms for e in events] + [s for s in starts.values() if s is not None]
        origin = min(stamps, default=0)
        end = max(stamps + media_end_if_cut_short(reader, complete), default=0)
        pseudonyms = Pseudonyms()  # trainers see names and roles, never identities (e.g. a record number)
        people = pseudonyms.apply(people_with_joins(events, origin))
        by_id = {pid: person for person in people for pid in person["ids"]}
        timeline = [{"at_ms": e.timestamp_ms - origin, "event": pseudonyms.apply(e.data)} for e in events
                    if not str(e.data.get("type", "")).startswith(RESERVED_EVENT_PREFIX)]
        face_marks = trim_landmarks(timeline)
        self._prewarm()
        exp = int(self._now()) + self.url_ttl_s
        self._remember_viewer(viewer)
        self._remember_media(recording_id, groups)
        media = []
        for group in groups:
            start = starts[group.key]
            if start is None:
                continue
            participant = by_id.get(group.key)
            kinds = sorted({t.kind for t in group.tracks})
            media.append({
                "key": group.key,
                "participant": participant,
                "kinds": kinds,
                "codecs": {t.kind: t.codec for t in group.tracks},  # as recorded; replays are VP8 + Opus
                "content_type": "video/webm" if "video" in kinds else "audio/webm",
                "mime": mime_for("video" in kinds, "audio" in kinds),
                "watermarked": "video" in kinds,
                "start_ms": start - origin,
                "url": self.media_url(recording_id, group.key, viewer, exp),
                "status_url": self.media_url(recording_id, group.key, viewer, exp, status=True),
            })
        result: dict[str, Any] = {
            "id": reader.id,
            "room": viewer.life.room_id,
            "instance": viewer.life.instance,
            "created": reader.manifest.created,
            "state": "complete" if complete else "incomplete",
            "part": reader.manifest.part,
            "continues": reader.manifest.continues,
            "origin_session_ms": origin,
            "duration_ms": end - origin,
            "participants": people,
            "media": media,
            "skipped": [reason for g in groups for reason in g.skipped],
            "events": timeline,
            "urls_expire_at": exp,
        }
        if face_marks:
            from annotate.anchoring import FACE_TRIANGLES  # mediapipe: loaded only when needed
            result["face_triangles"] = FACE_TRIANGLES.tolist()
        return result

    def fresh_urls(self, viewer: Viewer, recording_id: str) -> dict:
        if recording_id not in self._owners:
            # Authenticate the manifest's room (nothing is decrypted but the data key).
            reader = RecordingReader.open(self.data_dir, recording_id, KeyStore.open(self.data_dir))
            self._owners[recording_id] = reader.manifest.room, reader.manifest.created
        self._check_owner(viewer, recording_id, *self._owners[recording_id])
        keys = self.media_members(recording_id)
        exp = int(self._now()) + self.url_ttl_s
        self._remember_viewer(viewer)
        return {"urls": {key: self.media_url(recording_id, key, viewer, exp) for key in keys},
                "status_urls": {key: self.media_url(recording_id, key, viewer, exp, status=True) for key in keys},
                "urls_expire_at": exp}

    def _remember_media(self, recording_id: str, groups: list[MediaGroup]) -> dict[str, tuple[str, ...]]:
        keys = {g.key: g.members for g in groups}
        with self._lock:
            self._media_keys[recording_id] = keys
            self._media_keys.move_to_end(recording_id)
            while len(self._media_keys) > SUMMARY_CACHE_ITEMS:
                self._media_keys.popitem(last=False)
        return keys

    def media_members(self, recording_id: str) -> dict[str, tuple[str, ...]]:
        """The recording's media keys (one per person), each with the joins played as one. Read from
        its authenticated events when not known yet (not audited: the trainer's open was)."""
        with self._lock:
            known = self._media_keys.get(recording_id)
        if known is not None:
            return known
        reader = RecordingReader.open(self.data_dir, recording_id, KeyStore.open(self.data_dir))
        return self._remember_media(recording_id, person_groups(
            reader.manifest, participant_identities(e.data for e in reader.events())))

    def _open_reader(self, viewer: Viewer, recording_id: str) -> RecordingReader:
        """The audited open (replay); a failure is audited by the store as access.failed."""
        actor = viewer.identity
        try:
            reader = self._store().open_reader(recording_id, actor=actor, purpose=Action.REPLAY)
        except RecordingNotFoundError:
            raise Refused(404, "not_found", "no such recording", actor=actor, target=recording_id,
                          audit=False) from None
        except (KeyUnavailableError, RecordingIntegrityError) as exc:
            raise Refused(409, "unreadable", f"the recording cannot be opened: {exc}", actor=actor,
                          target=recording_id, audit=False) from None
        self._owners[recording_id] = reader.manifest.room, reader.manifest.created
        self._check_owner(viewer, recording_id, reader.manifest.room, reader.manifest.created)
        return reader

    # --- media: the viewer's watermarked replay ---------------------------------------------------

    def job(self, recording_id: str, key: str, actor: str, members: tuple[str, ...] = ()) -> ReplayJob:
        """The viewer's replay of one person (`members`: their joins), started if need be (in its own thread)."""
        self._arm_sweeper()
        try:
            return self.renders.job(recording_id, key, actor, self._viewer_names.get(actor, actor), members)
        except RecordingNotFoundError:
            raise Refused(404, "not_found", "no such recording", actor=actor, target=recording_id,
                          audit=False) from None

    def _arm_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        try:
            self.renders.sweep()
        except (OSError, RecorderError) as exc:
            logger.error("cleaning up replays failed: %s", exc)
        if self.renders.jobs() or self.renders.spares():
            self._arm_sweeper()

    def known_members(self, recording_id: str, key: str) -> Optional[tuple[str, ...]]:
        with self._lock:
            known = self._media_keys.get(recording_id)
        return None if known is None else known.get(key, ())

    def members_of(self, recording_id: str, key: str, actor: str) -> tuple[str, ...]:
        """The joins played as one under the media `key` (a person's), () for a single one."""
        try:
            known = self.media_members(recording_id)
        except RecordingNotFoundError:
            raise Refused(404, "not_found", "no such recording", actor=actor, target=recording_id,
                          audit=False) from None
        except (KeyUnavailableError, RecordingIntegrityError):
            return ()  # the render's own audited open reports it
        return known.get(key, ())

    @staticmethod
    def failure(job: ReplayJob, actor: str) -> Refused:
        failure = job.failure
        code = failure.code if failure else "render_failed"
        status = {"not_found": 404, "tampered": 409, "unreadable": 409, "unavailable": 503}.get(code, 500)
        return Refused(status, code, failure.message if failure else "the replay could not be prepared",
                       actor=actor, target=job.recording_id, audit=code == "tampered")


# --- HTTP -----------------------------------------------------------------------------------------


def _json(body: dict) -> web.Response:
    response = web.json_response(body)
    response.headers["Cache-Control"] = "no-store"
    response.enable_compression()
    return response


def _preparing(job: ReplayJob) -> web.Response:
    progress = round(100 * job.status()["progress"])
    return _error(503, "preparing", f"the watermarked replay is being prepared ({progress} %)",
                  {"Retry-After": str(PREPARING_RETRY_S)})


async def _media_response(request: web.Request, service: ReplayService, job: ReplayJob) -> web.StreamResponse:
    """The replay's bytes with HTTP Range (http_ranges.py). Finished: as any file. While it is
    prepared: only ranges starting within what is ready, with an unknown total (`bytes a-b/*`);
    503 for the whole file, its end, or bytes not rendered yet."""
    ready, size = job.readable()
    headers = ranged_media_headers(job.plan.content_type if job.plan is not None else "video/webm")
    header = request.headers.get("Range", "")

    async def read(start: int, end: int) -> bytes:  # decrypted off the event loop
        return await service._run(job.read, start, end)

    try:
        wanted = parse_range(header, size) if size is not None else parse_ready_range(header, ready)
    except ValueError:
        return not_satisfiable(headers, size)
    if wanted is None:
        if size is None:
            return _preparing(job)  # the whole file, its end, or bytes not rendered yet
        return await send_byte_range(request, read, 200, 0, size - 1, headers, interrupted_by=(RecorderError,))
    first, last = wanted
    return await send_byte_range(request, read, 206, first, last,
                                 {**headers, "Content-Range": content_range(first, last, size)},
                                 interrupted_by=(RecorderError,))  # purged or dropped mid-response


def _guarded(service: ReplayService, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refused:
            return await service.refuse(request, refused)
        except KeyUnavailableError as exc:
            return _error(503, "unavailable", f"recordings cannot be opened now: {exc}")
        except RecorderError as exc:  # e.g. the audit log cannot be written: nothing is revealed
            logger.error("replay %s failed: %s", request.path, exc)
            return _error(503, "unavailable", f"recordings cannot be opened now: {exc}")
    return wrapped


def replay_routes(services, *, service: Optional[ReplayService] = None) -> list[web.RouteDef]:
    """The trainer page and the replay API, for signalling/app.py's create_app."""
    service = service or ReplayService(services.config.data_dir, services.issuer, links=services.rooms.links)
    if service.links is None:
        service.links = services.rooms.links  # the server's instances and revocations, never a copy
    services.rooms.on_shutdown(service.close)  # the app's shutdown: the refusal summary is written

    trainer_page = shared_site(STATIC_DIR).page("trainer.html")  # no-store, compressed (static_files.py)

    async def page(request: web.Request) -> web.StreamResponse:
        response = await trainer_page(request)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def list_recordings(request: web.Request) -> web.Response:
        viewer = await service.viewer(request)
        listing = await service._run(service.list_recordings, viewer)
        service._arm_sweeper()  # the spare render processes it started go when nobody uses them
        return _json(listing)

    async def get_recording(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        viewer = await service.viewer(request, target=recording_id[:80])
        service.check_recording(viewer, recording_id)
        opened = await service._run(service.open_recording, viewer, recording_id)
        service._arm_sweeper()
        return _json(opened)

    async def urls(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        viewer = await service.viewer(request, target=recording_id[:80])
        service.check_recording(viewer, recording_id)
        return _json(await service._run(service.fresh_urls, viewer, recording_id))

    async def media_job(request: web.Request) -> tuple[Optional[ReplayJob], str]:
        recording_id = request.match_info["recording_id"]
        match = _MEDIA_NAME.match(request.match_info["name"])
        if not is_recording_id(recording_id) or match is None:
            return None, ""
        actor = service.check_signature(request, recording_id, match.group(0))
        members = service.known_members(recording_id, match["key"])
        if members is None:  # not opened in this process yet: read from its events, off the event loop
            members = await service._run(service.members_of, recording_id, match["key"], actor)
        return service.job(recording_id, match["key"], actor, members), actor

    async def media(request: web.Request) -> web.StreamResponse:
        job, actor = await media_job(request)
        if job is None:
            return _error(404, "not_found", "no such media")
        if job.state == "failed":
            raise service.failure(job, actor)
        return await _media_response(request, service, job)

    async def status(request: web.Request) -> web.Response:
        job, actor = await media_job(request)
        if job is None:
            return _error(404, "not_found", "no such media")
        since = request.query.get("since", "0")
        return _json(job.status(int(since) if since.isdigit() and len(since) < 9 else 0))

    return [
        web.get("/trainer", page),
        web.get("/api/replay/recordings", _guarded(service, list_recordings)),
        web.get("/api/replay/recordings/{recording_id}", _guarded(service, get_recording)),
        web.get("/api/replay/recordings/{recording_id}/urls", _guarded(service, urls)),
        web.get("/api/replay/media/{recording_id}/{name}", _guarded(service, media)),
        web.get("/api/replay/media/{recording_id}/{name}/status", _guarded(service, status)),
    ]
