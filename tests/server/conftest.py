"""Fixtures for the dummy server's tests: a real server process and fake nodes."""
from __future__ import annotations

import pytest
import requests

from dummy_server.testing import RESEARCHER_KEYS, FakeNode, ServerProcess


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path / "server").start()
    yield proc
    proc.stop()


@pytest.fixture
def alice():
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {RESEARCHER_KEYS['alice']}"
        yield s


@pytest.fixture
def nodes():
    """Call ``nodes(url, node_id, responder=None)`` to get a connected fake node."""
    made: list[FakeNode] = []

    def make(url, node_id, responder=None):
        node = FakeNode(url, node_id, responder).connect()
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
