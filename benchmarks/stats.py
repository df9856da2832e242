"""Pure statistics: percentiles within one run, median and spread over repeated runs."""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict:
    """p50, p99, mean, min, max and n of one run's samples (empty: only n=0)."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def spread(per_run: Iterable[float]) -> dict:
    """Median over repeated runs and the spread (min, max) around it, with every run's value."""
    vals = [v for v in per_run if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": percentile(vals, 50), "min": min(vals), "max": max(vals), "runs": vals}


def across(summaries: Sequence[dict], keys: Iterable[str] = ("p50", "p99")) -> dict:
    """For each key of the per-run summaries, its median and spread over the runs."""
    return {k: spread(s.get(k) for s in summaries) for k in keys}
