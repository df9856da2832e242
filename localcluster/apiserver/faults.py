"""Fault injection for the API (PUT/GET /localcluster/faults), deterministic given a seed.

- ``error_rate``: probability per verb (``"*"`` for the others) that a request is answered with
  an error instead; the code is drawn from ``error_codes`` (a Status object; 429 carries a
  Retry-After header);
- ``watch_cut_after``: every watch stream ends after that many events (``watch_cut_mode``
  "close": the stream ends cleanly; "reset": the connection is dropped);
- ``expire_watches``: the next watch request gets a 410 Expired ERROR event (one-shot).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
           504: "Timeout"}


class FaultConfigError(ValueError):
    pass


@dataclass
class FaultConfig:
    error_rate: dict[str, float] = field(default_factory=dict)
    error_codes: list[int] = field(default_factory=lambda: [500])
    watch_cut_after: int | None = None
    watch_cut_mode: str = "close"
    expire_watches: bool = False
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> "FaultConfig":
        if not isinstance(data, dict):
            raise FaultConfigError("fault configuration must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise FaultConfigError(f"unknown fault settings: {sorted(unknown)}")
        cfg = cls(**data)
        if not isinstance(cfg.error_rate, dict) or not all(
                isinstance(v, (int, float)) and 0 <= v <= 1 for v in cfg.error_rate.values()):
            raise FaultConfigError("error_rate must map verbs to probabilities in [0, 1]")
        if not cfg.error_codes or not all(c in REASONS for c in cfg.error_codes):
            raise FaultConfigError(f"error_codes must be a non-empty list of {sorted(REASONS)}")
        if cfg.watch_cut_after is not None and (
                not isinstance(cfg.watch_cut_after, int) or cfg.watch_cut_after < 0):
            raise FaultConfigError("watch_cut_after must be a non-negative integer or null")
        if cfg.watch_cut_mode not in ("close", "reset"):
            raise FaultConfigError('watch_cut_mode must be "close" or "reset"')
        if not isinstance(cfg.expire_watches, bool):
            raise FaultConfigError("expire_watches must be a boolean")
        return cfg


class Faults:
    def __init__(self) -> None:
        self.config = FaultConfig()
        self._rng = random.Random()

    def set(self, data: Any) -> None:
        self.config = FaultConfig.from_dict(data)
        self._rng = random.Random(self.config.seed)

    def to_dict(self) -> dict:
        return asdict(self.config)

    def pick_error(self, verb: str) -> int | None:
        """The error code to answer this request with, or None."""
        rates = self.config.error_rate
        rate = rates.get(verb, rates.get("*", 0.0))
        if rate and self._rng.random() < rate:
            return self._rng.choice(self.config.error_codes)
        return None

    def take_expire(self) -> bool:
        if self.config.expire_watches:
            self.config.expire_watches = False
            return True
        return False
