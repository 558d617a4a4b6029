"""The viewer pages' playout policy (static/js/playout-policy.js) in real Chromium: it matches
the load test's model of it, leaves a clean call alone, and raises the remote video's
jitterBufferTarget when real packet loss makes the picture freeze."""

from __future__ import annotations

import random

import pytest

from loadtest.playout import POLICY_INTERVAL_S, PagePlayoutPolicy

from .answer_edits import edit_answers
from .harness import poll
from .test_pages import open_live_call

RUN_POLICY_JS = """
const [readings, done] = [arguments[0], arguments[arguments.length - 1]];
import('/static/js/playout-policy.js').then(({PlayoutPolicy}) => {
  const policy = new PlayoutPolicy();
  done(readings.map(([nowMs, frozenMs]) => policy.update(nowMs, frozenMs)));
}, (err) => done(String(err)));
"""

TARGETS_JS = "return window.consultClient ? window.consultClient.playoutTargets() : null;"

# 35 % of every UDP datagram in the test's namespace (media both ways, every peer) dropped,
# on arrival: a drop on the sending side fails the send, which Chromium retries.
LOSS_RULES = """
table inet consult_test_loss {
  chain in {
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 100 < 35 drop
  }
}
"""


def policy_readings(seed: int, count: int = 240) -> list[tuple[float, float]]:
    """Seeded getStats readings: stretches of freezes of different severity, and calm ones."""
    rng = random.Random(seed)
    readings, now, severity = [], 0.0, 0.0
    for _ in range(count):
        now += POLICY_INTERVAL_S * rng.uniform(0.9, 1.3)
        if rng.random() < 0.08:
            severity = rng.choice([0.0, 0.0, 0.05, 0.12, 0.3])
        frozen = rng.uniform(0, 2 * severity) if rng.random() < 0.7 else 0.0
        readings.append((round(now, 3), round(frozen, 3)))
    return readings


@pytest.mark.browser
def test_the_page_policy_matches_the_load_test_model_and_acts_on_real_loss(sfu_server, chromium, netns,
                                                                            browser_diagnostics):
    # Without video FEC on this page, as for a receiver we send none to (H.264): here the
    # loss must show as freezes for the policy to answer (FEC hides much of it otherwise).
    _, doctor = open_live_call(sfu_server, chromium, browser_diagnostics,
                               prepare_doctor=lambda d: edit_answers(d, video_nack=True, video_fec=False))

    # the page's rules and the load test's model of them give the same floors for the same readings
    for seed in (1, 2, 3):
        readings = policy_readings(seed)
        model = PagePlayoutPolicy()
        expected = [round(model.update(now, frozen) * 1000) for now, frozen in readings]
        got = doctor.execute_async_script(RUN_POLICY_JS, [[now * 1000, frozen * 1000] for now, frozen in readings])
        assert got == expected, (seed, got)
        assert 0 < max(expected)  # the sequences do exercise raising and lowering
        assert expected[-1] < max(expected) or expected.count(max(expected)) < len(expected)

    # a clean call: the policy runs on the remote video and leaves the browser's own target
    targets = poll(lambda: doctor.execute_script(TARGETS_JS), timeout=10)
    assert targets and all(v == 0 for v in targets.values()), targets

    # real loss: the picture freezes, the page raises the floor on the remote video
    netns.run(["nft", "-f", "-"], input=LOSS_RULES, check=True)
    raised = poll(lambda: any(v > 0 for v in (doctor.execute_script(TARGETS_JS) or {}).values()),
                  timeout=60, interval=1)
    if not raised:
        pytest.fail(browser_diagnostics("no playout floor raised under 35 % loss: "
                                        f"{doctor.execute_script(TARGETS_JS)}"),
                    pytrace=False)
    targets = doctor.execute_script(TARGETS_JS)
    assert all(0 <= v <= 450 for v in targets.values()), targets
