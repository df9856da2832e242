"""Start a real proxy process in tests (see dummy_server.testing for the shared helpers)."""
from __future__ import annotations

import sys
from pathlib import Path

from dummy_server.testing import Process

from .config import NODE_KEY_ENV


class ProxyProcess(Process):
    """``node_key``: the API key of the node this proxy serves (sent upstream as its identity,
    CONTRACTS §4); None starts a proxy without one, whose container tokens the server refuses."""

    def __init__(self, workdir: Path, upstream: str, *extra_args: str, name: str = "proxy",
                 node_key: str | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        # Always set, so an identity in the test runner's own environment never leaks in.
        env = {NODE_KEY_ENV: node_key or ""}
        super().__init__([sys.executable, "-m", "dummy_proxy", "--listen", "127.0.0.1:0",
                          "--upstream", upstream, *extra_args], workdir, name, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
