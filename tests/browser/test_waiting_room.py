"""The patient's waiting room (issue 17, items 9 and 10): before the doctor joins, the clinic's
name, whom the patient waits for, their own camera large and a microphone check that hears
Chromium's fake microphone; all of it goes when the doctor arrives. "Your clinic has been
told you are here" only once a real webhook endpoint took the news (never while it answers
500), and the clinic's contact line in the waiting room and under a refused link, in English
and Chinese, on a phone."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jwt
import pytest

from i18n import messages
from webhooks import new_webhook_secret

from .harness import REPO_ROOT, poll, start_sfu_server
from .screenshots import PHONE, _viewport
from .test_consultation_ui import phone_sized, screenshot, wait_ui

EN = messages("en")

WAITING_JS = r"""
const section = document.getElementById('waiting');
const shown = !section.hidden && section.getClientRects().length > 0;
const self = document.getElementById('self-view').getBoundingClientRect();
const text = [...section.children].filter((e) => !e.hidden).map((e) => e.getBoundingClientRect().bottom);
return {
  connection: document.body.dataset.connectionState,
  waiting: shown,
  clinic: shown && !document.getElementById('waiting-clinic').hidden
    ? document.getElementById('waiting-clinic').textContent : null,
  title: shown ? document.getElementById('waiting-title').textContent : null,
  level: Number(document.getElementById('mic-level').value),
  mic: document.getElementById('mic-status').dataset.state ?? null,
  selfShare: self.width / innerWidth,
  clearOfText: shown ? self.top >= Math.max(...text) : null,
  overflow: document.documentElement.scrollHeight > innerHeight || document.documentElement.scrollWidth > innerWidth,
};
"""

# Makes a room with a clinic name and a patient link for it, through the admin API.
ADMIN_PY = """
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def call(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    return json.loads(opener.open(request, timeout=5).read())
call("/api/rooms", {"name": "Follow-up", "id": "wait-1", "clinic": "Riverside Skin Clinic", "processors": []})
links = {role: call("/api/rooms/wait-1/links", {"role": role})["url"] for role in ("patient", "doctor")}
print(json.dumps(links))
"""


@pytest.mark.browser
def test_the_patient_waits_with_a_camera_and_microphone_check(sfu_server, chromium, browser_diagnostics, tmp_path):
    key = (sfu_server.data_dir / "admin.key").read_text().strip()
    done = sfu_server.netns.run([sys.executable, "-c", ADMIN_PY, sfu_server.url("/").rstrip("/"), key],
                                check=True, cwd=REPO_ROOT)
    links = json.loads(done.stdout)
    patient = chromium("patient")
    phone_sized(patient)
    patient.get(links["patient"])
    ok, state = wait_ui(patient, lambda d: d.execute_script(WAITING_JS),
                        lambda s: s["waiting"] and s["mic"] == "heard", timeout=30)
    assert ok, browser_diagnostics(f"no waiting room, or the microphone was not heard: {state}")
    assert state["clinic"] == "Riverside Skin Clinic" and state["title"] == EN["stage.waiting_for_doctor"], state
    assert state["level"] > 0 and state["selfShare"] >= 0.3 and state["clearOfText"] and not state["overflow"], state
    screenshot(patient, tmp_path / "patient-waiting-room.png")

    doctor = chromium("doctor")
    doctor.get(links["doctor"])
    ok, state = wait_ui(patient, lambda d: d.execute_script(WAITING_JS), lambda s: not s["waiting"], timeout=30)
    assert ok, browser_diagnostics(f"the waiting room stayed after the doctor joined: {state}")
    assert state["selfShare"] < 0.3, state  # back in its corner, clear of the doctor



# --- issue 17, items 9 and 10: whom the patient waits for, whether the clinic knows, whom to call ---

ZH = messages("zh-CN")
SERVER_CONTACT = "Front desk 021-5555 0100"
ROOMS = {  # language -> (room id, doctor's name, the room's contact line)
    "en": ("wait-en", "Dr Lee", "Call 021-5555 0123 or reply to your SMS"),
    "zh-CN": ("wait-zh", "李医生", "请致电 021-5555 0123 或回复短信"),
}
TEXTS = {"en": EN, "zh-CN": ZH}

# A clinic's webhook endpoint, run inside the server's namespace: it checks each signature,
# answers 204 or 500 as the mode file says, and logs every attempt (status and event type).
RECEIVER_PY = r"""
import json, sys
from pathlib import Path
from aiohttp import web
from webhooks import SignatureError, verify
secret, port, mode, log = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
async def hook(request):
    body = await request.read()
    try:
        verify(secret, request.headers, body)
    except SignatureError:
        return web.Response(status=401)
    status = 204 if mode.read_text().strip() == "ok" else 500
    event = json.loads(body)
    with log.open("a") as out:
        out.write(json.dumps({"status": status, "type": event["type"], "room": event["room"]["id"]}) + "\n")
    return web.Response(status=status)
app = web.Application()
app.router.add_post("/hooks", hook)
web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("receiver ready", flush=True))
"""

PAGE_JS = r"""
const $ = (id) => document.getElementById(id);
const seen = (e) => e.getClientRects().length > 0 && e.textContent.trim() !== '' ? e.textContent : null;
return {
  lang: document.documentElement.lang,
  connection: document.body.dataset.connectionState,
  waiting: !$('waiting').hidden,
  title: seen($('waiting-title')),
  told: seen($('waiting-told')),
  contact: seen($('waiting-contact')),
  ended: !$('ended').hidden,
  endedTitle: seen($('ended-title')),
  endedContact: seen($('ended-contact')),
  overflow: document.documentElement.scrollWidth > innerWidth,
};
"""


class Receiver:
    """The endpoint above, with its mode switched from here and its log read from here."""

    def __init__(self, netns, workdir: Path, secret: str, port: int = 8099) -> None:
        self.mode_file, self.log_file = workdir / "mode", workdir / "attempts.jsonl"
        self.mode_file.write_text("fail")
        self.log_file.touch()
        self.url = f"http://127.0.0.1:{port}/hooks"
        proc = netns.spawn("receiver", [sys.executable, "-c", RECEIVER_PY, secret, str(port), str(self.mode_file),
                                        str(self.log_file)], cwd=REPO_ROOT)
        assert proc.wait_for(lambda lines: any("receiver ready" in line for line in lines), 20), proc.output()

    def answer(self, mode: str) -> None:
        self.mode_file.write_text(mode)

    def attempts(self) -> list[dict]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def taken(self, type: str) -> list[str]:
        """The rooms whose `type` events this receiver answered 2xx."""
        return [a["room"] for a in self.attempts() if a["type"] == type and a["status"] == 204]


def expired_copy(data_dir: Path, token: str) -> str:
    """The same link, signed by the server, expired a minute ago (past its 5 s leeway)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 60
    return jwt.encode(claims, (data_dir / "token.secret").read_text().strip(), algorithm="HS256")


def open_page(page, url: str) -> None:
    """A full load (from another document: a new fragment alone would not reload the page)."""
    page.get("about:blank")
    page.get(url)


@pytest.mark.browser
def test_the_waiting_room_names_the_doctor_says_the_clinic_knows_only_once_it_does_and_how_to_call(
        netns, chromium, tmp_path):
    secret = new_webhook_secret()
    (tmp_path / "webhook.secret").write_text(secret + "\n")
    receiver = Receiver(netns, tmp_path, secret)  # answering 500 until told otherwise
    server = start_sfu_server(netns, tmp_path / "data", extra_args=[
        "--webhook", receiver.url, "--webhook-secret-file", str(tmp_path / "webhook.secret"),
        "--webhook-retry-max", "1", "--clinic-contact", SERVER_CONTACT, "--processors", ""])

    def browser_diagnostics(summary: str) -> str:  # (the fixture would start a server of its own)
        saved = chromium.save_diagnostics("failure")
        return "\n".join([summary, *(f"  {p}" for p in saved), chromium.console_summary(), server.output(),
                          json.dumps(receiver.attempts())])
    pages, links = {}, {}
    for language, (room, doctor, contact) in ROOMS.items():
        server.admin_call("POST", "/api/rooms", {"name": "Follow-up", "id": room, "language": language,
                                                 "doctor_name": doctor, "contact": contact})
        links[language] = server.admin_call("POST", f"/api/rooms/{room}/links", {"role": "patient"})
        pages[language] = chromium(f"patient-{language}")
        _viewport(pages[language], PHONE, mobile=True)
        pages[language].get(links[language]["url"])

    # Waiting, while the clinic's endpoint refuses every event: whom they wait for, how to
    # call, and no claim that the clinic knows.
    for language, (room, doctor, contact) in ROOMS.items():
        texts = TEXTS[language]
        ok, state = wait_ui(pages[language], lambda d: d.execute_script(PAGE_JS),
                            lambda s: s["waiting"] and s["contact"] is not None, timeout=30)
        assert ok, browser_diagnostics(f"no waiting room in {language}: {state}")
        assert state["lang"] == language and not state["overflow"], state
        assert state["title"] == texts["waiting.title.doctor"].replace("{name}", doctor), state
        assert state["contact"] == texts["contact.help"].replace("{contact}", contact), state
    refused = len(receiver.attempts())
    assert poll(lambda: len(receiver.attempts()) >= refused + 3, 15), receiver.attempts()
    assert all(a["status"] == 500 for a in receiver.attempts()), receiver.attempts()
    for language, page in pages.items():
        state = page.execute_script(PAGE_JS)
        assert state["waiting"] and state["told"] is None, (language, state)
        screenshot(page, tmp_path / f"waiting-not-told-{language}.png")

    # The endpoint takes them: only now does each page say so, in its language.
    receiver.answer("ok")
    for language, page in pages.items():
        ok, state = wait_ui(page, lambda d: d.execute_script(PAGE_JS), lambda s: s["told"] is not None, timeout=20)
        assert ok, browser_diagnostics(f"the clinic took the event, the page in {language} did not say so: {state}")
        assert ROOMS[language][0] in receiver.taken("participant.waiting"), receiver.attempts()
        assert state["told"] == TEXTS[language]["waiting.clinic_told"] and state["waiting"], state
        screenshot(page, tmp_path / f"waiting-told-{language}.png")

    # An expired link of the room: the error screen gives the room's contact; a garbled one
    # and one cut short get the server's.
    for language, (room, _, contact) in ROOMS.items():
        page, texts = pages[language], TEXTS[language]
        open_page(page, server.url("/patient") + "#token=" + expired_copy(server.data_dir, links[language]["token"]))
        ok, state = wait_ui(page, lambda d: d.execute_script(PAGE_JS),
                            lambda s: s["ended"] and s["endedContact"] is not None, timeout=20)
        assert ok, browser_diagnostics(f"no contact under the expired link's error in {language}: {state}")
        assert state["endedTitle"] == texts["end.title_not_joined"] and state["lang"] == language, state
        assert state["endedContact"] == texts["contact.help"].replace("{contact}", contact), state
        screenshot(page, tmp_path / f"expired-link-{language}.png")
    stranger = pages["en"]
    for garbled in ("#token=not-a-token", ""):
        open_page(stranger, server.url("/patient") + garbled)
        ok, state = wait_ui(stranger, lambda d: d.execute_script(PAGE_JS),
                            lambda s: s["ended"] and s["endedContact"] is not None, timeout=20)
        assert ok and state["endedContact"] == EN["contact.help"].replace("{contact}", SERVER_CONTACT), state
