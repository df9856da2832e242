"""Test algorithm: reports progress steps through `algorithms.common`, waits for a release file
in its tmp directory between them, then writes "done".

Input JSON: {"before": int, "after": int}. Steps 1..before are reported, then the algorithm waits
(up to two minutes) for $TMP_DIR/release, which the test writes, then reports the other steps.
"""
import json
import os
import time
from pathlib import Path

from algorithms.common.progress import ProgressReporter

with open(os.environ["INPUT_FILE"]) as f:
    spec = json.load(f)
before, after = int(spec.get("before", 3)), int(spec.get("after", 2))
total = before + after
progress_file = os.environ.get("PROGRESS_FILE")
reporter = ProgressReporter(Path(progress_file) if progress_file else None)
for i in range(1, before + 1):
    reporter.report(f"step {i} of {total}", i / total)
release = Path(os.environ["TMP_DIR"]) / "release"
deadline = time.monotonic() + 120
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
for i in range(before + 1, total + 1):
    reporter.report(f"step {i} of {total}", i / total)
with open(os.environ["OUTPUT_FILE"], "w") as f:
    f.write("done")
