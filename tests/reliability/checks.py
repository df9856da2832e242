"""The invariant every fault scenario ends with, checked against the real stack:

- every submitted run has exactly one result at the server, in an expected status, and the run's
  history holds exactly one final status, the same as the result's;
- no Job, pod or Secret is left behind in the jobs namespace;
- no run was executed twice: at most one pod with a started container per run (Kubernetes
  `Started` events, which outlive the pods), exactly one for a completed run;
- the nodes' outboxes are empty (everything delivered).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import requests
from kubernetes import client, config

from localcluster.stack import JOBS_NAMESPACE, wait_for

TERMINAL = {"completed", "failed", "start failed", "non-existing Docker image", "crashed",
            "killed by user", "not allowed", "unknown error"}
RUN_POD = re.compile(r"^v6-run-(\d+)-")  # v6-run-<run id>-<node id>-<pod suffix>


@dataclass
class Ledger:
    """What a test submitted: (node_id, run_id) -> the statuses it may end in."""
    expected: dict[tuple[str, int], set[str]] = field(default_factory=dict)

    def add_task(self, task: dict, statuses: set[str]) -> None:
        for run in task["runs"]:
            self.expected[(run["node_id"], run["id"])] = statuses


def _runs(stack, node_run: tuple[str, int]) -> dict | None:
    node_id, run_id = node_run
    resp = stack.api("GET", f"/api/run/{run_id}?node_id={node_id}")
    return resp.json() if resp.status_code == 200 else None


def wait_results(stack, ledger: Ledger, timeout: float) -> dict[tuple[str, int], dict]:
    pending = set(ledger.expected)
    done: dict[tuple[str, int], dict] = {}

    def all_done():
        for key in list(pending):
            run = _runs(stack, key)
            if run and run.get("result"):
                done[key] = run
                pending.discard(key)
        return not pending
    try:
        wait_for(all_done, timeout, "every run's result", interval=0.3)
    except Exception as e:
        raise AssertionError(f"runs without a result (lost?): {sorted(pending)[:20]}\n"
                             f"{stack.logs()[-6000:]}") from e
    return done


def started_per_run(api) -> Counter:
    """Pods whose container started, per run id (a second pod = the run executed again)."""
    events = client.CoreV1Api(api).list_namespaced_event(JOBS_NAMESPACE).items
    pods: dict[int, set[str]] = {}
    for ev in events:
        m = RUN_POD.match(ev.involved_object.name or "")
        if ev.reason == "Started" and m:
            pods.setdefault(int(m.group(1)), set()).add(ev.involved_object.name)
    return Counter({run_id: len(names) for run_id, names in pods.items()})


def check(stack, ledger: Ledger, timeout: float = 120) -> dict:
    """Wait for every run's result, then check the invariant; returns counts by status."""
    done = wait_results(stack, ledger, timeout)
    stack.cluster.set_faults({})  # the results came in under the faults; now look around
    problems = []
    for key, run in done.items():
        result = run["result"]
        if result["status"] not in ledger.expected[key]:
            problems.append(f"{key}: result {result['status']!r}, expected one of "
                            f"{sorted(ledger.expected[key])}: {str(result.get('logs'))[-300:]}")
        finals = [h["status"] for h in run["history"] if h["status"] in TERMINAL]
        if len(finals) != 1 or finals[0] != result["status"] or run["status"] != result["status"]:
            problems.append(f"{key}: status {run['status']!r}, final statuses {finals}, "
                            f"result {result['status']!r}")
    api = config.new_client_from_config(config_file=str(stack.kubeconfig))
    try:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)

        def nothing_left():
            jobs = batch.list_namespaced_job(JOBS_NAMESPACE).items
            pods = core.list_namespaced_pod(JOBS_NAMESPACE).items
            return not jobs and not pods
        try:
            wait_for(nothing_left, 60, "Jobs and pods to be cleaned up", interval=0.3)
        except Exception:
            left = [j.metadata.name for j in batch.list_namespaced_job(JOBS_NAMESPACE).items]
            left += [p.metadata.name for p in core.list_namespaced_pod(JOBS_NAMESPACE).items]
            problems.append(f"left behind: {left}")
        secrets = core.list_namespaced_secret(JOBS_NAMESPACE).items
        if secrets:
            problems.append(f"Secrets in the jobs namespace: {[s.metadata.name for s in secrets]}")
        starts = started_per_run(api)
    finally:
        api.close()
    for (node_id, run_id), run in done.items():
        n = starts.get(run_id, 0)
        if n > 1:
            problems.append(f"run {run_id} on {node_id} executed {n} times")
        if run["result"]["status"] == "completed" and n != 1:
            problems.append(f"run {run_id} completed with {n} container starts")
    for node_id in sorted({k[0] for k in done}):
        try:
            wait_for(lambda: outbox_empty(stack, node_id), 30, f"{node_id}'s outbox to empty")
        except Exception:
            problems.append(f"{node_id}: results still in the outbox")
    for name, proc in stack.procs.items():
        if name.startswith("node-") and not proc.alive():
            problems.append(f"{name} died: {proc.log_text()[-2000:]}")
    assert not problems, "\n".join(problems)
    return dict(Counter(r["result"]["status"] for r in done.values()))


def outbox_empty(stack, node_id: str) -> bool:
    import yaml
    cfg = yaml.safe_load((stack.workdir / f"node-{node_id}.yaml").read_text())
    url = f"http://127.0.0.1:{cfg['health']['port']}/healthz"
    try:
        return requests.get(url, timeout=2).json().get("outbox") == 0
    except (requests.RequestException, ValueError):
        return False
