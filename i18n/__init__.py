"""The user-facing texts of the pages and of the server, in every language we ship.

One PO catalogue per language (i18n/locales/<locale>.po), keyed by stable message ids
(`control.leave`, `prompt.move_closer`); the pages fetch theirs as JSON
(signalling/app.py, /i18n/<locale>.json) and the server formats its own from the same.
"""

from .catalogue import (
    DEFAULT_LOCALE,
    LOCALES,
    messages,
    page_catalogue,
    supported_locale,
    text,
)

__all__ = ["DEFAULT_LOCALE", "LOCALES", "messages", "page_catalogue", "supported_locale", "text"]
