"""What the load-test client recorded, turned into figures. Pure functions, no I/O.

Definitions (the report repeats them):

- A frame is identified by (publisher, clip index): the receiver hashes the
  frame it assembled (the SFU forwards payloads bit-exact) and looks the hash up
  in the clip's table. Its send time is the publisher's latest send of that clip
  frame at or before the receive time (a clip frame is sent once per loop of
  the clip, so the match is unambiguous for latencies below REUSE_HORIZON_S).
- transport latency: sent -> every packet of the frame arrived at the receiver.
- render latency: sent -> the receiving client's frame buffer released the frame
  to its decoder, counting only frames whose reference chain was intact.
- glass-to-glass latency (probe receivers): sent -> decoded by a real decoder.
  The clip is pre-encoded, so capture and encode time are not in it (add
  ~1 frame interval + encoder time for a real camera), nor is display time.
- freeze (WebRTC / libwebrtc VideoQualityObserver): an inter-frame interval
  >= max(3 * avg, avg + 150 ms), avg = mean of the last 30 intervals including
  this one, once at least 5 intervals were seen. Frozen time is the sum of
  those intervals. The interval from the last frame to the window's end is
  evaluated too, so a stream that stops is not silently left out.
- audio in time: the packet can be played at its playout deadline (sent +
  AUDIO_DEADLINE_S, 200 ms by default): the packet itself, or a RED copy of it
  (inside the next packet, where red was negotiated), arrived by then; or else
  the next packet of the clip (sent ~20 ms later) arrived by then and carries
  Opus in-band FEC (LBRR), which the receiver (libwebrtc's NetEq) decodes in its
  place. An FEC frame is a low-bitrate copy (SILK at a fraction of the
  bitrate): played, but worse than the packet; `fec` counts these separately.
  Credit needs the received bytes to be the clip's (so never through a server
  that re-encodes) and the clip's own LBRR flags.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

FREEZE_WINDOW = 30
FREEZE_MIN_SAMPLES = 5
FREEZE_MIN_INCREASE_S = 0.150
# A receiver's audio playout deadline after the sender handed the packet over.
# ITU-T G.114 keeps mouth-to-ear delay under ~150 ms for unimpaired conversation
# and 400 ms as the limit of acceptable; 200 ms for network + jitter buffer leaves
# room for capture, encode, decode and playout inside that limit, and is about
# the largest jitter buffer a WebRTC receiver (NetEq) settles on for these jitter
# levels. A packet later than this is concealed, as if lost.
AUDIO_DEADLINE_S = 0.200
# A publisher sends each clip frame once per loop of its clip (at least 5 s;
# see loadtest.publisher), so a receive matches the latest send of that frame;
# a frame arriving later than this after it was sent counts as not delivered.
REUSE_HORIZON_S = 4.0
# Also reported: the share in time for other playout deadlines, so a reader can see what
# a larger jitter buffer would buy (400 ms: G.114's limit of acceptable mouth-to-ear delay).
AUDIO_DEADLINES_REPORTED_MS = (100, 200, 300, 400)


# --- small helpers -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> Optional[float]:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values_s: Sequence[float], ps: Iterable[float] = (50, 95, 99), with_max: bool = True) -> dict:
    """{p50, p95, p99[, max], n} in milliseconds, rounded to 0.1 ms; values None when there are none."""
    out: dict = {}
    for p in ps:
        v = percentile(values_s, p)
        out[f"p{p:g}"] = None if v is None else round(v * 1000, 1)
    if with_max:
        out["max"] = round(max(values_s) * 1000, 1) if values_s else None
    out["n"] = len(values_s)
    return out


@dataclass
class FreezeStats:
    count: int = 0
    total_s: float = 0.0
    longest_s: float = 0.0
    durations_s: list[float] = field(default_factory=list)


class FreezeDetector:
    """Online: fed render times one by one, tells which intervals were freezes."""

    def __init__(self) -> None:
        self._last: Optional[float] = None
        self._recent: deque[float] = deque(maxlen=FREEZE_WINDOW)

    def add(self, render_time: float) -> Optional[float]:
        """Record one frame shown; returns the interval before it if that was a freeze."""
        last, self._last = self._last, render_time
        if last is None:
            return None
        interval = render_time - last
        self._recent.append(interval)
        if len(self._recent) < FREEZE_MIN_SAMPLES:
            return None
        avg = sum(self._recent) / len(self._recent)
        return interval if interval >= max(3 * avg, avg + FREEZE_MIN_INCREASE_S) else None


def detect_freezes(render_times: Sequence[float], end: Optional[float] = None) -> FreezeStats:
    """Freezes in a sequence of render times (seconds, ascending); `end` closes the last interval."""
    times = list(render_times)
    if end is not None and times and end > times[-1]:
        times.append(end)
    stats = FreezeStats()
    detector = FreezeDetector()
    for t in times:
        interval = detector.add(t)
        if interval is not None:
            stats.count += 1
            stats.total_s += interval
            stats.longest_s = max(stats.longest_s, interval)
            stats.durations_s.append(interval)
    return stats


class SendLog:
    """When a publisher sent each clip frame (or audio packet): clip index -> ascending times."""

    def __init__(self, sends: Iterable[tuple[int, float]]) -> None:
        self._by_index: dict[int, list[float]] = {}
        self._sends: list[tuple[float, int]] = []
        for index, t in sends:
            self._by_index.setdefault(index, []).append(t)
            self._sends.append((t, index))
        for times in self._by_index.values():
            times.sort()
        self._sends.sort()
        self.times: list[float] = [t for t, _ in self._sends]

    def match(self, index: int, received_at: float) -> Optional[float]:
        """The send this receive belongs to: latest send of that clip frame not after it."""
        times = self._by_index.get(index)
        if not times:
            return None
        i = bisect.bisect_right(times, received_at)
        if i == 0:
            return None
        sent = times[i - 1]
        return sent if received_at - sent <= REUSE_HORIZON_S else None

    def sent_between(self, start: float, end: float) -> int:
        return bisect.bisect_left(self.times, end) - bisect.bisect_left(self.times, start)

    def sends_between(self, start: float, end: float) -> list[tuple[float, int]]:
        """(send time, clip index) of the sends in [start, end), in time order."""
        return self._sends[bisect.bisect_left(self.times, start):bisect.bisect_left(self.times, end)]

    def next_send(self, index: int, after: float) -> Optional[float]:
        """The first send of that clip frame after `after`."""
        times = self._by_index.get(index)
        if not times:
            return None
        i = bisect.bisect_right(times, after)
        return times[i] if i < len(times) else None


def first_event_by_send(events: Iterable[Sequence], log: SendLog) -> dict[float, Sequence]:
    """send time -> the earliest event (clip index, time, ...) matching that send."""
    out: dict[float, Sequence] = {}
    for event in events:
        index, t = event[0], event[1]
        if index < 0:
            continue
        sent = log.match(index, t)
        if sent is not None and (sent not in out or t < out[sent][1]):
            out[sent] = event
    return out


def first_by_send(events: Iterable[Sequence], log: SendLog) -> dict[float, float]:
    """send time -> first event time, for events (clip index, time, ...) that match a send."""
    return {sent: event[1] for sent, event in first_event_by_send(events, log).items()}


# --- per stream ------------------------------------------------------------------------------------


@dataclass
class Window:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


def video_stream_metrics(stream: dict, log: SendLog, window: Window, started_at: float) -> dict:
    """Figures for one subscriber's video from one publisher.

    `stream` holds event lists of [clip index, time, ...]: "complete", "rendered"
    ([index, t, chain_ok]), optionally "decoded" (probe receivers). `started_at`:
    when both ends had begun joining (the time-to-first-frame origin).
    """
    sent = log.sent_between(window.start, window.end)
    complete = first_by_send(stream.get("complete", []), log)
    ok_renders = [e for e in stream.get("rendered", []) if e[2]]
    rendered = first_by_send(ok_renders, log)
    decoded = first_by_send(stream.get("decoded", []), log)

    def latencies(first: dict[float, float]) -> list[float]:
        return [t - s for s, t in first.items() if s in window]

    render_times = sorted(e[1] for e in ok_renders if e[1] in window)
    freezes = detect_freezes(render_times, end=window.end)
    if not render_times:  # nothing shown in the whole window: one freeze as long as the window
        freezes = FreezeStats(1, window.seconds, window.seconds, [window.seconds])
    first_render = stream.get("first_render") or min((e[1] for e in ok_renders), default=None)
    delivered = sum(1 for s in rendered if s in window)
    return {
        "frames_sent": sent,
        "frames_complete": sum(1 for s in complete if s in window),
        "frames_delivered": delivered,
        "frames_delivered_ratio": round(delivered / sent, 4) if sent else None,
        "undecodable_outputs": sum(1 for e in stream.get("rendered", []) if not e[2] and e[1] in window),
        "transport_s": latencies(complete),
        "render_s": latencies(rendered),
        "g2g_s": latencies(decoded),
        "freeze_count": freezes.count,
        "frozen_s": round(freezes.total_s, 3),
        "longest_freeze_s": round(freezes.longest_s, 3),
        "first_frame_s": None if first_render is None else round(first_render - started_at, 3),
    }


def audio_stream_metrics(stream: dict, log: SendLog, window: Window, deadline_s: float = AUDIO_DEADLINE_S,
                         lbrr: Optional[str] = None) -> dict:
    """Audio in time for one subscriber from one publisher (see the module docstring).

    `stream["arrivals"]`: [clip index, time] per packet received, [index, time, 1]
    for a copy inside a RED payload. `lbrr`: per clip index "1" where that clip
    packet carries FEC for the one before it (None: no FEC credit). A packet
    played from FEC counts in `packets_in_time` and `packets_fec`; one whose
    first timely copy was a RED block counts in `packets_red`.
    """
    sent = log.sent_between(window.start, window.end)
    first = first_event_by_send(stream.get("arrivals", []), log)
    arrival = {s: e[1] for s, e in first.items()}
    in_window = log.sends_between(window.start, window.end)
    delays = [arrival[s] - s for s, _ in in_window if s in arrival]

    def fec_arrival(index: int, s: float) -> Optional[float]:
        """When the next clip packet (same loop), carrying LBRR, first arrived; None if it does not qualify."""
        if lbrr is None or index + 1 >= len(lbrr) or lbrr[index + 1] != "1":
            return None
        nxt = log.next_send(index + 1, s)
        return None if nxt is None else arrival.get(nxt)

    def playable(index: int, s: float, deadline: float) -> tuple[bool, bool]:
        """(played at all, played from FEC) with this playout deadline."""
        t = arrival.get(s)
        if t is not None and t - s <= deadline:
            return True, False
        t_next = fec_arrival(index, s)
        return (True, True) if t_next is not None and t_next - s <= deadline else (False, False)

    outcome = [playable(i, s, deadline_s) for s, i in in_window]
    in_time = sum(1 for ok, _ in outcome if ok)
    fec = sum(1 for ok, from_fec in outcome if from_fec)
    red = sum(1 for (s, _), (ok, from_fec) in zip(in_window, outcome)
              if ok and not from_fec and len(first[s]) > 2 and first[s][2])
    by_deadline = {ms: sum(1 for s, i in in_window if playable(i, s, ms / 1000)[0])
                   for ms in AUDIO_DEADLINES_REPORTED_MS}
    # which seconds of the window the misses fell in: a step or a probe shows as a cluster
    late_by_second: dict[str, int] = {}
    for (s, _), (ok, _) in zip(in_window, outcome):
        if not ok:
            second = str(int(s - window.start))
            late_by_second[second] = late_by_second.get(second, 0) + 1
    return {"packets_sent": sent, "packets_arrived": len(delays), "packets_in_time": in_time,
            "packets_fec": fec, "packets_red": red, "late_by_second": late_by_second,
            "in_time_ratio": round(in_time / sent, 4) if sent else None, "delay_s": delays,
            "in_time_by_deadline": by_deadline}


# --- a whole run ------------------------------------------------------------------------------------


def run_metrics(record: dict, deadline_s: float = AUDIO_DEADLINE_S) -> dict:
    """Per-stream and pooled figures for one client run (the client's JSON record)."""
    window = Window(record["window"]["start"], record["window"]["end"])
    joins = {p["id"]: p["join_started"] for p in record["participants"]}
    logs = {(pub, kind): SendLog((i, t) for i, t in sends[kind])
            for pub, sends in record["sends"].items() for kind in ("video", "audio")}
    audio_settings = record.get("audio") or {}
    lbrr = audio_settings.get("lbrr")  # the clip's LBRR flags (every publisher sends the same audio clip)
    video, audio = [], []
    for stream in record["streams"]:
        pub, sub = stream["publisher"], stream["subscriber"]
        log = logs.get((pub, stream["kind"]))
        if log is None:
            continue
        if stream["kind"] == "video":
            m = video_stream_metrics(stream, log, window, max(joins.get(pub, 0.0), joins.get(sub, 0.0)))
            video.append({"subscriber": sub, "publisher": pub, "probe": stream.get("probe", False), **m})
        else:
            m = audio_stream_metrics(stream, log, window, deadline_s, lbrr=lbrr)
            audio.append({"subscriber": sub, "publisher": pub, "red": stream.get("red", False), **m})
    figures = pool(video, audio, window, deadline_s)
    # red_enabled: the client would accept red; red_streams: audio streams whose answer did (the server offered it)
    figures["summary"]["audio_protection"] = {
        "red_enabled": bool(audio_settings.get("red")), "red_streams": sum(1 for s in audio if s["red"]),
        "fec_loss_percent": audio_settings.get("fec_loss_percent", 0),
        "lbrr_share": round(lbrr.count("1") / len(lbrr), 4) if lbrr else 0.0}
    return figures


def pool(video: list[dict], audio: list[dict], window: Window, deadline_s: float) -> dict:
    def gather(key: str, streams: list[dict]) -> list[float]:
        return [v for s in streams for v in s[key]]

    sent = sum(s["frames_sent"] for s in video)
    delivered = sum(s["frames_delivered"] for s in video)
    complete = sum(s["frames_complete"] for s in video)
    frozen = sum(s["frozen_s"] for s in video)
    firsts = [s["first_frame_s"] for s in video if s["first_frame_s"] is not None]
    audio_sent = sum(s["packets_sent"] for s in audio)
    audio_in_time = sum(s["packets_in_time"] for s in audio)
    audio_fec = sum(s["packets_fec"] for s in audio)
    audio_red = sum(s["packets_red"] for s in audio)
    probes = [s for s in video if s["probe"]]
    g2g = gather("g2g_s", probes)
    first_p50 = percentile(firsts, 50)  # None exactly when there are no firsts
    pooled = {
        "latency_ms": summary_ms(g2g),
        "transport_ms": summary_ms(gather("transport_s", video), with_max=True),
        "render_ms": summary_ms(gather("render_s", video)),
        "frames_delivered_ratio": round(delivered / sent, 4) if sent else None,
        "frames_complete_ratio": round(complete / sent, 4) if sent else None,
        "freeze_count": sum(s["freeze_count"] for s in video),
        "frozen_ratio": round(frozen / (window.seconds * len(video)), 4) if video else None,
        "longest_freeze_ms": round(max((s["longest_freeze_s"] for s in video), default=0.0) * 1000),
        "first_frame_ms": {"p50": None if first_p50 is None else round(first_p50 * 1000),
                           "max": None if not firsts else round(max(firsts) * 1000),
                           "streams_without_frames": len(video) - len(firsts)},
        "audio_in_time_ratio": round(audio_in_time / audio_sent, 4) if audio_sent else None,
        "audio_in_time_by_deadline_ms": {
            str(ms): round(sum(s["in_time_by_deadline"][ms] for s in audio) / audio_sent, 4) if audio_sent else None
            for ms in AUDIO_DEADLINES_REPORTED_MS},
        # shares of packets sent played from Opus FEC (a lower-quality copy) / first in time as a RED copy
        "audio_fec_ratio": round(audio_fec / audio_sent, 4) if audio_sent else None,
        "audio_red_ratio": round(audio_red / audio_sent, 4) if audio_sent else None,
        "audio_delay_ms": summary_ms(gather("delay_s", audio)),
        "audio_deadline_ms": round(deadline_s * 1000),
        "video_streams": len(video),
        "probe_streams": len(probes),
        "audio_streams": len(audio),
        "window_s": round(window.seconds, 3),
    }
    per_stream = []
    for s in video:
        per_stream.append({k: v for k, v in s.items() if not k.endswith("_s") or k in
                           ("frozen_s", "longest_freeze_s", "first_frame_s")}
                          | {"transport_p95_ms": summary_ms(s["transport_s"])["p95"],
                             "g2g_p95_ms": summary_ms(s["g2g_s"])["p95"] if s["probe"] else None})
    audio_streams = [{k: v for k, v in s.items() if k != "delay_s"} for s in audio]
    return {"summary": pooled, "video_streams": per_stream, "audio_streams": audio_streams,
            "samples": {"latency_s": g2g, "transport_s": gather("transport_s", video),
                        "render_s": gather("render_s", video)}}
