"""algorithms.common: env parsing, input/output files, progress lines."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from algorithms.common.env import Proxy, load_env, missing_vars
from algorithms.common.errors import EnvError, InputError, OutputError
from algorithms.common.io import read_input, write_json_output, write_output
from algorithms.common.progress import ProgressReporter

FULL = {
    "RUN_ID": "7", "TASK_ID": "3", "NODE_ID": "node-a",
    "INPUT_FILE": "/app/task/input", "TOKEN_FILE": "/app/task/token",
    "OUTPUT_DIR": "/app/output", "OUTPUT_FILE": "/app/output/output", "TMP_DIR": "/app/tmp",
    "DATABASE_LABELS": "default,my-db",
    "DATABASE_URI_DEFAULT": "/app/input/csv/default", "DATABASE_TYPE_DEFAULT": "csv",
    "DATABASE_URI_MY_DB": "/app/input/csv/my-db", "DATABASE_TYPE_MY_DB": "csv",
    "HOST": "http://v6-proxy.v6-node.svc", "PORT": "8080", "API_PATH": "/api",
}


def test_full_env():
    env = load_env(FULL)
    assert (env.run_id, env.task_id, env.node_id) == (7, 3, "node-a")
    assert env.input_file == Path("/app/task/input")
    assert env.output_file == Path("/app/output/output")
    assert env.database_labels == ("default", "my-db")
    assert env.database("my-db").uri == "/app/input/csv/my-db"
    assert env.database().label == "default"
    assert env.proxy == Proxy("http://v6-proxy.v6-node.svc", 8080, "/api")
    assert env.proxy.base_url == "http://v6-proxy.v6-node.svc:8080/api"
    assert env.progress_file is None
    assert missing_vars(FULL) == []


def test_empty_env_loads_and_reports_what_is_missing():
    env = load_env({})
    assert env.run_id is None and env.proxy is None and env.databases == ()
    with pytest.raises(EnvError, match="OUTPUT_FILE is not set"):
        env.require_path("output_file")
    with pytest.raises(EnvError, match="HOST and PORT"):
        env.require_proxy()
    with pytest.raises(EnvError, match="no database was given"):
        env.database()
    assert missing_vars({}) == ["RUN_ID", "TASK_ID", "NODE_ID", "INPUT_FILE", "TOKEN_FILE",
                                "OUTPUT_DIR", "OUTPUT_FILE", "TMP_DIR", "DATABASE_LABELS",
                                "HOST", "PORT", "API_PATH"]


def test_missing_database_variables_are_listed():
    environ = dict(FULL)
    del environ["DATABASE_TYPE_MY_DB"]
    assert missing_vars(environ) == ["DATABASE_TYPE_MY_DB"]
    assert load_env(environ).database("my-db").type is None


def test_host_without_scheme_and_api_path_variants():
    env = load_env({"HOST": "proxy.local/", "PORT": "80", "API_PATH": "api/"})
    assert env.proxy.base_url == "http://proxy.local:80/api"


@pytest.mark.parametrize("changes, message", [
    ({"RUN_ID": "x"}, "RUN_ID must be a positive integer"),
    ({"TASK_ID": "0"}, "TASK_ID must be a positive integer below 2\\*\\*53"),
    ({"TASK_ID": str(2**53)}, "below 2\\*\\*53"),
    ({"PORT": "http"}, "PORT must be a TCP port number"),
    ({"PORT": "70000"}, "PORT must be between 1 and 65535"),
    ({"DATABASE_LABELS": "Default"}, "invalid label 'Default'"),
    ({"DATABASE_LABELS": "a,a"}, "lists 'a' twice"),
])
def test_malformed_env(changes, message):
    with pytest.raises(EnvError, match=message):
        load_env(dict(FULL, **changes))


def test_unknown_database_label_names_the_available_ones():
    with pytest.raises(EnvError, match="database 'x' was not given to this task; "
                                       "available: default, my-db"):
        load_env(FULL).database("x")


def test_read_input(tmp_path):
    path = tmp_path / "input"
    path.write_text('{"a": 1}')
    assert read_input(path) == {"a": 1}
    path.write_text("  \n")
    assert read_input(path) == {}
    path.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_input(path)
    with pytest.raises(InputError, match="does not exist"):
        read_input(tmp_path / "absent")


def test_write_output_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "output"
    path.write_text("old")
    write_json_output(path, {"mean": 1.5})
    assert json.loads(path.read_text()) == {"mean": 1.5}
    assert os.listdir(tmp_path) == ["output"]


def test_write_output_error(tmp_path):
    with pytest.raises(OutputError, match="cannot write output file"):
        write_output(tmp_path / "absent" / "output", "x")
    assert os.listdir(tmp_path) == []


def test_progress_lines(tmp_path):
    path = tmp_path / "progress"
    reporter = ProgressReporter(path)
    reporter.report("start", 0)
    reporter.report("over", 1.7)
    reporter.report("unknown")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["message"], x["progress"]) for x in lines] == [
        ("start", 0.0), ("over", 1.0), ("unknown", None)]
    assert all(isinstance(x["time"], float) for x in lines)


def test_progress_is_a_no_op_without_a_file(tmp_path):
    ProgressReporter(None).report("nothing", 0.5)
    assert os.listdir(tmp_path) == []


def test_progress_failure_does_not_raise(tmp_path, caplog):
    ProgressReporter(tmp_path / "absent" / "progress").report("lost", 0.5)
    assert "cannot write progress" in caplog.text
