"""Fixtures for the algorithm tests (helpers in helpers.py)."""
from __future__ import annotations

import pytest

from .helpers import FakeApi, FakeServer, Pod, make_pod


@pytest.fixture
def pod(tmp_path):
    def factory(name: str = "pod", **kwargs) -> Pod:
        return make_pod(tmp_path / name, **kwargs)
    return factory


@pytest.fixture
def fake_server():
    servers = []

    def start(api: FakeApi, on_task=None) -> FakeServer:
        server = FakeServer(api, on_task).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
