"""`python -m node explain`: the verdict with every reason, the exact manifests, and a server dry
run that shows an admission refusal before anything exists."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid

import kubernetes
import pytest
import yaml

from localcluster.testing import LocalCluster
from node.explain import explain, pod_of, render, warning_text
from node.manifests import build_job, build_network_policy
from node.models import parse_command, refusal_reasons

from .test_manifests import PROXY, make_config, rich

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_every_reason_is_given_not_only_the_first():
    config = make_config(job={"deadline_seconds": 600})
    raw = rich(image="evil/miner:latest", databases=["default", "nope", "gone"],
               deadline_seconds=3600)
    reasons = refusal_reasons(raw, config)
    assert reasons == [
        "run 7: image 'evil/miner:latest' is not on this node's allow-list",
        "run 7: deadline_seconds 3600 is more than this node allows (600)",
        "run 7: database 'nope' is not available on this node",
        "run 7: database 'gone' is not available on this node"]
    assert refusal_reasons(rich(), config) == []
    assert refusal_reasons([1], config) == ["payload must be a JSON object, got list"]


def test_an_allowed_task_shows_the_exact_manifests_and_never_the_token():
    config = make_config()
    raw = rich(token="s3cret-token-value")
    e = explain(raw, config, lambda: PROXY)
    assert e.allowed and e.reasons == []
    cmd = parse_command(raw, config)
    assert e.objects == [build_job(cmd, config, PROXY), build_network_policy(config, PROXY)]
    out = io.StringIO()
    render(e, out)
    text = out.getvalue()
    assert text.startswith("verdict: allowed\n")
    assert list(yaml.safe_load_all(text.split("\n", 1)[1])) == e.objects
    assert "s3cret-token-value" not in text


def test_a_refused_task_builds_nothing_and_says_why():
    e = explain(rich(image="evil/miner"), make_config(), lambda: pytest.fail("no proxy needed"))
    assert not e.allowed and e.objects == []
    out = io.StringIO()
    render(e, out)
    assert out.getvalue() == ("verdict: refused\n"
                              "  - run 7: image 'evil/miner' is not on this node's allow-list\n")


def test_warning_headers_are_shown_as_their_text():
    assert warning_text('299 - "would violate \\"x\\": y"') == 'would violate "x": y'
    assert warning_text("not a warn-value") == "not a warn-value"


def test_the_dry_run_pod_is_the_one_the_job_controller_would_make():
    job = build_job(parse_command(rich(), make_config()), make_config(), PROXY)
    pod = pod_of(job)
    assert pod["spec"] == job["spec"]["template"]["spec"]
    assert pod["metadata"]["generateName"] == job["metadata"]["name"] + "-"
    assert pod["metadata"]["labels"]["job-name"] == job["metadata"]["name"]


@pytest.mark.integration
def test_server_dry_run_shows_the_admission_refusal_and_creates_nothing(tmp_path):
    """A hostPath database task against a jobs namespace that enforces restricted."""
    ns = "x-" + uuid.uuid4().hex[:8]
    with LocalCluster() as lc:
        api = lc.api_client()
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        core.create_namespace({"metadata": {"name": "v6-node"}})
        core.create_namespaced_service("v6-node", {
            "metadata": {"name": "v6-proxy"},
            "spec": {"clusterIP": "127.0.0.1", "ports": [{"port": 8080, "targetPort": 8080}]}})
        data = tmp_path / "data.csv"
        data.write_text("age\n1\n")
        config = tmp_path / "node.yaml"
        config.write_text(yaml.safe_dump({
            "node_id": "node-a", "api_key": "k", "server_url": "http://127.0.0.1:5000",
            "task_dir": str(tmp_path / "tasks"),
            "databases": [{"label": "default", "uri": str(data), "type": "csv"}],
            "images": {"allowed": ["v6-demo/*"]},
            "kubernetes": {"kubeconfig": str(lc.kubeconfig), "jobs_namespace": ns},
            "proxy": {"host": "v6-proxy.v6-node.svc.cluster.local", "port": 8080,
                      "namespace": "v6-node", "service": "v6-proxy"}}))
        task = tmp_path / "task.json"
        task.write_text(json.dumps(rich(image="v6-demo/avg:1.0", databases=["default"])))
        run = subprocess.run([sys.executable, "-m", "node", "explain", "--config", str(config),
                              str(task), "--server-dry-run"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 1, run.stderr
        lines = run.stdout.splitlines()
        assert lines[0] == "server dry run, Job: accepted"
        assert lines[1] == ('  warning: would violate PodSecurity "restricted:latest": restricted '
                            'volume types (volumes "task", "output", "tmp", "db-0" use restricted '
                            'volume type "hostPath")')
        pod_line = next(line for line in lines if line.startswith("server dry run, Pod of the Job"))
        assert 'refused: dry-run create pod v6-run-' in pod_line
        assert 'violates PodSecurity "restricted:latest": restricted volume types' in pod_line
        assert "verdict: allowed by the node, refused by the cluster (Pod of the Job)" in lines
        shown = list(yaml.safe_load_all(run.stdout.split("verdict:", 1)[1].split("\n", 1)[1]))
        assert [o["kind"] for o in shown] == ["Job", "NetworkPolicy"]
        batch = kubernetes.client.BatchV1Api(api)
        net = kubernetes.client.NetworkingV1Api(api)
        assert batch.list_namespaced_job(ns).items == []
        assert core.list_namespaced_pod(ns).items == []
        assert net.list_namespaced_network_policy(ns).items == []
