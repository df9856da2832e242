"""Start a real proxy process in tests (see dummy_server.testing for the shared helpers)."""
from __future__ import annotations

import sys
from pathlib import Path

from dummy_server.testing import Process


class ProxyProcess(Process):
    def __init__(self, workdir: Path, upstream: str, *extra_args: str, name: str = "proxy"):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__([sys.executable, "-m", "dummy_proxy", "--listen", "127.0.0.1:0",
                          "--upstream", upstream, *extra_args], workdir, name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
