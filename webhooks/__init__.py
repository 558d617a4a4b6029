"""Webhooks: the clinic's own systems (appointments, EMR, billing) told what happened in a
consultation, signed, retried, and kept in a durable outbox until they are delivered.

events (what is sent), signing (how a receiver checks it), outbox (the SQLite store that
survives restarts), delivery (the per-endpoint senders with backoff). The control plane
emits through signalling.room_events; docs/DEPLOY.md "Webhooks" is the receiver's guide.
"""

from .delivery import WebhookSender, WebhookSettings, check_endpoints
from .events import EVENT_TYPES, WebhookEvent
from .signing import SignatureError, secret_key, sign, verify
from .signing import new_secret as new_webhook_secret

__all__ = ["EVENT_TYPES", "SignatureError", "WebhookEvent", "WebhookSender", "WebhookSettings", "check_endpoints",
           "new_webhook_secret", "secret_key", "sign", "verify"]
