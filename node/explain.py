"""`python -m node explain --config node.yaml TASK.json [--server-dry-run]`: what the node would
do with a task, before anything runs.

The task is read as the node reads a ``command`` payload (CONTRACTS §2, either shape). Printed:
the verdict (allowed, or refused with every reason: node.models.refusal_reasons), and for an
allowed task the exact Job and NetworkPolicy the node would create (YAML; the proxy's address is
read from its Service, as the node does). ``--server-dry-run`` submits both, and the pod the Job
controller would make of the Job's template, with ``dryRun=All``: admission (Pod Security,
ResourceQuota, RuntimeClass) and validation answer as for a real run, and nothing is created. A
pod is refused at admission only when the Job controller creates it, long after the Job was
accepted, so the pod's dry run is what shows such a refusal beforehand. The dry runs need the
rights of the real creates, pods included, which the node itself does not have: run it with an
operator's kubeconfig (``--kubeconfig``).

Exit status: 0 allowed (and, with --server-dry-run, every dry run accepted), 1 refused, 2 bad
input (configuration, task file, cluster unreachable).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

import logging

import yaml

from node.errors import ClusterError, NodeError
from node.manifests import build_job, build_network_policy
from node.models import parse_command, refusal_reasons

log = logging.getLogger(__name__)



@dataclasses.dataclass
class Explanation:
    reasons: list[str]
    objects: list[dict]  # Job, NetworkPolicy (empty when refused)
    dry_runs: list[tuple[str, str, list[str]]] = dataclasses.field(default_factory=list)
    # (what, "accepted" | "refused: <why>", warnings)

    @property
    def allowed(self) -> bool:
        return not self.reasons and all(o == "accepted" for _, o, _ in self.dry_runs)


def warning_text(header: str) -> str:
    """The text of a ``Warning: 299 - "<text>"`` header (RFC 7234 warn-text, quotes escaped)."""
    code, _, rest = header.partition(" ")
    agent, _, quoted = rest.partition(" ")
    if code.isdigit() and quoted.startswith('"') and quoted.endswith('"') and len(quoted) > 1:
        return re.sub(r'\\(.)', r"\1", quoted[1:-1])
    return header


def pod_of(job: dict) -> dict:
    """The pod the Job controller makes of the Job's template (its labels and a generated name),
    for a dry run of what admission says of it."""
    template = copy.deepcopy(job["spec"]["template"])
    meta = template.get("metadata") or {}
    name = job["metadata"]["name"]
    labels = {**(meta.get("labels") or {}), "job-name": name,
              "batch.kubernetes.io/job-name": name}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**meta, "generateName": f"{name}-", "labels": labels},
            "spec": template["spec"]}


def explain(raw: Any, config, proxy: Callable[[], Any] | None,
            dry_run: Callable[[dict], list[str]] | None = None,
            pod: bool = True) -> Explanation:
    """The pure part: verdict and manifests; dry_run (Cluster.dry_run_create) if asked, of the
    Job, the policy and (pod) the Job's pod."""
    reasons = refusal_reasons(raw, config)
    if reasons:
        return Explanation(reasons, [])
    cmd = parse_command(raw, config)
    address = proxy()
    job = build_job(cmd, config, address)
    policy = build_network_policy(config, address)
    out = Explanation([], [job, policy])
    if dry_run is not None:
        objects = [("Job", job), ("NetworkPolicy", policy)]
        if pod:
            objects.append(("Pod of the Job", pod_of(job)))
        for what, obj in objects:
            try:
                out.dry_runs.append((what, "accepted", [warning_text(w) for w in dry_run(obj)]))
            except ClusterError as e:
                out.dry_runs.append((what, f"refused: {e}", []))
    return out


def answer(raw: Any, config, proxy: Callable[[], Any],
           dry_run: Callable[[dict], list[str]]) -> dict:
    """The node's answer to a relayed dry run (explain_task): JSON, never raises."""
    try:
        e = explain(raw, config, proxy, dry_run, pod=False)
    except Exception as err:  # noqa: BLE001 - a researcher's request must not hurt the node
        log.warning("explain_task failed: %s", type(err).__name__)
        return {"ok": False, "error": f"the node could not explain the task: {err}"[:500]}
    return {"ok": True, "verdict": "allowed" if e.allowed else "refused",
            "reasons": e.reasons + [f"{w}: {o}" for w, o, _ in e.dry_runs if o != "accepted"],
            "dry_runs": [{"object": w, "outcome": o, "warnings": ws} for w, o, ws in e.dry_runs],
            "manifests": e.objects}


def render(e: Explanation, out: TextIO) -> None:
    if e.reasons:
        out.write("verdict: refused\n")
        for r in e.reasons:
            out.write(f"  - {r}\n")
        return
    for what, outcome, warnings in e.dry_runs:
        out.write(f"server dry run, {what}: {outcome}\n")
        for w in warnings:
            out.write(f"  warning: {w}\n")
    refused = [w for w, o, _ in e.dry_runs if o != "accepted"]
    out.write("verdict: allowed\n" if not refused else
              f"verdict: allowed by the node, refused by the cluster ({', '.join(refused)})\n")
    for obj in e.objects:
        out.write(f"--- # {obj['kind']} the node would create\n")
        yaml.safe_dump(obj, out, sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m node explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the node's configuration (YAML)")
    p.add_argument("task", help="the task's command payload (JSON file, - for standard input)")
    p.add_argument("--server-dry-run", action="store_true",
                   help="also submit the Job, NetworkPolicy and pod with dryRun=All")
    p.add_argument("--kubeconfig", help="kubeconfig for the cluster (default: the node's)")
    a = p.parse_args(argv)
    from node.config import load_config
    try:
        config = load_config(a.config)
    except NodeError as e:
        print(f"invalid node configuration {a.config}:\n{e}", file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if a.task == "-" else Path(a.task).read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"cannot read the task {a.task}: {e}", file=sys.stderr)
        return 2
    if a.kubeconfig:
        config = dataclasses.replace(config, kubernetes=dataclasses.replace(
            config.kubernetes, kubeconfig=a.kubeconfig))
    from node.cluster import Cluster, load_api_client
    from node.proxy_service import read_proxy_service
    try:
        cluster = Cluster(load_api_client(config), config.kubernetes.jobs_namespace,
                          config.completion.request_timeout_seconds)
        e = explain(raw, config, lambda: read_proxy_service(cluster, config),
                    cluster.dry_run_create if a.server_dry_run else None)
    except NodeError as err:
        print(f"cannot explain the task: {err}", file=sys.stderr)
        return 2
    render(e, sys.stdout)
    return 0 if e.allowed else 1
