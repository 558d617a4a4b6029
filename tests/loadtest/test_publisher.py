"""The load-test publisher's bandwidth adaptation over a bitrate ladder (no network: RTCP fed directly)."""

from __future__ import annotations

import fractions

from loadtest import publisher
from loadtest.preencoded import EncodedClip
from loadtest.publisher import PROBE_GRACE_S, StampedClipTrack

FPS = 30


def clip(kbps: int, tag: bytes) -> EncodedClip:
    size = kbps * 1000 // 8 // FPS
    return EncodedClip(kind="video", codec="vp8", time_base=fractions.Fraction(1, FPS), duration=60,
                       packets=[tag * size] * 60, pts=list(range(60)), keyframes=[i % 30 == 0 for i in range(60)])


def test_it_starts_low_probes_up_on_headroom_and_backs_off_a_rung_that_failed(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(publisher.time, "monotonic", lambda: now[0])
    track = StampedClipTrack(clip(1500, b"a"), ladder=[(clip(900, b"b"), None), (clip(300, b"c"), None)])
    assert track.rung == 2  # a browser starts low
    track.set_target_bitrate(450_000)  # ~1.5x what it sends: headroom
    assert track._wanted_rung == 1
    track._rung = 1  # (recv() switches on the next keyframe; see the next test)
    track._switched_at, track._peak = now[0], 0.0
    track.set_target_bitrate(500_000)  # still catching up right after the step: not judged yet
    assert track._wanted_rung == 1
    now[0] += PROBE_GRACE_S + 0.1
    track.set_target_bitrate(600_000)  # settled, and below the 900 kbit/s sent: too much
    assert track._wanted_rung == 2
    track._rung = 2
    track.set_target_bitrate(1_000_000)  # headroom again, but rung 1 just failed: wait
    assert track._wanted_rung == 2
    now[0] += 6
    track.set_target_bitrate(1_000_000)
    assert track._wanted_rung == 1


def test_heavy_loss_in_receiver_reports_steps_down_even_when_remb_is_high(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(publisher.time, "monotonic", lambda: now[0])
    track = StampedClipTrack(clip(1500, b"a"), ladder=[(clip(900, b"b"), None), (clip(300, b"c"), None)])
    track._rung = track._wanted_rung = 0
    track.set_target_bitrate(3_000_000)
    track.on_loss_report(0.4)  # 40 % lost: GoogCC's loss-based limit cuts to 1500 x 0.8
    assert track._wanted_rung == 1  # 1200 x 0.85 = 1020 kbit/s: the 900 kbit/s rung


async def test_a_switch_starts_on_a_keyframe_of_the_new_rung(monkeypatch):
    track = StampedClipTrack(clip(1500, b"a"), ladder=[(clip(300, b"c"), None)])
    monkeypatch.setattr(publisher.asyncio, "sleep", _no_sleep)
    sent = [bytes(await track.recv())[:1]]  # frame 0, a keyframe, on the low rung
    track._wanted_rung = 0  # asked to go up between keyframes
    sent += [bytes(await track.recv())[:1] for _ in range(39)]
    assert sent[:30] == [b"c"] * 30 and sent[30:] == [b"a"] * 10  # frame 30 is the next keyframe
    assert track.rung_switches == 1


async def _no_sleep(_: float) -> None:
    return None


def test_a_packet_is_resent_at_most_once_per_rtt_like_libwebrtc():
    from loadtest.publisher import ResendGuard

    guard = ResendGuard()
    assert guard.allow(7, now=0.0, rtt_s=0.1)
    assert not guard.allow(7, now=0.05, rtt_s=0.1)  # a NACK copy or an early re-NACK: ignored
    assert guard.allow(8, now=0.05, rtt_s=0.1)  # other packets are not held back
    assert guard.allow(7, now=0.11, rtt_s=0.1)  # a round trip later it may be lost again
    assert guard.allow(9, now=0.0, rtt_s=None) and guard.allow(9, now=0.01, rtt_s=None)  # no RTT yet: no limit
    assert guard.suppressed == 1

