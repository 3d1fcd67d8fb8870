"""Fuzz targets: every parser of untrusted input, fed random and mutated
inputs by Hypothesis; each may only ever raise its module's documented error.

CI runs a bounded, reproducible number of inputs per target (derandomized,
``POSTPY_FUZZ_EXAMPLES`` each, 300 by default).  A long run with fresh random
inputs, as the README says::

    POSTPY_FUZZ_EXAMPLES=1000000 POSTPY_FUZZ_RANDOM=1 .venv/bin/pytest tests/fuzz -p no:timeout
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("POSTPY_FUZZ_EXAMPLES", "300"))
RANDOM = os.environ.get("POSTPY_FUZZ_RANDOM", "") not in ("", "0")

settings.register_profile(
    "postpy-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.load_profile("postpy-fuzz")
