"""Test algorithm: reports progress steps through `algorithms.common`, waiting for files the
test writes into its tmp directory, then writes "done".

Input JSON: {"before": int, "after": int}. Steps 1..before are reported, then the algorithm waits
(up to two minutes each) for $TMP_DIR/release, reports the other steps, waits for
$TMP_DIR/finish and ends: every step is reported while it still runs. With "wait": false it
reports every step at once and ends right after the last one (the final progress must not be lost).
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


def wait_for_file(name: str) -> None:
    if spec.get("wait", True) is False:
        return
    path = Path(os.environ["TMP_DIR"]) / name
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


wait_for_file("release")
for i in range(before + 1, total + 1):
    reporter.report(f"step {i} of {total}", i / total)
wait_for_file("finish")
with open(os.environ["OUTPUT_FILE"], "w") as f:
    f.write("done")
