"""Which simulcast layer each subscriber got, over the measurement window, from the server's admin API.

Our server's media summary (GET /api/rooms/{id}/media, the one `downlink` is read from)
names, per subscriber and down-track "<publisher>:video", the layer it carries now
(`layer`: a RID, or None unlayered / none yet) and how often it switched
(`layer_switches`). `LayerSampler` reads it every SAMPLE_INTERVAL_S between the window's
start and end; `layer_shares` turns the samples into each stream's share of the window
at each layer (each sample standing for the time until the next) and its switches in
the window (the counter's growth; the layer changes seen, should the counter restart).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from loadtest.harness import http_json

SAMPLE_INTERVAL_S = 0.5
NO_LAYER = "none"  # the key for samples without a layer (not layered, or nothing fed yet)

StreamKey = tuple[str, str, str]  # room id, subscriber id, publisher id
Sample = tuple[float, dict[StreamKey, tuple[Optional[str], int]]]


def video_layers(room_id: str, participants: dict[str, Any]) -> dict[StreamKey, tuple[Optional[str], int]]:
    """(room, subscriber, publisher) -> (layer, layer_switches) from one room's media summary."""
    found: dict[StreamKey, tuple[Optional[str], int]] = {}
    for subscriber, peer in participants.items():
        for key, counters in (peer.get("receiving") or {}).items():
            publisher, _, kind = key.rpartition(":")
            if kind == "video" and isinstance(counters, dict) and "layer" in counters:
                found[(room_id, subscriber, publisher)] = (counters["layer"], int(counters.get("layer_switches") or 0))
    return found


def layer_shares(samples: list[Sample], end: Optional[float] = None) -> dict[StreamKey, dict[str, Any]]:
    """Per stream: {"share": {layer: fraction of the sampled time}, "switches": n, "samples": n, "last": layer}."""
    out: dict[StreamKey, dict[str, Any]] = {}
    if not samples:
        return out
    end = samples[-1][0] if end is None else end
    keys = {key for _, layers in samples for key in layers}
    for key in sorted(keys):
        seen = [(t, layers[key]) for t, layers in samples if key in layers]
        time_at: dict[str, float] = {}
        for (t, (layer, _)), following in zip(seen, [s[0] for s in seen[1:]] + [max(end, seen[-1][0])]):
            name = layer or NO_LAYER
            time_at[name] = time_at.get(name, 0.0) + max(0.0, following - t)
        total = sum(time_at.values())
        if total <= 0:  # a single sample: it is all there is
            share = {(seen[-1][1][0] or NO_LAYER): 1.0}
        else:
            share = {name: round(spent / total, 4) for name, spent in sorted(time_at.items())}
        counted = seen[-1][1][1] - seen[0][1][1]
        changes = sum(1 for a, b in zip(seen, seen[1:]) if a[1][0] != b[1][0])
        out[key] = {"share": share, "switches": counted if counted >= 0 else changes,
                    "samples": len(seen), "last": seen[-1][1][0]}
    return out


class LayerSampler:
    """Reads every room's media summary in a thread, SAMPLE_INTERVAL_S apart, while running."""

    def __init__(self, base_url: str, admin_key: Optional[str], room_ids: list[str],
                 interval: float = SAMPLE_INTERVAL_S,
                 fetch: Optional[Callable[[str], dict[str, Any]]] = None) -> None:
        self.room_ids = list(room_ids)
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self._fetch = fetch or (lambda room_id: http_json("GET", f"{base_url}/api/rooms/{room_id}/media",
                                                          key=admin_key)["participants"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "LayerSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> None:
        layers: dict[StreamKey, tuple[Optional[str], int]] = {}
        for room_id in self.room_ids:
            try:
                layers.update(video_layers(room_id, self._fetch(room_id)))
            except (OSError, KeyError, ValueError):
                self.errors += 1
        self.samples.append((time.monotonic(), layers))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def attach_layer_shares(streams: list[dict[str, Any]], shares: dict[StreamKey, dict[str, Any]]) -> None:
    """Adds `layer_share` and `layer_switches` to each video stream's figures (metrics' video_streams;
    participant ids are the server's, unique across its rooms)."""
    by_pair = {(subscriber, publisher): found for (_, subscriber, publisher), found in shares.items()}
    for stream in streams:
        found = by_pair.get((str(stream.get("subscriber")), str(stream.get("publisher"))))
        stream["layer_share"] = found["share"] if found else None
        stream["layer_switches"] = found["switches"] if found else None


def shares_json(shares: dict[StreamKey, dict[str, Any]]) -> list[dict[str, Any]]:
    """The shares as JSON rows (tuple keys do not serialise)."""
    return [{"room": room, "subscriber": subscriber, "publisher": publisher, **found}
            for (room, subscriber, publisher), found in shares.items()]
