"""Fixtures for the local cluster's API tests: a served cluster and clients for it."""
from __future__ import annotations

import uuid

import pytest

from localcluster.testing import LocalCluster


@pytest.fixture(scope="module")
def cluster():
    """One local cluster per test module (start-up is about a second); tests use their own
    namespaces, and fault settings are reset after each test by ``api``."""
    with LocalCluster() as lc:
        yield lc


@pytest.fixture
def api(cluster):
    """(core, batch, networking) APIs of the official client; faults cleared afterwards."""
    import kubernetes

    client = cluster.api_client()
    yield (kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client),
           kubernetes.client.NetworkingV1Api(client))
    cluster.set_faults({})


@pytest.fixture
def namespace(cluster, api):
    name = "t-" + uuid.uuid4().hex[:8]
    api[0].create_namespace({"metadata": {"name": name}})
    return name
