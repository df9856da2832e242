"""Every `make` command the README tells a user to run exists in the Makefile (a dry run of it
succeeds), and the commands the demo runs are all documented."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.static.support import REPO

DOC = REPO / "README.md"
_MAKE = re.compile(r"`?(make(?: [A-Za-z0-9_=.-]+)+)")


def documented_make_commands() -> list[str]:
    commands = set()
    for line in DOC.read_text().splitlines():
        for m in _MAKE.finditer(line):
            commands.add(m.group(1).split("  #")[0].strip())
    return sorted(commands)


def test_the_walkthrough_documents_every_step():
    commands = documented_make_commands()
    for step in ("make demo K8S=k3d", "make cluster", "make images", "make deploy", "make e2e", "make cluster-delete"):
        assert step in commands


@pytest.mark.parametrize("command", documented_make_commands())
def test_documented_command_is_a_make_target(command):
    proc = subprocess.run([*command.split()[:1], "-n", *command.split()[1:]], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "No rule to make target" not in proc.stderr
