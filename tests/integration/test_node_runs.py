"""The node end to end: tasks from the server run as Jobs on the local cluster and come back."""
from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import socketio

from localcluster.stack import DEMO_CSV, wait_for
from tests.integration.support import node_spec, pytestmark  # noqa: F401  (marks this module)


def mean_of(path: Path, column: str) -> float:
    with open(path, newline="") as f:
        values = [float(row[column]) for row in csv.DictReader(f)]
    return sum(values) / len(values)


def write_csv(path: Path, ages: list[int]) -> Path:
    path.write_text("Name,Age\n" + "".join(f"p{i},{a}\n" for i, a in enumerate(ages)))
    return path


def run_of(stack, task: dict) -> dict:
    return stack.api("GET", f"/api/run/{task['runs'][0]['id']}").json()


def statuses(run: dict) -> list[str]:
    return [h["status"] for h in run["history"]]


def researcher_socket(stack) -> socketio.SimpleClient:
    client = socketio.SimpleClient()
    client.connect(stack.server_url, auth={"api_key": stack.researcher_key},
                   transports=["websocket"])
    return client


def send_legacy(client: socketio.SimpleClient, payload: dict) -> None:
    """As the emitter does: wait for the server's acknowledgement (a bare emit followed by a
    disconnect may never leave the client)."""
    ack = client.call("command_request", payload, timeout=10)
    assert ack.get("ok"), ack


def prototype_payload(run_id: int, **overrides) -> dict:
    payload = {
        "run_id": run_id,
        "task_info": {"arg1": "/app/input/csv/default", "arg2": "Age",
                      "arg3": "/app/output/avg.txt"},
        "image": "v6-demo/avg",
        "docker_input": "input1",
        "tmp_vol_name": "example-tmp-vol",
        "token": "example_token",
        "databases_to_use": ["default"],
        "target_nodes": ["node-a"],
    }
    payload.update(overrides)
    return payload


def wait_legacy_result(stack, run_id: int, timeout: float = 60) -> dict:
    def done():
        resp = stack.api("GET", f"/api/task/{run_id}")
        if resp.status_code != 200:
            return None
        runs = resp.json()["runs"]
        return runs[0] if runs and runs[0].get("result") else None
    return wait_for(done, timeout, f"legacy run {run_id}", interval=0.2)


# -- happy paths -----------------------------------------------------------------------------

def test_rich_task_completes_with_the_mean(shared_stack):
    task = shared_stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                                    databases=["default"], nodes=["node-a"])
    run = shared_stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "completed", run
    assert json.loads(run["result"]["data"])["mean"] == pytest.approx(mean_of(DEMO_CSV, "Age"))
    history = statuses(run)
    assert history[0] == "pending" or "pending" in history
    assert history[-1] == "completed"


def test_prototype_payload_completes_with_the_mean(shared_stack):
    client = researcher_socket(shared_stack)
    try:
        send_legacy(client, prototype_payload(910001))
    finally:
        client.disconnect()
    run = wait_legacy_result(shared_stack, 910001)
    assert run["status"] == "completed", run
    assert float(run["result"]["data"]) == pytest.approx(mean_of(DEMO_CSV, "Age"))


def test_bad_payload_is_refused_and_the_next_good_one_runs(shared_stack):
    client = researcher_socket(shared_stack)
    try:
        send_legacy(client, prototype_payload(910002, databases_to_use=["../etc"]))
        send_legacy(client, prototype_payload(910003, image="evil/miner"))
        send_legacy(client, prototype_payload(910004))
    finally:
        client.disconnect()
    bad_label = wait_legacy_result(shared_stack, 910002)
    bad_image = wait_legacy_result(shared_stack, 910003)
    good = wait_legacy_result(shared_stack, 910004)
    assert bad_label["status"] == "failed"  # malformed: a label with a path in it
    assert "../etc" in bad_label["result"]["logs"]
    assert bad_image["status"] == "not allowed"
    assert "evil/miner" in bad_image["result"]["logs"]
    assert good["status"] == "completed"
    assert float(good["result"]["data"]) == pytest.approx(mean_of(DEMO_CSV, "Age"))


# -- every status from a scenario that causes it ----------------------------------------------

def test_unknown_image_fails_fast_as_non_existing_image(shared_stack):
    task = shared_stack.create_task(image="v6-demo/no-such-image", input={}, databases=[],
                                    nodes=["node-a"])
    run = shared_stack.wait_task(task["id"], timeout=30)["runs"][0]
    assert run["status"] == "non-existing Docker image"
    assert "ImagePull" in run["result"]["logs"] or "ErrImagePull" in run["result"]["logs"]


def test_algorithm_error_is_crashed_with_its_logs(shared_stack):
    task = shared_stack.create_task(image="v6-demo/avg",
                                    input={"method": "avg", "column": "NoSuchColumn"},
                                    databases=["default"], nodes=["node-a"])
    run = shared_stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "crashed"
    assert "NoSuchColumn" in run["result"]["logs"]


def test_image_not_on_the_allow_list_is_not_allowed(shared_stack):
    task = shared_stack.create_task(image="docker.io/someone/miner", input={},
                                    databases=["default"], nodes=["node-a"])
    run = shared_stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "not allowed"
    assert "someone/miner" in run["result"]["logs"]


def test_unknown_database_is_not_allowed(shared_stack):
    task = shared_stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                                    databases=["nosuchdb"], nodes=["node-a"])
    run = shared_stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "not allowed"
    assert "nosuchdb" in run["result"]["logs"]


def test_long_run_goes_through_pending_initializing_active(shared_stack):
    task = shared_stack.create_task(image="test/sleeper", input={"seconds": 1.5}, databases=[],
                                    nodes=["node-a"])
    run = shared_stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "completed"
    assert run["result"]["data"] == "done"
    history = statuses(run)
    assert history.index("pending") < history.index("initializing") < history.index("active") \
        < history.index("completed")


def test_output_larger_than_allowed_fails(stack_factory):
    stack = stack_factory([node_spec("node-a", output={"max_bytes": 1000})])
    task = stack.create_task(image="test/big-output", input={"bytes": 5000}, databases=[],
                             nodes=["node-a"])
    run = stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "failed"
    assert "5000 bytes" in run["result"]["logs"]
    assert run["result"]["data"] == ""


def test_missing_database_file_is_start_failed(stack_factory, tmp_path):
    db = write_csv(tmp_path / "gone.csv", [1, 2, 3])
    stack = stack_factory([node_spec("node-a", [{"label": "default", "uri": str(db),
                                                 "type": "csv"}])])
    db.unlink()
    task = stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                             databases=["default"], nodes=["node-a"])
    run = stack.wait_task(task["id"], timeout=60)["runs"][0]
    assert run["status"] == "start failed"
    assert "gone.csv" in run["result"]["logs"]


def test_job_deleted_outside_the_node_ends_the_run_as_failed(shared_stack):
    from kubernetes import client, config
    task = shared_stack.create_task(image="test/sleeper", input={"seconds": 60}, databases=[],
                                    nodes=["node-a"])
    run_id = task["runs"][0]["id"]
    wait_for(lambda: "active" in statuses(run_of(shared_stack, task)), 30, "the run to be active")
    api = config.new_client_from_config(config_file=str(shared_stack.kubeconfig))
    try:
        client.BatchV1Api(api).delete_namespaced_job(
            f"v6-run-{run_id}-node-a", "v6-jobs", propagation_policy="Background")
    finally:
        api.close()
    run = shared_stack.wait_task(task["id"], timeout=30)["runs"][0]
    assert run["status"] == "failed"
    assert "deleted" in run["result"]["logs"]


def test_job_failed_for_a_reason_the_node_does_not_know_is_unknown_error(shared_stack):
    """Another controller (or a newer Kubernetes) fails the Job with a reason the node's tables
    lack: the node says it does not know, with Kubernetes' words, instead of guessing."""
    from kubernetes import client, config
    task = shared_stack.create_task(image="test/sleeper", input={"seconds": 60}, databases=[],
                                    nodes=["node-a"])
    run_id = task["runs"][0]["id"]
    wait_for(lambda: "active" in statuses(run_of(shared_stack, task)), 30, "the run to be active")
    api = config.new_client_from_config(config_file=str(shared_stack.kubeconfig))
    try:
        batch = client.BatchV1Api(api)
        job = batch.read_namespaced_job_status(f"v6-run-{run_id}-node-a", "v6-jobs")
        now = job.status.start_time
        job.status.conditions = (job.status.conditions or []) + [client.V1JobCondition(
            type="Failed", status="True", reason="MaxFailedIndexesExceeded",
            message="Job has exceeded the specified maximal number of failed indexes",
            last_probe_time=now, last_transition_time=now)]
        batch.replace_namespaced_job_status(f"v6-run-{run_id}-node-a", "v6-jobs", job)
    finally:
        api.close()
    run = shared_stack.wait_task(task["id"], timeout=30)["runs"][0]
    assert run["status"] == "unknown error"
    assert "MaxFailedIndexesExceeded" in run["result"]["logs"]


# -- isolation between nodes ----------------------------------------------------------------------

def test_two_nodes_in_one_namespace_never_see_each_others_runs(stack_factory, tmp_path):
    a = write_csv(tmp_path / "a.csv", [10, 20, 30])
    b = write_csv(tmp_path / "b.csv", [100, 300])
    stack = stack_factory([
        node_spec("node-a", [{"label": "default", "uri": str(a), "type": "csv"}]),
        node_spec("node-b", [{"label": "default", "uri": str(b), "type": "csv"}]),
    ])
    task = stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                             databases=["default"], nodes=["node-a", "node-b"])
    runs = {r["node_id"]: r for r in stack.wait_task(task["id"])["runs"]}
    assert json.loads(runs["node-a"]["result"]["data"])["mean"] == pytest.approx(20)
    assert json.loads(runs["node-b"]["result"]["data"])["mean"] == pytest.approx(200)
    for me, other in (("node-a", "node-b"), ("node-b", "node-a")):
        text = stack.procs[f"node-{me}"].log_text()
        assert f"run {runs[other]['id']}" not in text
        assert f"run {runs[me]['id']}" in text


# -- restarts and outages -------------------------------------------------------------------------

def test_node_killed_mid_run_reports_the_run_exactly_once(stack_factory):
    stack = stack_factory([node_spec("node-a")])
    task = stack.create_task(image="test/sleeper", input={"seconds": 3}, databases=[],
                             nodes=["node-a"])
    run_id = task["runs"][0]["id"]
    wait_for(lambda: "active" in statuses(run_of(stack, task)), 30, "the run to be active")
    stack.stop_node("node-a", sig=signal.SIGKILL)
    stack.start_node("node-a")
    run = stack.wait_task(task["id"], timeout=60)["runs"][0]
    assert run["status"] == "completed"
    assert run["result"]["data"] == "done"
    log = (stack.workdir / "logs" / "node-node-a.log").read_text()
    assert log.count(f"result of run {run_id} delivered") == 1
    assert "already stored" not in log
    assert log.count(f"run {run_id} (task") == 1  # accepted once, adopted after the restart


def test_result_produced_while_the_server_is_down_arrives_later(stack_factory):
    from kubernetes import client, config
    stack = stack_factory([node_spec("node-a")])
    task = stack.create_task(image="test/sleeper", input={"seconds": 1}, databases=[],
                             nodes=["node-a"])
    run_id = task["runs"][0]["id"]
    wait_for(lambda: "active" in statuses(run_of(stack, task)), 30, "the run to be active")
    stack.procs.pop("server").stop()
    api = config.new_client_from_config(config_file=str(stack.kubeconfig))
    batch = client.BatchV1Api(api)
    try:
        # the node deletes the Job once the result is safe in its outbox
        wait_for(lambda: not batch.list_namespaced_job(
            "v6-jobs", label_selector=f"v6.run-id={run_id}").items, 60, "the job to be cleaned up")
    finally:
        api.close()
    stack.restart_server()
    run = stack.wait_task(task["id"], timeout=60)["runs"][0]
    assert run["status"] == "completed"
    assert run["result"]["data"] == "done"


# -- kill ------------------------------------------------------------------------------------------

def test_kill_stops_a_running_task_and_reports_killed(shared_stack):
    from kubernetes import client, config
    task = shared_stack.create_task(image="test/sleeper", input={"seconds": 60}, databases=[],
                                    nodes=["node-a"])
    run_id = task["runs"][0]["id"]
    api = config.new_client_from_config(config_file=str(shared_stack.kubeconfig))
    core = client.CoreV1Api(api)

    def started():
        pods = core.list_namespaced_pod("v6-jobs", label_selector=f"v6.run-id={run_id}").items
        try:
            return pods and "sleeper started" in core.read_namespaced_pod_log(
                pods[0].metadata.name, "v6-jobs")
        except client.ApiException:  # 400 while the container is still being created
            return False
    try:
        wait_for(started, 30, "the algorithm to start")
        answer = shared_stack.api("POST", f"/api/task/{task['id']}/kill").json()
        assert answer["nodes"]["node-a"]["killed"] == [run_id], answer
        run = shared_stack.wait_task(task["id"], timeout=30)["runs"][0]
        assert run["status"] == "killed by user"
        assert "sleeper started" in run["result"]["logs"]
        assert run["result"]["data"] == ""  # cut short: the sleeper never wrote its output
        wait_for(lambda: not client.CoreV1Api(api).list_namespaced_pod(
            "v6-jobs", label_selector=f"v6.run-id={run_id}").items, 30, "the pod to be gone")
    finally:
        api.close()


def test_killing_a_finished_task_changes_nothing(shared_stack):
    task = shared_stack.create_task(image="test/sleeper", input={"seconds": 0}, databases=[],
                                    nodes=["node-a"])
    assert shared_stack.wait_task(task["id"])["runs"][0]["status"] == "completed"
    answer = shared_stack.api("POST", f"/api/task/{task['id']}/kill").json()
    # the server asks only nodes with unfinished runs; the node's own answer for a finished
    # run is covered in tests/node/test_agent_kill.py
    assert answer["nodes"] == {}, answer
    run = run_of(shared_stack, task)
    assert run["status"] == "completed"
    assert run["result"]["data"] == "done"


# -- polling fallback ---------------------------------------------------------------------------------

def test_poll_mode_completes_too(stack_factory):
    stack = stack_factory([node_spec("node-a", completion={"mode": "poll",
                                                           "poll_interval_seconds": 0.2})])
    task = stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                             databases=["default"], nodes=["node-a"])
    run = stack.wait_task(task["id"])["runs"][0]
    assert run["status"] == "completed"
    assert json.loads(run["result"]["data"])["mean"] == pytest.approx(mean_of(DEMO_CSV, "Age"))
