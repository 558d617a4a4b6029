"""The metrics as signalling/app.py and run.py wire them: /metrics on the main port behind the
admin key, joins timed by the app's own sessions; or, with --metrics-address, on an address of
its own (and not on the main port)."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_run import free_port, start

pytestmark = pytest.mark.slow


async def test_the_app_serves_metrics_behind_the_admin_key_and_times_its_joins(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5, timeout=30)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sfu.base_url}/metrics") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {sfu.services.admin_key}"}
        async with http.get(f"{sfu.base_url}/metrics", headers=headers) as response:
            assert response.status == 200
            text = await response.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("consult_participants", (("role", "patient"),))] == 1
    assert samples[("consult_join_seconds_count", (("stage", "joined"),))] == 2


async def test_run_py_serves_metrics_on_its_own_address(tmp_path):
    port, metrics_port = free_port(), free_port()
    proc, _ = start(["--port", str(port), "--data-dir", str(tmp_path), "--media-host-address", "127.0.0.1",
                     "--processors", "", "--metrics-address", f"127.0.0.1:{metrics_port}"])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                assert response.status == 200
                assert "consult_rooms_active 0.0" in await response.text()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 404  # not on the main port then
    finally:
        proc.terminate()
        proc.wait(timeout=10)
