"""Signed join tokens (HS256 JWTs via PyJWT).

A token names the room and its instance (`inst`: which creation of the room id), who
joins (identity, display name, role), what they may do, and its own id (`jti`, by which
it can be revoked). The server secret never leaves the data directory.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import jwt

from i18n import LOCALES

from .roles import DEFAULT_PERMISSIONS, PERMISSIONS, ROLES

ISSUER = "consult-sfu"
ALGORITHM = "HS256"
# Identities key sessions, watermarks and audit entries; names are shown to everyone in the
# room and burned into watermarks: both bounded, and printable (no control characters).
MAX_IDENTITY_LENGTH = 128
MAX_NAME_LENGTH = 64
JTI_PATTERN = re.compile(r"[0-9a-f]{32}\Z")  # \Z: "$" would also take a final line break
_INSTANCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def check_identity(identity: object) -> str:
    """The identity, or ValueError saying what is wrong with it."""
    return _checked_text("identity", identity, MAX_IDENTITY_LENGTH)


def check_name(name: object) -> str:
    """The display name, or ValueError saying what is wrong with it."""
    return _checked_text("name", name, MAX_NAME_LENGTH)


def _checked_text(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{field}' must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"'{field}' is limited to {limit} characters")
    if not value.isprintable():
        raise ValueError(f"'{field}' must be printable (no control characters or line breaks)")
    return value


def unique_identity(role: str) -> str:
    """For a link minted without an identity: its own, so two such links are never taken for
    one person (sessions replacing each other, one watermark id and replay for both)."""
    return f"{role}-{secrets.token_hex(6)}"


class TokenError(Exception):
    """`code` is the protocol error code: unauthorized or token_expired. `expired`: the grant of
    a genuine token (its signature verified) that has only expired, so a refusal can still say
    which room the link was for (its clinic's contact); None for anything else."""

    def __init__(self, code: str, message: str, expired: Optional["Grant"] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.expired = expired


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    name: str
    role: str
    permissions: frozenset[str]
    expires_at: int
    jti: str  # the link's id: what a kick or an admin revokes
    issued_at: int
    instance: Optional[str] = None  # None: minted without one (older links); placed by issued_at

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int


class TokenIssuer:
    def __init__(self, secret: str, leeway_s: int = 5) -> None:
        self._secret = secret
        self._leeway = leeway_s

    def mint(
        self,
        *,
        room: str,
        identity: str,
        name: str,
        role: str,
        ttl_s: int,
        permissions: Optional[list[str]] = None,
        instance: Optional[str] = None,
        language: Optional[str] = None,
    ) -> str:
        return self.issue(room=room, identity=identity, name=name, role=role, ttl_s=ttl_s,
                          permissions=permissions, instance=instance, language=language).token

    def issue(
        self,
        *,
        room: str,
        identity: str,
        name: str,
        role: str,
        ttl_s: int,
        permissions: Optional[list[str]] = None,
        instance: Optional[str] = None,
        language: Optional[str] = None,
    ) -> IssuedToken:
        """A signed token and what identifies it (its jti, for revocation). ValueError on bad input.
        `language` (a locale of i18n.LOCALES) is the language its page opens in."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        perms = list(DEFAULT_PERMISSIONS[role] if permissions is None else permissions)
        unknown = set(perms) - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions: {', '.join(sorted(unknown))}")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        check_identity(identity)
        check_name(name)
        if instance is not None and not _INSTANCE_PATTERN.match(instance):
            raise ValueError("'instance' is not a room instance id")
        if language is not None and language not in LOCALES:
            raise ValueError(f"'language' must be one of {', '.join(LOCALES)}")
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": ISSUER,
            "room": room,
            "sub": identity,
            "name": name,
            "role": role,
            "perms": perms,
            "iat": now,
            "exp": now + ttl_s,
            "jti": jti,
        }
        if instance is not None:
            claims["inst"] = instance
        if language is not None:
            claims["lang"] = language  # read by the page only (static/js/i18n.js), never trusted here
        return IssuedToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), jti, now + ttl_s)

    def verify(self, token: object) -> Grant:
        if not isinstance(token, str) or not token:
            raise TokenError("unauthorized", "a join token is required")
        try:
            claims = self._decode(token)
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "the join token has expired", self._expired(token)) from exc
        except jwt.PyJWTError as exc:
            raise TokenError("unauthorized", f"invalid join token: {exc}") from exc
        except UnicodeError:  # a lone surrogate (JSON's \ud800, a non-UTF-8 header byte) cannot be a token
            raise TokenError("unauthorized", "invalid join token: not UTF-8 text") from None
        return self._grant(claims)

    def _decode(self, token: str, *, expired_too: bool = False) -> dict:
        """The claims, once the signature and every other check passed (PyJWT checks the signature first)."""
        return jwt.decode(
            token,
            self._secret,
            algorithms=[ALGORITHM],  # fixed: never trust the token's own "alg"
            issuer=ISSUER,
            leeway=self._leeway,
            options={"require": ["exp", "iat", "iss", "sub", "room", "role", "jti"], "verify_exp": not expired_too},
        )

    def _expired(self, token: str) -> Optional[Grant]:
        """The grant of a token that failed only by expiring; None if anything else is wrong with it."""
        try:
            return self._grant(self._decode(token, expired_too=True))
        except (jwt.PyJWTError, TokenError, UnicodeError):
            return None

    def _grant(self, claims: dict) -> Grant:
        role = claims["role"]  # a required claim: jwt.decode checked it is there
        perms = claims.get("perms", list(DEFAULT_PERMISSIONS.get(role, ())))
        if role not in ROLES or not isinstance(perms, list) or not set(perms) <= set(PERMISSIONS):
            raise TokenError("unauthorized", "the join token's role or permissions are invalid")
        for field in ("room", "sub"):
            if not isinstance(claims[field], str) or not claims[field]:
                raise TokenError("unauthorized", f"the join token's {field} is invalid")
        try:
            check_identity(claims["sub"])  # links minted before the limits may carry anything
        except ValueError:
            raise TokenError("unauthorized", "the join token's identity is invalid") from None
        jti, instance = claims["jti"], claims.get("inst")
        if not isinstance(jti, str) or not JTI_PATTERN.match(jti):
            raise TokenError("unauthorized", "the join token's id is invalid")
        if instance is not None and (not isinstance(instance, str) or not _INSTANCE_PATTERN.match(instance)):
            raise TokenError("unauthorized", "the join token's room instance is invalid")
        name = claims.get("name") or claims["sub"]
        return Grant(
            room=claims["room"],
            identity=claims["sub"],
            name=_shown_name(str(name)),
            role=role,
            permissions=frozenset(perms),
            expires_at=int(claims["exp"]),
            jti=jti,
            instance=instance,
            issued_at=int(claims["iat"]),
        )


def _shown_name(name: str) -> str:
    """A name as pages show it: an older link's over-long or unprintable name is cut, not refused."""
    cleaned = "".join(c if c.isprintable() else " " for c in name[:MAX_NAME_LENGTH]).strip()
    return cleaned or "Participant"
