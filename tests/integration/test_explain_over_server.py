"""A researcher's dry run through the server (`command_emitter explain`): each node answers what
it would do with the task, from its own configuration and cluster, and nothing is created."""
from __future__ import annotations

import json
import subprocess
import sys

import kubernetes
import requests

from localcluster.stack import JOBS_NAMESPACE, REPO
from tests.integration.support import pytestmark  # noqa: F401  (marks this module)


def _explain(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dummy_server.command_emitter", "--server", stack.server_url,
         "--key", stack.researcher_key, "explain", *args], cwd=REPO, capture_output=True,
        text=True, timeout=60)


def test_a_dry_run_through_the_server_answers_per_node_and_creates_nothing(shared_stack):
    stack = shared_stack
    ok = _explain(stack, "--image", "v6-demo/avg", "--db", "default", "--node", "node-a",
                  "--format", "json")
    assert ok.returncode == 0, ok.stdout[:1500]
    answer = json.loads(ok.stdout)["node-a"]
    assert answer["ok"] and answer["verdict"] == "allowed" and answer["reasons"] == []
    assert [m["kind"] for m in answer["manifests"]] == ["Job", "NetworkPolicy"]
    assert [(d["object"], d["outcome"]) for d in answer["dry_runs"]] == [
        ("Job", "accepted"), ("NetworkPolicy", "accepted")]
    assert "dry-run-not-a-token" not in ok.stdout  # the placeholder token is in no manifest

    refused = _explain(stack, "--image", "evil/miner", "--db", "default", "--db", "nope",
                       "--node", "node-a")
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[:3] == [
        "node node-a: refused",
        "  - run 1: image 'evil/miner' is not on this node's allow-list",
        "  - run 1: database 'nope' is not available on this node"]

    api = kubernetes.config.new_client_from_config(config_file=str(stack.kubeconfig))
    try:
        jobs = kubernetes.client.BatchV1Api(api).list_namespaced_job(
            JOBS_NAMESPACE, label_selector="v6.run-id=1")
        assert jobs.items == []
    finally:
        api.close()
    # and the server stored no task (this module's stack has run none)
    got = requests.get(f"{stack.server_url}/api/task/1", timeout=10,
                       headers={"Authorization": f"Bearer {stack.researcher_key}"})
    assert got.status_code == 404
