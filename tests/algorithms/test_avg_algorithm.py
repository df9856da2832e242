"""`python -m algorithms.avg` as a real subprocess: prototype mode, rich mode and clear errors."""
from __future__ import annotations

import statistics

import pytest
from .helpers import REPO, run_algorithm, write_csv

EMPLOYEES = REPO / "algorithms" / "avg" / "data" / "employees.csv"
EMPLOYEE_AGES = [34, 45, 29, 52, 38, 41]


def test_sample_data_has_the_ages_the_tests_expect():
    lines = EMPLOYEES.read_text().splitlines()
    assert lines[0].split(",")[1] == "Age"
    assert [int(line.split(",")[1]) for line in lines[1:]] == EMPLOYEE_AGES


def test_prototype_mode_writes_the_mean_as_text(pod):
    p = pod()
    out = p.root / "output" / "avg.txt"
    proc = run_algorithm("algorithms.avg", p, str(EMPLOYEES), "Age", str(out))
    assert proc.returncode == 0, proc.stderr
    assert float(out.read_text()) == pytest.approx(statistics.mean(EMPLOYEE_AGES))
    assert list((p.root / "output").iterdir()) == [out]  # no temporary file left behind


@pytest.mark.parametrize("method", ["avg", "partial"])
def test_rich_mode(pod, tmp_path, method):
    csv_path = write_csv(tmp_path / "db.csv", "id,Age\n1,10\n2,20.5\n3,30\n")
    p = pod(databases={"default": csv_path})
    p.write_input({"method": method, "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 0, proc.stderr
    if method == "avg":
        assert p.output_json() == {"mean": pytest.approx(60.5 / 3), "count": 3}
    else:
        assert p.output_json() == {"sum": 60.5, "count": 3}


def test_rich_mode_picks_the_named_database(pod, tmp_path):
    first = write_csv(tmp_path / "a.csv", "Age\n1\n")
    second = write_csv(tmp_path / "b.csv", "Age\n7\n9\n")
    p = pod(databases={"first": first, "other-db": second})
    p.write_input({"method": "avg", "column": "Age", "database": "other-db"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 0, proc.stderr
    assert p.output_json() == {"mean": 8.0, "count": 2}


def test_csv_with_bom_spaces_and_blank_lines(pod, tmp_path):
    csv_path = tmp_path / "db.csv"
    csv_path.write_bytes("\ufeffName, Age\nA, 4\n\nB, 6\n".encode())
    p = pod(databases={"default": csv_path})
    p.write_input({"method": "avg", "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 0, proc.stderr
    assert p.output_json() == {"mean": 5.0, "count": 2}


@pytest.mark.parametrize("content, message", [
    ("Name,Age\nA,3\n", "column 'Salary' not found in"),
    ("Name,Salary\nA,3\nB,abc\n", "row 2 (line 3): value 'abc' in column 'Salary' is not a number"),
    ("", "is empty (no header row)"),
    ("Name,Salary\n", "has no data rows"),
    ("Name,Salary\nA,\n", "row 1 (line 2): empty value in column 'Salary'"),
    ("Name,Salary\nA,nan\n", "value 'nan' in column 'Salary' is not a finite number"),
    ("Name,Salary\nA\n", "row 1 (line 2) of"),
])
def test_data_errors_are_clear(pod, tmp_path, content, message):
    csv_path = write_csv(tmp_path / "db.csv", content)
    p = pod(databases={"default": csv_path})
    p.write_input({"method": "avg", "column": "Salary"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 3
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not p.output_file.exists()


def test_missing_column_names_the_available_ones(pod, tmp_path):
    csv_path = write_csv(tmp_path / "db.csv", "Name,Age,City\nA,3,X\n")
    p = pod(databases={"default": csv_path})
    p.write_input({"method": "avg", "column": "Salary"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 3
    assert "available columns: 'Name', 'Age', 'City'" in proc.stderr


def test_prototype_mode_reports_errors(pod, tmp_path):
    p = pod()
    proc = run_algorithm("algorithms.avg", p, str(tmp_path / "absent.csv"), "Age",
                         str(p.root / "output" / "avg.txt"))
    assert proc.returncode == 3
    assert "absent.csv does not exist" in proc.stderr


def test_unreadable_database(pod, tmp_path):
    p = pod(databases={"default": tmp_path})  # a directory, not a file
    p.write_input({"method": "avg", "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 3
    assert "is a directory, not a CSV file" in proc.stderr


def test_binary_database(pod, tmp_path):
    csv_path = tmp_path / "db.csv"
    csv_path.write_bytes(b"Age\n\xff\xfe\x00\n")
    p = pod(databases={"default": csv_path})
    p.write_input({"method": "avg", "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 3
    assert "is not UTF-8 text" in proc.stderr


def test_missing_database_label(pod, tmp_path):
    p = pod(databases={"default": write_csv(tmp_path / "db.csv", "Age\n1\n")})
    p.write_input({"method": "avg", "column": "Age", "database": "other"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 2
    assert "database 'other' was not given to this task; available: default" in proc.stderr


def test_no_database_at_all(pod):
    p = pod()
    p.write_input({"method": "avg", "column": "Age"})
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 2
    assert "no database was given to this task" in proc.stderr


@pytest.mark.parametrize("task_input, message", [
    ({"method": "median", "column": "Age"}, "unknown method 'median'"),
    ({"method": "avg"}, "needs 'column'"),
    ([1, 2], "must be a JSON object"),
    ({"method": "central", "column": "Age", "timeout": -1}, "'timeout' must be a positive"),
])
def test_bad_input(pod, task_input, message):
    p = pod()
    p.write_input(task_input)
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_invalid_json_input(pod):
    p = pod()
    p.input_file.write_text("{not json")
    proc = run_algorithm("algorithms.avg", p)
    assert proc.returncode == 2
    assert "is not valid JSON" in proc.stderr


def test_wrong_number_of_arguments(pod):
    proc = run_algorithm("algorithms.avg", pod(), "a.csv", "Age")
    assert proc.returncode == 2
    assert "expected 0 or 3 arguments, got 2" in proc.stderr
