"""signalling/tokens.py on its own: join tokens as TokenIssuer mints and verifies them (HS256
JWTs, docs/PROTOCOL.md "Join tokens"), with real signatures throughout.

TokenIssuer reads the wall clock itself (no clock to inject), so expired, not-yet-valid and
older tokens are signed here by hand, with the same secret and PyJWT, with times well clear
of the leeway. Whether a verified link may still join (its room, instance, revocation) is
signalling/links.py's; the last section checks that a grant carries what that needs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import time
import uuid

import jwt
import pytest

from i18n import LOCALES
from signalling.links import LinkGuard, LinkRefused
from signalling.registry import InMemoryRegistry
from signalling.revocations import RevocationList
from signalling.roles import DEFAULT_PERMISSIONS, PERMISSIONS, ROLES
from signalling.tokens import (
    ALGORITHM,
    ISSUER,
    JTI_PATTERN,
    MAX_IDENTITY_LENGTH,
    MAX_NAME_LENGTH,
    Grant,
    TokenError,
    TokenIssuer,
    check_identity,
    check_name,
    unique_identity,
)

SECRET = secrets.token_urlsafe(32)  # as signalling/secrets_store.py makes token.secret
ISSUER_ = TokenIssuer(SECRET)
DROP = object()


def issue(**changes):
    args = {"room": "r1", "identity": "doctor-1", "name": "Dr Lee", "role": "doctor", "ttl_s": 600,
            "instance": "i-1"} | changes
    return ISSUER_.issue(**args)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def claims(**changes) -> dict:
    """Claims as TokenIssuer.issue writes them (valid now); `name=DROP` leaves one out."""
    now = int(time.time())
    base = {"iss": ISSUER, "room": "r1", "sub": "doctor-1", "name": "Dr Lee", "role": "doctor",
            "perms": ["publish", "subscribe", "annotate", "record", "moderate"], "iat": now, "exp": now + 600,
            "jti": uuid.uuid4().hex, "inst": "i-1"}
    for key, value in changes.items():
        if value is DROP:
            del base[key]
        else:
            base[key] = value
    return base


def signed(payload: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    """`payload` signed as it is (PyJWS: jwt.encode would refuse some of the claims tried here)."""
    return jwt.PyJWS().encode(json.dumps(payload).encode(), secret, algorithm=algorithm)


def refusal(token: object, issuer: TokenIssuer = ISSUER_) -> TokenError:
    with pytest.raises(TokenError) as caught:
        issuer.verify(token)
    return caught.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# --- what a token says -------------------------------------------------------------------------------

def test_a_token_verifies_as_the_grant_it_was_issued_for():
    before = int(time.time())
    issued = issue(room="room-7", identity="patient-chen", name="Mrs Chen", role="patient", ttl_s=3600,
                   instance="inst_A-9")
    after = int(time.time())
    grant = ISSUER_.verify(issued.token)
    assert (grant.room, grant.identity, grant.name, grant.role, grant.instance) == (
        "room-7", "patient-chen", "Mrs Chen", "patient", "inst_A-9")
    assert grant.permissions == frozenset(DEFAULT_PERMISSIONS["patient"])
    assert grant.jti == issued.jti and grant.expires_at == issued.expires_at
    assert before <= grant.issued_at <= after and grant.expires_at == grant.issued_at + 3600


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_its_default_permissions_and_allows_exactly_those(role):
    grant = ISSUER_.verify(issue(role=role).token)
    assert grant.role == role and grant.permissions == frozenset(DEFAULT_PERMISSIONS[role])
    for permission in PERMISSIONS:
        assert grant.allows(permission) == (permission in DEFAULT_PERMISSIONS[role]), permission
    assert not grant.allows("admin") and not grant.allows("")


def test_permissions_given_replace_the_roles_defaults():
    assert ISSUER_.verify(issue(role="expert", permissions=["subscribe"]).token).permissions == {"subscribe"}
    assert ISSUER_.verify(issue(role="trainer", permissions=["replay", "subscribe"]).token).permissions == {
        "replay", "subscribe"}
    nothing = ISSUER_.verify(issue(role="doctor", permissions=[]).token)
    assert nothing.permissions == frozenset() and not nothing.allows("publish")


def test_mint_is_the_token_of_issue():
    token = ISSUER_.mint(room="r1", identity="d", name="D", role="doctor", ttl_s=60)
    assert ISSUER_.verify(token).identity == "d"


def test_the_token_is_an_hs256_jwt_with_the_documented_claims():
    issued = issue(language="zh-CN")
    header = json.loads(unb64(issued.token.split(".")[0]))
    assert header["alg"] == ALGORITHM == "HS256"
    assert claims_of(issued.token) == {
        "iss": "consult-sfu", "room": "r1", "sub": "doctor-1", "name": "Dr Lee", "role": "doctor",
        "perms": list(DEFAULT_PERMISSIONS["doctor"]), "iat": issued.expires_at - 600, "exp": issued.expires_at,
        "jti": issued.jti, "inst": "i-1", "lang": "zh-CN"}


def test_instance_and_language_are_left_out_when_not_given():
    issued = ISSUER_.issue(room="r1", identity="d", name="D", role="doctor", ttl_s=60)
    assert "inst" not in claims_of(issued.token) and "lang" not in claims_of(issued.token)
    assert ISSUER_.verify(issued.token).instance is None


def test_each_token_has_its_own_32_hex_digit_jti():
    jtis = [issue().jti for _ in range(200)]
    assert len(set(jtis)) == len(jtis)
    assert all(re.fullmatch(r"[0-9a-f]{32}", jti) for jti in jtis)


def test_a_grant_cannot_be_changed():
    grant = ISSUER_.verify(issue().token)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grant.role = "doctor"  # type: ignore[misc]


# --- what issue refuses --------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,words", [
    ({"role": "admin"}, "unknown role"), ({"role": "Doctor"}, "unknown role"), ({"role": ""}, "unknown role"),
    ({"permissions": ["fly"]}, "unknown permissions: fly"),
    ({"permissions": ["publish", "zz", "aa"]}, "unknown permissions: aa, zz"),
    ({"ttl_s": 0}, "ttl_s must be positive"), ({"ttl_s": -1}, "ttl_s must be positive"),
    ({"identity": ""}, "'identity' must be a non-empty string"), ({"identity": "  "}, "non-empty"),
    ({"identity": None}, "non-empty string"), ({"identity": 5}, "non-empty string"),
    ({"identity": "x" * (MAX_IDENTITY_LENGTH + 1)}, "limited to 128"),
    ({"identity": "a\nb"}, "printable"), ({"identity": "a\x00b"}, "printable"), ({"identity": "a\u2028b"}, "printable"),
    ({"name": ""}, "'name' must be a non-empty string"), ({"name": "N" * (MAX_NAME_LENGTH + 1)}, "limited to 64"),
    ({"name": "Dr\tLee"}, "printable"), ({"name": "\x1b[31mred"}, "printable"),
    ({"instance": ""}, "room instance"), ({"instance": "i" * 65}, "room instance"),
    ({"instance": "a b"}, "room instance"), ({"instance": "a/b"}, "room instance"),
    ({"instance": "ä"}, "room instance"),
    ({"language": "xx"}, "'language' must be one of"), ({"language": "EN"}, "'language' must be one of"),
])
def test_issue_refuses_bad_input_with_value_error(changes, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        issue(**changes)


def test_issue_takes_input_exactly_at_the_limits():
    name = "Dr Müller-Lüdenscheidt 李"
    name += "n" * (MAX_NAME_LENGTH - len(name))
    grant = ISSUER_.verify(issue(identity="i" * MAX_IDENTITY_LENGTH, name=name, instance="A-_z9" * 12 + "abcd",
                                 ttl_s=1).token)
    assert len(grant.identity) == 128 and grant.name == name and len(grant.instance or "") == 64
    for language in LOCALES:
        assert issue(language=language)


def test_issue_refuses_an_instance_with_a_trailing_line_break():
    with pytest.raises(ValueError):
        issue(instance="i-1\n")


# --- identities and names ------------------------------------------------------------------------------

def test_check_identity_and_check_name_return_the_value():
    assert check_identity("x" * 128) == "x" * 128
    assert check_name(" Dr Lee ") == " Dr Lee "  # kept as given; only an all-blank one is refused
    for bad in ("x" * 129, "", "\t", "a\rb", b"bytes", None):
        with pytest.raises(ValueError, match="'identity'"):
            check_identity(bad)
    with pytest.raises(ValueError, match="'name' is limited to 64"):
        check_name("n" * 65)


def test_unique_identities_are_distinct_valid_identities_of_the_role():
    made = {unique_identity("expert") for _ in range(500)}
    assert len(made) == 500
    assert all(re.fullmatch(r"expert-[0-9a-f]{12}", identity) and check_identity(identity) for identity in made)


# --- what verify refuses: not a token ---------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", b"eyJ.a.b", 5, ["t"], {"token": "t"}])
def test_no_token_is_unauthorized(token):
    error = refusal(token)
    assert (error.code, error.message, error.expired) == ("unauthorized", "a join token is required", None)
    assert str(error) == error.message


@pytest.mark.parametrize("token", ["x", "a.b", "a.b.c", "..", "a.b.c.d", "eyJhbGciOi.garbage.token", " " * 10,
                                   "Bearer eyJ"])
def test_garbage_is_unauthorized(token):
    error = refusal(token)
    assert error.code == "unauthorized" and error.message.startswith("invalid join token") and error.expired is None


def test_a_token_with_surrounding_space_is_not_taken():
    token = issue().token
    for variant in (" " + token, token + " ", token + "\n"):
        assert refusal(variant).code == "unauthorized"


# --- tampering and keys --------------------------------------------------------------------------------------

def test_every_byte_of_every_part_altered_is_refused():
    token = issue().token
    grant = ISSUER_.verify(token)
    parts = token.split(".")
    tried = 0
    for index, part in enumerate(parts):
        raw = unb64(part)
        for offset in range(len(raw)):
            for flip in (0x01, 0x80):
                altered = bytearray(raw)
                altered[offset] ^= flip
                changed = parts.copy()
                changed[index] = b64(bytes(altered))
                with pytest.raises(TokenError) as caught:
                    ISSUER_.verify(".".join(changed))
                assert caught.value.code == "unauthorized" and caught.value.expired is None
                tried += 1
    assert tried > 2 * (200 + 32)  # a payload of a few hundred bytes and a 32-byte HMAC were all tried
    assert ISSUER_.verify(token) == grant


def test_every_character_replaced_is_refused():
    # including the last character of a part, whose unused low bits a lenient base64 decoder
    # would ignore: the token text itself is what was signed
    token = issue().token
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for position, char in enumerate(token):
        if char == ".":
            continue
        for step in (1, 32):
            other = alphabet[(alphabet.index(char) + step) % len(alphabet)]
            altered = token[:position] + other + token[position + 1:]
            error = refusal(altered)
            assert (error.code, error.expired) == ("unauthorized", None), (position, other)


@pytest.mark.parametrize("change", [
    {"room": "r2"}, {"role": "patient"}, {"sub": "doctor-2"}, {"name": "Dr Evil"}, {"inst": "i-2"},
    {"perms": ["publish", "subscribe", "annotate", "record", "moderate", "replay"]},
    {"exp": 2**31}, {"iat": 0}, {"jti": "0" * 32}, {"lang": "en"}, {"name": DROP}, {"inst": DROP},
])
def test_a_claim_changed_under_the_original_signature_is_refused(change):
    token = ISSUER_.mint(room="r1", identity="doctor-1", name="Dr Lee", role="doctor", ttl_s=600, instance="i-1")
    header, _, signature = token.split(".")
    payload = claims_of(token)
    for key, value in change.items():
        if value is DROP:
            del payload[key]
        else:
            payload[key] = value
    forged = ".".join([header, b64(json.dumps(payload, separators=(",", ":")).encode()), signature])
    error = refusal(forged)
    assert (error.code, error.expired) == ("unauthorized", None)
    assert "Signature verification failed" in error.message


@pytest.mark.parametrize("secret", [secrets.token_urlsafe(32), SECRET[:-1], SECRET + "x", SECRET.upper()])
def test_a_token_signed_with_another_key_is_refused(secret):
    error = refusal(signed(claims(), secret=secret))
    assert (error.code, error.expired) == ("unauthorized", None)


def test_an_issuer_with_another_key_refuses_this_ones_tokens():
    token = issue().token
    assert refusal(token, TokenIssuer(secrets.token_urlsafe(32))).code == "unauthorized"
    assert TokenIssuer(SECRET).verify(token).jti == claims_of(token)["jti"]  # the key, not the instance


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_only_hs256_is_accepted_even_with_the_right_key(algorithm):
    assert refusal(signed(claims(), algorithm=algorithm)).code == "unauthorized"


def test_an_unsigned_token_is_refused():
    assert refusal(jwt.encode(claims(), None, algorithm="none")).code == "unauthorized"
    # the right header and payload with the signature cut off
    header, payload, _ = issue().token.split(".")
    assert refusal(f"{header}.{payload}.").code == "unauthorized"


def test_a_lone_surrogate_is_unauthorized_not_a_unicode_error():
    assert refusal(issue().token + "\udc80").code == "unauthorized"


# --- time --------------------------------------------------------------------------------------------------

def test_an_expired_token_is_token_expired_and_still_says_what_it_was_for():
    now = int(time.time())
    payload = claims(room="room-9", sub="patient-9", role="patient", perms=["publish"], exp=now - 60, iat=now - 660)
    error = refusal(signed(payload))
    assert (error.code, error.message) == ("token_expired", "the join token has expired")
    expired = error.expired
    assert isinstance(expired, Grant)
    assert (expired.room, expired.identity, expired.role, expired.instance) == ("room-9", "patient-9", "patient", "i-1")
    assert (expired.jti, expired.expires_at, expired.issued_at) == (payload["jti"], now - 60, now - 660)


def test_a_token_expired_long_ago_is_still_recognised_as_expired():
    assert refusal(signed(claims(iat=1_000_000_000, exp=1_000_000_600))).expired is not None


def test_an_expired_token_with_a_bad_signature_tells_nothing():
    now = int(time.time())
    error = refusal(signed(claims(exp=now - 60), secret=secrets.token_urlsafe(32)))
    assert (error.code, error.expired) == ("unauthorized", None)


@pytest.mark.parametrize("change", [{"role": "admin"}, {"jti": "not-hex"}, {"sub": ""}, {"inst": "a b"},
                                    {"iss": "someone-else"}, {"room": DROP}])
def test_an_expired_token_that_is_also_invalid_has_no_grant(change):
    now = int(time.time())
    error = refusal(signed(claims(exp=now - 60, iat=now - 600, **change)))
    assert error.expired is None
    assert error.code in ("token_expired", "unauthorized")


def test_the_leeway_lets_a_token_just_expired_pass_and_no_further():
    now = int(time.time())
    just_expired = signed(claims(exp=now - 1, iat=now - 600))
    assert ISSUER_.verify(just_expired).expires_at == now - 1  # default leeway: 5 s
    assert refusal(just_expired, TokenIssuer(SECRET, leeway_s=0)).code == "token_expired"
    assert refusal(signed(claims(exp=now - 30, iat=now - 600))).code == "token_expired"
    assert TokenIssuer(SECRET, leeway_s=120).verify(signed(claims(exp=now - 30, iat=now - 600)))


def test_a_token_issued_in_the_future_is_refused_beyond_the_leeway():
    now = int(time.time())
    assert ISSUER_.verify(signed(claims(iat=now + 2)))  # a clock slightly ahead: within the leeway
    error = refusal(signed(claims(iat=now + 120, exp=now + 720)))
    assert (error.code, error.expired) == ("unauthorized", None)


def test_a_freshly_issued_token_verifies_at_once():
    # iat is the issuer's own second: never "in the future" for itself, even with no leeway
    issuer = TokenIssuer(SECRET, leeway_s=0)
    for _ in range(50):
        issuer.verify(issuer.mint(room="r1", identity="d", name="D", role="doctor", ttl_s=1))


# --- claims verify checks itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "sub", "room", "role", "jti"])
def test_each_required_claim_missing_is_unauthorized(claim):
    error = refusal(signed(claims(**{claim: DROP})))
    assert (error.code, error.expired) == ("unauthorized", None)


@pytest.mark.parametrize("change,words", [
    # checked by PyJWT (its own messages, after "invalid join token: ")
    ({"iss": "other"}, "invalid join token"), ({"iss": None}, "invalid join token"),
    ({"iss": ["consult-sfu"]}, "invalid join token"), ({"sub": 5}, "invalid join token"),
    ({"role": None}, "invalid join token"), ({"jti": 5}, "invalid join token"),
    ({"exp": "soon"}, "invalid join token"), ({"iat": "then"}, "invalid join token"),
    ({"exp": 1e400}, "invalid join token"),
    # checked by tokens.py
    ({"room": ""}, "room is invalid"), ({"room": 5}, "room is invalid"), ({"room": ["r1"]}, "room is invalid"),
    ({"sub": ""}, "sub is invalid"),
    ({"sub": "x" * 129}, "identity is invalid"), ({"sub": "a\nb"}, "identity is invalid"),
    ({"sub": " "}, "identity is invalid"),
    ({"role": "admin"}, "role or permissions"), ({"role": 5}, "role or permissions"),
    ({"perms": ["fly"]}, "role or permissions"), ({"perms": "publish"}, "role or permissions"),
    ({"perms": None}, "role or permissions"), ({"perms": {"publish": True}}, "role or permissions"),
    ({"jti": "A" * 32}, "id is invalid"), ({"jti": "a" * 31}, "id is invalid"), ({"jti": "a" * 33}, "id is invalid"),
    ({"jti": str(uuid.uuid4())}, "id is invalid"),
    ({"inst": ""}, "room instance is invalid"), ({"inst": 5}, "room instance is invalid"),
    ({"inst": "i" * 65}, "room instance is invalid"), ({"inst": "a.b"}, "room instance is invalid"),
])
def test_a_signed_token_with_an_invalid_claim_is_unauthorized(change, words):
    error = refusal(signed(claims(**change)))
    assert error.code == "unauthorized" and words in error.message, error.message


def test_jti_pattern_is_32_lowercase_hex_digits():
    assert JTI_PATTERN.match(uuid.uuid4().hex)
    for bad in ("", "g" * 32, "A" * 32, "a" * 31, "a" * 33, " " + "a" * 31, str(uuid.uuid4())):
        assert not JTI_PATTERN.match(bad), bad


def test_jti_pattern_refuses_a_trailing_line_break():
    assert not JTI_PATTERN.match(uuid.uuid4().hex + "\n")


# --- links minted before today's rules ----------------------------------------------------------------------------

def test_a_token_without_perms_gets_its_roles_defaults():
    assert ISSUER_.verify(signed(claims(role="expert", perms=DROP))).permissions == frozenset(
        DEFAULT_PERMISSIONS["expert"])


def test_a_token_without_inst_belongs_to_no_named_instance():
    assert ISSUER_.verify(signed(claims(inst=DROP))).instance is None


@pytest.mark.parametrize("name,shown", [
    (DROP, "doctor-1"), (None, "doctor-1"), ("", "doctor-1"),  # no name: the identity
    ("N" * 500, "N" * MAX_NAME_LENGTH),  # too long: cut, not refused
    ("Dr\nEvil", "Dr Evil"), ("\x1b[31mDr", "[31mDr"), ("Dr Lee\x00", "Dr Lee"),  # unprintable: blanked
    ("\n\t\r", "Participant"), ("   ", "Participant"),  # nothing left to show
    (5, "5"),
])
def test_an_older_tokens_name_is_made_showable_not_refused(name, shown):
    assert ISSUER_.verify(signed(claims(name=name))).name == shown


def test_a_name_is_cut_before_it_is_cleaned():
    # the 64 characters shown are the name's first 64, blanks stripped after the cut
    assert ISSUER_.verify(signed(claims(name=" " * 60 + "abcdefgh"))).name == "abcd"


# --- what links.py needs of a grant: its room and its id -----------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def guard(tmp_path):
    registry = InMemoryRegistry(tmp_path / "rooms.json")
    room = await registry.create_room("Consultation", "r1")
    clock = Clock()
    revocations = RevocationList(None, clock=clock)
    return LinkGuard(registry, revocations), room, revocations, clock


async def test_a_link_joins_the_room_and_instance_it_was_minted_for(guard):
    links, room, _, _ = guard
    grant = ISSUER_.verify(issue(room="r1", instance=room.instance, role="patient").token)
    assert (await links.for_live(grant)).id == "r1"


async def test_a_link_for_another_room_is_wrong_room(guard):
    links, room, _, _ = guard
    for other in ("r2", "R1", "r1 "):
        grant = ISSUER_.verify(issue(room=other, instance=room.instance).token)
        with pytest.raises(LinkRefused) as caught:
            await links.for_live(grant)
        assert caught.value.code == "wrong_room"


async def test_a_revoked_link_is_refused_until_it_would_have_expired(guard):
    links, room, revocations, clock = guard
    issued = issue(instance=room.instance, ttl_s=600)
    grant = ISSUER_.verify(issued.token)
    other = ISSUER_.verify(issue(instance=room.instance).token)  # same person, same room: another link
    await revocations.revoke(issued.jti, issued.expires_at)
    with pytest.raises(LinkRefused) as caught:
        await links.for_live(grant)
    assert caught.value.code == "link_revoked"
    assert (await links.for_live(other)).id == "r1"  # by jti: only that link
    clock.now = issued.expires_at + 1
    assert not revocations.is_revoked(grant.jti)  # the entry lapses; the token is expired by then
