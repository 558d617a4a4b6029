"""One Metrics per app: its own registry, started with the app and gone at its cleanup."""

from __future__ import annotations

import logging

from aiohttp import web

from metrics import Metrics
from recorder import writer
from signalling.app import build_services
from signalling.config import ServerConfig


def _rooms(tmp_path, name: str):
    config = ServerConfig(data_dir=tmp_path / name, demo_room=False, default_processors=[])
    return build_services(config).rooms


async def test_running_with_the_app_and_stopped_at_its_cleanup(aiohttp_client, tmp_path):
    metrics = Metrics(_rooms(tmp_path, "a"), loop_lag_interval_s=0.01)
    app = web.Application()
    app.add_routes(metrics.routes(api_key=None))
    app.cleanup_ctx.append(metrics.cleanup_ctx)
    client = await aiohttp_client(app)

    assert metrics.running
    assert metrics.log_records in logging.getLogger().handlers
    assert metrics.segments.observe in writer._segment_observers
    response = await client.get("/metrics")
    assert response.status == 200 and "consult_rooms_active 0.0" in await response.text()

    await client.close()  # the app's cleanup
    assert not metrics.running
    assert metrics.log_records not in logging.getLogger().handlers
    assert metrics.segments.observe not in writer._segment_observers
    assert metrics.loop_lag._task is None


def test_apps_in_one_process_keep_their_own_registries(tmp_path):
    first, second = Metrics(_rooms(tmp_path, "a")), Metrics(_rooms(tmp_path, "b"))
    first.observe_join("joined", 0.1)
    assert first.registry.get_sample_value("consult_join_seconds_count", {"stage": "joined"}) == 1
    assert second.registry.get_sample_value("consult_join_seconds_count", {"stage": "joined"}) == 0
    assert first.registry is not second.registry
