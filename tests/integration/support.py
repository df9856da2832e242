"""Helpers shared by the integration tests."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

import pytest

from localcluster.stack import DEMO_CSV, NodeSpec, Stack

HERE = Path(__file__).resolve().parent
TEST_IMAGES = HERE / "images.yaml"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="pods with volumes run in private mount namespaces, which need root")

pytestmark = [pytest.mark.integration, needs_root]


def node_spec(node_id: str, databases: list[dict] | None = None, **extra) -> NodeSpec:
    databases = databases or [{"label": "default", "uri": str(DEMO_CSV), "type": "csv"}]
    extra.setdefault("images", {"allowed": ["v6-demo/*", "test/*"]})
    return NodeSpec(node_id, f"key-{node_id}-{secrets.token_hex(8)}", databases, extra=extra)


def make_stack(tmp_path: Path, nodes: list[NodeSpec], *, proxy: bool = True,
               pod_network: str = "auto", images: list[Path] = (),
               runtime: str | None = None) -> Stack:
    """images: registry files besides TEST_IMAGES; runtime: ``serve --runtime``."""
    stack = Stack(tmp_path / "stack", pod_network=pod_network)
    try:
        stack.start_cluster(images=[TEST_IMAGES, *images],
                            **({"runtime": runtime} if runtime else {}))
        stack.start_server(nodes)
        if proxy:
            stack.start_proxy()
        for spec in nodes:
            stack.start_node(spec.node_id)
    except BaseException:
        stack.close()
        raise
    return stack


def pids_of(command: Callable[[list[bytes]], bool], env_entry: str) -> list[int]:
    """Processes whose argv (NUL-split /proc cmdline) `command` accepts and whose environment
    holds `env_entry` ("NAME=value"): how a test finds a container's process here."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if command(cmdline) and env_entry.encode() in environ:
            pids.append(int(entry))
    return pids
