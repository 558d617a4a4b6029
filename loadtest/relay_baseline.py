"""Baseline for the forwarding benchmark: the usual aiortc decode/re-encode relay.

Not a product, a reference point. It speaks the subset of docs/PROTOCOL.md that
loadtest.participant.SyntheticParticipant uses: WebSocket /ws, `join` ->
`joined`, server `offer` (with `publish` mids and the `tracks` map) -> client
`answer`, one offer outstanding at a time; plus `ping` and `leave`.

Media goes the way aiortc's examples do it: each published track (aiortc's
RTCRtpReceiver decodes it, once per publisher) is handed to
aiortc.contrib.media.MediaRelay, and every other participant's peer connection
gets its own relay proxy on a send-only transceiver, so aiortc's RTCRtpSender
re-encodes it once per subscriber (VP8 / Opus, aiortc's default settings and
REMB-driven bitrate, capped by aiortc at 1.5 Mbit/s). Proxies are unbuffered
(MediaRelay.subscribe(buffered=False)): an encoder that falls behind skips to
the newest frame instead of queueing without bound.

Tokens: a trivial unsigned scheme of its own, "<room>/<identity>" (a third
"/<name>" part is optional). Rooms are created on first join. There is no
authentication at all: run it on loopback only, for benchmarks.

    python -m loadtest.relay_baseline --port 8090

ICE host candidates are restricted to 127.0.0.1 (no STUN/TURN servers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
from typing import Optional

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy

from media.ice import restrict_host_addresses

logger = logging.getLogger("relay_baseline")

KINDS = ("audio", "video")


class Participant:
    def __init__(self, server: "RelayServer", ws: web.WebSocketResponse, room: str, identity: str, name: str) -> None:
        self.server = server
        self.ws = ws
        self.room = room
        self.id = "p-" + secrets.token_hex(6)
        self.identity = identity
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.publish = {kind: self.pc.addTransceiver(kind, direction="recvonly") for kind in KINDS}
        self.published: dict[str, MediaStreamTrack] = {}
        self.slots: list[tuple] = []  # (transceiver, publisher id, kind)
        self._subscribed: set[tuple[str, str]] = set()
        self._rev = 0
        self._awaiting: Optional[int] = None
        self._renegotiate = False
        self._lock = asyncio.Lock()
        self.closed = False

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.published[track.kind] = track
            for other in self.server.others(self):
                other.subscribe(self, track)
                other.request_offer()

    def public(self) -> dict:
        return {"id": self.id, "identity": self.identity, "name": self.name, "role": "participant",
                "permissions": ["publish", "subscribe"], "muted": {"audio": False, "video": False}}

    def subscribe(self, publisher: "Participant", track: MediaStreamTrack) -> None:
        key = (publisher.id, track.kind)
        if self.closed or key in self._subscribed:
            return
        self._subscribed.add(key)
        proxy = self.server.relay.subscribe(track, buffered=False)
        transceiver = self.pc.addTransceiver(proxy, direction="sendonly")
        self.slots.append((transceiver, publisher.id, track.kind))

    async def send(self, message: dict) -> None:
        if not self.ws.closed:
            try:
                await self.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                pass

    def request_offer(self) -> None:
        self._renegotiate = True
        if self._awaiting is None and not self.closed:
            asyncio.ensure_future(self._offer())

    async def _offer(self) -> None:
        async with self._lock:
            if not self._renegotiate or self._awaiting is not None or self.closed:
                return
            self._renegotiate = False
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._rev += 1
            self._awaiting = self._rev
            await self.send({
                "type": "offer", "rev": self._rev, "sdp": self.pc.localDescription.sdp,
                "publish": {kind: t.mid for kind, t in self.publish.items()},
                "tracks": {t.mid: {"participant": pid, "kind": kind} for t, pid, kind in self.slots},
            })

    async def on_answer(self, rev: int, sdp: str) -> None:
        async with self._lock:
            if rev != self._awaiting:
                await self.send({"type": "error", "code": "bad_state", "message": "unexpected answer", "fatal": False})
                return
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            self._awaiting = None
        if self._renegotiate:
            await self._offer()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.pc.close()


class RelayServer:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.rooms: dict[str, dict[str, Participant]] = {}

    def others(self, participant: Participant) -> list[Participant]:
        return [p for p in self.rooms.get(participant.room, {}).values() if p is not participant and not p.closed]

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        try:
            msg = await ws.receive(timeout=10)
            message = json.loads(msg.data) if msg.type == WSMsgType.TEXT else {}
        except (asyncio.TimeoutError, ValueError):
            message = {}
        parts = message.get("token", "").split("/") if isinstance(message.get("token"), str) else []
        if message.get("type") != "join" or len(parts) not in (2, 3) or not all(parts):
            await ws.send_str(json.dumps({"type": "error", "code": "unauthorized",
                                          "message": "join with token '<room>/<identity>[/<name>]'", "fatal": True}))
            await ws.close(code=4401)
            return ws
        room, identity = parts[0], parts[1]
        me = Participant(self, ws, room, identity, parts[2] if len(parts) == 3 else identity)
        members = self.rooms.setdefault(room, {})
        for other in list(members.values()):
            if other.identity == identity:  # a rejoin replaces the old session
                await other.send({"type": "closed", "reason": "replaced"})
                await other.ws.close()
        others = self.others(me)
        members[me.id] = me
        for other in others:
            for track in other.published.values():
                me.subscribe(other, track)
            await other.send({"type": "participant-joined", "participant": me.public()})
        await me.send({"type": "joined", "v": 1, "participant": me.public(), "room": {"id": room, "name": room},
                       "participants": [o.public() for o in others], "ice_servers": []})
        me.request_offer()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "answer":
                    await me.on_answer(message.get("rev"), message.get("sdp", ""))
                elif kind == "ping":
                    await me.send({"type": "pong"})
                elif kind == "leave":
                    break
        finally:
            members.pop(me.id, None)
            await me.close()
            for other in self.others(me):
                await other.send({"type": "participant-left", "participant_id": me.id, "reason": "left"})
            if not members:
                self.rooms.pop(room, None)
            if not ws.closed:
                await ws.close()
        return ws

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "live_rooms": len(self.rooms)})

    async def shutdown(self, app: web.Application) -> None:
        for members in list(self.rooms.values()):
            for participant in list(members.values()):
                await participant.close()


async def serve(host: str, port: int) -> None:
    restrict_host_addresses(["127.0.0.1"])
    server = RelayServer()
    app = web.Application()
    app.add_routes([web.get("/ws", server.websocket), web.get("/healthz", server.health)])
    app.on_shutdown.append(server.shutdown)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"relay baseline listening on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description="aiortc MediaRelay baseline server (benchmarks only, loopback)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(a.host, a.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
