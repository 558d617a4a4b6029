"""loadtest.step_recovery: how fast a subscriber's delay and layers came back after its link's rate steps."""

import math

from loadtest.step_recovery import delay_ok_after, step_recovery, top_layer_after


def test_delay_is_ok_after_the_last_bin_whose_p95_is_over_the_bound():
    delays = [(10.0 + i * 0.02, 0.04) for i in range(500)]  # 10 s of 50 packets/s
    assert delay_ok_after(delays, 10.0, 20.0) == 0.0
    # queueing for the first 1.2 s after the step, then a single late bin at 3.0-3.5 s
    bad = [(s, 0.4 if s < 11.2 or 13.0 <= s < 13.5 else d) for s, d in delays]
    assert delay_ok_after(bad, 10.0, 20.0) == 3.5
    # one late packet in a bin of 25 is under its p95: bursts of a single packet do not count
    one = [(s, 0.4 if i == 300 else d) for i, (s, d) in enumerate(delays)]
    assert delay_ok_after(one, 10.0, 20.0) == 0.0
    # a lost packet counts as over; nothing sent in the period says so
    lost = [(s, math.inf if s < 10.5 else d) for s, d in delays]
    assert delay_ok_after(lost, 10.0, 20.0) == 0.5
    assert delay_ok_after(delays, 30.0, 40.0) is None
    # late through the end of the period: the whole period
    assert delay_ok_after([(s, 0.4) for s, _ in delays], 10.0, 15.0) == 5.0


def test_the_top_layer_counts_when_every_video_to_the_subscriber_is_there():
    def sample(t, layers):
        return t, {("r", sub, pub): (layer, 0) for (sub, pub), layer in layers.items()}

    samples = [sample(30.5, {("pat", "doc"): "l", ("pat", "exp"): "l", ("doc", "pat"): "h"}),
               sample(32.0, {("pat", "doc"): "h", ("pat", "exp"): "m", ("doc", "pat"): "h"}),
               sample(34.5, {("pat", "doc"): "h", ("pat", "exp"): "h", ("doc", "pat"): "m"})]
    assert top_layer_after(samples, "pat", 30.0, 40.0) == 4.5
    assert top_layer_after(samples, "pat", 30.0, 34.0) is None  # not before the next step
    assert top_layer_after(samples, "doc", 30.0, 40.0) == 0.5


def test_steps_are_read_from_the_records_link_counters():
    sends = [[i, 100.0 + i * 0.02] for i in range(1500)]  # 30 s of audio
    arrivals = [[i, t + (0.5 if 110.0 <= t < 112.0 else 0.03)] for i, t in sends]
    record = {
        "window": {"start": 100.0, "end": 130.0},
        "impairment": {"pat": {"uplink": None, "downlink": {"initial_kbps": None,
                                                            "steps": [[110.0, 500.0], [120.0, None]]}},
                       "doc": {"uplink": None, "downlink": {"initial_kbps": None, "steps": []}}},
        "sends": {"doc": {"audio": sends, "video": []}},
        "streams": [{"subscriber": "pat", "publisher": "doc", "kind": "audio", "arrivals": arrivals}],
    }
    samples = [(121.0, {("r", "pat", "doc"): ("m", 1)}), (123.5, {("r", "pat", "doc"): ("h", 2)})]
    down, up = step_recovery(record, samples)
    assert down == {"subscriber": "pat", "at_s": 10.0, "kbps": 500.0, "delay_ok_after_s": 2.0}
    assert up == {"subscriber": "pat", "at_s": 20.0, "kbps": None, "delay_ok_after_s": 0.0,
                  "top_layer_after_s": 3.5}
