"""A full disk under the node's task_dir (its ledger, outbox and run directories): runs arriving
meanwhile are held, not lost, the node does not crash, and everything is reported once there is
space again. The disk is a small tmpfs this test mounts itself (root)."""
from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from localcluster.stack import wait_for
from tests.integration.support import make_stack, node_spec, pytestmark  # noqa: F401
from tests.reliability.checks import Ledger, check


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "v6-full-disk",
                    str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def test_a_full_disk_holds_runs_back_and_loses_none(tmp_path, small_disk):
    spec = node_spec("node-a", task_dir=str(small_disk / "tasks"))
    stack = make_stack(tmp_path, [spec])
    try:
        ledger = Ledger()
        first = stack.create_task(image="test/sleeper", input={"seconds": 0}, databases=[],
                                  nodes=["node-a"])
        ledger.add_task(first, {"completed"})
        check(stack, ledger)
        filler = fill(small_disk)
        for _ in range(3):
            task = stack.create_task(image="test/sleeper", input={"seconds": 0.2}, databases=[],
                                     nodes=["node-a"])
            # a run that could not even get its files may end as "start failed", never lost
            ledger.add_task(task, {"completed", "start failed"})
        log = stack.workdir / "logs" / "node-node-a.log"
        wait_for(lambda: "will retry" in log.read_text(), 60, "the node to hit the full disk")
        assert stack.procs["node-node-a"].alive()
        filler.unlink()
        counts = check(stack, ledger, timeout=120)
        assert stack.procs["node-node-a"].alive()
        assert counts.get("completed", 0) >= 1, counts
        # the disk fills while a run is active: its result waits for space, then arrives
        running = stack.create_task(image="test/sleeper", input={"seconds": 1.5},
                                    databases=[], nodes=["node-a"])
        ledger = Ledger()
        # the algorithm writes its output to the same full disk: it may fail on its own
        ledger.add_task(running, {"completed", "crashed"})
        run_id = running["runs"][0]["id"]
        wait_for(lambda: "active" in [h["status"] for h in stack.api(
            "GET", f"/api/run/{run_id}").json()["history"]], 30, "the run to be active")
        filler = fill(small_disk)
        wait_for(lambda: f"run {run_id}: cannot store its result" in log.read_text(), 60,
                 "the result to be held back")
        assert stack.procs["node-node-a"].alive()
        filler.unlink()
        check(stack, ledger, timeout=120)
    finally:
        stack.close()
