"""The pages' languages over HTTP: the catalogue each page fetches (/i18n/<locale>.json),
and the language a minted link opens in (the token's `lang`: the link's, else its room's)."""

from __future__ import annotations

import aiohttp
import jwt
import pytest

from i18n import messages

from .test_admin_api import api


async def get(sfu, path: str) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(sfu.base_url + path) as response:
            return response.status, dict(response.headers), await response.json()


async def test_a_page_fetches_every_message_of_its_language(sfu):
    status, headers, body = await get(sfu, "/i18n/zh-CN.json")
    assert status == 200 and body["locale"] == "zh-CN"
    assert body["messages"] == dict(messages("zh-CN")) and body["messages"]["state.connected"] == "已连接"
    assert headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-cache"
    status, _, body = await get(sfu, "/i18n/en.json")
    assert status == 200 and body["messages"]["state.connected"] == "Connected"


async def test_a_language_we_do_not_ship_is_a_typed_404(sfu):
    for path in ("/i18n/fr.json", "/i18n/zh.json", "/i18n/..%2Fsecret.json"):
        status, _, body = await get(sfu, path)
        assert status == 404 and body["error"] == "not_found", path


def lang_claim(link: dict) -> object:
    return jwt.decode(link["token"], options={"verify_signature": False}).get("lang")


async def test_a_link_opens_in_its_own_language_else_its_rooms(sfu):
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "王女士 复诊", "id": "wang", "language": "zh"})
    assert status == 201 and room["language"] == "zh-CN"  # stored as the locale we ship for the tag
    status, link = await api(sfu, "POST", "/api/rooms/wang/links", json={"role": "patient"})
    assert status == 201 and link["language"] == "zh-CN" and lang_claim(link) == "zh-CN"
    status, link = await api(sfu, "POST", "/api/rooms/wang/links", json={"role": "expert", "language": "en-GB"})
    assert status == 201 and link["language"] == "en" and lang_claim(link) == "en"

    status, body = await api(sfu, "POST", "/api/rooms/wang/links", json={"role": "doctor", "language": "fr"})
    assert status == 400 and "language" in body["message"]
    status, body = await api(sfu, "POST", "/api/rooms/wang/links", json={"role": "doctor", "language": 7})
    assert status == 400
    status, body = await api(sfu, "POST", "/api/rooms", json={"name": "x", "language": "klingon"})
    assert status == 400 and body["error"] == "bad_request"


async def test_the_language_claim_is_only_for_the_page(sfu):
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "r2", "language": "zh-CN"})
    _, link = await api(sfu, "POST", "/api/rooms/r2/links", json={"role": "patient"})
    grant = sfu.services.issuer.verify(link["token"])
    assert grant.room == "r2" and grant.role == "patient"  # a token with `lang` joins like any other


def test_the_issuer_refuses_a_language_we_do_not_ship(sfu):
    issuer = sfu.services.issuer
    token = issuer.mint(room="r", identity="p-1", name="P", role="patient", ttl_s=60, language="zh-CN")
    assert jwt.decode(token, options={"verify_signature": False})["lang"] == "zh-CN"
    with pytest.raises(ValueError, match="language"):
        issuer.mint(room="r", identity="p-1", name="P", role="patient", ttl_s=60, language="zh")



async def test_a_room_from_before_locales_gives_its_links_the_locale(sfu):
    """rooms.json written before i18n holds `"language": "zh"`: its links open in zh-CN."""
    await sfu.services.registry.create_room("old", "old-zh", language="zh")
    status, link = await api(sfu, "POST", "/api/rooms/old-zh/links", json={"role": "patient"})
    assert status == 201 and link["language"] == "zh-CN" and lang_claim(link) == "zh-CN"
