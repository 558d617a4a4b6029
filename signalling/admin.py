"""The authenticated REST admin API for clinic admins and integrators.

Bearer-key auth (the key is generated into the data directory on first run).
Errors are JSON: {"error": code, "message": text} with a matching HTTP status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any, Optional

import aiohttp
from aiohttp import StreamReader, web

from i18n import LOCALES, supported_locale
from media.peer import VIDEO_CODECS
from media.processors.face_processor import CATALOGUE as PROCESSORS
from recorder.errors import RecorderError

from .registry import (
    LIVE_WATERMARK_MODES,
    RegistryError,
    RegistryUnavailable,
    RoomInstance,
    find_instance,
    room_text_problem,
)
from .roles import PAGE_FOR_ROLE, ROLES
from .tokens import JTI_PATTERN, unique_identity

ADMIN_MAX_BODY = 16 * 1024
MAX_LINK_TTL_S = 7 * 86400


# Marks an admin call one node made on another's behalf: answered there, never passed on again.
FORWARDED_HEADER = "X-Consult-Forwarded"


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


class AdminApi:
    def __init__(self, *, api_key: str, services) -> None:
        self._api_key = api_key
        self._services = services

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/rooms", self.create_room),
            web.get("/api/rooms", self.list_rooms),
            web.get("/api/rooms/{room_id}", self.get_room),
            web.delete("/api/rooms/{room_id}", self.close_room),
            web.post("/api/rooms/{room_id}/links", self.mint_link),
            web.delete("/api/rooms/{room_id}/links/{jti}", self.revoke_link),
            web.get("/api/rooms/{room_id}/instances", self.instances),
            web.get("/api/rooms/{room_id}/participants", self.list_participants),
            web.get("/api/rooms/{room_id}/media", self.media),
            web.delete("/api/rooms/{room_id}/participants/{participant_id}", self.kick),
            web.post("/api/rooms/{room_id}/recording", self.recording),
            web.get("/api/node", self.node),
            web.post("/api/node/drain", self.drain),
        ]

    @web.middleware
    async def auth_middleware(self, request: web.Request, handler):
        if request.path.startswith(("/api/rooms", "/api/node")):
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self._api_key.encode()):
                return json_error(401, "unauthorized", "send 'Authorization: Bearer <admin key>'")
        return await handler(request)

    async def node(self, request: web.Request) -> web.Response:
        """This node: its live rooms and participants, and whether it drains."""
        rooms = self._services.rooms
        live_rooms, participants = rooms.load()
        shared = self._services.shared
        return web.json_response({"id": shared.placement.node_id if shared else None, "rooms": live_rooms,
                                  "participants": participants, "draining": rooms.draining})

    async def drain(self, request: web.Request) -> web.Response:
        """Drain this node as SIGTERM does, without stopping it: no new rooms; after `grace_s`
        (default --drain-grace) the calls left move. The node stays up for the operator to stop."""
        body = await self._body(request)
        grace = body.get("grace_s", self._services.config.drain_grace_s)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 86_400:
            return json_error(400, "bad_request", "'grace_s' must be 0-86400 seconds")
        rooms = self._services.rooms
        if rooms.draining:
            return json_error(409, "already_draining", "this node is draining already")
        rooms.start_drain(float(grace))
        live_rooms, participants = rooms.load()
        return web.json_response({"draining": True, "grace_s": grace, "rooms": live_rooms,
                                  "participants": participants}, status=202)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        declared = request.content_length or 0
        raw = b"" if declared > ADMIN_MAX_BODY else await _read_capped(request.content, ADMIN_MAX_BODY)
        if declared > ADMIN_MAX_BODY or len(raw) > ADMIN_MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(
                max_size=ADMIN_MAX_BODY, actual_size=max(declared, len(raw)),
                text=json.dumps({"error": "too_large", "message": f"bodies are limited to {ADMIN_MAX_BODY} bytes"}),
                content_type="application/json")
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _bad_request("bad_json", "the body is not valid JSON")
        if not isinstance(body, dict):
            raise _bad_request("bad_json", "the body must be a JSON object")
        return body

    async def _open_room(self, request: web.Request):
        room = await self._services.registry.get_room(request.match_info["room_id"])
        if room is None or not room.open:
            raise web.HTTPNotFound(text=json.dumps({"error": "not_found", "message": "no such open room"}),
                                   content_type="application/json")
        return room

    async def create_room(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = body.get("name", "Consultation")
        room_id = body.get("id")
        max_participants = body.get("max_participants", self._services.config.max_participants)
        video_codec = body.get("video_codec", "vp8")
        if video_codec not in VIDEO_CODECS:
            return json_error(400, "bad_request", f"'video_codec' must be one of {', '.join(VIDEO_CODECS)}")
        processors = body.get("processors", self._services.config.default_processors)
        if not isinstance(processors, list) or not all(p in PROCESSORS for p in processors):
            return json_error(400, "bad_request", f"'processors' must be a list of: {', '.join(PROCESSORS)}")
        language = _language(body, None)  # none: each page follows its browser
        live_watermark = body.get("live_watermark", self._services.config.default_live_watermark)
        if not isinstance(live_watermark, str) or live_watermark not in LIVE_WATERMARK_MODES:
            return json_error(400, "bad_request",
                              f"'live_watermark' must be one of {', '.join(LIVE_WATERMARK_MODES)}")
        if not isinstance(name, str) or not (1 <= len(name) <= 120):
            return json_error(400, "bad_request", "'name' must be a string of 1-120 characters")
        # shown to the patient: the clinic's name, the doctor they wait for, how to reach the clinic
        clinic, doctor_name, contact = (_room_text(body, field) for field in ("clinic", "doctor_name", "contact"))
        if room_id is not None and not isinstance(room_id, str):
            return json_error(400, "bad_request", "'id' must be a string")
        if (not isinstance(max_participants, int) or isinstance(max_participants, bool)
                or not 2 <= max_participants <= 16):
            return json_error(400, "bad_request", "'max_participants' must be an integer from 2 to 16")
        consent_required = body.get("consent_required", False)
        if not isinstance(consent_required, bool):
            return json_error(400, "bad_request", "'consent_required' must be true or false")
        try:
            room = await self._services.registry.create_room(name, room_id, max_participants, video_codec,
                                                             processors, language, live_watermark,
                                                             clinic, consent_required, doctor_name, contact)
        except RegistryError as exc:
            return json_error(409, "conflict", str(exc))
        return web.json_response(room.public(), status=201)

    async def list_rooms(self, request: web.Request) -> web.Response:
        rooms = await self._services.registry.list_rooms()
        return web.json_response({"rooms": [r.public() for r in rooms]})

    async def _on_the_rooms_node(self, request: web.Request) -> Optional[web.Response]:
        """Several nodes: a call about a room's live call (who is in it, its media, a kick, its
        recording) that reached a node not running it is made on the node that does, with the
        same key; that node's answer is the answer. None: this node answers."""
        shared = self._services.shared
        room_id = request.match_info["room_id"]
        if shared is None or room_id in self._services.rooms.live or request.headers.get(FORWARDED_HEADER):
            return None
        try:
            owner = await shared.placement.owner_url(room_id)
        except RegistryUnavailable as exc:
            return json_error(503, "unavailable", str(exc))
        if owner is None:
            return None
        body = await request.read()
        headers = {"Authorization": request.headers.get("Authorization", ""), FORWARDED_HEADER: "1",
                   "Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.request(request.method, owner + request.path_qs, data=body or None,
                                        headers=headers) as answer:
                    return web.Response(status=answer.status, body=await answer.read(),
                                        content_type=answer.content_type)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return json_error(502, "node_unreachable", f"the node running this room did not answer: {exc}")

    async def get_room(self, request: web.Request) -> web.Response:
        if (elsewhere := await self._on_the_rooms_node(request)) is not None:
            return elsewhere
        room = await self._open_room(request)
        participants = await self._services.rooms.participants(room.id)
        return web.json_response({**room.public(), "participants": [p.public() for p in participants]})

    async def close_room(self, request: web.Request) -> web.Response:
        room = await self._open_room(request)
        await self._services.rooms.close_room(room.id)
        return web.json_response({"closed": room.id})

    async def mint_link(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        role = body.get("role")
        if role not in ROLES:
            return json_error(400, "bad_request", f"'role' must be one of {', '.join(ROLES)}")
        lives = await self._services.registry.instances(request.match_info["room_id"])
        if not lives or (not lives[-1].open and role != "trainer"):
            return json_error(404, "not_found", "no such open room")
        # recordings outlive their rooms: trainers may get links to closed rooms, and to earlier instances
        life = self._link_instance(lives, role, body.get("instance"))
        name = body.get("name", role.capitalize())
        identity = body.get("identity", unique_identity(role))
        ttl_s = body.get("ttl_s", self._services.config.link_ttl_s)
        permissions = body.get("permissions")
        # the page's language: the link's own, else the room's (the page falls back to the browser's)
        room = await self._services.registry.get_room(life.room_id)
        language = _language(body, supported_locale(room.language) if room is not None else None)
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 60 <= ttl_s <= MAX_LINK_TTL_S:
            return json_error(400, "bad_request", f"'ttl_s' must be an integer from 60 to {MAX_LINK_TTL_S}")
        if permissions is not None and (not isinstance(permissions, list)
                                        or not all(isinstance(p, str) for p in permissions)):
            return json_error(400, "bad_request", "'permissions' must be a list of strings")
        try:  # identity and name are checked there: bounded, printable (a clear 400 otherwise)
            issued = self._services.issuer.issue(room=life.room_id, identity=identity, name=name, role=role,
                                                 ttl_s=ttl_s, permissions=permissions, instance=life.instance,
                                                 language=language)
        except ValueError as exc:
            return json_error(400, "bad_request", str(exc))
        url = f"{self._services.config.base_url()}{PAGE_FOR_ROLE[role]}#token={issued.token}"
        return web.json_response({"token": issued.token, "url": url, "role": role, "room": life.room_id,
                                  "instance": life.instance, "identity": identity, "jti": issued.jti,
                                  "expires_at": issued.expires_at, "language": language}, status=201)

    @staticmethod
    def _link_instance(lives: list[RoomInstance], role: str, wanted: Any) -> RoomInstance:
        """The room instance a new link is for: the latest, or (trainers only) an earlier one named."""
        if wanted is None or wanted == lives[-1].instance:
            return lives[-1]
        if not isinstance(wanted, str) or len(wanted) > 64:
            raise _bad_request("bad_request", "'instance' must be a room instance id (see /instances)")
        if role != "trainer":
            raise _bad_request("bad_request", "only trainer links may be made for an earlier instance of a room")
        life = find_instance(lives, wanted)
        if life is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "not_found", "message": "no such instance of this room"}),
                                   content_type="application/json")
        return life

    async def revoke_link(self, request: web.Request) -> web.Response:
        """Withdraws a link (by the jti its mint returned) until it would expire; whoever is in the
        room with it is removed (`kicked`), as the link no longer admits them."""
        if not await self._services.registry.instances(request.match_info["room_id"]):
            return json_error(404, "not_found", "no such room")
        jti = request.match_info["jti"]
        if not JTI_PATTERN.match(jti):
            return json_error(400, "bad_request", "a link id (jti) is 32 lowercase hexadecimal digits")
        # The server keeps no list of minted links, so it cannot know this one's expiry: the
        # entry is kept as long as any link can live, which covers it.
        until = int(time.time()) + max(MAX_LINK_TTL_S, self._services.config.link_ttl_s)
        try:
            ended = await self._services.rooms.revoke_link(jti, until)
        except OSError as exc:
            return json_error(500, "not_saved", f"revoked until the server restarts, but not saved: {exc}")
        return web.json_response({"revoked": jti, "until": until, "sessions_ended": ended})

    async def instances(self, request: web.Request) -> web.Response:
        """Every instance (creation) of the room id, oldest first: for trainer links to earlier ones."""
        lives = await self._services.registry.instances(request.match_info["room_id"])
        if not lives:
            return json_error(404, "not_found", "no such room")
        return web.json_response({"room": lives[-1].room_id, "instances": [life.public() for life in lives]})

    async def list_participants(self, request: web.Request) -> web.Response:
        if (elsewhere := await self._on_the_rooms_node(request)) is not None:
            return elsewhere
        room = await self._open_room(request)
        participants = await self._services.rooms.participants(room.id)
        return web.json_response({"participants": [p.public() for p in participants]})

    async def media(self, request: web.Request) -> web.Response:
        """Per-participant forwarding counters: packets, losses recovered, RED, NACK, keyframes."""
        if (elsewhere := await self._on_the_rooms_node(request)) is not None:
            return elsewhere
        room = await self._open_room(request)
        live = self._services.rooms.live.get(room.id)
        summary = live.media.forwarding_summary() if live is not None else {}
        return web.json_response({"room": room.id, "participants": summary})

    async def kick(self, request: web.Request) -> web.Response:
        if (elsewhere := await self._on_the_rooms_node(request)) is not None:
            return elsewhere
        room = await self._open_room(request)
        if not await self._services.rooms.kick(room.id, request.match_info["participant_id"]):
            return json_error(404, "not_found", "no such participant in this room")
        return web.json_response({"kicked": request.match_info["participant_id"], "link_revoked": True})

    async def recording(self, request: web.Request) -> web.Response:
        """{"action": "start"|"stop"}: an integrator records a consultation (everyone is told)."""
        if (elsewhere := await self._on_the_rooms_node(request)) is not None:
            return elsewhere
        room = await self._open_room(request)
        body = await self._body(request)
        action = body.get("action")
        if action not in ("start", "stop"):
            return json_error(400, "bad_request", "'action' must be 'start' or 'stop'")
        live = self._services.rooms.live.get(room.id)
        if live is None:
            return json_error(409, "not_live", "nobody is in this room; there is nothing to record")
        if action == "stop":
            stopped = await live.recorder.stop("stopped")
            if stopped is None:
                return json_error(409, "not_recording", "this room is not being recorded")
            return web.json_response({"recording_id": stopped, "state": "off"})
        try:
            recording = await live.recorder.start("admin-api")
        except RecorderError as exc:
            return json_error(500, "recording_failed", str(exc))
        return web.json_response({"recording_id": recording.id, "state": "on"}, status=201)


def _language(body: dict, default: str | None) -> str | None:
    """The locale we ship for the body's `language` (any tag of it), else `default`; 400 otherwise."""
    if body.get("language") is None:
        return default
    language = supported_locale(body["language"])
    if language is None:
        raise _bad_request("bad_request", f"'language' must be a language tag of {', '.join(LOCALES)}")
    return language


def _room_text(body: dict, field: str) -> str | None:
    """The body's room text `field` (registry.ROOM_TEXT_LIMITS), None when not given; 400 otherwise."""
    value = body.get(field)
    problem = room_text_problem(field, value)
    if problem is not None:
        raise _bad_request("bad_request", problem)
    return value


def _bad_request(code: str, message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": code, "message": message}), content_type="application/json")


async def _read_capped(content: StreamReader, limit: int) -> bytes:
    """The whole body, or its first limit + 1 bytes (enough to know it is too large). One read()
    returns only what has arrived so far: a body sent in pieces needs several."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
