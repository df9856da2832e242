"""Provenance: the pieces from real API objects (tests/node/fixtures), pin on first use as the
agent applies it, and the record a Result carries."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from node.ledger import Ledger
from node.objects import JOB_FACTS, slim, slim_item
from node.pins import pin_key
from node.policy_view import PolicyView
from node.provenance import (canonical_hash, container_facts, image_digest, policies_hash,
                             selecting_policies, selector_matches)
from tests.reliability.harness import Harness, _event

FIXTURES = Path(__file__).parent / "fixtures"
HEX = "4c1f0d7e0b5e8a2f3d9c6b1a7e4f2d8c9b0a1e3f5d7c9b2a4e6f8d0c1b3a5e7f"
OTHER = "9" * 64


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


@pytest.mark.parametrize("image_id, digest", [
    (f"docker.io/v6-demo/avg@sha256:{HEX}", f"sha256:{HEX}"),      # containerd, pulled
    (f"sha256:{HEX}", f"sha256:{HEX}"),                             # containerd, imported
    (f"docker-pullable://v6-demo/avg@sha256:{HEX}", f"sha256:{HEX}"),  # dockershim
    (f"docker://sha256:{HEX}", f"sha256:{HEX}"),
    ("", None), (None, None), ("v6-demo/avg:1", None), (f"sha256:{HEX[:-1]}", None),
    (f"sha512:{HEX}{HEX}", None),
])
def test_image_digest_from_every_image_id_form(image_id, digest):
    assert image_digest(image_id) == digest


def test_container_facts_of_a_succeeded_pod():
    pod = fixture("pod-succeeded")
    facts = container_facts([pod], "algorithm")
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "algorithm")
    assert facts.image_id == status["imageID"]
    assert facts.started_at == status["state"]["terminated"]["startedAt"]
    assert facts.finished_at == status["state"]["terminated"]["finishedAt"]
    assert facts.exit_code == 0


def test_container_facts_of_a_running_and_a_pending_pod():
    running = container_facts([fixture("pod-running")], "algorithm")
    assert running.image_id and running.started_at and running.finished_at is None
    assert running.exit_code is None
    assert container_facts([fixture("pod-pending")], "algorithm").image_id is None
    assert container_facts([], "algorithm").image_id is None


def test_failed_pod_has_its_exit_code():
    assert container_facts([fixture("pod-failed-exit3")], "algorithm").exit_code == 3


LABELS = {"app.kubernetes.io/managed-by": "v6-node", "v6.node-id": "node-a", "v6.run-id": "1"}


@pytest.mark.parametrize("selector, selects", [
    ({}, True),
    ({"matchLabels": {"v6.node-id": "node-a"}}, True),
    ({"matchLabels": {"v6.node-id": "node-b"}}, False),
    ({"matchExpressions": [{"key": "v6.node-id", "operator": "In", "values": ["node-a"]}]}, True),
    ({"matchExpressions": [{"key": "v6.node-id", "operator": "NotIn", "values": ["node-a"]}]}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["x"]}]}, True),
    ({"matchExpressions": [{"key": "v6.run-id", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "v6.run-id", "operator": "DoesNotExist"}]}, False),
    ({"matchExpressions": [{"key": "v6.run-id", "operator": "Gt", "values": ["0"]}]}, False),
    (None, False),
])
def test_label_selectors(selector, selects):
    assert selector_matches(selector, LABELS) is selects


def policy(name, selector, namespace="v6-jobs", rv="5"):
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
            "spec": {"podSelector": selector, "policyTypes": ["Egress"]}}


def test_policies_selecting_a_pod_and_their_hash():
    deny = policy("default-deny", {})
    ours = policy("v6-node-a", {"matchLabels": {"v6.node-id": "node-a"}})
    other = policy("v6-node-b", {"matchLabels": {"v6.node-id": "node-b"}})
    elsewhere = policy("deny", {}, namespace="v6-node")
    records = selecting_policies([ours, other, deny, elsewhere], "v6-jobs", LABELS)
    assert [r["name"] for r in records] == ["default-deny", "v6-node-a"]
    assert records[1]["sha256"] == canonical_hash(ours["spec"])
    combined = policies_hash(records)
    changed = copy.deepcopy(ours)
    changed["spec"]["policyTypes"] = ["Ingress", "Egress"]
    assert policies_hash(selecting_policies([deny, changed], "v6-jobs", LABELS)) != combined
    assert policies_hash([]) is None


def test_the_policy_view_follows_the_watch():
    view = PolicyView("v6-jobs")
    assert view.selecting(LABELS) is None  # not listed yet: unknown, not "none"
    view.sink(("sync", "networkpolicies", [policy("a", {})]))
    assert [r["name"] for r in view.selecting(LABELS)] == ["a"]
    view.sink(("event", "networkpolicies", _event("ADDED", policy("b", {}))))
    view.sink(("event", "networkpolicies", _event("DELETED", policy("a", {}))))
    assert [r["name"] for r in view.selecting(LABELS)] == ["b"]


def test_slim_job_keeps_the_hash_of_its_spec_and_its_image():
    job = fixture("job-active")
    kept = slim(job)
    assert "spec" not in kept
    assert kept[JOB_FACTS]["spec_sha256"] == canonical_hash(job["spec"])
    image = next(c["image"] for c in job["spec"]["template"]["spec"]["containers"]
                 if c["name"] == "algorithm")
    assert kept[JOB_FACTS]["image"] == image
    assert JOB_FACTS not in slim(fixture("pod-running"))


@pytest.mark.parametrize("image, key", [
    ("v6-demo/avg", "v6-demo/avg:latest"), ("v6-demo/avg:1.2", "v6-demo/avg:1.2"),
    ("localhost:5000/avg", "localhost:5000/avg:latest"),
    ("localhost:5000/avg:2", "localhost:5000/avg:2"),
    (f"v6-demo/avg@sha256:{HEX}", None), (f"v6-demo/avg:1@sha256:{HEX}", None),
])
def test_pin_key(image, key):
    assert pin_key(image) == key


def test_pins_survive_a_restart_and_the_first_pin_wins(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.pin("a:1", f"sha256:{HEX}", 1).run_id == 1
    assert ledger.pin("a:1", f"sha256:{OTHER}", 2).digest == f"sha256:{HEX}"
    ledger.close()
    ledger = Ledger(tmp_path / "l.sqlite")
    assert [(p.image, p.digest, p.run_id) for p in ledger.pins()] == [("a:1", f"sha256:{HEX}", 1)]
    assert ledger.forget_pin("a:1") and not ledger.forget_pin("a:1")
    assert ledger.pins() == []
    ledger.close()


# --- the agent -------------------------------------------------------------------------------

def rich(run_id: int, image: str = "v6-demo/avg") -> dict:
    return {"run_id": run_id, "task_id": run_id, "image": image, "databases": [],
            "token": "t0ken-for-tests", "input": {"method": "avg"}}


def pod_of(run_id: int, name: str, digest_hex: str) -> dict:
    """The recorded running pod, as run `run_id`'s, with the kubelet reporting `digest_hex`."""
    pod = fixture(name)
    pod["metadata"]["labels"]["v6.run-id"] = str(run_id)
    pod["metadata"]["name"] = f"v6-run-{run_id}-node-a-abcde"
    for cs in pod["status"]["containerStatuses"]:
        if cs["name"] == "algorithm":
            cs["imageID"] = f"docker.io/v6-demo/avg@sha256:{digest_hex}"
    return pod


def seen(h: Harness, kind: str, obj: dict, etype: str = "MODIFIED") -> None:
    """As the watcher delivers it: slimmed (and a pod is in the cluster, where a re-read finds it)."""
    if kind == "pods":
        h.cluster.pods[obj["metadata"]["name"]] = copy.deepcopy(obj)
    h.agent._handle(slim_item(("event", kind, _event(etype, obj))))


def start(h: Harness, run_id: int, image: str = "v6-demo/avg") -> None:
    h.command(rich(run_id, image))
    seen(h, "jobs", h.cluster.get_job(f"v6-run-{run_id}-node-a"), "ADDED")


@pytest.fixture
def pinned(tmp_path):
    h = Harness(tmp_path, images={"allowed": ["v6-demo/*"], "digest": "pin"})
    yield h
    h.close()


def test_pin_on_first_use_refuses_a_tag_that_names_other_content(pinned):
    h = pinned
    start(h, 1)
    seen(h, "pods", pod_of(1, "pod-running", HEX))
    assert [(p.image, p.digest, p.run_id) for p in h.ledger.pins()] == [
        ("v6-demo/avg:latest", f"sha256:{HEX}", 1)]
    h.complete(1, output="first")
    assert h.results()[1]["status"] == "completed" and h.results()[1]["data"] == "first"
    assert h.results()[1]["provenance"]["pin"] == f"sha256:{HEX}"

    start(h, 2)   # same tag, same content: runs
    seen(h, "pods", pod_of(2, "pod-running", HEX))
    assert 2 not in h.results()

    start(h, 3)   # the tag was rebuilt
    out = Path(h.workspace.paths(3).output) / "output"
    out.write_text("must not leave the node")
    seen(h, "pods", pod_of(3, "pod-running", OTHER))
    result = h.results()[3]
    assert result["status"] == "not allowed"
    assert f"sha256:{HEX}" in result["logs"] and f"sha256:{OTHER}" in result["logs"]
    assert "python -m node pins" in result["logs"]
    assert result["data"] == ""
    assert "v6-run-3-node-a" not in h.cluster.jobs  # stopped
    assert result["provenance"]["image_digest"] == f"sha256:{OTHER}"
    assert result["provenance"]["pin"] == f"sha256:{HEX}"


def test_an_image_given_by_digest_is_never_pinned(pinned):
    h = pinned
    start(h, 1, f"v6-demo/avg@sha256:{HEX}")
    seen(h, "pods", pod_of(1, "pod-running", OTHER))
    assert h.ledger.pins() == [] and 1 not in h.results()


def test_without_the_pin_policy_nothing_is_pinned(tmp_path):
    h = Harness(tmp_path)
    try:
        start(h, 1)
        seen(h, "pods", pod_of(1, "pod-running", HEX))
        assert h.ledger.pins() == []
    finally:
        h.close()


def test_a_result_carries_its_provenance(pinned):
    h = pinned
    start(h, 4)
    pod = pod_of(4, "pod-succeeded", HEX)
    seen(h, "pods", pod)
    job = h.cluster.get_job("v6-run-4-node-a")
    h.complete(4)
    p = h.results()[4]["provenance"]
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "algorithm")
    assert p["node_id"] == "node-a" and p["node_version"]
    assert p["image"] == "v6-demo/avg" and p["image_digest"] == f"sha256:{HEX}"
    assert p["job_spec_sha256"] == canonical_hash(job["spec"])
    assert p["exit_code"] == 0
    assert (p["started_at"], p["finished_at"]) == (status["state"]["terminated"]["startedAt"],
                                                   status["state"]["terminated"]["finishedAt"])
    # no sidecar facts reached the node: said so, never passed
    assert p["isolation"]["outcome"] == "not run"
    assert p["usage"]["available"] is False
    json.dumps(p)  # plain JSON, as it goes on the wire


def test_pins_command_lists_and_forgets(tmp_path):
    h = Harness(tmp_path)
    h.ledger.pin("v6-demo/avg:latest", f"sha256:{HEX}", 1)
    h.close()
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({
        "node_id": "node-a", "api_key": "k", "server_url": "http://127.0.0.1:9",
        "task_dir": str(tmp_path / "tasks"), "databases": [],
        "images": {"allowed": ["v6-demo/*"]}}))
    def pins(*args):
        return subprocess.run([sys.executable, "-m", "node", "pins", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=60)
    listed = pins()
    assert listed.returncode == 0, listed.stderr
    assert f"v6-demo/avg:latest  sha256:{HEX}  run 1" in listed.stdout
    assert pins("--forget", "v6-demo/avg").returncode == 0
    again = pins("--forget", "v6-demo/avg")
    assert again.returncode == 1 and "not pinned" in again.stderr
    assert pins().stdout == ""


# --- the sidecar's isolation probe, as Finishing acts on it -----------------------------------

class SidecarFacts:
    """The live channel's side Finishing reads: what each run's sidecar reported."""

    def __init__(self) -> None:
        self.by_run: dict[int, dict] = {}

    def facts(self, run_id: int, wait: float = 0.0) -> dict | None:
        return self.by_run.get(run_id)

    def run_status(self, *a) -> None: ...
    def pod_event(self, *a) -> None: ...
    def run_finished(self, *a) -> None: ...


def probed(reachable: bool) -> dict:
    """A real probe's outcome from this process: the proxy a loopback HTTP answer, and a
    "blocked" address that is a listening loopback socket (reachable) or a closed port."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from node.isolation_probe import ProbeSettings, run_probe

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    listener = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        port = listener.getsockname()[1] if reachable else closed_port
        settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(server.server_port),
                                 blocked=(f"127.0.0.1:{port}",), dns_name="no.such.name.test",
                                 timeout=1.0)

        def resolve(host, *a, **kw):  # nothing is ever looked up for real
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return run_probe(settings, resolve=resolve)
    finally:
        listener.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("policy", ["fail", "report"])
def test_a_run_whose_probe_failed_is_never_plain_success(tmp_path, policy):
    h = Harness(tmp_path, live={"enabled": True, "on_isolation_failure": policy})
    try:
        side = h.agent.finishing.live = SidecarFacts()
        outcome = probed(reachable=True)
        assert outcome["outcome"] == "failed"
        side.by_run[5] = {"isolation": outcome}
        start(h, 5)
        seen(h, "pods", pod_of(5, "pod-succeeded", HEX))
        h.complete(5, output="the algorithm's answer")
        r = h.results()[5]
        assert r["provenance"]["isolation"] == outcome
        assert "[node] isolation probe failed: blocked 127.0.0.1:" in r["logs"]
        assert "connected" in r["logs"]
        if policy == "fail":
            assert r["status"] == "failed" and r["data"] == ""  # output withheld
        else:
            assert r["status"] == "completed" and r["data"] == "the algorithm's answer"
    finally:
        h.close()


def test_a_run_whose_probe_passed_says_so_with_its_checks(tmp_path):
    h = Harness(tmp_path, live={"enabled": True})
    try:
        side = h.agent.finishing.live = SidecarFacts()
        outcome = probed(reachable=False)
        assert outcome["outcome"] == "passed"
        usage = {"available": True, "scope": "pod", "cpu_seconds": 0.5, "memory_peak_bytes": 1 << 20}
        side.by_run[6] = {"isolation": outcome, "usage": usage}
        start(h, 6)
        seen(h, "pods", pod_of(6, "pod-succeeded", HEX))
        h.complete(6, output="ok")
        r = h.results()[6]
        assert r["status"] == "completed" and r["data"] == "ok"
        assert r["provenance"]["isolation"] == outcome and r["provenance"]["usage"] == usage
        names = [c["name"] for c in outcome["checks"]]
        assert names[0] == "proxy" and names[1].startswith("blocked 127.0.0.1:") and names[2] == "dns"
        assert "isolation probe failed" not in r["logs"]
    finally:
        h.close()
