"""Hypothesis profiles for the fuzz tests (docs/TESTING.md, "Fuzzing").

- "ci" (default): a modest number of examples, so tests/fuzz runs in well under a minute
  with the rest of the suite.
- "long": CONSULT_FUZZ_PROFILE=long, for a fuzzing session by hand (hours for the whole
  directory; pick one family with -k). CONSULT_FUZZ_EXAMPLES=N sets the examples per test
  of either profile (e.g. a medium run).

No deadline: the machine may be busy, and a slow example is not a failure here. A failure
prints the falsifying example and a @reproduce_failure blob. Examples are saved outside the
work tree (the system temp dir), so a failure found once is tried first on the next run on
this machine and nothing appears in `git status`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE_ENV = "CONSULT_FUZZ_PROFILE"
EXAMPLES_ENV = "CONSULT_FUZZ_EXAMPLES"

_database = DirectoryBasedExampleDatabase(Path(tempfile.gettempdir()) / "consult-sfu-hypothesis")
_common = dict(
    deadline=None,
    print_blob=True,
    derandomize=False,
    database=_database,
    # generated packets and SDP are large on purpose; a busy machine makes anything slow
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
settings.register_profile("ci", max_examples=100, **_common)
settings.register_profile("long", max_examples=200_000, **_common)

_profile = os.environ.get(PROFILE_ENV, "ci")
if os.environ.get(EXAMPLES_ENV):
    settings.register_profile(f"{_profile}-n", settings.get_profile(_profile),
                              max_examples=int(os.environ[EXAMPLES_ENV]))
    _profile = f"{_profile}-n"
settings.load_profile(_profile)


# A timed run (docs/TESTING.md, "Fuzzing"): CONSULT_FUZZ_MINUTES=M gives every fuzz module
# (one parser family) M minutes, split evenly among its hypothesis tests. Each test is run
# in batches of fresh random examples until its share is spent, and the examples it
# executed are counted; CONSULT_FUZZ_REPORT=path writes the figures as JSON.
MINUTES_ENV = "CONSULT_FUZZ_MINUTES"
REPORT_ENV = "CONSULT_FUZZ_REPORT"
TIMED_BATCH_EXAMPLES = 1000

_budget_s: dict[str, float] = {}
_figures: list[dict[str, object]] = []

if os.environ.get(MINUTES_ENV):
    settings.register_profile("timed", settings.get_profile(_profile), max_examples=TIMED_BATCH_EXAMPLES)
    settings.load_profile("timed")


def _is_hypothesis_test(item: pytest.Item) -> bool:
    return isinstance(item, pytest.Function) and hasattr(item.obj, "hypothesis")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.environ.get(MINUTES_ENV):
        return
    family_s = float(os.environ[MINUTES_ENV]) * 60
    per_module = Counter(item.module.__name__ for item in items
                         if _is_hypothesis_test(item) and isinstance(item, pytest.Function))
    for item in items:
        if _is_hypothesis_test(item) and isinstance(item, pytest.Function):
            _budget_s[item.nodeid] = family_s / per_module[item.module.__name__]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    budget = _budget_s.get(pyfuncitem.nodeid)
    if budget is None:
        return None
    executed = 0
    wrapper = pyfuncitem.obj.hypothesis
    inner = wrapper.inner_test

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal executed
        executed += 1
        return inner(*args, **kwargs)

    wrapper.inner_test = counted
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    started = time.monotonic()
    batches = 0
    try:
        while batches == 0 or time.monotonic() - started < budget:
            pyfuncitem.obj(**arguments)
            batches += 1
    finally:
        wrapper.inner_test = inner
        _figures.append({"module": pyfuncitem.module.__name__.rsplit(".", 1)[-1], "test": pyfuncitem.name,
                         "seconds": round(time.monotonic() - started, 1), "batches": batches,
                         "examples": executed})
    return True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _figures:
        return
    terminalreporter.section("timed fuzzing")
    per_module: dict[str, list[dict[str, object]]] = {}
    for row in _figures:
        per_module.setdefault(str(row["module"]), []).append(row)
    for module, rows in per_module.items():
        seconds = sum(float(str(row["seconds"])) for row in rows)
        examples = sum(int(str(row["examples"])) for row in rows)
        terminalreporter.write_line(f"{module}: {seconds / 60:.1f} min, {examples} examples")
        for row in rows:
            terminalreporter.write_line(f"  {row['test']}: {row['seconds']} s, {row['examples']} examples")
    if os.environ.get(REPORT_ENV):
        Path(os.environ[REPORT_ENV]).write_text(json.dumps(_figures, indent=1) + "\n")
