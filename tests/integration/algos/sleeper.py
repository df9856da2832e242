"""Test algorithm: signals it started (a line on stdout), sleeps, then writes "done".

Input JSON: {"seconds": float}. Writes the output file only at the end, so a test can tell a run
that finished from one that was cut short.
"""
import json
import os
import time

with open(os.environ["INPUT_FILE"]) as f:
    seconds = float(json.load(f).get("seconds", 30))
print("sleeper started", flush=True)
time.sleep(seconds)
with open(os.environ["OUTPUT_FILE"], "w") as f:
    f.write("done")
print("sleeper done", flush=True)
