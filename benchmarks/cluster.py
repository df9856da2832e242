"""`python -m benchmarks.cluster serve ...`: the local cluster with room for 1,000+ pods.

One change to `python -m localcluster serve`, about the stand-in, not the system measured:
capacity. The stand-in's Node has 250 pods and 64 CPUs by default, like one big node; the scale
benchmark keeps 1,000 runs in flight (on a real cluster they would spread over several nodes),
so its Node gets the room below (``serve --cpu/--memory/--pods``).
"""
from __future__ import annotations

import sys

from localcluster.__main__ import main

ROOM = ["--cpu", "1000", "--memory", "4Ti", "--pods", "6000", "--ephemeral-storage", "1Ti"]


def with_room(argv: list[str]) -> list[str]:
    return [*argv, *ROOM] if argv[:1] == ["serve"] else argv


if __name__ == "__main__":
    sys.exit(main(with_room(sys.argv[1:])))
