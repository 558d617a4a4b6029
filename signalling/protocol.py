"""The WebSocket protocol's message shapes and typed errors (docs/PROTOCOL.md).

Parsing here is strict and cheap: anything that is not a JSON object of a known
type with the right field types becomes a ProtocolError before any handler runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSIONS = (1,)
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_BYTES = 48 * 1024

# type -> {field: (python types, required)}
_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "join": {"token": ((str,), True), "v": ((int,), True)},
    "answer": {"sdp": ((str,), True), "rev": ((int,), True)},
    "mute": {"kind": ((str,), True), "muted": ((bool,), True)},
    "kick": {"participant_id": ((str,), True)},
    "ping": {},
    "leave": {},
    # the shape itself is validated by annotate.AnnotationBoard
    "annotate": {"op": ((str,), True)},
    "annotations-get": {},
    "record": {"action": ((str,), True)},
    # a participant's answer when told the room is recorded: continue (true) or leave (false)
    "consent": {"recording_id": ((str,), True), "given": ((bool,), True)},
    "capture": {"action": ((str,), True), "poses": ((list,), False), "tolerance_deg": ((int, float), False)},
    # the size the page draws each remote video at (participant id -> width and height)
    "view": {"videos": ((dict,), True)},
}

CLIENT_MESSAGE_TYPES = tuple(_SCHEMAS)
CAPTURE_POSES = ("frontal", "left45", "right45")
MAX_VIEWS = 32  # remote videos one `view` message may size
MAX_VIEW_PIXELS = 8192  # per side: past any screen

# WebSocket close codes used with fatal errors
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_ROOM = 4403


@dataclass
class ProtocolError(Exception):
    code: str
    message: str
    fatal: bool = False

    def to_message(self) -> dict:
        return error_message(self.code, self.message, self.fatal)


def error_message(code: str, message: str, fatal: bool = False) -> dict:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


def parse_client_message(text: str) -> dict[str, Any]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"messages are limited to {MAX_MESSAGE_BYTES} bytes", fatal=True)
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object")
    msg_type = message.get("type")
    if not isinstance(msg_type, str):
        raise ProtocolError("bad_message", "the message has no string 'type'")
    schema = _SCHEMAS.get(msg_type)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown message type {msg_type[:40]!r}")
    for name, (types, required) in schema.items():
        if name not in message:
            if required:
                raise ProtocolError("bad_message", f"'{msg_type}' needs the field '{name}'")
            continue
        value = message[name]
        # bool is an int in Python; a protocol int field must not accept true/false
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            expected = "/".join(t.__name__ for t in types)
            raise ProtocolError("bad_message", f"'{msg_type}.{name}' must be {expected}")
    if msg_type == "mute" and message["kind"] not in ("audio", "video"):
        raise ProtocolError("bad_message", "'mute.kind' must be 'audio' or 'video'")
    if msg_type == "capture":
        if message["action"] not in ("start", "stop"):
            raise ProtocolError("bad_message", "'capture.action' must be 'start' or 'stop'")
        poses = message.get("poses")
        if poses is not None and (not poses or len(poses) > 8 or not all(p in CAPTURE_POSES for p in poses)):
            raise ProtocolError("bad_message", f"'capture.poses': 1-8 of {', '.join(CAPTURE_POSES)}")
        if not 2 <= message.get("tolerance_deg", 8) <= 20:
            raise ProtocolError("bad_message", "'capture.tolerance_deg' must be 2-20")
    if msg_type == "record" and message["action"] not in ("start", "stop"):
        raise ProtocolError("bad_message", "'record.action' must be 'start' or 'stop'")
    if msg_type == "view":
        _check_views(message["videos"])
    if msg_type == "answer" and len(message["sdp"].encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise ProtocolError("bad_sdp", f"SDP is limited to {MAX_SDP_BYTES} bytes")
    return message


def _check_views(videos: dict) -> None:
    if len(videos) > MAX_VIEWS:
        raise ProtocolError("bad_message", f"'view.videos' sizes at most {MAX_VIEWS} videos")
    for participant_id, size in videos.items():
        if not 0 < len(participant_id) <= 64:
            raise ProtocolError("bad_message", "'view.videos' keys are participant ids")
        if not isinstance(size, dict) or not all(
                isinstance(size.get(side), int) and not isinstance(size.get(side), bool)
                and 0 <= size[side] <= MAX_VIEW_PIXELS for side in ("width", "height")):
            raise ProtocolError("bad_message",
                                f"'view.videos' values are {{\"width\": w, \"height\": h}}, 0-{MAX_VIEW_PIXELS} each")
