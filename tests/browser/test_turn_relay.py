"""A patient on a network that lets only TCP out (a hospital guest Wi-Fi) still has a
two-way call, through coturn with the per-session credentials the server hands out.

The patient's browser runs in a namespace of its own whose nftables firewall drops every
UDP packet and every TCP connection except to the server's web port and to coturn's TCP
port (both at the server's end of the patient's link). The server, coturn and the
doctor's browser share the other namespace. Media can then only go patient ⇄ coturn over
TCP, coturn ⇄ server over UDP: the patient's selected candidate pair must be a TCP relay.
"""

from __future__ import annotations

import secrets

import pytest

from .harness import (
    TURN_PORT,
    BrowserFactory,
    link_namespaces,
    poll,
    start_coturn,
    start_sfu_server,
    start_tcp_forwarder,
)
from .test_pages import wait_for_live_remote_video

PORT = 8080
CHROMEDRIVER_PORT = 9515  # harness.start_chromedriver's

SELECTED_PAIR_JS = """
const done = arguments[arguments.length - 1];
const pc = window.consultClient && window.consultClient.peerConnection;
if (!pc) { done(null); return; }
pc.getStats().then((stats) => {
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) return done(null);
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  done({local: {type: local.candidateType, protocol: local.protocol, relayProtocol: local.relayProtocol ?? null},
        remote: {type: remote.candidateType, address: remote.address},
        bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived});
}, (e) => done({error: String(e)}));
"""


def guest_wifi_rules(gateway: str, ports: tuple[int, ...], control_veth: str) -> str:
    """nftables for the patient's namespace: loopback, replies, and new TCP to `gateway`'s
    `ports`; nothing else in or out (no UDP at all). The test's own control of the browser
    (chromedriver, from the root namespace over `control_veth`) is let in."""
    allowed = ", ".join(str(p) for p in ports)
    return f"""
table inet guest_wifi {{
  chain in {{
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
    iifname "{control_veth}" tcp dport {CHROMEDRIVER_PORT} accept
  }}
  chain out {{
    type filter hook output priority 0; policy drop;
    oif lo accept
    ct state established,related accept
    ip daddr {gateway} tcp dport {{ {allowed} }} accept
    counter
  }}
}}
"""


@pytest.mark.browser
def test_a_patient_that_can_only_reach_tcp_is_relayed_by_coturn(netns, patient_netns, chromium, tmp_path):
    link = link_namespaces(netns, patient_netns)
    turn_secret = secrets.token_urlsafe(24)
    (tmp_path / "turn.secret").write_text(turn_secret + "\n")
    coturn = start_coturn(netns, link.a_address, turn_secret, tmp_path / "coturn")
    server = start_sfu_server(netns, tmp_path / "data", extra_args=[
        "--host", "0.0.0.0", "--public-url", f"http://127.0.0.1:{PORT}",
        "--turn-url", f"turn:{link.a_address}:{TURN_PORT}?transport=udp",
        "--turn-url", f"turn:{link.a_address}:{TURN_PORT}?transport=tcp",
        "--turn-secret-file", str(tmp_path / "turn.secret")])
    start_tcp_forwarder(patient_netns, PORT, link.a_address, PORT)
    rules = guest_wifi_rules(link.a_address, (PORT, TURN_PORT), patient_netns.ns_veth)
    patient_netns.run(["nft", "-f", "-"], input=rules, check=True)
    patient_browsers = BrowserFactory(patient_netns, artifact_dir=tmp_path / "patient")

    def diagnostics(summary: str) -> str:
        saved = chromium.save_diagnostics("failure") + patient_browsers.save_diagnostics("failure")
        rules = patient_netns.run(["nft", "list", "ruleset"]).stdout
        return (f"{summary}\nsaved: {[str(p) for p in saved]}\n{chromium.console_summary()}\n"
                f"{patient_browsers.console_summary()}\n--- nftables ---\n{rules}\n"
                f"--- coturn ---\n{coturn.output()[-4000:]}\n--- server ---\n{server.output()[-4000:]}")

    try:
        patient = patient_browsers("patient")
        doctor = chromium("doctor")
        doctor.get(server.doctor_url)
        patient.get(server.patient_url)
        pages = {"doctor": (doctor, "patient"), "patient": (patient, "doctor")}
        live, last = wait_for_live_remote_video(pages)
        if len(live) < 2:
            pytest.fail(diagnostics(f"no two-way video: live on {sorted(live)}, last seen {last}"), pytrace=False)

        pair = poll(lambda: patient.execute_async_script(SELECTED_PAIR_JS), timeout=10)
        assert pair and pair.get("local"), diagnostics(f"no selected candidate pair on the patient's page: {pair}")
        assert pair["local"]["type"] == "relay" and pair["local"]["relayProtocol"] == "tcp", diagnostics(str(pair))
        # media keeps flowing through the relay both ways (the first seconds may be a small layer)
        def flowed() -> dict | None:
            now = patient.execute_async_script(SELECTED_PAIR_JS)
            return now if now and now["bytesReceived"] > 100_000 and now["bytesSent"] > 100_000 else None

        assert poll(flowed, timeout=15), diagnostics(f"under 100 KB each way through the relay: {pair}")
        # coturn took the patient's credential: its username names the session's participant
        patient_id = next(p["id"] for p in server.admin_get("/api/rooms/demo/participants")["participants"]
                          if p["role"] == "patient")
        assert poll(lambda: patient_id in coturn.output(), timeout=5), diagnostics("coturn never saw the patient")
        dropped = patient_netns.run(["nft", "list", "chain", "inet", "guest_wifi", "out"]).stdout
        print(pair, dropped, sep="\n")  # shown with -s: what the firewall stopped (the patient's UDP tries)
    finally:
        patient_browsers.close()
