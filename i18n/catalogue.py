"""Reading the PO catalogues (babel) and choosing a language for a BCP 47 tag.

Placeholders are `{name}`, filled the same way here and in static/js/i18n.js. A message
that depends on a count has one key per CLDR plural category of the language
(`photos.count.one`, `photos.count.other`); Chinese has only `other`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType

from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LOCALE = "en"
LOCALES = ("en", "zh-CN")  # BCP 47, as pages and links name them
LANGUAGE_OF = {"en": "en", "zh": "zh-CN"}  # a tag's primary language -> the locale we ship for it


def supported_locale(tag: object) -> str | None:
    """The locale we ship for a language tag ("zh", "zh-Hans-CN", "zh_CN", "en-GB"), or None."""
    if not isinstance(tag, str) or not tag or len(tag) > 35:
        return None
    return LANGUAGE_OF.get(tag.replace("_", "-").split("-")[0].lower())


def _po_path(locale: str) -> Path:
    return LOCALES_DIR / f"{locale.replace('-', '_')}.po"


@cache
def messages(locale: str) -> Mapping[str, str]:
    """Every message of `locale` (one of LOCALES), by id. Untranslated entries are left out."""
    if locale not in LOCALES:
        raise KeyError(f"no catalogue for {locale!r}; one of {', '.join(LOCALES)}")
    with _po_path(locale).open("rb") as po:
        catalogue = read_po(po, locale=locale.replace("-", "_"))
    return MappingProxyType({str(m.id): str(m.string) for m in catalogue if m.id and m.string and not m.fuzzy})


def text(key: str, locale: str = DEFAULT_LOCALE, **params: object) -> str:
    """Message `key` in `locale` (English where that catalogue lacks it), placeholders filled."""
    chosen = supported_locale(locale) or DEFAULT_LOCALE
    template = messages(chosen).get(key) or messages(DEFAULT_LOCALE)[key]
    return template.format_map(params) if params else template


@cache
def page_catalogue(locale: str) -> dict[str, object]:
    """What a page needs to speak `locale`: its tag and every message (the JSON /i18n/<locale>.json)."""
    return {"locale": locale, "messages": dict(messages(locale))}
