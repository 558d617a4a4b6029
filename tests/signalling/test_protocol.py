"""signalling/protocol.py on its own: parse_client_message's contract, message type by message
type, and the typed errors (docs/PROTOCOL.md, "Errors").

tests/fuzz/test_fuzz_messages.py checks properties over random texts (any text is a message or
a ProtocolError of a known code); this file pins the exact behaviour at each documented rule
and limit, so that a rule loosened or tightened by one shows up here by name.
"""

from __future__ import annotations

import json

import pytest

from signalling.protocol import (
    CAPTURE_POSES,
    CLIENT_MESSAGE_TYPES,
    MAX_MESSAGE_BYTES,
    MAX_SDP_BYTES,
    MAX_VIEW_PIXELS,
    MAX_VIEWS,
    ProtocolError,
    error_message,
    parse_client_message,
)


def parse(message: object) -> dict:
    return parse_client_message(json.dumps(message))


def refused(message: object) -> ProtocolError:
    """The ProtocolError parsing `message` (JSON-encoded unless it is text already) raises."""
    text = message if isinstance(message, str) else json.dumps(message)
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text)
    return caught.value


def padded(message: dict, total_bytes: int) -> str:
    """`message` as JSON with a `pad` field making it exactly `total_bytes` bytes of UTF-8."""
    bare = json.dumps({**message, "pad": ""})
    text = bare[:-2] + "x" * (total_bytes - len(bare.encode())) + bare[-2:]
    assert len(text.encode()) == total_bytes
    return text


# --- every message type's valid forms ----------------------------------------------------------------

VALID = {
    "join": [{"type": "join", "v": 1, "token": "eyJ.a.b"}],
    "answer": [{"type": "answer", "rev": 3, "sdp": "v=0\r\n"}],
    "mute": [{"type": "mute", "kind": "audio", "muted": True}, {"type": "mute", "kind": "video", "muted": False}],
    "kick": [{"type": "kick", "participant_id": "p-0123456789ab"}],
    "ping": [{"type": "ping"}],
    "leave": [{"type": "leave"}],
    "annotate": [{"type": "annotate", "op": "undo"},
                 {"type": "annotate", "op": "add", "shape": {"kind": "arrow", "from": [0, 0], "to": [1, 1]}}],
    "annotations-get": [{"type": "annotations-get"}],
    "record": [{"type": "record", "action": "start"}, {"type": "record", "action": "stop"}],
    "consent": [{"type": "consent", "recording_id": "rec-1", "given": True},
                {"type": "consent", "recording_id": "rec-1", "given": False}],
    "capture": [{"type": "capture", "action": "start"}, {"type": "capture", "action": "stop"},
                {"type": "capture", "action": "start", "poses": ["frontal", "left45", "right45"], "tolerance_deg": 8},
                {"type": "capture", "action": "start", "poses": ["left45"], "tolerance_deg": 12.5}],
    "view": [{"type": "view", "videos": {}},
             {"type": "view", "videos": {"p-1": {"width": 960, "height": 540}, "p-2": {"width": 0, "height": 0}}}],
}


def test_every_client_message_type_has_its_valid_forms_here():
    # a type added to the protocol without a case here fails this, not silently nothing
    assert set(VALID) == set(CLIENT_MESSAGE_TYPES)


@pytest.mark.parametrize("message", [m for forms in VALID.values() for m in forms],
                         ids=lambda m: m["type"])
def test_a_valid_message_is_returned_as_sent(message):
    parsed = parse(message)
    assert parsed == message and type(parsed) is dict


def test_fields_are_returned_with_their_json_types_for_the_handler():
    # the handlers index these directly: session.py reads message["rev"] as an int, etc.
    answer = parse({"type": "answer", "rev": 7, "sdp": "v=0"})
    assert type(answer["rev"]) is int and answer["rev"] == 7
    assert parse({"type": "mute", "kind": "video", "muted": False})["muted"] is False
    capture = parse({"type": "capture", "action": "start", "tolerance_deg": 2.5})
    assert capture["tolerance_deg"] == 2.5 and "poses" not in capture  # optional fields stay absent
    view = parse({"type": "view", "videos": {"p-1": {"width": 320, "height": 180}}})
    assert view["videos"]["p-1"] == {"width": 320, "height": 180}


def test_fields_a_type_does_not_know_are_kept_not_refused():
    # "Additive fields never bump the version": an older server takes a newer client's message
    message = {"type": "ping", "t": 12, "nested": {"a": [1, 2]}}
    assert parse(message) == message
    join = {"type": "join", "v": 1, "token": "t", "client": "consult-web/2.0"}
    assert parse(join) == join


def test_numbers_are_not_bounded_where_the_protocol_sets_no_bound():
    # rev and v are compared by the session (bad_state, unsupported version), not refused here
    assert parse({"type": "answer", "rev": 10**30, "sdp": ""})["rev"] == 10**30
    assert parse({"type": "join", "v": -1, "token": ""})["v"] == -1


# --- the JSON itself ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "{", "{not json", "{'type': 'ping'}", '{"type": "ping",}', "\x00", "ping"])
def test_text_that_is_not_json_is_bad_json(text):
    error = refused(text)
    assert (error.code, error.fatal) == ("bad_json", False)
    assert error.message.startswith("not valid JSON")


@pytest.mark.parametrize("text", ["[]", '[{"type": "ping"}]', '"ping"', "1", "1.5", "null", "true"])
def test_json_that_is_not_an_object_is_bad_json(text):
    error = refused(text)
    assert (error.code, error.fatal, error.message) == ("bad_json", False, "a message must be a JSON object")


def test_a_number_too_long_for_python_is_bad_json_not_a_value_error():
    # int() refuses more than 4300 digits (a ValueError inside json.loads): still a typed error
    error = refused('{"type": "answer", "rev": ' + "9" * 5000 + ', "sdp": ""}')
    assert error.code == "bad_json"


def test_nesting_too_deep_for_the_decoder_is_bad_json():
    text = '{"type": "ping", "x": ' + "[" * 20_000 + "]" * 20_000 + "}"  # under the size limit: parsed
    assert len(text) < MAX_MESSAGE_BYTES
    error = refused(text)
    assert error.code == "bad_json"


# --- type -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [{}, {"typ": "ping"}, {"type": None}, {"type": 1}, {"type": ["ping"]},
                                     {"type": {"ping": 1}}, {"type": True}])
def test_a_message_without_a_string_type_is_bad_message(message):
    error = refused(message)
    assert (error.code, error.fatal) == ("bad_message", False)
    assert "'type'" in error.message


@pytest.mark.parametrize("msg_type", ["", "Ping", "PING", " ping", "ping ", "drop-table", "joined", "offer",
                                      "error", "__proto__", "constructor"])
def test_a_type_not_in_the_protocol_is_unknown_type(msg_type):
    # server-to-client types (joined, offer, error) are not client messages either
    error = refused({"type": msg_type})
    assert (error.code, error.fatal) == ("unknown_type", False)


def test_an_unknown_type_is_named_in_the_error_cut_to_40_characters():
    error = refused({"type": "z" * 10_000})
    assert error.code == "unknown_type"
    assert "z" * 40 in error.message and "z" * 41 not in error.message


# --- required fields and field types ---------------------------------------------------------------------

REQUIRED = [(msg_type, name) for msg_type, forms in VALID.items()
            for name in forms[0] if name != "type" and not (msg_type == "capture" and name in ("poses",
                                                                                            "tolerance_deg"))]


@pytest.mark.parametrize("msg_type,field", REQUIRED, ids=lambda x: x)
def test_each_required_field_missing_is_bad_message_naming_it(msg_type, field):
    message = {k: v for k, v in VALID[msg_type][0].items() if k != field}
    error = refused(message)
    assert (error.code, error.fatal) == ("bad_message", False)
    assert error.message == f"'{msg_type}' needs the field '{field}'"


WRONG_TYPES = {
    "join": {"token": [None, 1, ["t"], {"t": 1}, True], "v": ["1", 1.0, True, False, None, [1]]},
    "answer": {"sdp": [None, 1, ["v=0"]], "rev": ["3", 3.0, True, None]},
    "mute": {"kind": [None, 1, ["audio"]], "muted": [1, 0, "true", None]},
    "kick": {"participant_id": [None, 1, ["p-1"], {"id": "p-1"}]},
    "annotate": {"op": [None, 1, ["add"], {"op": "add"}]},
    "record": {"action": [None, 1, True]},
    "consent": {"recording_id": [None, 1], "given": [1, "yes", None]},
    "capture": {"action": [None, 1], "poses": ["frontal", {"frontal": 1}, 1], "tolerance_deg": ["8", True, None, [8]]},
    "view": {"videos": [None, [], "p-1", 1]},
}


@pytest.mark.parametrize("msg_type,field,value",
                         [(t, f, v) for t, fields in WRONG_TYPES.items() for f, values in fields.items()
                          for v in values], ids=lambda x: repr(x))
def test_a_field_of_the_wrong_type_is_bad_message_naming_it(msg_type, field, value):
    message = {**VALID[msg_type][-1], field: value}
    error = refused(message)
    assert (error.code, error.fatal) == ("bad_message", False)
    assert error.message.startswith(f"'{msg_type}.{field}' must be ")


def test_booleans_are_never_taken_for_integers():
    # bool is an int in Python; in the protocol, true is not 1
    for message in ({"type": "join", "v": True, "token": "t"}, {"type": "answer", "rev": False, "sdp": ""},
                    {"type": "capture", "action": "start", "tolerance_deg": True}):
        assert refused(message).code == "bad_message", message


def test_an_integral_float_is_not_an_integer():
    assert refused({"type": "join", "v": 1.0, "token": "t"}).code == "bad_message"
    assert refused({"type": "answer", "rev": 1e0, "sdp": ""}).code == "bad_message"


# --- values ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["", "Audio", "screen", "data", "audio "])
def test_mute_kind_is_audio_or_video(kind):
    error = refused({"type": "mute", "kind": kind, "muted": True})
    assert (error.code, error.message) == ("bad_message", "'mute.kind' must be 'audio' or 'video'")


@pytest.mark.parametrize("msg_type", ["record", "capture"])
@pytest.mark.parametrize("action", ["", "Start", "pause", "begin", "stop "])
def test_record_and_capture_actions_are_start_or_stop(msg_type, action):
    error = refused({"type": msg_type, "action": action})
    assert (error.code, error.message) == ("bad_message", f"'{msg_type}.action' must be 'start' or 'stop'")


def test_capture_poses_one_to_eight_of_the_known_ones():
    assert parse({"type": "capture", "action": "start", "poses": ["frontal"] * 8})["poses"] == ["frontal"] * 8
    assert set(CAPTURE_POSES) == {"frontal", "left45", "right45"}
    for poses in ([], ["frontal"] * 9, ["up"], ["frontal", "Frontal"], ["frontal", None], [["frontal"]], [{}]):
        error = refused({"type": "capture", "action": "start", "poses": poses})
        assert error.code == "bad_message" and "'capture.poses'" in error.message, poses


@pytest.mark.parametrize("tolerance", [2, 2.0, 8, 19.99, 20, 20.0])
def test_capture_tolerance_within_2_to_20_degrees(tolerance):
    assert parse({"type": "capture", "action": "start", "tolerance_deg": tolerance})["tolerance_deg"] == tolerance


@pytest.mark.parametrize("tolerance", ["NaN", "Infinity", "-Infinity", "1.999", "20.001", "0", "-5", "1e309"])
def test_capture_tolerance_outside_2_to_20_degrees_is_refused(tolerance):
    # NaN and the infinities are what Python's json accepts; NaN compares false with everything
    error = refused('{"type": "capture", "action": "start", "tolerance_deg": ' + tolerance + "}")
    assert (error.code, error.message) == ("bad_message", "'capture.tolerance_deg' must be 2-20")


def test_capture_stop_is_checked_like_start():
    # the optional fields are checked whatever the action (a stop with garbage is not let through)
    assert refused({"type": "capture", "action": "stop", "tolerance_deg": 50}).code == "bad_message"
    assert refused({"type": "capture", "action": "stop", "poses": []}).code == "bad_message"


# --- view ----------------------------------------------------------------------------------------------------

def sizes(count: int, width: int = 1, height: int = 1) -> dict:
    return {f"p-{i}": {"width": width, "height": height} for i in range(count)}


def test_view_sizes_at_most_max_views_videos():
    assert len(parse({"type": "view", "videos": sizes(MAX_VIEWS)})["videos"]) == MAX_VIEWS == 32
    error = refused({"type": "view", "videos": sizes(MAX_VIEWS + 1)})
    assert (error.code, error.message) == ("bad_message", f"'view.videos' sizes at most {MAX_VIEWS} videos")


@pytest.mark.parametrize("side", ["width", "height"])
def test_view_sides_are_integers_from_0_to_max_view_pixels(side):
    other = "height" if side == "width" else "width"
    for good in (0, 1, MAX_VIEW_PIXELS):
        parse({"type": "view", "videos": {"p-1": {side: good, other: 10}}})
    for bad in (-1, MAX_VIEW_PIXELS + 1, 10**20, 10.0, 10.5, "10", None, True, False, [10]):
        error = refused({"type": "view", "videos": {"p-1": {side: bad, other: 10}}})
        assert error.code == "bad_message" and "'view.videos' values" in error.message, bad
    assert MAX_VIEW_PIXELS == 8192


@pytest.mark.parametrize("size", [{"width": 10}, {"height": 10}, {}, [10, 10], "10x10", 10, None])
def test_view_values_are_width_height_objects(size):
    error = refused({"type": "view", "videos": {"p-1": size}})
    assert error.code == "bad_message" and "'view.videos' values" in error.message


def test_view_keys_are_participant_ids_of_1_to_64_characters():
    assert parse({"type": "view", "videos": {"p" * 64: {"width": 1, "height": 1}}})
    assert parse({"type": "view", "videos": {"é" * 64: {"width": 1, "height": 1}}})  # characters, not bytes
    for key in ("", "p" * 65):
        error = refused({"type": "view", "videos": {key: {"width": 1, "height": 1}}})
        assert (error.code, error.message) == ("bad_message", "'view.videos' keys are participant ids")


def test_view_extra_keys_in_a_size_are_ignored():
    assert parse({"type": "view", "videos": {"p-1": {"width": 1, "height": 2, "dpr": 2}}})


# --- sizes ----------------------------------------------------------------------------------------------------

def test_a_message_of_exactly_max_message_bytes_is_parsed():
    text = padded({"type": "ping"}, MAX_MESSAGE_BYTES)
    assert parse_client_message(text)["type"] == "ping"


def test_one_byte_over_max_message_bytes_is_too_large_and_fatal():
    error = refused(padded({"type": "ping"}, MAX_MESSAGE_BYTES + 1))
    assert (error.code, error.fatal) == ("too_large", True)
    assert str(MAX_MESSAGE_BYTES) in error.message


def test_the_message_limit_counts_utf8_bytes_not_characters():
    # 2-byte characters: under the limit in characters, over it in bytes
    chars = MAX_MESSAGE_BYTES // 2 + 100
    text = '{"type": "ping", "pad": "' + "é" * chars + '"}'
    assert len(text) < MAX_MESSAGE_BYTES < len(text.encode())
    assert refused(text).code == "too_large"


def test_the_size_check_comes_before_parsing():
    # garbage over the limit is too_large (the socket closes), not bad_json (it would go on)
    assert refused("x" * (MAX_MESSAGE_BYTES + 1)).code == "too_large"
    assert refused("[" * (MAX_MESSAGE_BYTES + 1)).code == "too_large"


def test_a_lone_surrogate_is_counted_not_an_exception():
    # JSON may escape one (\ud800); a str holding one cannot be encoded strictly
    text = padded({"type": "ping"}, MAX_MESSAGE_BYTES + 1)[:-3] + "\ud800" + '"}'
    assert refused(text).code == "too_large"
    assert parse_client_message('{"type": "ping", "x": "\ud800"}')["x"] == "\ud800"


def test_an_answer_sdp_of_max_sdp_bytes_is_taken_one_more_is_bad_sdp():
    assert len(parse({"type": "answer", "rev": 1, "sdp": "a" * MAX_SDP_BYTES})["sdp"]) == MAX_SDP_BYTES
    error = refused({"type": "answer", "rev": 1, "sdp": "a" * (MAX_SDP_BYTES + 1)})
    assert (error.code, error.fatal) == ("bad_sdp", False)
    assert str(MAX_SDP_BYTES) in error.message


def test_the_sdp_limit_counts_bytes():
    sdp = "é" * (MAX_SDP_BYTES // 2 + 1000)  # fewer characters than the limit, more bytes
    assert len(sdp) <= MAX_SDP_BYTES < len(sdp.encode())
    text = json.dumps({"type": "answer", "rev": 1, "sdp": sdp}, ensure_ascii=False)  # as UTF-8, not \u escapes
    assert len(text.encode()) <= MAX_MESSAGE_BYTES  # within the message limit: the SDP's own limit decides
    assert refused(text).code == "bad_sdp"


# --- the order of the checks -----------------------------------------------------------------------------------

def test_a_missing_field_is_reported_before_a_bad_value_of_another():
    # mute: 'muted' missing is reported even though 'kind' is not audio/video
    error = refused({"type": "mute", "kind": "screen"})
    assert error.message == "'mute' needs the field 'muted'"


def test_an_oversized_sdp_of_the_wrong_type_elsewhere_is_bad_message():
    # field types first: an answer with a bad rev is bad_message whatever its sdp
    assert refused({"type": "answer", "rev": "1", "sdp": "a" * (MAX_SDP_BYTES + 1)}).code == "bad_message"


# --- ProtocolError and error messages ----------------------------------------------------------------------------

def test_error_message_has_the_documented_shape():
    assert error_message("bad_state", "no offer") == {"type": "error", "code": "bad_state", "message": "no offer",
                                                      "fatal": False}
    assert error_message("too_large", "x", fatal=True)["fatal"] is True


def test_a_protocol_error_becomes_its_error_message():
    error = refused('{"type": 1}')
    assert isinstance(error, Exception)
    assert error.to_message() == {"type": "error", "code": "bad_message", "message": error.message, "fatal": False}
    assert json.loads(json.dumps(error.to_message())) == error.to_message()


def test_only_too_large_is_fatal():
    texts = ["{", "[]", '{"type": 1}', '{"type": "x"}', json.dumps({"type": "answer", "rev": 1, "sdp": "a" * 50_000}),
             "x" * (MAX_MESSAGE_BYTES + 1)]
    codes = {}
    for text in texts:
        error = refused(text)
        codes[error.code] = error.fatal
    assert codes == {"bad_json": False, "bad_message": False, "unknown_type": False, "bad_sdp": False,
                     "too_large": True}
