"""Fixtures for the proxy tests: a real server, a stand-in upstream and proxies in front of them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dummy_proxy.testing import ProxyProcess
from dummy_server.testing import NODE_KEYS, FakeNode, Process, ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def proxy(server, tmp_path_factory):
    # node-a's proxy: the server takes container tokens of node-a's runs through it only
    proc = ProxyProcess(tmp_path_factory.mktemp("proxy"), server.url,
                        node_key=NODE_KEYS["node-a"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sink")
    proc = Process([sys.executable, str(Path(__file__).with_name("sink_server.py"))], workdir,
                   "sink").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sink_proxy(sink, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sink_proxy")
    config = workdir / "proxy_config.yaml"
    config.write_text("max_body_bytes: 62914560\nupstream_timeout_seconds: 0.5\n")
    proc = ProxyProcess(workdir, f"http://127.0.0.1:{sink.port}", "--config", str(config),
                        node_key=NODE_KEYS["node-a"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def fake_nodes(server):
    made = [FakeNode(server.url, n).connect() for n in ("node-a", "node-b")]
    yield {n.node_id: n for n in made}
    for node in made:
        node.close()
