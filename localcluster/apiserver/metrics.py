"""Request counting per Kubernetes verb and resource (GET /localcluster/metrics)."""
from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self._requests: Counter[str] = Counter()

    def count(self, verb: str, resource: str) -> None:
        self._requests[f"{verb} {resource}"] += 1

    def snapshot(self) -> dict:
        return {"requests": dict(sorted(self._requests.items())),
                "total": sum(self._requests.values())}

    def reset(self) -> None:
        self._requests.clear()
