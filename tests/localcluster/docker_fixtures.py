"""Helpers for the docker runtime tests: test images made from this host's files, and the
controllers run in-process with the docker runtime and pod network.

The images (`import_host_files`: the host's python3.11 with its standard library, sh, sleep, id,
cat) are tagged by a hash of their content, so a session makes each once and later sessions
reuse them. Tests skip, with the reason, where Docker cannot be used (no engine, not root).
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from localcluster.controllers import run_controllers
from localcluster.runtime.docker_client import SyncDocker, docker_unavailable
from localcluster.runtime.docker_images import DockerImages, import_host_files
from localcluster.network.docker_net import DockerNetwork
from localcluster.kubelet.kubelet import KubeletConfig
from localcluster.runtime.docker import DockerRuntime
from localcluster.apiserver.store import Store

from tests.localcluster.kubelet_fixtures import InProcess

PYTHON = "/usr/bin/python3.11"


def docker_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the docker runtime tests need root (Docker engine, iptables)"
    if not os.path.exists(PYTHON):
        return f"{PYTHON} is needed to make the test images"
    return docker_unavailable()


def _host_paths() -> list[str]:
    tools = [shutil.which(t) for t in ("sh", "sleep", "id", "cat")]
    return [PYTHON, "/usr/lib/python3.11", *[t for t in tools if t]]


@pytest.fixture(scope="session")
def docker_images() -> dict[str, str]:
    """{"python": root image, entrypoint python; "user": USER 1000:1000 with a CMD}."""
    why = docker_skip_reason()
    if why:
        print(f"SKIPPED docker runtime tests: {why}")
        pytest.skip(why)
    client = SyncDocker()
    paths = _host_paths()
    entry = f'ENTRYPOINT ["{PYTHON}"]'
    return {
        "python": import_host_files(client, "lc-test/python", paths,
                                    changes=[entry, "ENV PYTHONDONTWRITEBYTECODE=1"]),
        "user": import_host_files(client, "lc-test/python-user", paths,
                                  changes=[entry, "ENV PYTHONDONTWRITEBYTECODE=1",
                                           "USER 1000:1000",
                                           'CMD ["-c", "import os; print(\'cmd ran as\', '
                                           'os.getuid())"]']),
    }


def run_docker(tmp_path: Path, body: Callable[[InProcess, DockerNetwork], Awaitable[None]]
               ) -> None:
    """Run body against a Store with the controllers in docker mode; all removed afterwards."""
    network = DockerNetwork(secrets.token_hex(3))
    try:
        async def go():
            store = Store()
            config = KubeletConfig(network=network, runtime=DockerRuntime(network.cluster),
                                   images=DockerImages())
            task = asyncio.ensure_future(run_controllers(store, tmp_path, [],
                                                         kubelet_config=config))
            try:
                await body(InProcess(store, tmp_path), network)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                store.close()
        asyncio.run(go())
    finally:
        network.close()


def pod(name: str, image: str, args: list[str] | None = None, command: list[str] | None = None,
        labels: dict | None = None, **container) -> dict:
    c = {"name": "main", "image": image, **container}
    if args is not None:
        c["args"] = args
    if command is not None:
        c["command"] = command
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "containers": [c],
                     "terminationGracePeriodSeconds": 2}}
