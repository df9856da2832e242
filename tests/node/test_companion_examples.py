"""The example companion service and its algorithm (algorithms/query_service, algorithms/avg_service):
the table, the HTTP answers, the client's retry rules, and both programs as processes."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from algorithms.avg_service.client import ServiceClient, ServiceError, service_url
from algorithms.common.errors import DataError, EnvError
from algorithms.query_service.server import QueryServer
from algorithms.query_service.table import QueryError, load_table
from localcluster.stack import DEMO_CSV, REPO, free_port, wait_for

LOG_LINE = re.compile(r"^(\d+\.\d+) (GET|POST) (\S+) (\d{3}) (.*)$")


def mean_of(path: Path, column: str) -> tuple[float, int]:
    with open(path, newline="") as f:
        values = [float(row[column]) for row in csv.DictReader(f)]
    return sum(values) / len(values), len(values)


def refused_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    srv = QueryServer(("127.0.0.1", 0), load_table(DEMO_CSV))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


# --- the table ---------------------------------------------------------------------------------

def test_the_table_answers_from_the_csv():
    table = load_table(DEMO_CSV)
    mean, count = mean_of(DEMO_CSV, "Age")
    assert table.columns == ("Name", "Age", "Department", "Salary") and table.count == count
    assert table.mean("Age") == {"column": "Age", "mean": pytest.approx(mean), "count": count}


def test_the_table_refuses_unknown_and_text_columns():
    table = load_table(DEMO_CSV)
    with pytest.raises(QueryError) as e:
        table.mean("Height")
    assert e.value.status == 404 and "unknown column 'Height'; columns: Name, Age" in str(e.value)
    with pytest.raises(QueryError) as e:
        table.mean("Name")
    assert e.value.status == 400 and "column 'Name' is not numeric: row 1" in str(e.value)


def test_an_empty_or_missing_database_is_a_data_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_table(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="cannot read"):
        load_table(tmp_path / "absent.csv")


# --- HTTP ----------------------------------------------------------------------------------------

def test_the_service_answers_json_and_logs_every_request(server, capsys):
    import urllib.error
    import urllib.request

    def get(path, method="GET"):
        req = urllib.request.Request(server + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    mean, count = mean_of(DEMO_CSV, "Salary")
    assert get("/ready") == (200, {"ready": True})
    assert get("/columns") == (200, {"columns": ["Name", "Age", "Department", "Salary"]})
    assert get("/count") == (200, {"count": count})
    assert get("/mean?column=Salary") == (200, {"column": "Salary", "mean": mean, "count": count})
    assert get("/mean")[0] == 400 and "give exactly one column" in get("/mean")[1]["error"]
    assert get("/mean?column=A&column=B")[0] == 400
    assert get("/mean?column=Nope") == (404, {"error": "unknown column 'Nope'; columns: Name, Age, "
                                                      "Department, Salary"})
    assert get("/etc/passwd")[0] == 404
    assert get("/mean?column=Age", method="POST")[0] == 405
    lines = [LOG_LINE.match(line) for line in capsys.readouterr().out.splitlines()]
    assert all(lines)
    assert [(m.group(3), m.group(4)) for m in lines][:4] == [
        ("/ready", "200"), ("/columns", "200"), ("/count", "200"), ("/mean?column=Salary", "200")]
    times = [float(m.group(1)) for m in lines]
    assert times == sorted(times)


# --- the client ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_client_reads_the_mean(server):
    mean, count = mean_of(DEMO_CSV, "Age")
    answer = ServiceClient(server).get("/mean", column="Age")
    assert answer == {"column": "Age", "mean": pytest.approx(mean), "count": count}


def test_an_answered_error_is_not_retried(server, capsys):
    clock = FakeClock()
    with pytest.raises(ServiceError, match=r"answered 404: unknown column 'Nope'"):
        ServiceClient(server, clock=clock, sleep=clock.sleep).get("/mean", column="Nope")
    assert clock.sleeps == []
    assert capsys.readouterr().out.count("GET /mean?column=Nope 404") == 1


def test_a_refused_connection_is_retried_briefly_then_fails():
    clock = FakeClock()
    port = refused_port()
    with pytest.raises(ServiceError, match="failed: .*[Cc]onnection refused"):
        ServiceClient(f"http://127.0.0.1:{port}", retry_seconds=3, clock=clock,
                      sleep=clock.sleep).get("/ready")
    assert clock.sleeps and sum(clock.sleeps[:-1]) < 3 <= sum(clock.sleeps)
    assert max(clock.sleeps) <= 1.0


@pytest.mark.parametrize("environ,words", [
    ({}, "SERVICE_URL is not set: this algorithm needs a companion service"),
    ({"SERVICE_URL": "  "}, "SERVICE_URL is not set"),
    ({"SERVICE_URL": "ftp://x"}, "SERVICE_URL must be an http:// URL"),
])
def test_service_url_is_required(environ, words):
    with pytest.raises(EnvError, match=words):
        service_url(environ)


# --- the programs --------------------------------------------------------------------------------

def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "DATABASE_"))}
    return {**env, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", **extra}


def test_avg_service_writes_the_mean_it_got_from_the_service(server, tmp_path):
    (tmp_path / "input").write_text(json.dumps({"column": "Age"}))
    out = tmp_path / "output"
    done = subprocess.run([sys.executable, "-m", "algorithms.avg_service"], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env=_env(SERVICE_URL=server, INPUT_FILE=str(tmp_path / "input"), OUTPUT_FILE=str(out)))
    assert done.returncode == 0, done.stderr
    mean, count = mean_of(DEMO_CSV, "Age")
    assert json.loads(out.read_text()) == {"mean": pytest.approx(mean), "count": count}
    assert "first request to the service at monotonic" in done.stdout


def test_avg_service_without_a_service_fails_at_once(tmp_path):
    (tmp_path / "input").write_text(json.dumps({"column": "Age"}))
    done = subprocess.run([sys.executable, "-m", "algorithms.avg_service"], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env=_env(INPUT_FILE=str(tmp_path / "input"), OUTPUT_FILE=str(tmp_path / "o")))
    assert done.returncode == 2
    assert "avg_service: error: SERVICE_URL is not set" in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_query_service_serves_until_sigterm_then_exits_cleanly(tmp_path):
    port = free_port()
    log = tmp_path / "service.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "algorithms.query_service"], cwd=REPO,
                                stdout=f, stderr=subprocess.STDOUT,
                                env=_env(SERVICE_PORT=str(port), SERVICE_BIND="127.0.0.1",
                                         DATABASE_LABELS="default", DATABASE_URI_DEFAULT=str(DEMO_CSV),
                                         DATABASE_TYPE_DEFAULT="csv"))
    try:
        wait_for(lambda: "serving database 'default' (6 rows" in log.read_text() or proc.poll() is not None,
                 30, "the service to listen")
        assert proc.poll() is None, log.read_text()
        client = ServiceClient(f"http://127.0.0.1:{port}")
        assert client.get("/count") == {"count": 6}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert log.read_text().splitlines()[-1].endswith(" stopped")


@pytest.mark.parametrize("extra,words", [
    ({"SERVICE_PORT": "x"}, "SERVICE_PORT must be a TCP port number"),
    ({"SERVICE_PORT": "8000"}, "no database was given to this task"),
    ({"SERVICE_PORT": "8000", "DATABASE_LABELS": "default", "DATABASE_URI_DEFAULT": "/nonexistent.csv"},
     "cannot read database file /nonexistent.csv"),
])
def test_the_query_service_refuses_to_start_without_what_it_needs(extra, words):
    done = subprocess.run([sys.executable, "-m", "algorithms.query_service"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=_env(**extra))
    assert done.returncode in (2, 3) and words in done.stderr, done.stderr
