"""Fixtures shared by the load-test client's tests."""

from __future__ import annotations

import pytest

from loadtest import receiver as receiver_mod
from loadtest.receiver import InstrumentedBuffer, MeasuringDecoder, RetryingNackGenerator


@pytest.fixture
def browser_receiver_module(monkeypatch):
    """aiortc's receiver module patched as loadtest.receiver.install("browser") does, for this test only."""
    import aiortc.rtcrtpreceiver as receiver_module

    real_factory = receiver_module.get_decoder
    monkeypatch.setattr(receiver_mod.SETTINGS, "mode", "browser")
    monkeypatch.setattr(receiver_module, "JitterBuffer", InstrumentedBuffer)
    monkeypatch.setattr(receiver_module, "NackGenerator", RetryingNackGenerator)
    monkeypatch.setattr(receiver_module, "get_decoder", lambda codec: MeasuringDecoder(codec, real_factory))
    monkeypatch.setattr(receiver_module, "depayload", receiver_module.depayload)
    monkeypatch.setattr(receiver_module, "_loadtest_real_depayload", receiver_module.depayload, raising=False)
    receiver_mod._keep_red_payloads(receiver_module)
    return receiver_module
