"""The nodes' Kubernetes identity in the stack harness (`localcluster.stack`), on the local
stand-in: each node runs as the ServiceAccount that kubeconfs/base/rbac.yaml deploys (``v6-node``
in ``v6-node``), with that file's Roles applied as they are, so the cluster's RBAC holds the nodes
to exactly what a real deployment grants. One addition, the harness's equivalent of the file's
``v6-node-proxy-service`` Role: ``get`` on each node's own proxy Service (``v6-proxy-<node id>``;
the file names the single Service ``v6-proxy`` of a deployment).

The token is a TokenRequest's, in a kubeconfig of its own per node (the stand-in serves the node
outside any pod, so there is no mounted token to use).
"""
from __future__ import annotations

import logging
from pathlib import Path

import yaml

from localcluster import kubeconfig as kc

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
RBAC_FILE = REPO / "kubeconfs" / "base" / "rbac.yaml"
NAMESPACE, ACCOUNT = "v6-node", "v6-node"
TOKEN_SECONDS = 7 * 24 * 3600  # outlives any stack; nothing rotates it
GROUP = "rbac.authorization.k8s.io"


def _create(fn, body: dict) -> None:
    """Create, leaving an existing object alone (a 409: made by an earlier start)."""
    from kubernetes.client.rest import ApiException
    try:
        fn(body)
    except ApiException as e:
        if e.status != 409:
            raise


def apply_repo_rbac(api_client) -> None:
    """The ServiceAccount, Roles and RoleBindings of kubeconfs/base/rbac.yaml."""
    from kubernetes import client
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    for doc in yaml.safe_load_all(RBAC_FILE.read_text()):
        if not doc:
            continue
        ns = doc["metadata"]["namespace"]
        create = {"ServiceAccount": lambda d: core.create_namespaced_service_account(ns, d),
                  "Role": lambda d: rbac.create_namespaced_role(ns, d),
                  "RoleBinding": lambda d: rbac.create_namespaced_role_binding(ns, d)}
        _create(create[doc["kind"]], doc)


def grant_proxy_service(api_client, namespace: str, service: str) -> None:
    """get on the one Service a node reads its proxy's address from."""
    from kubernetes import client
    rbac = client.RbacAuthorizationV1Api(api_client)
    name = f"v6-node-{service}"
    labels = {"app.kubernetes.io/part-of": "v6-node"}
    _create(lambda d: rbac.create_namespaced_role(namespace, d), {
        "metadata": {"name": name, "labels": labels},
        "rules": [{"apiGroups": [""], "resources": ["services"], "resourceNames": [service],
                   "verbs": ["get"]}]})
    _create(lambda d: rbac.create_namespaced_role_binding(namespace, d), {
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]})


def write_node_kubeconfig(api_client, admin_kubeconfig: Path, path: Path) -> Path:
    """A kubeconfig of the cluster with a token of the node's ServiceAccount."""
    from kubernetes import client
    answer = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        ACCOUNT, NAMESPACE, {"spec": {"expirationSeconds": TOKEN_SECONDS}})
    server, _ = kc.read_token(admin_kubeconfig)
    path.parent.mkdir(parents=True, exist_ok=True)
    kc.write(path, server, answer.status.token, ca_pem=kc.read_ca(admin_kubeconfig))
    return path
