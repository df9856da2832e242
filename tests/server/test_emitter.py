"""The command emitter as a real process against a real server, with fake nodes answering."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dummy_server.testing import REPO, RESEARCHER_KEYS, answer, wait_until

pytestmark = pytest.mark.integration


def emit(server, *args, key=RESEARCHER_KEYS["alice"], timeout=60):
    env = {**os.environ, "PYTHONPATH": str(REPO), "V6_SERVER_URL": server.url,
           "V6_RESEARCHER_KEY": key}
    return subprocess.run([sys.executable, "-m", "dummy_server.command_emitter", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_wait_for_a_successful_task_prints_live_status_and_json_results(server, nodes):
    nodes(server.url, "node-a", answer("completed", "42.0", "mean computed"))
    nodes(server.url, "node-b", answer("completed", "43.0"))
    done = emit(server, "task", "--image", "v6-demo/avg", "--db", "default",
                "--arg", "Age", "--input", '{"column": "Age"}', "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    tasks = json.loads(done.stdout)["tasks"]
    assert len(tasks) == 1 and tasks[0]["status"] == "completed"
    results = {r["node_id"]: r["result"]["data"] for r in tasks[0]["runs"]}
    assert results == {"node-a": "42.0", "node-b": "43.0"}
    for run in tasks[0]["runs"]:
        for status in ("initializing", "active", "completed"):
            assert f"task {tasks[0]['id']} run {run['id']} on {run['node_id']}: {status}" in done.stderr


def test_wait_for_a_failed_run_exits_1_and_shows_it_in_the_table(server, nodes):
    nodes(server.url, "node-a", answer("completed", "42.0"))
    nodes(server.url, "node-b", answer("failed", None, "Traceback: boom"))
    done = emit(server, "task", "--image", "v6-demo/avg", "--wait", "--format", "table",
                "--timeout", "30")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TASK", "RUN", "NODE", "STATUS", "DATA"]
    rows = {line.split()[2]: line.split() for line in lines[1:]}
    assert rows["node-a"][3:] == ["completed", "42.0"]
    assert rows["node-b"][3:] == ["failed", "null"]
    assert "on node-b: failed (exit code 1)" in done.stderr


def test_wait_times_out_when_no_node_answers(server):
    done = emit(server, "task", "--image", "v6-demo/avg", "--node", "node-a", "--wait",
                "--timeout", "0.5")
    assert done.returncode == 1
    assert "timed out" in done.stderr
    assert json.loads(done.stdout)["tasks"][0]["runs"][0]["status"] == "pending"


def test_recipe_runs_repeated_tasks(server, nodes, tmp_path):
    nodes(server.url, "node-a", answer("completed", "1"))
    nodes(server.url, "node-b", answer("completed", "2"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tasks:\n"
                      "  - image: v6-demo/avg\n    nodes: [node-a]\n    repeat: 2\n"
                      "  - image: v6-demo/diagnostics\n    nodes: [node-b]\n")
    done = emit(server, "recipe", str(recipe), "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    tasks = json.loads(done.stdout)["tasks"]
    assert [(t["image"], [r["node_id"] for r in t["runs"]]) for t in tasks] == [
        ("v6-demo/avg", ["node-a"]), ("v6-demo/avg", ["node-a"]), ("v6-demo/diagnostics", ["node-b"])]


def test_recipe_with_an_error_names_line_and_key(server, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("tasks:\n  - image: v6-demo/avg\n    repeat: twice\n")
    done = emit(server, "recipe", str(recipe))
    assert done.returncode == 2
    assert f"{recipe}:3: tasks[0].repeat: expected an integer" in done.stderr
    assert done.stdout == ""


def test_status_reads_a_task_back_after_a_server_restart(server, nodes):
    nodes(server.url, "node-a", answer("completed", "7.5"))
    sent = emit(server, "task", "--image", "v6-demo/avg", "--node", "node-a", "--wait",
                "--timeout", "30")
    assert sent.returncode == 0, sent.stderr
    task_id = json.loads(sent.stdout)["tasks"][0]["id"]
    server.restart()
    table = emit(server, "status", str(task_id), "--format", "table")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split()[2:] == ["node-a", "completed", "7.5"]
    as_json = json.loads(emit(server, "status", str(task_id)).stdout)
    assert as_json["tasks"][0]["runs"][0]["result"]["data"] == "7.5"


def test_legacy_payload_with_wait(server, nodes):
    node = nodes(server.url, "node-a", answer("completed", "39.5"))
    done = emit(server, "legacy", "--run-id", "33333312", "--image", "v6-demo/avg",
                "--task-info", "arg1=/app/input/csv/default", "--task-info", "arg2=Age",
                "--node", "node-a", "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert node.commands == [{"run_id": 33333312,
                              "task_info": {"arg1": "/app/input/csv/default", "arg2": "Age"},
                              "image": "v6-demo/avg", "docker_input": "input1",
                              "tmp_vol_name": "example-tmp-vol", "token": "example_token",
                              "databases_to_use": ["default"]}]
    assert json.loads(done.stdout)["tasks"][0]["runs"][0]["result"]["data"] == "39.5"
    reused = emit(server, "legacy", "--run-id", "33333312", "--image", "v6-demo/avg")
    assert reused.returncode == 2 and "already used" in reused.stderr


def test_usage_errors(server):
    assert emit(server, "task").returncode == 2  # --image missing
    bad_input = emit(server, "task", "--image", "x", "--input", "{nope")
    assert bad_input.returncode == 2 and "--input is not valid JSON" in bad_input.stderr
    refused = emit(server, "task", "--image", "x", "--db", "Bad Label")
    assert refused.returncode == 2 and "databases[0]" in refused.stderr
    wrong_key = emit(server, "task", "--image", "x", "--wait", key="wrong-key-123")
    assert wrong_key.returncode == 1 and "invalid api key" in wrong_key.stderr


def test_kill_reaches_only_nodes_with_unfinished_runs(server, nodes):
    a, b = nodes(server.url, "node-a"), nodes(server.url, "node-b")
    sent = emit(server, "task", "--image", "v6-demo/avg")
    task = json.loads(sent.stdout)
    wait_until(lambda: a.commands and b.commands, what="both commands")
    a.result(a.commands[0], "completed", "1")
    b.status(b.commands[0], "active")
    killed = emit(server, "kill", str(task["id"]))
    assert killed.returncode == 0, killed.stderr
    assert json.loads(killed.stdout) == {"task_id": task["id"], "nodes": {
        "node-b": {"killed": [b.commands[0]["run_id"]], "not_running": [], "unknown": []}}}
    assert a.kills == [] and b.kills == [{"task_id": task["id"]}]
    b.status(b.commands[0], "killed by user")
    status = json.loads(emit(server, "status", str(task["id"])).stdout)["tasks"][0]
    assert status["status"] == "failed"
    assert {r["node_id"]: r["status"] for r in status["runs"]} == {"node-a": "completed",
                                                                  "node-b": "killed by user"}
    other = emit(server, "kill", "99999")
    assert other.returncode == 1 and "404" in other.stderr
