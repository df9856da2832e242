"""Test algorithm: writes an output of the requested size (input JSON {"bytes": n})."""
import json
import os

with open(os.environ["INPUT_FILE"]) as f:
    size = int(json.load(f)["bytes"])
with open(os.environ["OUTPUT_FILE"], "w") as f:
    f.write("x" * size)
