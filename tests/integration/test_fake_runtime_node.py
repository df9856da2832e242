"""The real node, live channel on, against a cluster whose pods are all fake (``serve --runtime
fake``): the run completes, its Result arrives, and the node follows a real sidecar (hosted by
the fake runtime) — alive, its progress forwarded to the server."""
from __future__ import annotations

import pytest

from localcluster.stack import free_port, wait_for
from tests.integration.support import make_stack, node_spec
from tests.integration.test_live_channel import NodeEvents

# fake pods need no root: nothing is mounted, no namespace made
pytestmark = [pytest.mark.integration]


@pytest.fixture
def fake_stack(tmp_path):
    images = tmp_path / "fake-images.yaml"
    # the node makes the pods, so the fake behaviour comes from the image's registry entry
    images.write_text("images:\n  test/fake-steps: {fake: {delay: 3s, progress-steps: 4}}\n")
    pub = free_port()
    spec = node_spec("node-a", live={"enabled": True, "heartbeat_seconds": 0.2,
                                     "node_pub_port": pub})
    stack = make_stack(tmp_path, [spec], images=[images], runtime="fake")
    yield stack, pub
    stack.close()


def test_a_run_on_fake_pods_completes_and_its_sidecar_is_followed(fake_stack):
    stack, pub = fake_stack
    events = NodeEvents(pub)
    try:
        task = stack.create_task(image="test/fake-steps", input={}, databases=[],
                                 nodes=["node-a"])
        run = stack.wait_task(task["id"], timeout=90)["runs"][0]
        assert run["status"] == "completed", run
        assert run["result"]["data"] == ""  # a fake algorithm writes no output
        run_id = run["id"]
        assert "alive" in wait_for(lambda: events.health(run_id) or None, 10,
                                   "the node's health events of the run")
        view = stack.api("GET", f"/api/run/{run_id}").json()
        assert view["progress"] == {"seq": 4, "progress": 1.0, "message": "step 4 of 4"}
    finally:
        events.close()
    node_log = stack.procs["node-node-a"].log_text()
    assert f"run {run_id}: following its sidecar at 127." in node_log
    assert "unresponsive" not in node_log
    cluster_log = stack.cluster.stderr()
    assert "sidecar host started" in cluster_log
