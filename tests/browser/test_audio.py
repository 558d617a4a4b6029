"""Audio between two real Chromium pages: RED negotiated, sent by the browser,
forwarded by the SFU as RED, and played without concealment."""

from __future__ import annotations

import json
import re
import time

import pytest

from .test_pages import open_live_call

AUDIO_STATS_JS = r"""
const done = arguments[arguments.length - 1];
const pc = window.consultClient?._conn?.pc;
if (!pc) { done(null); return; }
pc.getStats().then(report => {
  const codecs = {};
  report.forEach(s => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
  const out = {inbound: [], outbound: [], sdp: pc.localDescription ? pc.localDescription.sdp : ''};
  report.forEach(s => {
    if (s.kind !== 'audio') return;
    if (s.type === 'inbound-rtp') out.inbound.push({
      codec: codecs[s.codecId] ?? null, packets: s.packetsReceived, lost: s.packetsLost,
      samples: s.totalSamplesReceived, concealed: s.concealedSamples});
    if (s.type === 'outbound-rtp') out.outbound.push({codec: codecs[s.codecId] ?? null, packets: s.packetsSent});
  });
  done(out);
}, () => done(null));
"""


def audio_stats(driver) -> dict | None:
    return driver.execute_async_script(AUDIO_STATS_JS)


def first_audio_codec(sdp: str, direction: str) -> str | None:
    """The codec name leading the first audio m-section with this direction."""
    for section in re.split(r"\r?\n(?=m=)", sdp):
        if not section.startswith("m=audio") or f"a={direction}" not in section:
            continue
        first_pt = section.splitlines()[0].split(" ")[3]
        match = re.search(rf"a=rtpmap:{first_pt} ([\w-]+)/", section)
        return match.group(1).lower() if match else None
    return None


@pytest.mark.browser
def test_browsers_send_red_and_the_sfu_forwards_it_playable(sfu_server, chromium, browser_diagnostics):
    patient, doctor = open_live_call(sfu_server, chromium, browser_diagnostics)

    # Let a few seconds of audio play, then read what the doctor's browser received.
    deadline = time.monotonic() + 20
    stats = None
    while time.monotonic() < deadline:
        stats = audio_stats(doctor)
        inbound = (stats or {}).get("inbound") or []
        if inbound and max(s["samples"] or 0 for s in inbound) > 48_000 * 3:
            break
        time.sleep(0.5)
    print(json.dumps(stats, indent=1)[:3000])  # shown with -s
    patient_stats = audio_stats(patient)

    # The patient's browser answered with red first on its sending m-section, so it sends RED.
    assert first_audio_codec(patient_stats["sdp"], "sendonly") == "red", patient_stats["sdp"]
    # The server received RED from the patient's browser and sends RED on to the doctor's.
    ids = {p["role"]: p["id"] for p in sfu_server.admin_get("/api/rooms/demo/participants")["participants"]}
    media = sfu_server.admin_get("/api/rooms/demo/media")["participants"]
    print(json.dumps(media, indent=1))
    published_audio = media[ids["patient"]]["published"]["audio"]
    assert published_audio["red"] and published_audio["red_packets"] > 100, published_audio
    assert published_audio["dropped"] == 0, published_audio
    to_doctor = media[ids["doctor"]]["receiving"][f"{ids['patient']}:audio"]
    assert to_doctor["red"] and to_doctor["packets"] > 100, to_doctor
    # ... and the doctor's browser decodes it: on a clean link almost nothing is concealed.
    inbound = max(stats["inbound"], key=lambda s: s["samples"] or 0)
    assert inbound["samples"] > 48_000 * 3, stats
    assert inbound["concealed"] < 0.05 * inbound["samples"], stats
