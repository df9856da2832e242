"""Progress reports: one JSON line per report appended to PROGRESS_FILE (no-op when unset)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class ProgressReporter:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def report(self, message: str, fraction: float | None = None) -> None:
        """Record progress; `fraction` in [0, 1] when known. Never fails the algorithm."""
        if self.path is None:
            return
        if fraction is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
        line = json.dumps({"time": time.time(), "progress": fraction, "message": message})
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as e:
            # Progress is a courtesy: losing it must not lose the result.
            log.warning("cannot write progress to %s: %s", self.path, e)
