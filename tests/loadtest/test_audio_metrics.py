"""Audio in time with RED copies and Opus in-band FEC (a synthetic record: deterministic)."""

from __future__ import annotations

from loadtest.metrics import SendLog, Window, audio_stream_metrics, run_metrics

CLIP = 100  # packets in the clip; it loops
STEP = 0.02
T0 = 100.0
DEADLINE = 0.2


def sends(count: int = 150) -> list[tuple[int, float]]:
    """A publisher's sends: clip index i % CLIP every 20 ms (the clip wraps after 100)."""
    return [(i % CLIP, T0 + i * STEP) for i in range(count)]


def lbrr_except(*without: int) -> str:
    """Every clip packet carries LBRR except these (and packet 0: nothing before it in the encoding)."""
    return "".join("0" if i == 0 or i in without else "1" for i in range(CLIP))


def arrivals(log: list[tuple[int, float]], delay: float = 0.05, lost: frozenset[int] = frozenset(),
             late: dict[int, float] = {}) -> list[list]:
    """[index, time] per send position (position = place in `log`), minus `lost`, `late` given their own delay."""
    return [[i, t + late.get(k, delay)] for k, (i, t) in enumerate(log) if k not in lost]


def metrics(events: list[list], lbrr: str | None, log: list[tuple[int, float]] | None = None) -> dict:
    log = log or sends()
    return audio_stream_metrics({"arrivals": events}, SendLog(log), Window(T0, T0 + len(log) * STEP), DEADLINE,
                                lbrr=lbrr)


def test_a_lost_packet_is_played_from_the_next_ones_fec_when_that_arrives_by_its_deadline():
    log = sends()
    m = metrics(arrivals(log, lost=frozenset({10})), lbrr_except())
    assert m["packets_sent"] == 150 and m["packets_arrived"] == 149
    assert m["packets_in_time"] == 150 and m["packets_fec"] == 1 and m["packets_red"] == 0


def test_no_fec_credit_without_lbrr_or_when_the_next_packet_is_late_or_lost_too():
    log = sends()
    # 20: the next packet has no LBRR; 30: the next one arrives after 30's deadline (sent 20 ms later + 190 ms);
    # 40 and 41 both lost: 42's LBRR covers 41 only
    events = arrivals(log, lost=frozenset({20, 30, 40, 41}), late={31: 0.19})
    m = metrics(events, lbrr_except(21))
    assert m["packets_fec"] == 1  # 41, from 42
    assert m["packets_in_time"] == 150 - 4 + 1
    # without the clip's flags (an old record, or FEC off): no credit at all
    assert metrics(events, None)["packets_fec"] == 0


def test_a_late_packet_can_be_played_from_fec_instead():
    log = sends()
    m = metrics(arrivals(log, late={50: 0.5}), lbrr_except())
    assert m["packets_in_time"] == 150 and m["packets_fec"] == 1 and m["packets_arrived"] == 150


def test_the_last_packet_of_the_clip_gets_no_fec_from_the_first_one_of_the_next_loop():
    log = sends()
    lbrr = "1" * CLIP  # even if packet 0 carried LBRR, it would be of a different frame
    m = metrics(arrivals(log, lost=frozenset({99})), lbrr)
    assert m["packets_fec"] == 0 and m["packets_in_time"] == 149


def test_a_red_copy_in_the_next_packet_counts_as_the_packet():
    log = sends()
    events = arrivals(log, lost=frozenset({60}))
    copy_at = log[61][1] + 0.05
    events.append([log[60][0], copy_at, 1])  # packet 60 inside 61's RED payload
    m = metrics(events, None)
    assert m["packets_in_time"] == 150 and m["packets_red"] == 1 and m["packets_fec"] == 0
    assert m["packets_arrived"] == 150
    # a copy of a packet that came anyway changes nothing (the first arrival counts)
    events.append([log[70][0], log[71][1] + 0.05, 1])
    assert metrics(events, None)["packets_red"] == 1


def test_fec_counts_for_every_reported_deadline():
    log = sends()
    # 80 lost; 81 arrives 250 ms after it was sent: 270 ms after 80's send
    m = metrics(arrivals(log, lost=frozenset({80}), late={81: 0.25}), lbrr_except())
    by = m["in_time_by_deadline"]
    assert by[100] == by[200] == 149  # 80 missing; 81 too late itself, played from 82's FEC
    assert by[300] == by[400] == 150  # 81 in time, and 80 from 81's FEC
    m = metrics(arrivals(log, lost=frozenset({80}), late={81: 0.25}), lbrr_except(82))
    assert m["in_time_by_deadline"][200] == 148 and m["in_time_by_deadline"][300] == 150


def test_bytes_that_are_not_the_clips_get_no_credit():
    """A re-encoding server (the relay baseline): arrivals cannot be matched, so nothing is in time, FEC neither."""
    log = sends()
    m = metrics([[-1, t + 0.05] for _, t in log], lbrr_except())
    assert m["packets_in_time"] == 0 and m["packets_fec"] == 0


def test_run_metrics_pools_fec_and_red_and_reports_the_settings():
    log = sends(100)
    events = arrivals(log, lost=frozenset({10, 20}))
    events.append([log[20][0], log[21][1] + 0.05, 1])
    record = {
        "window": {"start": T0, "end": T0 + 2.0},
        "participants": [{"id": "a", "join_started": 98}, {"id": "b", "join_started": 99}],
        "sends": {"a": {"video": [], "audio": [[i, t] for i, t in log]}},
        "streams": [{"subscriber": "b", "publisher": "a", "kind": "audio", "red": True, "arrivals": events}],
        "audio": {"red": True, "fec_loss_percent": 20, "lbrr": lbrr_except()},
    }
    figures = run_metrics(record, deadline_s=DEADLINE)
    s = figures["summary"]
    assert s["audio_in_time_ratio"] == 1.0 and s["audio_fec_ratio"] == 0.01 and s["audio_red_ratio"] == 0.01
    assert s["audio_protection"] == {"red_enabled": True, "red_streams": 1, "fec_loss_percent": 20, "lbrr_share": 0.99}
    assert figures["audio_streams"][0]["red"] is True
    del record["audio"]  # records from before FEC was modelled
    s = run_metrics(record, deadline_s=DEADLINE)["summary"]
    assert s["audio_in_time_ratio"] == 0.99 and s["audio_fec_ratio"] == 0.0
