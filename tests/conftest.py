"""Suite-wide guards: a test must not leave threads or child processes behind."""
from __future__ import annotations

import os
import threading
import time

import pytest

# the local cluster (in this process or started by a test) checks that no controller changes the
# objects its store shares with them (localcluster.apiserver.store.CHECK_SHARED)
os.environ.setdefault("LOCALCLUSTER_CHECK_SHARED", "1")


def _child_pids() -> set[int]:
    me = str(os.getpid())
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[1] the parent pid; zombies are reaped by their owner
        if fields[1] == me and fields[0] != "Z":
            pids.add(int(entry))
    return pids


def _wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture(autouse=True)
def no_leftovers(request):
    """Fail a test that leaves threads or child processes running after its fixtures end."""
    threads_before = set(threading.enumerate())
    children_before = _child_pids()
    yield
    if request.node.get_closest_marker("allow_leftovers"):
        return

    def extra_threads():
        return [t for t in threading.enumerate()
                if t not in threads_before and t.is_alive() and not t.daemon]

    def extra_children():
        return _child_pids() - children_before

    ok_threads = _wait_until(lambda: not extra_threads(), 5.0)
    ok_children = _wait_until(lambda: not extra_children(), 5.0)
    problems = []
    if not ok_threads:
        problems.append(f"threads left running: {[t.name for t in extra_threads()]}")
    if not ok_children:
        problems.append(f"child processes left running: {sorted(extra_children())}")
    if problems:
        pytest.fail("; ".join(problems))
