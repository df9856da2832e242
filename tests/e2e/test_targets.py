"""The cluster target refuses, with a reason, what it cannot use (so its scenarios are skipped, not
passed)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from tests.e2e.targets import ClusterTarget, TargetUnavailable


def test_missing_kubeconfig_is_a_reason(tmp_path):
    with pytest.raises(TargetUnavailable, match="no such file"):
        ClusterTarget(tmp_path / "nope", tmp_path)


def test_unreachable_cluster_is_a_reason(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    with pytest.raises(TargetUnavailable, match="not reachable"):
        ClusterTarget(kubeconfig, tmp_path)


def test_cluster_without_the_deployment_is_a_reason(tmp_path):
    """A reachable cluster where `make deploy` never ran: every missing deployment is named."""
    from localcluster.testing import LocalCluster
    cluster = LocalCluster(state_dir=tmp_path / "cluster")
    cluster.start()
    try:
        with pytest.raises(TargetUnavailable, match="make deploy") as info:
            ClusterTarget(Path(cluster.kubeconfig), tmp_path)
    finally:
        cluster.stop()
    for name in ("v6-server/v6-server", "v6-node/v6-proxy", "v6-node/v6-node"):
        assert name in str(info.value)


def test_k3d_demo_without_a_cluster_says_what_to_run(tmp_path, capsys):
    from localcluster.k3d import demo_k3d
    assert demo_k3d(kubeconfig=tmp_path / "kubeconfig", workdir=tmp_path) == 1
    assert "make demo K8S=k3d" in capsys.readouterr().err


def test_demo_researcher_key_is_the_deployed_one():
    from localcluster.k3d import researcher_key
    from tests.static.support import find, manifests
    secret = find(manifests("k3d"), "Secret", "v6-server-config", "v6-server")
    assert researcher_key() in secret["stringData"]["server_config.yaml"]
