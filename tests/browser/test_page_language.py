"""The pages in Chinese and English (issue 17): a page speaks the link's language, else the
browser's; the switch changes every text on the page at once, mid-call, and is kept across
a reload; `<html lang>` follows. Texts are compared with the catalogues (i18n/locales)."""

from __future__ import annotations

import pytest

from i18n import messages

from .harness import start_sfu_server
from .test_consultation_ui import click, phone_sized, screenshot, wait_ui

ZH = messages("zh-CN")
EN = messages("en")

# What a page says, from the elements every page has.
PAGE_JS = r"""
const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent.trim() : null; };
const labels = [...document.querySelectorAll('#remote .tile-label')].map((e) => e.textContent.trim()).join(' | ');
const sw = document.getElementById('language');
const r = sw?.getBoundingClientRect();
return {
  lang: document.documentElement.lang,
  title: document.title,
  connection: document.body.dataset.connectionState,
  banner: text('#banner'),
  mic: text('#mic .control-label'),
  cam: text('#cam .control-label'),
  leave: text('#leave .control-label'),
  controls: document.getElementById('controls')?.getAttribute('aria-label'),
  labels,
  switchText: sw ? sw.textContent.trim() : null,
  switchInView: r ? r.width >= 44 && r.top >= 0 && r.right <= innerWidth : null,
  guidance: document.getElementById('guidance')?.hidden === false ? text('#guidance') : null,
  prompt: document.getElementById('guidance')?.dataset.prompt ?? null,
  told: text('#analysis-guidance'),
  overflow: document.documentElement.scrollWidth > innerWidth,
};
"""


def page(driver) -> dict:
    return driver.execute_script(PAGE_JS)


def speaks(texts, role: str):
    """A predicate: the connected page, every checked text in `texts`' language."""
    def check(s: dict) -> bool:
        return (s["connection"] == "connected" and s["banner"] == texts["state.connected"]
                and s["mic"] == texts["control.mute"] and s["leave"] == texts["control.leave"]
                and s["controls"] == texts["controls.label"] and texts[f"role.{role}"] in s["labels"])
    return check


@pytest.fixture
def chinese_room_server(netns, tmp_path):
    # beside the default server the diagnostics fixture starts
    return start_sfu_server(netns, tmp_path / "data-zh", port=8081, extra_args=["--language", "zh-CN"])


@pytest.mark.browser
def test_a_chinese_link_opens_in_chinese_and_the_switch_changes_it_mid_call(
        chinese_room_server, chromium, browser_diagnostics, tmp_path):
    server = chinese_room_server
    doctor = chromium("doctor")
    doctor.get(server.doctor_url)
    patient = chromium("patient")
    phone_sized(patient)
    patient.get(server.patient_url)

    ok, ui = wait_ui(patient, page, speaks(ZH, "doctor"), timeout=30)
    assert ok, browser_diagnostics(f"the patient page is not in Chinese: {ui}")
    assert ui["lang"] == "zh-CN" and ui["title"] == ZH["page.title"] and ui["cam"] == ZH["control.stop_video"], ui
    assert ui["switchText"] == "English" and ui["switchInView"] and not ui["overflow"], ui
    ok, cui = wait_ui(doctor, page, speaks(ZH, "patient"), timeout=20)
    assert ok and cui["lang"] == "zh-CN", browser_diagnostics(f"the console is not in Chinese: {cui}")
    # The face analysis' prompt (the fake camera shows no face), from the console's catalogue.
    ok, cui = wait_ui(doctor, page, lambda s: s["told"] and s["told"] != ZH["analysis.told_unknown"], timeout=20)
    assert ok and cui["told"] == f"“{ZH['prompt.face_camera']}”", browser_diagnostics(f"no Chinese prompt: {cui}")
    screenshot(patient, tmp_path / "patient-zh.png")

    # English at a tap, in the call: nothing reconnects.
    click(patient, "#language")
    ok, ui = wait_ui(patient, page, lambda s: s["lang"] == "en" and speaks(EN, "doctor")(s), timeout=5)
    assert ok, browser_diagnostics(f"the switch did not turn the page English: {ui}")
    assert ui["switchText"] == "中文" and ui["title"] == EN["page.title"], ui
    assert ui["guidance"] is None, ui  # the analysis' prompts show only while photos are taken
    assert patient.execute_script("return window.consultClient.state") == "connected"
    screenshot(patient, tmp_path / "patient-en.png")

    # The choice is the device's: a reload rejoins in English.
    patient.refresh()
    ok, ui = wait_ui(patient, page, speaks(EN, "doctor"), timeout=30)
    assert ok and ui["lang"] == "en", browser_diagnostics(f"the reload lost the chosen language: {ui}")
    cui = page(doctor)
    assert cui["lang"] == "zh-CN" and cui["banner"] == ZH["state.connected"], cui  # the doctor's page is its own


@pytest.mark.browser
def test_a_link_without_a_language_follows_the_browser(sfu_server, chromium, browser_diagnostics):
    patient = chromium("patient", extra_args=["--lang=zh-CN", "--accept-lang=zh-CN,zh"])
    phone_sized(patient)
    patient.get(sfu_server.patient_url)
    ok, ui = wait_ui(patient, page, lambda s: s["connection"] == "connected" and s["banner"] == ZH["state.connected"],
                     timeout=30)
    assert ok and ui["lang"] == "zh-CN" and ui["leave"] == ZH["control.leave"], browser_diagnostics(
        f"a Chinese browser did not get Chinese: {ui}; navigator.languages="
        f"{patient.execute_script('return navigator.languages')}")

    # A link that is incomplete is told so in the browser's language too (another tab:
    # this one would rejoin with the token it keeps).
    stranger = chromium("stranger", extra_args=["--lang=zh-CN", "--accept-lang=zh-CN,zh"])
    stranger.get(sfu_server.url("/patient"))
    ok, ui = wait_ui(stranger, page, lambda s: s["connection"] == "closed", timeout=10)
    assert ok and ui["banner"] == ZH["end.title_not_joined"], ui
    assert stranger.find_element("id", "ended-text").text == ZH["end.no_token"]

    english = chromium("english", extra_args=["--lang=en-US"])
    english.get(sfu_server.url("/"))
    ok, ui = wait_ui(english, lambda d: d.execute_script(
        "return {lang: document.documentElement.lang, h1: document.querySelector('h1').textContent}"),
        lambda s: s["h1"] == EN["index.heading"])
    assert ok and ui["lang"] == "en", ui
