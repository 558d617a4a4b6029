"""What a client sends over the WebSocket: signalling/protocol.py parse_client_message, and
the join token in a `join` (signalling/tokens.py TokenIssuer.verify, also what the replay
API runs on an `Authorization: Bearer` header).

Properties: any text gives a message or a ProtocolError with a known code (fatal only for
an oversized message); an accepted message is the JSON that was sent, of a known type,
with every field of its schema present when required, of its type (no bool for an int)
and within its documented values; any token string gives a Grant or a TokenError, and a
token altered anywhere never verifies as anything but what was signed.

What it found in signalling/ is fixed; the failing inputs stay as regression tests.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from signalling.protocol import (
    _SCHEMAS,
    CAPTURE_POSES,
    CLIENT_MESSAGE_TYPES,
    MAX_MESSAGE_BYTES,
    MAX_SDP_BYTES,
    MAX_VIEW_PIXELS,
    MAX_VIEWS,
    ProtocolError,
    parse_client_message,
)
from signalling.tokens import TokenError, TokenIssuer

from .support import mutated, surrogate_text

ERROR_CODES = {"too_large", "bad_json", "bad_message", "unknown_type", "bad_sdp"}

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | surrogate_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

# per field: values of its type, at and past the documented limits
VALID_VALUES: dict[str, st.SearchStrategy] = {
    "token": st.text(max_size=20) | surrogate_text, "v": st.integers(-1, 3) | st.integers(),
    "sdp": st.sampled_from(("v=0\r\n", "", "a" * MAX_SDP_BYTES, "a" * (MAX_SDP_BYTES + 1))) | st.text(max_size=20),
    "rev": st.integers(), "kind": st.sampled_from(("audio", "video", "data", "")), "muted": st.booleans(),
    "participant_id": st.text(max_size=12), "op": st.sampled_from(("add", "undo", "clear", "")),
    "action": st.sampled_from(("start", "stop", "pause")),
    "poses": st.lists(st.sampled_from(CAPTURE_POSES + ("up", "")), max_size=10) | st.lists(json_values, max_size=3),
    "tolerance_deg": st.sampled_from((1, 2, 8, 20, 21, 2.0, 1.99, 19.99, 20.01, math.inf, math.nan))
    | st.integers(-3, 25) | st.floats(allow_nan=True),
    "recording_id": st.text(max_size=40) | surrogate_text, "given": st.booleans(),
    "videos": st.dictionaries(st.text(max_size=70), st.fixed_dictionaries(
        {"width": st.integers(-1, MAX_VIEW_PIXELS + 1) | st.booleans(), "height": st.integers(-1, MAX_VIEW_PIXELS + 1)})
        | json_values, max_size=MAX_VIEWS + 2),
}


@st.composite
def client_messages(draw: st.DrawFn) -> dict:
    """Messages of known and unknown types; each field mostly of its type, sometimes of another
    or missing; extra fields."""
    msg_type = draw(st.sampled_from(CLIENT_MESSAGE_TYPES) if draw(st.integers(0, 7)) else json_values)
    message: dict = {"type": msg_type}
    for name in _SCHEMAS.get(msg_type, {}) if isinstance(msg_type, str) else ():
        if draw(st.integers(0, 11)):  # usually present
            message[name] = draw(VALID_VALUES[name] if draw(st.integers(0, 7)) else json_values)
    if draw(st.booleans()):
        message.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    if draw(st.integers(0, 15)) == 0:
        del message["type"]
    return message


def encoded(message: st.SearchStrategy) -> st.SearchStrategy[str]:
    return message.map(lambda m: json.dumps(m, allow_nan=True))


other_texts = st.one_of(
    encoded(json_values),
    encoded(client_messages()).flatmap(lambda text: mutated(st.just(text.encode())).map(
        lambda b: b.decode("utf-8", "surrogateescape"))),
    st.text(max_size=200),
    surrogate_text,
)
# half of them messages (a `|` would flatten into one choice among five)
texts = st.booleans().flatmap(lambda message: encoded(client_messages()) if message else other_texts)


def check_accepted(message: dict) -> None:
    msg_type = message["type"]
    assert msg_type in CLIENT_MESSAGE_TYPES
    for name, (types, required) in _SCHEMAS[msg_type].items():
        if name not in message:
            assert not required
            continue
        value = message[name]
        assert isinstance(value, types) and (bool in types or not isinstance(value, bool))
    if msg_type == "mute":
        assert message["kind"] in ("audio", "video")
    if msg_type in ("record", "capture"):
        assert message["action"] in ("start", "stop")
    if msg_type == "capture":
        poses = message.get("poses")
        assert poses is None or (1 <= len(poses) <= 8 and set(poses) <= set(CAPTURE_POSES))
        tolerance = message.get("tolerance_deg", 8)
        assert math.isfinite(tolerance) and 2 <= tolerance <= 20
    if msg_type == "answer":
        assert len(message["sdp"]) <= MAX_SDP_BYTES
    if msg_type == "view":
        videos = message["videos"]
        assert len(videos) <= MAX_VIEWS and all(0 < len(key) <= 64 for key in videos)
        assert all(type(size[side]) is int and 0 <= size[side] <= MAX_VIEW_PIXELS
                   for size in videos.values() for side in ("width", "height"))


@given(texts)
@example("[" * 100_000)  # nesting deeper than the JSON decoder recurses
@example('{"type": "join", "token": "t", "v": 1' + " " * MAX_MESSAGE_BYTES + "}")
@example('{"type": "join", "token": "t", "v": ' + "9" * 5000 + "}")  # past int()'s digit limit
@example('{"type": "capture", "action": "start", "tolerance_deg": NaN}')
@example('{"type": "join", "token": "t", "v": true}')
@example('{"type": "\\ud800"}')
@example('{"type": "view", "videos": {"p-1": {"width": true, "height": 1}}}')
def test_any_text_is_a_valid_message_or_a_protocol_error(text):
    try:
        message = parse_client_message(text)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES and isinstance(exc.message, str)
        assert exc.fatal == (exc.code == "too_large")
        json.dumps(exc.to_message())
        event(f"refused: {exc.code}")
        return
    event(f"accepted: {message['type']}")
    # the JSON that was sent, untouched (compared as JSON: a NaN in an extra field is unequal to itself)
    assert json.dumps(message, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)
    check_accepted(message)


# --- join tokens -----------------------------------------------------------------------------------

ISSUER = TokenIssuer("s" * 32)
TOKEN = ISSUER.mint(room="r1", identity="doctor-1", name="Dr Who", role="doctor", ttl_s=600, instance="i1")
GRANT = ISSUER.verify(TOKEN)


@given(st.text(max_size=300) | st.sampled_from(("", " ", "a.b.c", "..", TOKEN[:-1], TOKEN + "=")))
def test_any_token_verifies_or_raises_token_error(token):
    try:
        grant = ISSUER.verify(token)
    except TokenError as exc:
        assert exc.code in ("unauthorized", "token_expired")
        return
    assert grant == GRANT


@given(mutated(st.just(TOKEN.encode())).map(lambda b: b.decode("ascii", "replace")))
def test_an_altered_token_never_verifies_as_anything_but_what_was_signed(token):
    try:
        grant = ISSUER.verify(token)
    except TokenError:
        return
    assert grant == GRANT  # only an edit base64 decodes away (e.g. in unused padding bits)


@pytest.mark.parametrize("token", ["\ud800", "abc.\udcff.def", TOKEN + "\udcff"])
def test_a_token_with_a_lone_surrogate_is_refused_with_token_error(token):
    with pytest.raises(TokenError):
        ISSUER.verify(token)
