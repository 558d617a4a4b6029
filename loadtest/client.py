"""The load-test client process: every participant of every room, impaired, measuring.

    python -m loadtest.client < config.json      (started by `python -m loadtest`)

Reads one JSON config line on stdin, then runs by itself: joins the rooms
(patient, doctor, expert each; real aiortc peer connections, impairment
installed on each one's DTLS transport), waits until everyone receives video
from both others, warms up, measures for the window, drains late frames, writes
everything it recorded to `config["record_path"]` and exits. It reports
progress as JSON lines on stdout (loadtest.harness.emit). A watchdog ends the
process if the whole run overstays its budget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from loadtest.harness import ROLES, emit

if TYPE_CHECKING:
    from loadtest.simulcast_sender import SimulcastSender
    from loadtest.video_fec_sender import ChromeVideoSender

PROGRESS_EVERY_S = 1.0
PRE_WINDOW_KEEP_S = 5.0  # events this long before the window are kept (matching needs a little history)
LAG_PROBE_S = 0.01


def _participant_class():
    from loadtest.impaired_transport import ImpairedTransport, impair
    from loadtest.participant import SyntheticParticipant
    from loadtest.publisher import StampedClipTrack
    from loadtest.receiver import StreamRecord, buffer_of, equip
    from loadtest.red_audio import RedCodec, answer_with_red
    from loadtest.red_video import answer_with_video_fec
    from loadtest.simulcast_answer import answer_with_simulcast, plan_simulcast, with_simulcast
    from loadtest.simulcast_sender import SimulcastPlan
    from loadtest.transport_feedback import answer_with_transport_cc, feedback_generators
    from media.sdp_video_fec import VideoFecPayloadTypes

    class LoadParticipant(SyntheticParticipant):
        """A synthetic participant whose transport is impaired and whose receivers record.

        With `audio_red`, it answers red for audio as Chrome does (loadtest.red_audio); with
        `video_fec`, red + ulpfec for video, and decodes them as Chrome does (loadtest.red_video);
        with `video_fec_uplink` too, on its publishing section, and sends them as Chrome does
        (loadtest.video_fec_sender). With `simulcast_layers`, it answers an offer asking for
        simulcast with those layers (loadtest.simulcast_answer; its video then goes without
        uplink FEC). With `transport_cc`, it answers transport-cc where offered and sends transport-wide
        feedback on what it receives, as Chrome does (loadtest.transport_feedback).
        """

        def setup(self, *, room: int, role: str, links: tuple, probe: bool, codec: str, by_marker: bool,
                  keys: dict[str, dict[bytes, int]], audio_deadline_s: float, audio_red: bool = False,
                  video_fec: bool = False, video_fec_uplink: bool = False, simulcast_layers: tuple = (),
                  transport_cc: bool = False) -> None:
            self.room, self.role, self.links, self.probe = room, role, links, probe
            self.audio_deadline_s = audio_deadline_s
            self.codec, self.by_marker, self.keys = codec, by_marker, keys
            self.audio_red = audio_red
            self.red_mids: dict[str, RedCodec] = {}
            self.video_fec = video_fec
            self.video_fec_uplink = video_fec_uplink
            self.video_fec_mids: dict[str, VideoFecPayloadTypes] = {}
            self._offer_sdp = ""
            self.simulcast_layers = simulcast_layers
            self._simulcast_plan: Optional[SimulcastPlan] = None  # for the offer being answered
            self.simulcast_mids: dict[str, SimulcastPlan] = {}  # what the answers agreed to
            self.transport_cc = transport_cc
            self.transport_cc_mids: dict[str, int] = {}  # mid -> the transport-cc extension id answered
            self.records: dict[str, StreamRecord] = {}
            self.impairment: Optional[ImpairedTransport] = None
            self.join_started: Optional[float] = None

        async def join(self, timeout: float = 10.0) -> dict:
            self.join_started = time.monotonic()
            return await super().join(timeout)

        def _new_peer_connection(self):
            pc = super()._new_peer_connection()
            if self.audio_red:
                pc.createAnswer = answer_with_red(pc, lambda: self._offer_sdp, self.red_mids)
            if self.video_fec:
                pc.createAnswer = answer_with_video_fec(pc, lambda: self._offer_sdp, self.video_fec_mids,
                                                        send=self._sends_video_fec)
            if self.simulcast_layers:
                pc.createAnswer = answer_with_simulcast(pc, lambda: self._simulcast_plan, self.simulcast_mids)
            if self.transport_cc:
                pc.createAnswer = answer_with_transport_cc(pc, lambda: self._offer_sdp, self.transport_cc_mids)
            return pc

        def transport_cc_counters(self) -> Optional[dict]:
            """What its transport-cc feedback generator did (None: transport-cc not negotiated)."""
            generators = feedback_generators(self.pc)
            if not generators:
                return None
            counters = generators[0].counters()  # max-bundle: the one transport
            return {**counters, "mids": dict(self.transport_cc_mids)}

        async def close(self, leave: bool = True) -> None:
            for generator in feedback_generators(self.pc):  # first: nothing more goes out while it closes
                await generator.close()
            await super().close(leave)

        def _sends_video_fec(self) -> bool:
            # simulcast layers go out plain: no RED/ULPFEC on the publishing section then
            return self.video_fec_uplink and self._simulcast_plan is None and not self.simulcast_mids

        async def _answer(self, offer: dict) -> None:
            self._offer_sdp = offer["sdp"]
            video = self.video
            frames = video.frame_count if isinstance(video, StampedClipTrack) else 0
            self._simulcast_plan = plan_simulcast(offer, self.simulcast_layers, frames) if frames else None
            await super()._answer(offer)
            if self.impairment is None:
                pc = self.pc
                assert pc is not None  # super()._answer() made it
                transports = {t.receiver.transport for t in pc.getTransceivers()} | \
                             {t.sender.transport for t in pc.getTransceivers()}
                for transport in transports:  # max-bundle: one
                    self.impairment = impair(transport, *self.links) or self.impairment

        def answer_to_send(self, local_sdp: str) -> str:
            return with_simulcast(local_sdp, self.simulcast_mids) if self.simulcast_mids else local_sdp

        def _on_track(self, track) -> None:
            super()._on_track(track)
            assert self.pc is not None  # the track came from it
            transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
            mid = transceiver.mid
            assert mid is not None  # negotiated by the offer that brought the track
            buffer = buffer_of(transceiver.receiver)
            if buffer is not None:
                record = StreamRecord(subscriber=self.id, mid=mid, kind=track.kind, codec=self.codec,
                                      probe=self.probe and track.kind == "video",
                                      by_marker=self.by_marker and track.kind == "video", keys=self.keys[track.kind])
                self.records[mid] = record
                buffer.attach(record)
                rtt_s = sum(link.spec.delay_ms for link in self.links) / 1000  # up + down: the path RTT
                equip(transceiver.receiver, buffer, self.audio_deadline_s, rtt_s)

    return LoadParticipant


class LoadClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.rooms: list[list] = []
        self.tracks: dict[str, dict[str, Any]] = {}  # participant id -> {"audio", "video"}
        self.window: Optional[tuple[float, float]] = None

    async def prepare(self) -> None:
        from loadtest.clips import (
            ClipSpec,
            SweepAudioSpec,
            frame_keys,
            key_table,
            ladder_specs,
            lbrr_flags,
            load_or_encode,
            load_or_encode_variants,
        )
        from loadtest.simulcast_layers import LayerClip, prepare_layers

        cache = Path(self.config["cache_dir"]) if self.config.get("cache_dir") else None
        self.video_spec = ClipSpec(**self.config["video"])
        self.video_clip = load_or_encode(self.video_spec, cache)
        self.keyframe_clip = None
        if self.config["keyframe_on_pli"]:
            self.keyframe_clip = load_or_encode_variants(self.video_spec, self.video_clip, cache)
        self.audio_spec = SweepAudioSpec(**self.config["audio"])
        self.audio_clip = load_or_encode(self.audio_spec, cache)
        self.audio_lbrr = lbrr_flags(self.audio_clip)  # per clip packet: carries FEC for the one before it
        variants = [frame_keys(self.keyframe_clip)] if self.keyframe_clip else []
        self.ladder: list[tuple] = []  # lower rungs: (clip, keyframe variants or None)
        if self.config.get("adaptive"):
            for spec in ladder_specs(self.video_spec)[1:]:
                rung = load_or_encode(spec, cache)
                keys = load_or_encode_variants(spec, rung, cache) if self.config["keyframe_on_pli"] else None
                self.ladder.append((rung, keys))
                variants += [frame_keys(rung)] + ([frame_keys(keys)] if keys else [])
        self.simulcast_layers: list[LayerClip] = []
        if self.config.get("simulcast"):
            # every layer's frames must be recognised: a subscriber is switched between them
            encoded = dict(zip(ladder_specs(self.video_spec)[1:], self.ladder))
            known = set(encoded)
            self.simulcast_layers = prepare_layers(
                self.video_spec, self.video_clip, self.keyframe_clip, encoded, cache, self.config["keyframe_on_pli"])
            for made in [s for s in encoded if s not in known]:
                rung, keys = encoded[made]
                variants += [frame_keys(rung)] + ([frame_keys(keys)] if keys else [])
        video_keys, video_dups = key_table(frame_keys(self.video_clip), *variants)
        audio_keys, audio_dups = key_table(frame_keys(self.audio_clip))
        self.keys = {"video": video_keys, "audio": audio_keys}
        self.clip_info = {"video_frames": len(self.video_clip.packets), "video_duplicate_keys": video_dups,
                          "audio_packets": len(self.audio_clip.packets), "audio_duplicate_keys": audio_dups,
                          "video_kbps": round(self.video_clip.bitrate / 1000, 1),
                          "audio_kbps": round(self.audio_clip.bitrate / 1000, 1),
                          "audio_fec_loss_percent": self.audio_spec.fec_loss_percent,
                          "audio_lbrr_share": round(self.audio_lbrr.count("1") / len(self.audio_lbrr), 4),
                          "audio_red": bool(self.config.get("audio_red")),
                          "video_fec": self.video_fec(), "video_fec_uplink": self.video_fec_uplink(),
                          "transport_cc": self.transport_cc(),
                          "video_keyframes": sum(self.video_clip.keyframes),
                          "ladder_kbps": [round(c.bitrate / 1000) for c, _ in [(self.video_clip, None), *self.ladder]]
                          if self.ladder else None,
                          # prepared layers, highest first (the offer then names them by RID)
                          "simulcast_layers": [{"width": layer.width, "height": layer.height,
                                                "kbps": round(layer.bitrate / 1000)} for layer in self.simulcast_layers]
                          if self.simulcast_layers else None}

    def video_fec(self) -> bool:
        """Accept video red + ulpfec as Chrome always does: with the browser receiver (stock aiortc cannot)."""
        return bool(self.config.get("video_fec", self.config["receiver"] == "browser"))

    def transport_cc(self) -> bool:
        """Answer transport-cc and send its feedback as Chrome does: with the browser receiver (stock aiortc
        does not)."""
        return bool(self.config.get("transport_cc", self.config["receiver"] == "browser"))

    def video_fec_uplink(self) -> bool:
        """Also on the publishing sections, sending like Chrome (off: `--video-fec downlink`)."""
        return self.video_fec() and bool(self.config.get("video_fec_uplink", True))

    async def connect(self) -> None:
        from loadtest.impairment import Link, Profile, derive_seed
        from loadtest.publisher import StampedClipTrack

        Participant = _participant_class()
        profile = Profile.from_json(self.config["profile"])
        seed = self.config["seed"]
        probe_roles = set(self.config["probe_roles"])

        async def join_room(r: int, tokens: list[str]) -> list:
            people = []
            for i, (role, token) in enumerate(zip(ROLES, tokens)):
                up, down = profile.links_for(role)
                links = (Link(up, derive_seed(seed, profile.name, r, role, "up")),
                         Link(down, derive_seed(seed, profile.name, r, role, "down")))
                # stagger publishers over the clip so their keyframes do not coincide
                offset = (r * len(tokens) + i) * self.video_spec.keyframe_every
                video = StampedClipTrack(self.video_clip, start_index=offset, keyframes=self.keyframe_clip,
                                         ladder=self.ladder)
                audio = StampedClipTrack(self.audio_clip, start_index=offset * 5 // 3)
                p = Participant(self.config["base_url"], token, audio=audio, video=video)
                p.setup(room=r, role=role, links=links, probe=role in probe_roles, codec=self.video_spec.codec,
                        by_marker=self.config["identify_by_marker"], keys=self.keys,
                        audio_deadline_s=self.config["audio_deadline_s"], audio_red=self.config.get("audio_red", False),
                        video_fec=self.video_fec(), video_fec_uplink=self.video_fec_uplink(),
                        simulcast_layers=tuple(self.simulcast_layers), transport_cc=self.transport_cc())
                await p.join(timeout=15)
                self.tracks[p.id] = {"video": video, "audio": audio}
                people.append(p)
            return people

        self.rooms = list(await asyncio.gather(*(join_room(r, t) for r, t in enumerate(self.config["rooms"]))))

    async def watch_loop_lag(self) -> None:
        """How late this process's event loop wakes up: if it lags, the client (not the server) adds latency."""
        self.lags: list[tuple[float, float]] = []
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            now = time.monotonic()
            self.lags.append((now, now - before - LAG_PROBE_S))

    def participants(self) -> list:
        return [p for room in self.rooms for p in room]

    def pairs(self):
        for people in self.rooms:
            for sub in people:
                for pub in people:
                    if sub is not pub:
                        yield sub, pub

    def frames_rendered(self) -> int:
        return sum(len(r.rendered) for p in self.participants() for r in p.records.values() if r.kind == "video")

    async def wait_flowing(self, timeout: float) -> dict:
        start = time.monotonic()
        total = sum(1 for _ in self.pairs())
        while True:
            flowing = sum(1 for sub, pub in self.pairs() if sub.frames_from(pub.id, "video") > 0)
            elapsed = time.monotonic() - start
            if flowing == total or elapsed > timeout:
                return {"video_pairs_flowing": flowing, "video_pairs": total, "complete": flowing == total,
                        "settle_s": round(elapsed, 2)}
            emit({"event": "progress", "phase": "settle", "elapsed": round(elapsed, 1), "flowing": flowing,
                  "pairs": total})
            await asyncio.sleep(0.5)

    async def run_phase(self, phase: str, seconds: float) -> None:
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return
            emit({"event": "progress", "phase": phase, "elapsed": round(elapsed, 1), "seconds": seconds,
                  "frames_rendered": self.frames_rendered()})
            await asyncio.sleep(min(PROGRESS_EVERY_S, seconds - elapsed))

    def record(self) -> dict:
        assert self.window is not None, "record() is for after the measurement window"
        window_start, window_end = self.window
        keep_from = window_start - PRE_WINDOW_KEEP_S

        def recent(events: list) -> list:
            return [e for e in events if e[1] >= keep_from]

        streams = []
        for sub in self.participants():
            for mid, rec in sub.records.items():
                info = sub.tracks_map.get(mid)
                if not info:
                    continue  # an idle slot
                data = rec.to_json()
                first_ok = next((e[1] for e in data["rendered"] if e[2]), None) if rec.kind == "video" else None
                for key in ("complete", "rendered", "decoded", "arrivals"):
                    data[key] = recent(data[key])
                streams.append({**data, "publisher": info["participant"], "first_render": first_ok})
        sends = {pid: {kind: [[i, t] for i, t in track.sends if t >= keep_from] for kind, track in tracks.items()}
                 for pid, tracks in self.tracks.items()}
        lags = sorted(lag for t, lag in getattr(self, "lags", []) if window_start <= t <= window_end)
        return {
            "window": {"start": window_start, "end": window_end},
            "client_loop_lag_ms": {"p50": round(lags[len(lags) // 2] * 1000, 1) if lags else None,
                                   "p99": round(lags[int(len(lags) * 0.99)] * 1000, 1) if lags else None,
                                   "max": round(lags[-1] * 1000, 1) if lags else None},
            "clip": self.clip_info,
            # what the metrics need to credit RED copies and Opus FEC (metrics.audio_stream_metrics)
            "audio": {"red": bool(self.config.get("audio_red")), "fec_loss_percent": self.audio_spec.fec_loss_percent,
                      "lbrr": self.audio_lbrr},
            "participants": [{"id": p.id, "room": p.room, "role": p.role, "join_started": p.join_started,
                              "probe": p.probe, "closed_reason": p.closed_reason} for p in self.participants()],
            "sends": sends,
            "streams": streams,
            "publishers": self.publisher_counters(),
            "impairment": {p.id: (p.impairment.counters() if p.impairment else None) for p in self.participants()},
            "receivers": {p.id: {mid: {"decode_errors": r.decode_errors, "keyframe_requests": r.keyframe_requests,
                                       # video red + ulpfec (loadtest.red_video): negotiated, and what it brought
                                       "red": r.red, "fec_packets": r.fec_packets, "fec_recovered": r.fec_recovered,
                                       "red_malformed": r.red_malformed, "fec_malformed": r.fec_malformed}
                                 for mid, r in p.records.items() if r.kind == "video"}
                          for p in self.participants()},
            "video_fec": self.video_fec_totals(),
            "video_fec_uplink": self.video_fec_uplink_totals(),
            # per participant: its transport-cc feedback (loadtest.transport_feedback); None where not negotiated
            "transport_cc": {p.id: p.transport_cc_counters() for p in self.participants()},
        }

    def uplink_fec_senders(self) -> dict[str, ChromeVideoSender]:
        """Participant id -> its video sender's Chrome-like RED/ULPFEC sender (where it sends that way)."""
        from loadtest.video_fec_sender import video_fec_sender_of

        found: dict[str, ChromeVideoSender] = {}
        for p in self.participants():
            for t in p.pc.getTransceivers() if p.pc else []:
                fec = video_fec_sender_of(t.sender) if t.kind == "video" else None
                if fec is not None:
                    found[p.id] = fec
        return found

    def simulcast_senders(self) -> dict[str, SimulcastSender]:
        """Participant id -> its video sender's simulcast layers (where its answer agreed to simulcast)."""
        from loadtest.simulcast_sender import simulcast_sender_of

        found: dict[str, SimulcastSender] = {}
        for p in self.participants():
            for t in p.pc.getTransceivers() if p.pc else []:
                layers = simulcast_sender_of(t.sender) if t.kind == "video" else None
                if layers is not None:
                    found[p.id] = layers
        return found

    def publisher_counters(self) -> dict[str, dict]:
        """Per publisher and kind: the track's counters; video also its uplink RED/ULPFEC (None: sent plain)
        and its simulcast layers (None: one stream)."""
        senders = self.uplink_fec_senders()
        layered = self.simulcast_senders()
        out: dict[str, dict] = {}
        for pid, tracks in self.tracks.items():
            out[pid] = {kind: t.counters() for kind, t in tracks.items()}
            fec = senders.get(pid)
            out[pid]["video"]["uplink_fec"] = fec.counters() if fec is not None else None
            simulcast = layered.get(pid)
            out[pid]["video"]["simulcast"] = simulcast.counters() if simulcast is not None else None
        return out

    def video_fec_uplink_totals(self) -> dict[str, int]:
        """Publishers sending video as RED + ULPFEC, and what they sent."""
        senders = list(self.uplink_fec_senders().values())
        return {"publishers": len(senders), "media_packets": sum(s.media_packets for s in senders),
                "fec_packets": sum(s.fec_packets for s in senders),
                "retransmissions": sum(s.retransmissions for s in senders)}

    def video_fec_totals(self) -> dict[str, int]:
        """Video red + ulpfec over every subscriber's video streams."""
        video = [r for p in self.participants() for r in p.records.values() if r.kind == "video"]
        return {"streams": sum(1 for r in video if r.red), "fec_packets": sum(r.fec_packets for r in video),
                "fec_recovered": sum(r.fec_recovered for r in video),
                "red_malformed": sum(r.red_malformed for r in video),
                "fec_malformed": sum(r.fec_malformed for r in video)}

    async def close(self) -> None:
        people = self.participants()
        await asyncio.wait_for(asyncio.gather(*(p.close() for p in people), return_exceptions=True), 15)


async def client_main(config: dict[str, Any]) -> None:
    from loadtest import receiver
    from loadtest.publisher import install_bandwidth_hook, install_keyframe_hook, install_retransmission_guard
    from media.ice import restrict_host_addresses

    restrict_host_addresses(["127.0.0.1"])
    receiver.install(config["receiver"], config.get("jitter_buffer_target_s"))
    install_keyframe_hook()
    install_bandwidth_hook()
    install_retransmission_guard()
    client = LoadClient(config)
    lag_watch = asyncio.ensure_future(client.watch_loop_lag())
    try:
        await client.prepare()
        emit({"event": "clips", **client.clip_info})
        await client.connect()
        emit({"event": "joined", "participants": len(client.participants())})
        ready = await client.wait_flowing(config["settle_timeout"])
        emit({"event": "ready", **ready})
        await client.run_phase("warmup", config["warmup"])
        start = time.monotonic()
        emit({"event": "window_start", "t": start})
        await client.run_phase("measure", config["duration"])
        end = time.monotonic()
        client.window = (start, end)
        emit({"event": "window_end", "t": end})
        await client.run_phase("drain", config["drain"])
        Path(config["record_path"]).write_text(json.dumps(client.record()))
        emit({"event": "done", "record_path": config["record_path"]})
    except Exception as exc:  # the orchestrator shows this and the stderr log
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        lag_watch.cancel()
        try:
            await client.close()
        except Exception:
            pass


def _watchdog(seconds: float) -> None:
    def expire() -> None:
        emit({"event": "error", "message": f"client watchdog: the run took more than {seconds:.0f} s"})
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = json.loads(sys.stdin.readline())
    _watchdog(config["budget_s"])
    try:
        asyncio.run(client_main(config))
    finally:
        sys.stdout.flush()
        os._exit(0)  # aiortc's worker threads must not keep a finished client alive


if __name__ == "__main__":
    main()
