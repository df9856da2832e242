"""On the local stand-in the stack runs each node as the ServiceAccount of kubeconfs/base/rbac.yaml
(localcluster/node_identity.py): the node works under the repo's RBAC, and has nothing more."""
from __future__ import annotations

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

from localcluster.stack import JOBS_NAMESPACE
from tests.integration.support import pytestmark  # noqa: F401  (marks this module)


def test_the_node_runs_as_its_service_account_under_the_repo_rbac(shared_stack):
    stack = shared_stack
    path = stack.workdir / "nodes" / "node-a" / "kubeconfig"
    config = yaml.safe_load((stack.workdir / "node-node-a.yaml").read_text())
    assert config["kubernetes"]["kubeconfig"] == str(path)
    client = kubernetes.config.new_client_from_config(config_file=str(path))
    try:
        authz = kubernetes.client.AuthorizationV1Api(client)

        def may(verb, resource, group="", namespace=JOBS_NAMESPACE, name=None):
            attrs = {"verb": verb, "resource": resource, "group": group, "namespace": namespace}
            if name:
                attrs["name"] = name
            return authz.create_self_subject_access_review(
                {"spec": {"resourceAttributes": attrs}}).status.allowed
        assert may("watch", "jobs", "batch") and may("list", "pods")
        assert may("get", "services", namespace="v6-node", name="v6-proxy-node-a")
        assert not may("get", "services", namespace="v6-node", name="v6-proxy-node-b")
        assert not may("list", "secrets") and not may("create", "pods")
        with pytest.raises(ApiException) as e:
            kubernetes.client.CoreV1Api(client).list_namespaced_secret(JOBS_NAMESPACE)
        assert e.value.status == 403
    finally:
        client.close()
    # and with it the node runs tasks (the shared stack's other tests run them too)
    task = stack.create_task(image="v6-demo/avg", input={"method": "avg", "column": "Age"},
                             databases=["default"], nodes=["node-a"])
    done = stack.wait_task(task["id"], timeout=90)
    assert done["runs"][0]["status"] == "completed", done
