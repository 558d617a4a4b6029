"""Replay of recorded consultations for trainers: the /trainer page and its API.

A trainer opens `/trainer#token=<join token>`; the token names one room and must carry
the `replay` permission (the trainer role has it by default). The page then calls,
with `Authorization: Bearer <join token>`:

    GET /api/replay/recordings              the room's recordings, newest first
    GET /api/replay/recordings/{id}         one recording: participants, the events
                                            timeline (annotations, analysis, joins,
                                            recording on/off) on the recording's own
                                            clock (0 = its start) and one signed media
                                            URL per participant
    GET /api/replay/recordings/{id}/urls    fresh signed media URLs (they expire)
    GET /api/replay/media/{id}/{key}.{webm|mp4}?exp=…&sub=…&sig=…
                                            one participant's tracks remuxed (no
                                            re-encoding, recorder/webm.py), HTTP Range

Media URLs are signed (HMAC-SHA256 over recording, participant, expiry and identity)
with a key made at start-up that never leaves the process: a <video> element cannot
send an Authorization header, and the join token must not go into URLs. They live
MEDIA_URL_TTL_S; the page asks for fresh ones when they are about to expire.

Media is decrypted on the fly into memory, never to disk, and cached in memory for a
short time (size-capped LRU) so a <video> element's many Range requests do not each
decrypt the recording again.

Auditing (recorder/audit.py): opening a recording and each decryption of a
participant's media go through RecordingStore.open_reader(purpose=replay), so they are
audited with the trainer's identity as actor (and refused if the entry cannot be
written); a listing writes one `replay` entry naming the room and the recordings whose
participants it revealed. Every refusal (no or bad token, no `replay` permission,
another room's recording, a missing, forged or expired media signature, a recording
still being made) is audited as `access.failed`, at most FAILED_AUDIT_RATE per second
sustained; refusals over that are counted into the next entry.

A recording still being written is listed (state `recording`) but cannot be opened
(409): watching a consultation live is not replay. Other recordings replay meanwhile;
the writer locks only its own directory.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

from aiohttp import web

from recorder.audit import Action, AuditLog
from recorder.errors import KeyUnavailableError, RecorderError, RecordingIntegrityError, RecordingNotFoundError
from recorder.keys import KeyStore
from recorder.manifest import Manifest, is_recording_id
from recorder.reader import RecordingReader, writer_alive
from recorder.store import RecordingStore
from recorder.webm import MediaGroup, Remuxed, RemuxError, media_groups, probe_start, remux
from recorder.writer import RESERVED_EVENT_PREFIX, STOP_EVENT

from .rate_limit import TokenBucket
from .tokens import TokenError, TokenIssuer

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PERMISSION = "replay"
MEDIA_URL_TTL_S = 300
CACHE_MAX_BYTES = 512 * 1024 * 1024
CACHE_TTL_S = 600.0
SUMMARY_CACHE_ITEMS = 1000
FAILED_AUDIT_RATE = 5.0  # access.failed entries per second, sustained
FAILED_AUDIT_BURST = 50
FACE_MARGIN_MS = 1000  # landmarks are kept this long around a face-anchored mark's life
_MEDIA_NAME = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,80})\.(?P<ext>webm|mp4)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _error(status: int, code: str, message: str, headers: Optional[dict] = None) -> web.Response:
    response = web.json_response({"error": code, "message": message}, status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


class Refused(Exception):
    """A request refused: becomes a JSON error, audited as access.failed unless `audit` is False."""

    def __init__(self, status: int, code: str, message: str, *, actor: str = "anonymous",
                 target: str = "replay", audit: bool = True, details: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.actor, self.target, self.audit = actor, target, audit
        self.details = details or {}


@dataclass
class _Summary:
    """What a recording's (authenticated) events say, for the listing. Immutable once the writer is gone."""
    room: str
    created: str
    complete: bool
    duration_ms: int
    participants: dict[str, dict]  # participant id -> {id, identity, name, role}


@dataclass
class _CacheEntry:
    media: Remuxed
    used: float


class MediaCache:
    """Remuxed media in memory: least recently used out first, at most `max_bytes`, each
    entry at most `ttl_s` after its last use. An item larger than the cap is not kept."""

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], _CacheEntry] = OrderedDict()
        self.bytes = 0

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._items.items() if now - e.used > self.ttl_s]:
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._items.pop(key)
        self.bytes -= len(entry.media.data)

    def get(self, key: tuple[str, str]) -> Optional[Remuxed]:
        self._expire()
        entry = self._items.get(key)
        if entry is None:
            return None
        entry.used = self._clock()
        self._items.move_to_end(key)
        return entry.media

    def put(self, key: tuple[str, str], media: Remuxed) -> bool:
        self._expire()
        size = len(media.data)
        if size > self.max_bytes:
            return False
        if key in self._items:
            self._drop(key)
        while self._items and self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._items)))
        self._items[key] = _CacheEntry(media, self._clock())
        self.bytes += size
        return True

    def __len__(self) -> int:
        return len(self._items)


class ReplayService:
    def __init__(self, data_dir: Path, issuer: TokenIssuer, *, url_ttl_s: int = MEDIA_URL_TTL_S,
                 cache_max_bytes: int = CACHE_MAX_BYTES, cache_ttl_s: float = CACHE_TTL_S,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.data_dir = data_dir
        self.issuer = issuer
        self.url_ttl_s = url_ttl_s
        self.cache = MediaCache(cache_max_bytes, cache_ttl_s)
        self._now = wall_clock
        # Signs media URLs only; made per process, so a restart invalidates every URL
        # (they live minutes) and the join-token secret is never used for anything else.
        self._url_key = secrets.token_bytes(32)
        self._summaries: OrderedDict[str, _Summary] = OrderedDict()  # used from executor threads: _lock
        self._lock = threading.Lock()
        self._rooms: dict[str, str] = {}  # recording id -> room, from an authenticated manifest
        self._remuxing: dict[tuple[str, str], asyncio.Future] = {}
        self._failed_bucket = TokenBucket(FAILED_AUDIT_RATE, FAILED_AUDIT_BURST)
        self._failed_suppressed = 0
        self.remux_count = 0  # for tests and monitoring: cache misses that decrypted media

    # --- keys, audit, store (opened per use: the KEK and audit key appear with the first recording) --

    def _audit(self) -> AuditLog:
        return AuditLog.open(self.data_dir, create=True)

    def _store(self) -> RecordingStore:
        return RecordingStore(self.data_dir, keys=KeyStore.open(self.data_dir), audit=self._audit())

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    # --- refusals ---------------------------------------------------------------------------------

    async def refuse(self, request: web.Request, refused: Refused) -> web.Response:
        # The rate decision is made here, on the event loop; only the write goes to a thread.
        if refused.audit and not self._failed_bucket.take():
            self._failed_suppressed += 1  # a flood: counted, and the count written with the next entry
        elif refused.audit:
            details: dict[str, Any] = {"purpose": Action.REPLAY, "error": refused.code,
                                       "message": refused.message[:300], "path": request.path[:200],
                                       "remote": request.remote, **refused.details}
            if self._failed_suppressed:
                details["suppressed_before"] = self._failed_suppressed
                self._failed_suppressed = 0
            await self._run(self._audit_refusal, refused, details)
        headers = {"WWW-Authenticate": 'Bearer realm="replay"'} if refused.status == 401 else None
        return _error(refused.status, refused.code, refused.message, headers)

    def _audit_refusal(self, refused: Refused, details: dict[str, Any]) -> None:
        try:
            self._audit().append(refused.actor, Action.ACCESS_FAILED, refused.target, details)
        except (RecorderError, OSError) as exc:
            logger.error("could not audit a refused replay access: %s", exc)

    # --- authorisation ----------------------------------------------------------------------------

    def grant(self, request: web.Request, target: str = "replay"):
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
        return grant

    def _recording_dir(self, recording_id: str) -> Path:
        return self.data_dir / "recordings" / recording_id

    def check_recording(self, grant, recording_id: str) -> None:
        """Refuses ids that are not recordings, other rooms' recordings and live ones, before any
        decryption (the room as the manifest says it; the audited open checks it authenticated)."""
        if not is_recording_id(recording_id) or not self._recording_dir(recording_id).is_dir():
            raise Refused(404, "not_found", "no such recording", actor=grant.identity, target=recording_id[:80])
        room = self._rooms.get(recording_id)
        if room is None:
            try:
                room = Manifest.load(self._recording_dir(recording_id))[0].room
            except RecorderError as exc:
                raise Refused(409, "unreadable", f"the recording cannot be read: {exc}", actor=grant.identity,
                              target=recording_id) from None
        if room != grant.room:
            raise Refused(403, "wrong_room", "this recording belongs to another room", actor=grant.identity,
                          target=recording_id)
        if writer_alive(self._recording_dir(recording_id)):
            raise Refused(409, "recording_in_progress",
                          "this recording is still being made; it can be replayed once it has stopped",
                          actor=grant.identity, target=recording_id)

    # --- signed media URLs ------------------------------------------------------------------------

    def _signature(self, recording_id: str, name: str, exp: int, sub: str) -> str:
        message = "\0".join(("replay-media/v1", recording_id, name, str(exp), sub)).encode()
        return base64.urlsafe_b64encode(hmac.new(self._url_key, message, hashlib.sha256).digest()).rstrip(b"=").decode()

    def media_url(self, recording_id: str, group: MediaGroup, sub: str, exp: int) -> str:
        name = f"{group.key}.{group.extension}"
        query = urlencode({"exp": exp, "sub": sub, "sig": self._signature(recording_id, name, exp, sub)})
        return f"/api/replay/media/{recording_id}/{name}?{query}"

    def check_signature(self, request: web.Request, recording_id: str, name: str) -> str:
        """The identity the URL was made for; Refused when it is missing, forged or expired."""
        q = request.query
        exp, sub, sig = q.get("exp", ""), q.get("sub", ""), q.get("sig", "")
        if not (exp and sub and sig):
            raise Refused(401, "unauthorized", "a signed media URL is required (from /api/replay/recordings/{id})",
                          target=recording_id)
        if not exp.isdigit() or len(exp) > 12 or len(sub) > 200 or not hmac.compare_digest(
                sig.encode(), self._signature(recording_id, name, int(exp), sub).encode()):
            raise Refused(403, "bad_signature", "the media URL's signature is not valid", target=recording_id,
                          details={"claimed_sub": sub[:200], "exp": exp[:20]})
        if int(exp) < self._now():
            raise Refused(401, "url_expired", "the media URL has expired; ask for a fresh one",
                          actor=sub, target=recording_id)
        return sub

    # --- listing ----------------------------------------------------------------------------------

    def list_recordings(self, grant) -> dict:
        try:
            keys: Optional[KeyStore] = KeyStore.open(self.data_dir)
        except KeyUnavailableError:
            keys = None
        store = RecordingStore(self.data_dir, keys=keys)
        out, revealed = [], []
        infos = sorted(store.list(), key=lambda i: (i.created if i.created != "?" else "", i.id), reverse=True)
        for info in infos:  # newest first (ids are only to the second)
            if info.room != grant.room:  # the manifest's claim; opening authenticates it below
                continue
            item: dict[str, Any] = {"id": info.id, "created": info.created, "state": info.state,
                                    "duration_ms": None, "participants": [], "tracks": info.tracks}
            if info.state in ("closed", "open") and keys is None:
                item.update(state="unreadable", error="no recording key-encryption key")
            elif info.state in ("closed", "open"):
                try:
                    summary = self._summary(info.id, keys)
                except RecorderError as exc:
                    item.update(state="unreadable", error=str(exc))
                else:
                    if summary.room != grant.room:
                        continue
                    item.update(state="complete" if summary.complete else "incomplete",
                                duration_ms=summary.duration_ms,
                                participants=[{"name": p["name"], "role": p["role"]}
                                              for p in summary.participants.values()])
                    revealed.append(info.id)
            out.append(item)
        if revealed:
            # Participants' names were decrypted for this trainer: one entry per listing.
            self._audit().append(grant.identity, Action.REPLAY, f"room:{grant.room}",
                                 {"what": "list", "role": grant.role, "recordings": revealed[:200]})
        return {"room": grant.room, "recordings": out}

    def _summary(self, recording_id: str, keys: KeyStore) -> _Summary:
        with self._lock:
            cached = self._summaries.get(recording_id)
            if cached is not None:
                self._summaries.move_to_end(recording_id)
                return cached
        reader = RecordingReader.open(self.data_dir, recording_id, keys)  # authenticates the manifest
        events = list(reader.events())
        summary = _Summary(reader.manifest.room, reader.manifest.created,
                           any(e.data.get("type") == STOP_EVENT for e in events),
                           (max(e.timestamp_ms for e in events) - min(e.timestamp_ms for e in events)) if events else 0,
                           _participants(e.data for e in events))
        self._rooms[recording_id] = summary.room
        if not writer_alive(reader.dir):
            with self._lock:
                self._summaries[recording_id] = summary
                while len(self._summaries) > SUMMARY_CACHE_ITEMS:
                    self._summaries.popitem(last=False)
        return summary

    # --- one recording ----------------------------------------------------------------------------

    def open_recording(self, grant, recording_id: str) -> dict:
        reader = self._open_reader(grant.identity, recording_id, grant.room)
        try:
            events = list(reader.events())
            groups = media_groups(reader.manifest)
            starts = {g.key: probe_start(reader, g) for g in groups}
        except RecordingIntegrityError as exc:
            raise Refused(409, "tampered", f"the recording fails authentication: {exc}", actor=grant.identity,
                          target=recording_id) from None
        stamps = [e.timestamp_ms for e in events] + [s for s in starts.values() if s is not None]
        origin = min(stamps, default=0)
        end = max(stamps, default=0)
        complete = any(e.data.get("type") == STOP_EVENT for e in events)
        participants = _participants(e.data for e in events)
        timeline = [{"at_ms": e.timestamp_ms - origin, "event": e.data} for e in events
                    if not str(e.data.get("type", "")).startswith(RESERVED_EVENT_PREFIX)]
        face_marks = _trim_landmarks(timeline)
        exp = int(self._now()) + self.url_ttl_s
        media = []
        for group in groups:
            start = starts[group.key]
            if start is None:
                continue
            participant = participants.get(group.key)
            media.append({
                "key": group.key,
                "participant": participant,
                "kinds": sorted(t.kind for t in group.tracks),
                "codecs": {t.kind: t.codec for t in group.tracks},
                "content_type": group.content_type,
                "start_ms": start - origin,
                "url": self.media_url(recording_id, group, grant.identity, exp),
            })
        result: dict[str, Any] = {
            "id": reader.id,
            "room": reader.manifest.room,
            "created": reader.manifest.created,
            "state": "complete" if complete else "incomplete",
            "origin_session_ms": origin,
            "duration_ms": end - origin,
            "participants": list(participants.values()),
            "media": media,
            "skipped": [reason for g in groups for reason in g.skipped],
            "events": timeline,
            "urls_expire_at": exp,
        }
        if face_marks:
            from annotate.anchoring import FACE_TRIANGLES  # mediapipe: loaded only when needed
            result["face_triangles"] = FACE_TRIANGLES.tolist()
        return result

    def fresh_urls(self, grant, recording_id: str) -> dict:
        if recording_id not in self._rooms:
            # Authenticate the manifest's room (nothing is decrypted but the data key).
            reader = RecordingReader.open(self.data_dir, recording_id, KeyStore.open(self.data_dir))
            self._rooms[recording_id] = reader.manifest.room
            groups = media_groups(reader.manifest)
        else:
            groups = media_groups(Manifest.load(self._recording_dir(recording_id))[0])
        if self._rooms[recording_id] != grant.room:
            raise Refused(403, "wrong_room", "this recording belongs to another room", actor=grant.identity,
                          target=recording_id)
        exp = int(self._now()) + self.url_ttl_s
        return {"urls": {g.key: self.media_url(recording_id, g, grant.identity, exp) for g in groups},
                "urls_expire_at": exp}

    def _open_reader(self, actor: str, recording_id: str, room: Optional[str]) -> RecordingReader:
        """The audited open (replay); a failure is audited by the store as access.failed."""
        try:
            reader = self._store().open_reader(recording_id, actor=actor, purpose=Action.REPLAY)
        except RecordingNotFoundError:
            raise Refused(404, "not_found", "no such recording", actor=actor, target=recording_id,
                          audit=False) from None
        except (KeyUnavailableError, RecordingIntegrityError) as exc:
            raise Refused(409, "unreadable", f"the recording cannot be opened: {exc}", actor=actor,
                          target=recording_id, audit=False) from None
        self._rooms[recording_id] = reader.manifest.room
        if room is not None and reader.manifest.room != room:
            raise Refused(403, "wrong_room", "this recording belongs to another room", actor=actor,
                          target=recording_id)
        return reader

    # --- media ------------------------------------------------------------------------------------

    async def media(self, recording_id: str, key: str, actor: str) -> Remuxed:
        cache_key = (recording_id, key)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        pending = self._remuxing.get(cache_key)
        if pending is None:  # one decryption per item, however many Range requests wait for it
            pending = asyncio.ensure_future(self._remux_and_cache(recording_id, key, actor))
            self._remuxing[cache_key] = pending
            pending.add_done_callback(lambda _: self._remuxing.pop(cache_key, None))
        return await asyncio.shield(pending)

    async def _remux_and_cache(self, recording_id: str, key: str, actor: str) -> Remuxed:
        media = await self._run(self._remux, recording_id, key, actor)
        if not self.cache.put((recording_id, key), media):  # the cache is only touched on the event loop
            logger.warning("replay media %s/%s (%d bytes) is larger than the cache (%d bytes): not cached",
                           recording_id, key, len(media.data), self.cache.max_bytes)
        return media

    def _remux(self, recording_id: str, key: str, actor: str) -> Remuxed:
        reader = self._open_reader(actor, recording_id, None)
        group = next((g for g in media_groups(reader.manifest) if g.key == key), None)
        if group is None:
            raise Refused(404, "not_found", "no such media in this recording", actor=actor, target=recording_id,
                          audit=False)
        try:
            media = remux(reader, group)
        except RecordingIntegrityError as exc:
            raise Refused(409, "tampered", f"the recording fails authentication: {exc}", actor=actor,
                          target=recording_id) from None
        except RemuxError as exc:
            raise Refused(500, "remux_failed", str(exc), actor=actor, target=recording_id, audit=False) from None
        self.remux_count += 1
        return media


# --- events ---------------------------------------------------------------------------------------


def _participants(events) -> dict[str, dict]:
    """participant id -> {id, identity, name, role} from track-owner and participant-joined events."""
    found: dict[str, dict] = {}
    for data in events:
        if data.get("type") in ("track-owner", "participant-joined", "participant-updated"):
            p = data.get("participant")
            if isinstance(p, dict) and isinstance(p.get("id"), str):
                found[p["id"]] = {"id": p["id"], "identity": p.get("identity"), "name": p.get("name"),
                                  "role": p.get("role")}
    return found


def _face_spans(timeline: list[dict]) -> list[tuple[int, int]]:
    """When face-anchored marks were on the board: (from, to) on the timeline."""
    board: dict[str, bool] = {}  # shape id -> face-anchored
    spans: list[tuple[int, int]] = []
    since: Optional[int] = None
    for item in timeline:
        event, at = item["event"], item["at_ms"]
        kind = event.get("type")
        if kind == "annotation-snapshot":
            board = {s.get("id"): s.get("anchor") == "face" for s in event.get("shapes") or [] if isinstance(s, dict)}
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
        spans.append((since, 2**62))
    return spans


def _trim_landmarks(timeline: list[dict]) -> bool:
    """Drops face-metrics landmarks (478 points, 5 Hz) except around face-anchored marks,
    which need them to be drawn. True when there are such marks."""
    spans = _face_spans(timeline)
    for index, item in enumerate(timeline):
        event = item["event"]
        face = event.get("face") if event.get("kind") == "face-metrics" else None
        if not isinstance(face, dict) or "landmarks" not in face:
            continue
        at = item["at_ms"]
        if not any(a - FACE_MARGIN_MS <= at <= b + FACE_MARGIN_MS for a, b in spans):
            timeline[index] = {**item, "event": {**event, "face": {k: v for k, v in face.items() if k != "landmarks"}}}
    return bool(spans)


# --- HTTP -----------------------------------------------------------------------------------------


def _json(body: dict) -> web.Response:
    response = web.json_response(body)
    response.headers["Cache-Control"] = "no-store"
    response.enable_compression()
    return response


def parse_range(header: str, size: int) -> Optional[tuple[int, int]]:
    """(first, last) byte of a single `bytes=` range, inclusive; None to send everything;
    ValueError when it cannot be satisfied."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None  # absent, several ranges or another unit: the whole body (RFC 9110 allows that)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError("range not satisfiable")
    return start, end


def _media_response(request: web.Request, media: Remuxed) -> web.Response:
    data = media.data
    size = len(data)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store", "Content-Type": media.content_type,
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "Content-Disposition": "inline"}
    try:
        wanted = parse_range(request.headers.get("Range", ""), size)
    except ValueError:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is None:
        return web.Response(body=data, headers=headers)
    first, last = wanted
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return web.Response(status=206, body=memoryview(data)[first:last + 1], headers=headers)


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
    service = service or ReplayService(services.config.data_dir, services.issuer)

    async def page(request: web.Request) -> web.FileResponse:
        response = web.FileResponse(STATIC_DIR / "trainer.html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def list_recordings(request: web.Request) -> web.Response:
        grant = service.grant(request)
        return _json(await service._run(service.list_recordings, grant))

    async def get_recording(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        grant = service.grant(request, target=recording_id[:80])
        service.check_recording(grant, recording_id)
        return _json(await service._run(service.open_recording, grant, recording_id))

    async def urls(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        grant = service.grant(request, target=recording_id[:80])
        service.check_recording(grant, recording_id)
        return _json(await service._run(service.fresh_urls, grant, recording_id))

    async def media(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        match = _MEDIA_NAME.match(request.match_info["name"])
        if not is_recording_id(recording_id) or match is None:
            return _error(404, "not_found", "no such media")
        actor = service.check_signature(request, recording_id, match.group(0))
        remuxed = await service.media(recording_id, match["key"], actor)
        if remuxed.start_ms is None:
            return _error(404, "not_found", "this participant's tracks hold no playable media")
        return _media_response(request, remuxed)

    return [
        web.get("/trainer", page),
        web.get("/api/replay/recordings", _guarded(service, list_recordings)),
        web.get("/api/replay/recordings/{recording_id}", _guarded(service, get_recording)),
        web.get("/api/replay/recordings/{recording_id}/urls", _guarded(service, urls)),
        web.get("/api/replay/media/{recording_id}/{name}", _guarded(service, media)),
    ]
