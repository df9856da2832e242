"""`python -m localcluster serve` as a process: readiness file, clean stop with open watches."""
from __future__ import annotations

import threading

import kubernetes
import pytest

from localcluster.testing import LocalCluster, LocalClusterError

pytestmark = pytest.mark.integration


def test_stop_is_clean_with_an_open_watch(tmp_path):
    lc = LocalCluster(state_dir=tmp_path / "state").start()
    try:
        assert lc.kubeconfig.exists() and lc.kubeconfig.stat().st_mode & 0o077 == 0
        core = kubernetes.client.CoreV1Api(lc.api_client())
        ended = threading.Event()
        started = threading.Event()

        def watch():
            try:
                for _ in kubernetes.watch.Watch().stream(core.list_namespace,
                                                         timeout_seconds=60):
                    started.set()
            except Exception:  # noqa: BLE001 - the server going away may surface as an error
                pass
            ended.set()

        t = threading.Thread(target=watch)
        t.start()
        assert started.wait(10)
    finally:
        code = lc.stop()
    t.join(10)
    assert ended.is_set()
    assert code == 0
    assert not (tmp_path / "state" / "kubeconfig").exists()


def test_start_failure_reports_stderr():
    with pytest.raises(LocalClusterError, match="(?s)exited with 2.*--history"):
        LocalCluster(extra_args=["--history", "many"], start_timeout=20).start()
