"""The message catalogues (i18n/locales): complete in every language, placeholders kept,
every key the pages name present, none left unused; choosing a language for a tag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel import Locale

from i18n import DEFAULT_LOCALE, LOCALES, messages, page_catalogue, supported_locale, text

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
KEY_SHAPE = re.compile(r"[a-z_]+(?:\.[A-Za-z0-9_-]+)+")
CLDR_CATEGORIES = ("zero", "one", "two", "few", "many", "other")
# Keys the code builds from a family prefix and a value (`role.${role}`, `prompt.<Prompt>`).
BUILT_FAMILIES = ("role.", "prompt.", "pose.instruction.", "pose.label.", "language.name.", "server_error.",
                  "processor.")


def _plural_base(key: str) -> str | None:
    base, _, last = key.rpartition(".")
    return base if last in CLDR_CATEGORIES else None


def _categories(locale: str) -> set[str]:
    return set(Locale.parse(locale.replace("-", "_")).plural_form.tags) | {"other"}


def test_every_language_has_every_message_and_nothing_else():
    english = messages(DEFAULT_LOCALE)
    assert len(english) > 50
    plain = {key for key in english if _plural_base(key) is None}
    counted = {base for key in english if (base := _plural_base(key))}
    for locale in LOCALES:
        keys = set(messages(locale))
        assert {key for key in keys if _plural_base(key) is None} == plain, locale
        # a counted message has exactly the plural categories of the language (CLDR)
        wanted = {f"{base}.{category}" for base in counted for category in _categories(locale)}
        assert {key for key in keys if _plural_base(key)} == wanted, locale
        assert all(value.strip() for value in messages(locale).values()), locale


def test_a_translation_keeps_the_placeholders_of_the_english():
    english = messages(DEFAULT_LOCALE)
    for locale in LOCALES:
        for key, value in messages(locale).items():
            used = set(PLACEHOLDER.findall(value))
            base = _plural_base(key)
            if base is not None and not key.endswith(".other"):
                # a count's other categories may say the number in words ("The photo is taken.")
                assert used <= set(PLACEHOLDER.findall(english[f"{base}.other"])), (locale, key)
            else:
                assert used == set(PLACEHOLDER.findall(english[key])), (locale, key)


def _keys_named_in_pages() -> set[str]:
    """Every catalogue-shaped string in the pages' markup and scripts: data-i18n values,
    data-i18n-attr pairs and quoted literals in a namespace the catalogue has."""
    namespaces = {key.split(".")[0] for key in messages(DEFAULT_LOCALE)}
    found: set[str] = set()
    for path in [*STATIC.glob("*.html"), *STATIC.glob("js/*.js")]:
        source = path.read_text()
        found.update(re.findall(r'data-i18n="([^"]+)"', source))
        # data-i18n-attr pairs, in markup or set from code ("aria-label:key;title:key")
        found.update(re.findall(r"\b(?:aria-label|title|placeholder|alt):\s*([a-z_]+(?:\.[A-Za-z0-9_-]+)+)", source))
        found.update(re.findall(r"'([a-z_]+(?:\.[A-Za-z0-9_-]+)+)'", source))
    # what is shaped like a key (the doc comments' `data-i18n="key"` is not) in a namespace we have
    return {key for key in found if KEY_SHAPE.fullmatch(key) and key.split(".")[0] in namespaces}


def _known(key: str) -> bool:
    """A message, or the base of a counted one (`tn('capture.done', n)`)."""
    return key in messages(DEFAULT_LOCALE) or f"{key}.other" in messages(DEFAULT_LOCALE)


def test_every_key_the_pages_name_is_in_the_catalogue():
    named = _keys_named_in_pages()
    assert {"state.connecting", "control.leave", "end.no_token", "media.audience.doctor"} <= named
    assert sorted(key for key in named if not _known(key)) == []


def test_every_message_is_used_by_a_page_or_the_server():
    named = _keys_named_in_pages()
    unused = [key for key in messages(DEFAULT_LOCALE)
              if key not in named and _plural_base(key) not in named and not key.startswith(BUILT_FAMILIES)]
    assert unused == []


@pytest.mark.parametrize(("tag", "locale"), [
    ("zh", "zh-CN"), ("zh-CN", "zh-CN"), ("zh_CN", "zh-CN"), ("zh-Hans-CN", "zh-CN"), ("ZH-cn", "zh-CN"),
    ("en", "en"), ("en-GB", "en"), ("fr", None), ("", None), (None, None), (42, None), ("x" * 40, None),
])
def test_supported_locale(tag, locale):
    assert supported_locale(tag) == locale


def test_server_texts_come_from_the_catalogue_with_placeholders_filled():
    assert text("capture.count", "zh-CN", n=2, total=3) == "第 2 张，共 3 张"
    assert text("capture.count", "en", n=2, total=3) == "Photo 2 of 3"
    assert text("prompt.move_closer", "zh") == "请靠近一点"
    assert text("prompt.move_closer", "fr") == "Move closer"  # a language we do not ship: English
    with pytest.raises(KeyError):
        text("no.such.key")


def test_a_page_catalogue_names_its_locale():
    page = page_catalogue("zh-CN")
    assert page["locale"] == "zh-CN" and page["messages"]["control.leave"] == "离开"
    with pytest.raises(KeyError):
        messages("fr")
