"""`python -m algorithms.diagnostics` as a real subprocess. Probe targets are always ports on
127.0.0.1 that the test owns: a listening socket stands for "isolation off" (must be reported
reachable), a bound but not listening one for "isolation on" (refused: isolated)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from .helpers import REPO, FakeApi, make_pod, run_algorithm, write_csv

CATEGORIES = ("kubernetes_api", "node", "pods", "outside")


@pytest.fixture
def ports():
    """(open port, closed port) on 127.0.0.1, both held for the whole test."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    yield listening.getsockname()[1], closed.getsockname()[1]
    listening.close()
    closed.close()


def probes_to(port: int) -> dict:
    targets = {c: [f"127.0.0.1:{port}"] for c in CATEGORIES}
    return dict(targets, dns_names=[f"localhost:{port}"], timeout=2)


def by_name(report: list[dict]) -> dict[str, dict]:
    names = [c["name"] for c in report]
    assert len(names) == len(set(names)), names
    return {c["name"]: c for c in report}


SECRET = "s3cret-container-token"


def diagnostics_pod(tmp_path, server, token=SECRET):
    db = write_csv(tmp_path / "db.csv", "Age\n1\n")
    return make_pod(tmp_path / "pod", databases={"default": db}, token=token,
                    proxy_port=server.port)


def test_report_shape_and_local_checks_are_truthful(tmp_path, fake_server, ports):
    api = FakeApi()
    api.add_task(["node-a"], token=SECRET)
    server = fake_server(api)
    p = diagnostics_pod(tmp_path, server)
    p.write_input({"probes": probes_to(ports[1])})

    proc = run_algorithm("algorithms.diagnostics", p)

    assert proc.returncode == 0, proc.stderr
    report = p.output_json()
    assert all(set(c) == {"name", "ok", "detail"} and c["ok"] in (True, False, None)
               and isinstance(c["detail"], str) for c in report)
    checks = by_name(report)
    assert checks["env_present"]["ok"] is True
    assert checks["input_readable"]["ok"] is True
    # A temporary directory is writable: the check must say so, not pretend.
    assert checks["input_read_only"]["ok"] is False
    assert checks["output_writable"]["ok"] is True
    assert checks["tmp_writable"]["ok"] is True
    assert checks["token_present"]["ok"] is True
    assert checks["non_root"]["ok"] is (os.geteuid() != 0)
    assert checks["root_fs_read_only"]["ok"] is bool(os.statvfs("/").f_flag & os.ST_RDONLY)
    sa_token = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert checks["no_service_account_token"]["ok"] is (not sa_token.exists())
    assert checks["proxy_api_version"]["ok"] is True
    assert "6.0.0-test" in checks["proxy_api_version"]["detail"]
    assert "GET /api/version" in api.requests
    assert SECRET not in proc.stdout + proc.stderr + json.dumps(report)
    # Only the report is left in the output directory.
    assert sorted(os.listdir(p.output_file.parent)) == ["output"]
    assert "passed" in proc.stdout.splitlines()[-1]


def test_isolation_on_targets_are_reported_isolated(tmp_path, fake_server, ports):
    _, closed = ports
    api = FakeApi()
    api.add_task(["node-a"], token=SECRET)
    p = diagnostics_pod(tmp_path, fake_server(api))
    p.write_input({"probes": probes_to(closed)})
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 0, proc.stderr
    checks = by_name(p.output_json())
    for category in CATEGORIES:
        check = checks[f"isolation.{category}:127.0.0.1:{closed}"]
        assert check["ok"] is True, check
        assert "ECONNREFUSED" in check["detail"]
    dns = checks[f"isolation.dns_names:localhost:{closed}"]
    assert dns["ok"] is True and "resolved to" in dns["detail"] and "ECONNREFUSED" in dns["detail"]


def test_isolation_off_targets_are_reported_reachable(tmp_path, fake_server, ports):
    listening, _ = ports
    api = FakeApi()
    api.add_task(["node-a"], token=SECRET)
    p = diagnostics_pod(tmp_path, fake_server(api))
    p.write_input({"probes": probes_to(listening)})
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 0, proc.stderr
    checks = by_name(p.output_json())
    for category in CATEGORIES:
        check = checks[f"isolation.{category}:127.0.0.1:{listening}"]
        assert check["ok"] is False, check
        assert "connected" in check["detail"]
    assert checks[f"isolation.dns_names:localhost:{listening}"]["ok"] is False
    assert f"FAIL      isolation.outside:127.0.0.1:{listening}" in proc.stdout


def test_categories_left_out_are_undecided_not_defaulted(tmp_path, fake_server, ports):
    api = FakeApi()
    api.add_task(["node-a"], token=SECRET)
    p = diagnostics_pod(tmp_path, fake_server(api))
    p.write_input({"probes": {"outside": [f"127.0.0.1:{ports[1]}"]}})
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 0, proc.stderr
    checks = by_name(p.output_json())
    isolation = {n for n in checks if n.startswith("isolation.")}
    assert isolation == {f"isolation.outside:127.0.0.1:{ports[1]}", "isolation.kubernetes_api",
                         "isolation.node", "isolation.pods", "isolation.dns_names"}
    for name in isolation - {f"isolation.outside:127.0.0.1:{ports[1]}"}:
        assert checks[name]["ok"] is None and "no" in checks[name]["detail"]


def test_proxy_check_fails_with_a_refused_token(tmp_path, fake_server, ports):
    api = FakeApi()
    api.add_task(["node-a"], token=SECRET)
    p = diagnostics_pod(tmp_path, fake_server(api), token="wrong")
    p.write_input({"probes": {}})
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 0, proc.stderr
    check = by_name(p.output_json())["proxy_api_version"]
    assert check["ok"] is False and "HTTP 401" in check["detail"]


def test_proxy_check_fails_when_nothing_listens(tmp_path, ports):
    db = write_csv(tmp_path / "db.csv", "Age\n1\n")
    p = make_pod(tmp_path / "pod", databases={"default": db}, proxy_port=ports[1])
    p.write_input({"probes": {}})
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 0, proc.stderr
    check = by_name(p.output_json())["proxy_api_version"]
    assert check["ok"] is False and "Connection refused" in check["detail"]


def test_missing_env_is_listed_and_unknown_checks_are_undecided(tmp_path, ports):
    p = make_pod(tmp_path / "pod")
    p.write_input({"probes": {}})
    for name in ("HOST", "PORT", "TOKEN_FILE", "TMP_DIR"):
        del p.env[name]
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 0, proc.stderr
    checks = by_name(p.output_json())
    assert checks["env_present"]["ok"] is False
    assert checks["env_present"]["detail"] == "missing: TOKEN_FILE, TMP_DIR, HOST, PORT"
    assert checks["tmp_writable"]["ok"] is None
    assert checks["proxy_api_version"]["ok"] is None
    assert checks["token_present"]["ok"] is False


@pytest.mark.parametrize("probes, message", [
    ({"outside": ["no-port"]}, "needs a port"),
    ({"outside": "127.0.0.1:1"}, "must be a list"),
    ({"elsewhere": []}, "unknown probe categories: elsewhere"),
    ({"timeout": 0}, "probes.timeout must be"),
])
def test_bad_probe_input_is_refused_before_probing(tmp_path, probes, message):
    p = make_pod(tmp_path / "pod")
    p.write_input({"probes": probes})
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not p.output_file.exists()


def test_unwritable_report_exits_non_zero_with_report_on_stdout(tmp_path):
    p = make_pod(tmp_path / "pod")
    p.write_input({"probes": {}})
    p.env["OUTPUT_FILE"] = str(tmp_path / "absent-dir" / "output")
    proc = run_algorithm("algorithms.diagnostics", p)
    assert proc.returncode == 5
    assert "cannot write output file" in proc.stderr
    assert '"name": "env_present"' in proc.stdout


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace and setpriv")
@pytest.mark.skipif(not (shutil.which("unshare") and shutil.which("setpriv")),
                    reason="needs unshare and setpriv (util-linux)")
def test_local_checks_pass_in_a_locked_down_mount_namespace(fake_server, ports):
    """As the node sets a pod up: read-only root and inputs, writable output and tmp, uid 1000.
    Done in a private mount namespace, so the host's mounts are untouched."""
    base = Path(tempfile.mkdtemp(prefix="v6-diag-"))
    try:
        base.chmod(0o755)
        db = write_csv(base / "data" / "db.csv", "Age\n1\n")
        api = FakeApi()
        api.add_task(["node-a"], token=SECRET)
        server = fake_server(api)
        p = make_pod(base / "pod", databases={"default": db}, token=SECRET,
                     proxy_port=server.port)
        p.write_input({"probes": probes_to(ports[1])})
        for d in ("output", "tmp"):
            os.chown(p.root / d, 1000, 1000)
        for d in (base / "data", base / "pod", base / "pod" / "task"):
            d.chmod(0o755)
        for f in (db, p.input_file, p.root / "task" / "token"):
            f.chmod(0o644)
        script = " && ".join([
            "mount --make-rprivate /",
            *[f"mount --bind {d} {d}" for d in (p.root / "output", p.root / "tmp")],
            *[f"mount --bind {d} {d} && mount -o remount,bind,ro {d}"
              for d in (p.root / "task", base / "data")],
            "mount -o remount,bind,ro /",
            f"exec setpriv --reuid 1000 --regid 1000 --clear-groups "
            f"{sys.executable} -m algorithms.diagnostics",
        ])
        proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=p.env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        checks = by_name(p.output_json())
        for name in ("env_present", "input_readable", "input_read_only", "output_writable",
                     "tmp_writable", "token_present", "non_root", "root_fs_read_only",
                     "no_service_account_token", "proxy_api_version"):
            assert checks[name]["ok"] is True, checks[name]
        assert "EROFS" in checks["input_read_only"]["detail"]
        assert "statvfs: ro" in checks["root_fs_read_only"]["detail"]
        assert "create in /: EROFS" in checks["root_fs_read_only"]["detail"]
        assert checks["non_root"]["detail"] == "uid=1000 gid=1000"
    finally:
        shutil.rmtree(base)


def test_dns_probe_reports_a_resolver_given_in_the_env(tmp_path, fake_server, ports):
    """V6_DIAG_DNS_RESOLVERS reaches the probe: a resolver that answers (our fake, on loopback)
    is a leak naming the probe's name; a refused one is none. With `probes` given and no
    `dns_system`, nothing else is asked (no resolv.conf, no getaddrinfo)."""
    from tests.support.fake_resolver import FakeResolver
    api = FakeApi()
    api.add_task(["node-a"], token=SECRET)
    p = diagnostics_pod(tmp_path, fake_server(api))
    with FakeResolver("127.0.0.1") as fake:
        p.env["V6_DIAG_DNS_RESOLVERS"] = f"127.0.0.1:{fake.port},127.0.0.1:{ports[1]}"
        p.write_input({"probes": {"timeout": 2}})
        proc = run_algorithm("algorithms.diagnostics", p)
        asked = list(fake.names)
    assert proc.returncode == 0, proc.stderr
    checks = by_name(p.output_json())
    assert checks[f"dns_exfiltration:127.0.0.1:{fake.port}"]["ok"] is False
    assert checks[f"dns_exfiltration:127.0.0.1:{ports[1]}"]["ok"] is True
    overall = checks["dns_exfiltration"]
    assert overall["ok"] is False and asked and asked[0] in overall["detail"]
    assert "dns_exfiltration:getaddrinfo" not in checks
    assert "FAIL      dns_exfiltration: LEAK" in proc.stdout
