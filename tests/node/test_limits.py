"""The open-files limit raised at the node's start (node/limits.py), each case in a subprocess
so that this process's limits stay as they are."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

resource = pytest.importorskip("resource")

REPO = Path(__file__).resolve().parents[2]


def run_with_limit(soft: int, hard: int | None = None) -> tuple[dict, str]:
    """raise_open_files_limit() in a child whose limit was set to (soft, hard) first."""
    code = f"""
import json, logging, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard if hard is not None else 'hard'}))
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from node.limits import raise_open_files_limit
returned = raise_open_files_limit()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print(json.dumps({{"returned": returned, "soft": soft, "hard": hard}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_the_soft_limit_is_raised_to_the_hard_one_and_logged_once():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    limits, log = run_with_limit(256)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert limits == {"returned": target, "soft": target, "hard": hard}
    lines = [line for line in log.splitlines() if "open files limit" in line]
    assert lines == [f"INFO open files limit raised from 256 to {target} (hard "
                     f"{hard if hard != resource.RLIM_INFINITY else 'unlimited'})"]


def test_a_limit_already_at_the_hard_one_is_left_and_start_never_fails():
    limits, log = run_with_limit(200, 200)  # hard lowered too: nothing to raise
    assert limits == {"returned": 200, "soft": 200, "hard": 200}
    assert "INFO open files limit: 200 (hard 200)" in log


def test_a_limit_that_cannot_be_raised_is_logged_and_start_goes_on(monkeypatch, caplog):
    from node import limits

    def refuse(*args):
        raise ValueError("not allowed")
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _: (256, 4096))
    monkeypatch.setattr(limits.resource, "setrlimit", refuse)
    with caplog.at_level("INFO", logger="node.limits"):
        assert limits.raise_open_files_limit() == 256
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "not raised (not allowed)" in caplog.records[0].getMessage()
