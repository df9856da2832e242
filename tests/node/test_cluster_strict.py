"""The node creates its Jobs and NetworkPolicies with fieldValidation=Strict: a field the API
server does not know (a typo in node/manifests.py) fails the call with the server's reason
instead of being dropped from the object (the default, Warn, would drop it)."""
from __future__ import annotations

import pytest

from localcluster.testing import LocalCluster
from node.cluster import Cluster
from node.errors import ClusterError, TransientClusterError
from node.manifests import build_job, build_network_policy
from node.models import parse_command
from tests.node.test_manifests import PROXY, make_config, prototype

NS = "v6-jobs"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster() as lc:
        from kubernetes import client
        client.CoreV1Api(lc.api_client()).create_namespace({"metadata": {"name": NS}})
        yield Cluster(lc.api_client(), NS, request_timeout=10)


@pytest.fixture
def config():
    return make_config()


def test_a_job_with_an_unknown_field_is_refused_with_the_field(cluster, config):
    job = build_job(parse_command(prototype(run_id=1), config), config, PROXY)
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Never"
    with pytest.raises(ClusterError) as e:
        cluster.create_job(job)
    assert not isinstance(e.value, TransientClusterError)  # retrying cannot help
    assert str(e.value) == (
        f'create job {job["metadata"]["name"]}: 400 Job in version "v1" cannot be handled as a '
        'Job: strict decoding error: unknown field '
        '"spec.template.spec.containers[0].imagePullPolcy"')
    with pytest.raises(ClusterError, match="404"):
        cluster.get_job(job["metadata"]["name"])


def test_the_node_s_own_job_is_created(cluster, config):
    job = build_job(parse_command(prototype(run_id=2), config), config, PROXY)
    created = cluster.create_job(job)
    assert created["metadata"]["name"] == job["metadata"]["name"]
    assert created["spec"]["activeDeadlineSeconds"] == job["spec"]["activeDeadlineSeconds"]


def test_a_network_policy_with_an_unknown_field_is_refused(cluster, config):
    policy = build_network_policy(config, PROXY)
    typo = dict(policy, spec=dict(policy["spec"], policyType=["Ingress"]))
    with pytest.raises(ClusterError, match='400 NetworkPolicy in version "v1" cannot be handled '
                                           'as a NetworkPolicy: strict decoding error: unknown '
                                           'field "spec.policyType"'):
        cluster.apply_network_policy(typo)
    cluster.apply_network_policy(policy)  # the real one goes in
    cluster.apply_network_policy(policy)  # and again: the patch path, with the same strictness
    # the body is decoded before the server looks for the object: still 400, not a 409 that
    # would send it on to the patch
    with pytest.raises(ClusterError, match='unknown field "spec.policyType"'):
        cluster.apply_network_policy(typo)
