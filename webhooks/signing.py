"""Signing webhook bodies so a receiver knows they came from this server, unchanged and recent.

The scheme is Standard Webhooks' (standardwebhooks.com), so a receiver can check it with that
project's libraries: the secret is "whsec_" + base64 of 32 random bytes; the signature is
HMAC-SHA256, keyed with those bytes, over "<webhook-id>.<webhook-timestamp>.<body>", sent
base64 in `webhook-signature` as "v1,<sig>". Signing the id too means a replayed body cannot
pass as a new event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from typing import Mapping, Optional

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300  # how far a receiver accepts the timestamp from its own clock
SECRET_PREFIX = "whsec_"


class SignatureError(ValueError):
    """The request is not a valid, recent webhook of the holder of this secret."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for. Raises ValueError for a secret not in whsec_ form."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r} (then base64)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret holds at least 16 bytes")
    return key


def _digest(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def sign(secret: str, event_id: str, body: bytes, timestamp: Optional[int] = None) -> dict[str, str]:
    """The three headers that go with `body` (timestamp: now, in whole seconds, if not given)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {ID_HEADER: event_id, TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: f"{SIGNATURE_VERSION},{_digest(secret, event_id, stamp, body)}"}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: Optional[float] = None) -> str:
    """Check a received webhook; returns its id (for de-duplication). Raises SignatureError.

    `headers` is looked up with lower-case names (aiohttp's and most frameworks' header maps
    are case-insensitive). The signature header may hold several space-separated signatures
    (a secret being rotated): one match is enough."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        event_id = lowered[ID_HEADER]
        stamp_text = lowered[TIMESTAMP_HEADER]
        offered = lowered[SIGNATURE_HEADER]
    except KeyError as exc:
        raise SignatureError(f"missing header {exc.args[0]}") from None
    if not stamp_text.isdigit():
        raise SignatureError("webhook-timestamp is not a whole number of seconds")
    stamp = int(stamp_text)
    clock = time.time() if now is None else now
    if abs(clock - stamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is {clock - stamp:+.0f} s from this clock (limit {tolerance_s} s)")
    expected = _digest(secret, event_id, stamp, body)
    for candidate in offered.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return event_id
    raise SignatureError("no signature matches this secret")
