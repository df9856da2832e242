"""`python -m benchmarks.cluster serve ...`: the local cluster with room for 1,000+ pods.

One change to `python -m localcluster serve`, about the stand-in, not the system measured:
capacity. The stand-in's kubelet allows 250 pods and 64 CPUs, like one big node; the scale
benchmark keeps 1,000 runs in flight (on a real cluster they would spread over several nodes).
"""
from __future__ import annotations

import sys

from localcluster import controllers
from localcluster.__main__ import main
from localcluster.kubelet.kubelet import KubeletConfig

ALLOCATABLE = {"cpu": "1000", "memory": "4Ti", "pods": "5000", "ephemeral-storage": "1Ti"}


_run_controllers = controllers.run_controllers


async def _run_with_room(store, state_dir, image_files, kubelet_config=None):
    config = kubelet_config or KubeletConfig(allocatable=dict(ALLOCATABLE))
    return await _run_controllers(store, state_dir, image_files, config)


controllers.run_controllers = _run_with_room

if __name__ == "__main__":
    sys.exit(main())
