"""Screenshots of every page in each language we ship, for a reviewer who does not run a call.

    sudo .venv/bin/python -m tests.browser.screenshots --out screenshots

Like the browser tests it needs root: the server and headless Chromium run in a network
namespace it creates. Per language (the browser's, `--lang`), a short recorded call: the
patient on a 360×780 phone (portrait, then landscape) and the doctor on a 1366×768
console; then the trainer page (the list, then the replay) and the patient page opened
with a link that is not valid (the server's contact line under it). Files:
<page>-<language>.png, e.g. patient-portrait-zh-CN.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from selenium.webdriver.common.by import By

from i18n import LOCALES
from signalling.secrets_store import load_or_create_secret
from signalling.tokens import TokenIssuer

from .harness import BrowserFactory, NetNamespace, missing_prerequisites, poll, start_sfu_server
from .test_pages import wait_for_live_remote_video

PHONE = (360, 780)
DESKTOP = (1366, 768)
SIZES = {  # each page and the size of its picture
    "patient-portrait": PHONE, "patient-landscape": (PHONE[1], PHONE[0]), "console": DESKTOP,
    "trainer-list": DESKTOP, "trainer-replay": DESKTOP, "link-error": PHONE,
}
RECORDED_S = 3.0
# The server's contact line (--clinic-contact): under the link error, which names no room.
CLINIC_CONTACT = "Call 021-5555 0123 or reply to your SMS"


def _send(driver, message: dict) -> None:
    driver.execute_script("window.consultClient._send(arguments[0]);", message)


def _save(driver, out: Path, page: str, language: str) -> Path:
    path = out / f"{page}-{language}.png"
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"no screenshot of {page} ({language})")
    return path


def _viewport(driver, size: tuple[int, int], *, mobile: bool = False) -> None:
    """The page's own size (a window's would include the browser's frame), touch on a phone."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": mobile})


def _language(driver, language: str) -> None:
    if not poll(lambda: driver.execute_script("return document.documentElement.lang") == language, 10):
        raise RuntimeError(f"the page did not open in {language}")


def _call(factory: BrowserFactory, server, language: str, out: Path) -> list[Path]:
    """A recorded call in `language`: the patient's page (portrait, landscape) and the console."""
    flags = [f"--lang={language}", f"--accept-lang={language}"]
    doctor = factory(f"doctor-{language}", extra_args=flags)
    _viewport(doctor, DESKTOP)
    doctor.get(server.doctor_url)
    patient = factory(f"patient-{language}", extra_args=flags)
    _viewport(patient, PHONE, mobile=True)
    patient.get(server.patient_url)
    live, last = wait_for_live_remote_video({"doctor": (doctor, "patient"), "patient": (patient, "doctor")})
    if len(live) != 2:
        raise RuntimeError(f"no live call in {language}: {last}")
    _language(patient, language)
    _send(doctor, {"type": "record", "action": "start"})
    poll(lambda: patient.execute_script("return document.body.dataset.recording") == "on", 10)
    time.sleep(RECORDED_S)  # the face analysis' first prompt, and something to replay
    shots = [_save(patient, out, "patient-portrait", language), _save(doctor, out, "console", language)]
    _viewport(patient, SIZES["patient-landscape"], mobile=True)
    time.sleep(1.0)
    shots.append(_save(patient, out, "patient-landscape", language))
    _send(doctor, {"type": "record", "action": "stop"})
    poll(lambda: patient.execute_script("return document.body.dataset.recording") == "off", 10)
    # Leave, rather than vanish: the server renders replays slower while calls run.
    for driver in (patient, doctor):
        driver.execute_script("window.consultClient.leave();")
        poll(lambda d=driver: d.execute_script("return window.consultClient.state") == "closed", 10)
        driver.quit()
    return shots


def _trainer(factory: BrowserFactory, server, language: str, out: Path) -> list[Path]:
    issuer = TokenIssuer(load_or_create_secret(server.data_dir / "token.secret"))
    token = issuer.mint(room="demo", identity=f"trainer-{language}", name="Trainer", role="trainer", ttl_s=600)
    trainer = factory(f"trainer-{language}", extra_args=[f"--lang={language}", f"--accept-lang={language}"])
    _viewport(trainer, DESKTOP)
    trainer.get(server.url("/trainer") + "#token=" + token)
    buttons = poll(lambda: trainer.find_elements(By.CSS_SELECTOR, ".recording button:not([disabled])"), 20)
    if not buttons:
        raise RuntimeError(f"the trainer page listed no recording ({language})")
    _language(trainer, language)
    shots = [_save(trainer, out, "trainer-list", language)]
    buttons[-1].click()
    # A frame of every track (the watermarked replay is prepared as it plays, from the start).
    playable = ("const s = window.trainer.state();"
                "return s && s.tracks.length > 0 && s.tracks.every((t) => t.readyState >= 2);")
    if not poll(lambda: trainer.execute_script(playable), 120):
        raise RuntimeError(f"the replay did not become playable ({language}): "
                           f"{trainer.execute_script('return window.trainer.state()')}")
    trainer.execute_script("window.trainer.player.seek(1.5);")
    poll(lambda: trainer.execute_script(playable), 30)
    time.sleep(1.0)
    shots.append(_save(trainer, out, "trainer-replay", language))
    trainer.quit()
    return shots


def _link_error(factory: BrowserFactory, server, language: str, out: Path) -> Path:
    page = factory(f"stranger-{language}", extra_args=[f"--lang={language}", f"--accept-lang={language}"])
    _viewport(page, PHONE, mobile=True)
    page.get(server.url("/patient") + "#token=not-a-token")
    if not poll(lambda: page.execute_script("return document.body.dataset.connectionState") == "closed", 15):
        raise RuntimeError(f"a bad link did not end the call ({language})")
    if not poll(lambda: page.execute_script("return !document.getElementById('ended-contact').hidden"), 10):
        raise RuntimeError(f"no contact line under the link error ({language})")
    _language(page, language)
    shot = _save(page, out, "link-error", language)
    page.quit()
    return shot


def take_screenshots(out: Path, languages: tuple[str, ...] = LOCALES) -> list[Path]:
    """Every page of SIZES in every language, into `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="consult-screenshots-") as work:
        netns = NetNamespace(log_dir=Path(work) / "logs")
        factory = BrowserFactory(netns, artifact_dir=Path(work))
        try:
            server = start_sfu_server(netns, Path(work) / "data", extra_args=["--clinic-contact", CLINIC_CONTACT])
            shots: list[Path] = []
            for language in languages:
                shots += _call(factory, server, language, out)
                shots += _trainer(factory, server, language, out)
                shots.append(_link_error(factory, server, language, out))
            return shots
        finally:
            factory.close()
            netns.destroy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for the PNG files")
    parser.add_argument("--language", action="append", choices=LOCALES, help="only these (default: all)")
    args = parser.parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        print(f"cannot take screenshots here: {missing}", file=sys.stderr)
        return 2
    for path in take_screenshots(args.out, tuple(args.language or LOCALES)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
