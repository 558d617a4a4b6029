"""Webhook signatures: Standard Webhooks' scheme, checked against its published test vector,
and every way a forged, altered or replayed request is refused."""

from __future__ import annotations

import pytest

from webhooks import SignatureError, new_webhook_secret, secret_key, sign, verify

# From the Standard Webhooks specification's reference libraries (their shared test case).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_standard_webhooks_test_vector():
    headers = sign(SPEC_SECRET, SPEC_ID, SPEC_BODY, timestamp=SPEC_TIMESTAMP)
    assert headers == {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP),
                       "webhook-signature": SPEC_SIGNATURE}
    assert verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10) == SPEC_ID


def test_a_fresh_secret_round_trips_and_header_names_are_case_insensitive():
    secret = new_webhook_secret()
    assert len(secret_key(secret)) == 32
    headers = sign(secret, "evt_1", b"{}")
    assert verify(secret, {k.title(): v for k, v in headers.items()}, b"{}") == "evt_1"


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "secret"])
def test_anything_altered_is_refused(change):
    secret = new_webhook_secret()
    body = b'{"type":"participant.joined"}'
    headers = sign(secret, "evt_1", body, timestamp=1_000_000)
    if change == "body":
        body = b'{"type":"participant.left"}'
    elif change == "id":
        headers["webhook-id"] = "evt_2"  # a replayed body passed off as a new event
    elif change == "timestamp":
        headers["webhook-timestamp"] = "1000001"
    else:
        secret = new_webhook_secret()
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(secret, headers, body, now=1_000_000)


def test_an_old_or_future_timestamp_is_refused():
    secret = new_webhook_secret()
    headers = sign(secret, "evt_1", b"{}", timestamp=1_000_000)
    assert verify(secret, headers, b"{}", now=1_000_000 + 299) == "evt_1"
    for now in (1_000_000 + 301, 1_000_000 - 301):
        with pytest.raises(SignatureError, match="from this clock"):
            verify(secret, headers, b"{}", now=now)


def test_missing_or_malformed_headers_are_refused():
    secret = new_webhook_secret()
    headers = sign(secret, "evt_1", b"{}")
    for name in headers:
        with pytest.raises(SignatureError, match=f"missing header {name}"):
            verify(secret, {k: v for k, v in headers.items() if k != name}, b"{}")
    with pytest.raises(SignatureError, match="whole number"):
        verify(secret, {**headers, "webhook-timestamp": "12.5"}, b"{}")
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(secret, {**headers, "webhook-signature": "v2," + headers["webhook-signature"][3:]}, b"{}")


def test_one_matching_signature_among_several_is_enough():
    """While a secret is rotated, a sender may sign with both."""
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = sign(new, "evt_1", b"{}")
    both = sign(old, "evt_1", b"{}", timestamp=int(headers["webhook-timestamp"]))["webhook-signature"]
    headers["webhook-signature"] = f"{both} {headers['webhook-signature']}"
    assert verify(new, headers, b"{}") == "evt_1"


@pytest.mark.parametrize("secret", ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_AAAA"])
def test_a_secret_not_in_whsec_form_is_refused(secret):
    with pytest.raises(ValueError, match="webhook secret"):
        secret_key(secret)
