"""How long the reliability tests run: the short version inside `make test`, the long one in
`make soak` (environment variable ``V6_RELIABILITY=soak``).

Hypothesis' global profiles are left alone (loading one would change other suites' tests run in
the same session); each test asks ``examples()`` for its own count instead.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from hypothesis import HealthCheck, settings

SOAK = os.environ.get("V6_RELIABILITY", "").lower() == "soak"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "soak-results.json"


def examples(quick: int, soak: int) -> int:
    return soak if SOAK else quick


def fuzz_settings(quick: int, soak: int) -> settings:
    """Many examples, no per-example deadline (the machine is shared), no example database."""
    # database=None: each run stands alone (a failing example is printed with its reproduce
    # blob; replaying a 5000-deep payload from .hypothesis/ only crashed hypothesis' repr)
    return settings(max_examples=examples(quick, soak), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture],
                    print_blob=True)


_lock = threading.Lock()


def record(section: str, figures: dict) -> None:
    """Merge measured figures into soak-results.json (long mode only: the short run inside
    `make test` must not rewrite a file kept in the repository)."""
    if not SOAK:
        return
    with _lock:
        try:
            data = json.loads(RESULTS.read_text())
        except (OSError, ValueError):
            data = {}
        data[section] = figures
        RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
