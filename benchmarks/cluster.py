"""`python -m benchmarks.cluster serve ...`: the local cluster with room for 1,000+ pods.

Two changes to `python -m localcluster serve`, both about the stand-in, not the system measured:
- capacity: the stand-in's kubelet allows 250 pods and 64 CPUs, like one big node; the scale
  benchmark keeps 1,000 runs in flight (on a real cluster they would spread over several nodes);
- the stand-in's Job controller lists every pod of the namespace, deep-copied, on each sync of a
  Job, which makes it quadratic: with 1,000 pods it spent ~90% of the cluster's loop in deepcopy
  (py-spy) and became the bottleneck of the whole benchmark. Here it gets a read-only view of the
  store whose pod list is not copied (the controller only reads the pods it lists). The real fix
  belongs in `localcluster/jobs.py` (list with the Job's `batch.kubernetes.io/controller-uid`
  label selector); once it is there, `_ReadOnlyPods` can go.
"""
from __future__ import annotations

import sys

from localcluster import controllers, jobs
from localcluster.__main__ import main
from localcluster.kubelet import KubeletConfig
from localcluster.resources import PODS

ALLOCATABLE = {"cpu": "1000", "memory": "4Ti", "pods": "5000", "ephemeral-storage": "1Ti"}


class _ReadOnlyPods:
    """The store, except that an unfiltered pod list hands out the stored objects uncopied."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def list(self, res, namespace=None, label_selector=None, field_selector=None):
        if res is PODS and label_selector is None and field_selector is None:
            items = [o for key, o in sorted(self._store._items(res, namespace))]
            return items, str(self._store._rv)
        return self._store.list(res, namespace, label_selector, field_selector)


class _JobController(jobs.JobController):
    def __init__(self, store, config=None):
        super().__init__(_ReadOnlyPods(store), config)


_run_controllers = controllers.run_controllers


async def _run_with_room(store, state_dir, image_files, kubelet_config=None):
    config = kubelet_config or KubeletConfig(allocatable=dict(ALLOCATABLE))
    return await _run_controllers(store, state_dir, image_files, config)


controllers.run_controllers = _run_with_room
controllers.JobController = _JobController

if __name__ == "__main__":
    sys.exit(main())
