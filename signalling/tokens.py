"""Signed join tokens (HS256 JWTs via PyJWT).

A token names the room, who joins (identity, display name, role) and what they
may do. The server secret never leaves the data directory.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Optional

import jwt

from .roles import DEFAULT_PERMISSIONS, PERMISSIONS, ROLES

ISSUER = "consult-sfu"
ALGORITHM = "HS256"
MAX_NAME_LENGTH = 80


class TokenError(Exception):
    """`code` is the protocol error code: unauthorized or token_expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    name: str
    role: str
    permissions: frozenset[str]
    expires_at: int

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


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
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        perms = list(DEFAULT_PERMISSIONS[role] if permissions is None else permissions)
        unknown = set(perms) - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions: {', '.join(sorted(unknown))}")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "room": room,
            "sub": identity,
            "name": name[:MAX_NAME_LENGTH],
            "role": role,
            "perms": perms,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: object) -> Grant:
        if not isinstance(token, str) or not token:
            raise TokenError("unauthorized", "a join token is required")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # fixed: never trust the token's own "alg"
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "sub", "room", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "the join token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("unauthorized", f"invalid join token: {exc}") from exc
        role = claims["role"]  # a required claim: jwt.decode checked it is there
        perms = claims.get("perms", list(DEFAULT_PERMISSIONS.get(role, ())))
        if role not in ROLES or not isinstance(perms, list) or not set(perms) <= set(PERMISSIONS):
            raise TokenError("unauthorized", "the join token's role or permissions are invalid")
        for field in ("room", "sub"):
            if not isinstance(claims[field], str) or not claims[field]:
                raise TokenError("unauthorized", f"the join token's {field} is invalid")
        name = claims.get("name") or claims["sub"]
        return Grant(
            room=claims["room"],
            identity=claims["sub"],
            name=str(name)[:MAX_NAME_LENGTH],
            role=role,
            permissions=frozenset(perms),
            expires_at=int(claims["exp"]),
        )
