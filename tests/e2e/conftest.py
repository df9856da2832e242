"""The e2e targets: the local stand-in (always tried), the local cluster in docker mode running
kubeconfs/ (tried where Docker, kubectl and the images are), and a deployed cluster
(V6_E2E_KUBECONFIG).

Each target is skipped with its reason when it cannot run here — never passed without running.
In CI (env CI) as root the docker target must run: its absence fails instead."""
from __future__ import annotations

import os

import pytest

from tests.e2e.targets import (KUBECONFIG_ENV, ClusterTarget, DockerTarget, LocalTarget,
                               TargetUnavailable, cluster_kubeconfig)


def _local(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("local target: pods with volumes run in private mount namespaces, which need root")
    return LocalTarget(tmp_path_factory.mktemp("e2e-local"))


def _docker(tmp_path_factory):
    try:
        return DockerTarget(tmp_path_factory.mktemp("e2e-docker"))
    except TargetUnavailable as e:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(f"docker target: CI must run it, but {e} (.ci/run installs docker.io and "
                        "debootstrap, starts dockerd and builds the images)")
        pytest.skip(f"docker target: {e}")


def _cluster(tmp_path_factory):
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is None:
        pytest.skip(f"cluster target: no cluster given; set {KUBECONFIG_ENV} to a kubeconfig of a cluster "
                    "where `make deploy` ran (make e2e K8S=k3d does)")
    try:
        return ClusterTarget(kubeconfig, tmp_path_factory.mktemp("e2e-cluster"))
    except TargetUnavailable as e:
        pytest.skip(f"cluster target: {e}")


_TARGETS = {"local": _local, "docker": _docker, "cluster": _cluster}


@pytest.fixture(scope="module", params=list(_TARGETS))
def target(request, tmp_path_factory):
    made = _TARGETS[request.param](tmp_path_factory)
    yield made
    made.close()
