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

import os
import tempfile
from pathlib import Path

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
