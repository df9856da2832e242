"""The e2e target: the local stand-in (always tried) and a deployed cluster (V6_E2E_KUBECONFIG).

Each target is skipped with its reason when it cannot run here — never passed without running."""
from __future__ import annotations

import os

import pytest

from tests.e2e.targets import KUBECONFIG_ENV, ClusterTarget, LocalTarget, TargetUnavailable, cluster_kubeconfig


def _local(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("local target: pods with volumes run in private mount namespaces, which need root")
    return LocalTarget(tmp_path_factory.mktemp("e2e-local"))


def _cluster(tmp_path_factory):
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is None:
        pytest.skip(f"cluster target: no cluster given; set {KUBECONFIG_ENV} to a kubeconfig of a cluster "
                    "where `make deploy` ran (make e2e K8S=k3d does)")
    try:
        return ClusterTarget(kubeconfig, tmp_path_factory.mktemp("e2e-cluster"))
    except TargetUnavailable as e:
        pytest.skip(f"cluster target: {e}")


@pytest.fixture(scope="module", params=["local", "cluster"])
def target(request, tmp_path_factory):
    made = (_local if request.param == "local" else _cluster)(tmp_path_factory)
    yield made
    made.close()
