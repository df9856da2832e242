"""The Kubernetes side of a run's life, under the node's retry policy: create its Job (telling an
existing one apart), read its pods and their logs, delete it. Decisions stay with the agent."""
from __future__ import annotations

import logging
import threading

from node import retry
from node.cluster import Cluster
from node.config import NodeConfig
from node.errors import ClusterError, ConflictError, NotFoundError, TransientClusterError
from node.manifests import SIDECAR_NAME, selector_for_node

log = logging.getLogger(__name__)

RUN_LABEL = "v6.run-id"
LOG_LIMIT = 1 << 20  # per container


class JobOps:
    def __init__(self, cluster: Cluster, config: NodeConfig, stop: threading.Event):
        self.cluster = cluster
        self.config = config
        self.stop_event = stop

    def create(self, job: dict) -> dict | None:
        """Create the Job: None once created, or the Job of that name that exists already."""
        name = job["metadata"]["name"]
        for _ in range(3):
            try:
                retry.call(lambda: self.cluster.create_job(job), what=f"create job {name}",
                           stop=self.stop_event)
                return None
            except ConflictError:
                try:
                    return retry.call(lambda: self.cluster.get_job(name),
                                      what=f"get job {name}", stop=self.stop_event)
                except NotFoundError:
                    # a 409 with no Job of that name (a conflict elsewhere, or the Job was just
                    # deleted): creating again is safe; refusing made the run "start failed"
                    # under API faults (tests/reliability/test_faults.py)
                    continue
        raise ConflictError(f"could not create job {name}: the API kept answering 409")

    def delete(self, name: str) -> None:
        try:
            # a 409 on delete (a concurrent update of the Job) passes like a 5xx: retrying beats
            # leaving the Job to its TTL (tests/reliability/test_faults.py)
            retry.call(lambda: self.cluster.delete_job(
                name, grace_seconds=self.config.job.termination_grace_seconds),
                what=f"delete job {name}", stop=self.stop_event,
                transient=(TransientClusterError, ConflictError))
        except NotFoundError:
            pass
        except ClusterError as e:
            # the TTL on the Job removes it later in any case
            log.warning("could not delete job %s: %s", name, e)

    def pods_of(self, run_id: int) -> list[dict]:
        pods, _ = self.cluster.list_objects(
            "pods", f"{selector_for_node(self.config.node_id)},{RUN_LABEL}={run_id}")
        return pods

    def logs(self, pods: dict[str, dict]) -> str:
        """Every container's log of these pods, oldest pod first, each under a header; the
        live-channel sidecar's only when it did not end cleanly (it is the node's own, and
        reading it was a sixth of the API requests of 1,000 runs ending)."""
        parts = []
        for name, pod in sorted(pods.items(),
                                key=lambda kv: kv[1]["metadata"].get("creationTimestamp", "")):
            spec = pod.get("spec") or {}
            clean = _ended_cleanly(pod)
            for c in [c["name"] for c in spec.get("initContainers", []) + spec.get("containers", [])]:
                if c == SIDECAR_NAME and SIDECAR_NAME in clean:
                    continue
                try:
                    text = self.cluster.pod_log(name, c, LOG_LIMIT)
                except ClusterError as e:
                    text = f"(log unavailable: {e})"
                if text:
                    parts.append(f"=== pod {name} container {c} ===\n{text.rstrip()}")
        return "\n".join(parts)


def _ended_cleanly(pod: dict) -> set[str]:
    """Names of the pod's containers that terminated with exit code 0."""
    status = pod.get("status") or {}
    return {cs.get("name") for cs in (status.get("initContainerStatuses") or [])
            + (status.get("containerStatuses") or [])
            if ((cs.get("state") or {}).get("terminated") or {}).get("exitCode") == 0}
