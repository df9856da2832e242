"""The federated mean: a `central` run creates `partial` subtasks through the (fake) server API,
which runs the real partial code on each node's data; the result must equal the union's mean."""
from __future__ import annotations

import json
import math

import pytest
from .helpers import FakeApi, make_pod, run_algorithm, write_csv

NODE_DATA = {
    "node-a": [20, 30, 40],
    "node-b": [25.5, 35, 45, 55],
}


def csv_text(ages) -> str:
    return "Name,Age\n" + "".join(f"p{i},{age}\n" for i, age in enumerate(ages))


def partial_runner(api: FakeApi, root, node_csvs: dict):
    """Run each run of a subtask as the node would: the partial code on that node's database."""
    def on_task(task_id: int) -> None:
        task = api.tasks[task_id]
        body = next(c for c in api.created if c["id"] == task_id)
        for run_id in task["run_ids"]:
            node = api.runs[run_id]["node_id"]
            api.set_run(run_id, "active")
            p = make_pod(root / f"run-{run_id}", run_id=run_id, task_id=task_id, node_id=node,
                         databases={label: node_csvs[node] for label in body["databases"]})
            p.write_input(body["input"])
            proc = run_algorithm("algorithms.avg", p)
            if proc.returncode == 0:
                api.set_run(run_id, "completed", data=p.output_file.read_text(),
                            logs=proc.stderr)
            else:
                api.set_run(run_id, "failed", data=None, logs=proc.stderr)
    return on_task


@pytest.fixture
def node_csvs(tmp_path):
    return {node: write_csv(tmp_path / "data" / f"{node}.csv", csv_text(ages))
            for node, ages in NODE_DATA.items()}


def central_pod(tmp_path, api, server, token="tok-central"):
    parent = api.add_task(["node-a", "node-b"], token="tok-central")
    p = make_pod(tmp_path / "central", task_id=parent, run_id=100, token=token,
                 proxy_port=server.port, databases={"default": tmp_path / "unused.csv"})
    return parent, p


@pytest.mark.parametrize("list_results_in_task", [False, True])
def test_federated_mean_equals_mean_of_the_union(tmp_path, fake_server, node_csvs,
                                                 list_results_in_task):
    api = FakeApi(list_results_in_task=list_results_in_task)
    server = fake_server(api, partial_runner(api, tmp_path, node_csvs))
    parent, p = central_pod(tmp_path, api, server)
    p.env["PROGRESS_FILE"] = str(tmp_path / "progress.jsonl")
    p.write_input({"method": "central", "column": "Age", "timeout": 60})

    proc = run_algorithm("algorithms.avg", p)

    assert proc.returncode == 0, proc.stderr
    assert server.errors == []
    union = [age for ages in NODE_DATA.values() for age in ages]
    result = p.output_json()
    assert result["count"] == len(union) == 7
    assert result["nodes"] == 2
    assert math.isclose(result["mean"], sum(union) / len(union), rel_tol=1e-12)
    # One subtask of the central run's task, asking for partials on the same database.
    assert api.created == [{"image": "v6-demo/avg", "databases": ["default"],
                            "input": {"method": "partial", "column": "Age"},
                            "name": "avg partial of Age", "parent_id": parent,
                            "id": api.created[0]["id"]}]
    progress = [json.loads(line) for line in
                (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert progress[0]["progress"] == 0.0 and progress[-1]["progress"] == 1.0
    assert all(isinstance(line["message"], str) for line in progress)


def test_central_uses_the_given_image_and_database(tmp_path, fake_server, node_csvs):
    api = FakeApi()
    server = fake_server(api, partial_runner(api, tmp_path, node_csvs))
    _, p = central_pod(tmp_path, api, server)
    p.write_input({"method": "central", "column": "Age", "database": "hr",
                   "image": "registry.example/avg:2"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 0, proc.stderr
    assert api.created[0]["image"] == "registry.example/avg:2"
    assert api.created[0]["databases"] == ["hr"]
    assert api.created[0]["input"] == {"method": "partial", "column": "Age", "database": "hr"}
    assert p.output_json()["count"] == 7


def test_central_fails_clearly_when_a_partial_fails(tmp_path, fake_server, node_csvs):
    write_csv(node_csvs["node-b"], "Name,Age\nx,12\ny,old\n")
    api = FakeApi()
    server = fake_server(api, partial_runner(api, tmp_path, node_csvs))
    _, p = central_pod(tmp_path, api, server)
    p.write_input({"method": "central", "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 4
    assert "on node node-b: failed" in proc.stderr
    assert "value 'old' in column 'Age' is not a number" in proc.stderr
    assert "node-a" not in proc.stderr
    assert not p.output_file.exists()


def test_central_times_out_when_partials_never_finish(tmp_path, fake_server):
    api = FakeApi()
    server = fake_server(api)  # nobody runs the partials
    _, p = central_pod(tmp_path, api, server)
    p.write_input({"method": "central", "column": "Age", "timeout": 0.5})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 4
    assert "did not finish within 0.5s" in proc.stderr
    assert "on node-a: pending" in proc.stderr


def test_central_reports_a_refused_token(tmp_path, fake_server):
    api = FakeApi()
    server = fake_server(api)
    _, p = central_pod(tmp_path, api, server, token="not-the-token")
    p.write_input({"method": "central", "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 4
    assert "POST /task failed: HTTP 401: invalid token" in proc.stderr
    assert api.created == []
