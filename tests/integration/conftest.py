"""Integration tests: the real local cluster, server, proxy, node and algorithms as processes."""
from __future__ import annotations

import pytest

from localcluster.stack import NodeSpec, Stack
from tests.integration.support import make_stack, node_spec


@pytest.fixture
def stack_factory(tmp_path):
    made: list[Stack] = []

    def factory(nodes: list[NodeSpec], **kwargs) -> Stack:
        stack = make_stack(tmp_path, nodes, **kwargs)
        made.append(stack)
        return stack

    yield factory
    for stack in made:
        stack.close()


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One node (node-a) with the demo database, for tests that need nothing special."""
    stack = make_stack(tmp_path_factory.mktemp("shared"), [node_spec("node-a")])
    yield stack
    stack.close()
