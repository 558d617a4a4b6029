"""Fixtures for the real-browser tests (see harness.py for how the pieces fit).

- ``netns``: a fresh network namespace with a veth pair, destroyed afterwards;
  ``patient_netns`` another one, for a patient behind a link of its own.
- ``sfu_server``: consult-sfu running in that namespace; ``.patient_url``,
  ``.doctor_url``, ``.expert_url`` (``.links``), ``.output()``.
- ``chromium``: factory; ``chromium("patient")`` gives a headless Chromium WebDriver
  in the same namespace. On test failure every browser's screenshot, console log and
  page state, and the server's output, are saved into the test's ``tmp_path``.
- ``browser_diagnostics``: ``browser_diagnostics("what went wrong")`` saves all that
  and returns an assertion message with the server output and console logs.
"""

from __future__ import annotations

import pytest

from .harness import BrowserFactory, NetNamespace, missing_prerequisites, start_sfu_server


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # Let fixtures see, while tearing down, whether the test itself failed.
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


_reports_key = pytest.StashKey[dict]()


def _test_failed(request) -> bool:
    reports = request.node.stash.get(_reports_key, {})
    return any(r.failed for r in reports.values())


@pytest.fixture
def browser_prerequisites():
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)


def _namespace(log_dir):
    ns = NetNamespace(log_dir=log_dir)
    try:
        yield ns
    finally:
        ns.destroy()


@pytest.fixture
def netns(browser_prerequisites, tmp_path):
    yield from _namespace(tmp_path / "logs")


@pytest.fixture
def patient_netns(browser_prerequisites, tmp_path):
    """A second namespace for the patient's browser, behind a link the test shapes or filters."""
    yield from _namespace(tmp_path / "patient-logs")


@pytest.fixture
def sfu_server(netns, tmp_path, request):
    server = start_sfu_server(netns, tmp_path / "data")
    yield server
    if _test_failed(request):
        # Printed in pytest's "Captured stdout teardown" section of the failure.
        print(f"\nserver output (also in {server.process.stdout_path.parent}):\n{server.output()}")


@pytest.fixture
def chromium(netns, tmp_path, request):
    factory = BrowserFactory(netns, artifact_dir=tmp_path)
    try:
        yield factory
    finally:
        try:
            if _test_failed(request) and factory.drivers and not factory.diagnostics_saved:
                saved = factory.save_diagnostics("teardown")
                print("\nbrowser diagnostics saved:\n" + "\n".join(f"  {p}" for p in saved))
        finally:
            factory.close()


@pytest.fixture
def browser_diagnostics(chromium, sfu_server, tmp_path):
    """Call on failure: saves screenshots/console logs/page state, returns a message."""

    def collect(summary: str) -> str:
        saved = chromium.save_diagnostics("failure")
        return "\n".join([
            summary,
            f"artifacts in {tmp_path}:",
            *(f"  {p}" for p in saved),
            chromium.console_summary(),
            sfu_server.output(),
        ])

    return collect
