"""What kubeconfs/ deploys, beyond the schema: least privilege for the node, configurations the
programs accept, and the wiring between the parts."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.static.support import VARIANTS, deployed_node_config, find, manifests

def _node_needs() -> dict[tuple[str, str], set[str]]:
    """Exactly what node/cluster.py calls in the jobs namespace, per (apiGroup, resource)."""
    from node.cluster import PERMISSIONS
    needs: dict[tuple[str, str], set[str]] = {}
    for method, perms in PERMISSIONS.items():
        # the proxy's namespace; every user; an operator's `explain --server-dry-run` (the
        # node's own explain_task dry runs only what it may create anyway)
        if method in ("get_service", "access_review", "dry_run_create"):
            continue
        for verb, group, resource in perms:
            needs.setdefault((group, resource), set()).add(verb)
    return needs


NODE_NEEDS = _node_needs()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_node_has_only_a_namespaced_role_in_the_jobs_namespace(variant):
    objs = manifests(variant)
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "v6-jobs"]
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles] == [("v6-jobs", "v6-node")]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles[0]["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == NODE_NEEDS
    assert "*" not in {v for verbs in granted.values() for v in verbs}
    binding = find(objs, "RoleBinding", "v6-node", "v6-jobs")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "v6-node"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "v6-node", "namespace": "v6-node"}]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_in_its_own_namespace_the_node_may_only_read_the_proxy_service(variant):
    """Algorithm pods have no DNS: the node reads the proxy's Service (ClusterIP, targetPort),
    that one Service only (node/proxy_service.py)."""
    objs = manifests(variant)
    config = deployed_node_config(variant)
    roles = [o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] != "v6-jobs"]
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles] == \
        [(config.proxy.namespace, "v6-node-proxy-service")]
    assert roles[0]["rules"] == [{"apiGroups": [""], "resources": ["services"],
                                  "resourceNames": [config.proxy.service], "verbs": ["get"]}]
    find(objs, "Service", config.proxy.service, config.proxy.namespace)  # it exists
    binding = find(objs, "RoleBinding", "v6-node-proxy-service", config.proxy.namespace)
    assert binding["roleRef"]["name"] == "v6-node-proxy-service"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "v6-node", "namespace": "v6-node"}]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_only_the_node_gets_a_service_account_token(variant):
    for o in manifests(variant):
        if o["kind"] == "Deployment":
            spec = o["spec"]["template"]["spec"]
            is_node = o["metadata"]["name"] == "v6-node"
            assert spec.get("automountServiceAccountToken") is is_node, o["metadata"]["name"]
            assert (spec.get("serviceAccountName") == "v6-node") is is_node


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_node_deployment_matches_its_config(variant):
    objs = manifests(variant)
    config = deployed_node_config(variant)
    node = find(objs, "Deployment", "v6-node", "v6-node")
    spec = node["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert node["spec"]["replicas"] == 1 and node["spec"]["strategy"]["type"] == "Recreate"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    tasks = volumes[mounts[config.task_dir]]
    if config.storage.mode == "pvc":
        assert tasks["persistentVolumeClaim"]["claimName"] == config.storage.claim_name
        claim = find(objs, "PersistentVolumeClaim", config.storage.claim_name, config.kubernetes.jobs_namespace)
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        find(objs, "PersistentVolumeClaim", config.storage.claim_name, "v6-node")
    else:
        # the Jobs mount the same host path the node writes to
        assert tasks["hostPath"]["path"] == config.task_dir
    # probes on the node's health port; the key from the Secret, never from the ConfigMap
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert [p["containerPort"] for p in container["ports"]] == [config.health.port]
    assert config.health.host == "0.0.0.0"
    key = [e for e in container["env"] if e["name"] == "NODE_API_KEY"]
    assert key[0]["valueFrom"]["secretKeyRef"]["name"] == "v6-node-api-key"
    assert "api_key" not in yaml.safe_load(find(objs, "ConfigMap", "v6-node-config")["data"]["node.yaml"])
    assert config.kubernetes.kubeconfig is None and config.kubernetes.jobs_namespace == "v6-jobs"
    assert config.images.allowed == ("v6-demo/*",)


def test_server_and_proxy_accept_their_configs(tmp_path):
    from dummy_proxy.config import load_config as load_proxy_config
    from dummy_server.config import load_config as load_server_config
    objs = manifests("k3d")
    proxy_file = tmp_path / "proxy.yaml"
    proxy_file.write_text(find(objs, "ConfigMap", "v6-proxy-config")["data"]["proxy_config.yaml"])
    proxy = load_proxy_config(proxy_file)
    assert proxy.listen_port == 8080
    server_file = tmp_path / "server.yaml"
    server_file.write_text(find(objs, "Secret", "v6-server-config")["stringData"]["server_config.yaml"])
    server = load_server_config(server_file, env={})
    config = deployed_node_config("k3d")
    assert server.node_ids == [config.node_id]
    node_key = find(objs, "Secret", "v6-node-api-key", "v6-node")["stringData"]["api-key"]
    assert server.node_keys[node_key] == config.node_id
    # the node and the proxy both point at the server's Service
    service = find(objs, "Service", "v6-server", "v6-server")
    url = f"http://v6-server.v6-server.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    assert config.server_url == url and proxy.upstream.rstrip("/") == url
    proxy_service = find(objs, "Service", "v6-proxy", "v6-node")
    assert config.proxy.host == "v6-proxy.v6-node.svc.cluster.local"
    assert proxy_service["spec"]["ports"][0]["port"] == config.proxy.port


def test_every_image_is_a_project_image_with_a_dockerfile():
    repo = Path(__file__).resolve().parents[2]
    dockerfiles = {"v6-demo/node": "node/Dockerfile", "v6-demo/server": "dummy_server/Dockerfile",
                   "v6-demo/proxy": "dummy_proxy/Dockerfile"}
    for o in manifests("k3d"):
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                name, _, tag = c["image"].partition(":")
                assert (repo / dockerfiles[name]).is_file(), name
                assert c["imagePullPolicy"] == "IfNotPresent"  # k3d image import, no registry


def test_k3d_cluster_keeps_network_policies_enforced():
    from tests.static.support import KUBECONFS, REPO
    config = yaml.safe_load((KUBECONFS / "k3d" / "cluster.yaml").read_text())
    assert (config["apiVersion"], config["kind"]) == ("k3d.io/v1alpha5", "Simple")
    assert config["image"].startswith("rancher/k3s:v1.30.")  # the version the schemas check
    args = [a["arg"] for a in (config.get("options", {}).get("k3s", {}).get("extraArgs") or [])]
    assert not any("network-policy" in a or "flannel-backend=none" in a for a in args), args
    makefile = (REPO / "mk" / "k8s.mk").read_text()
    assert f"K3D_CLUSTER ?= {config['metadata']['name']}\n" in makefile
    # the hostPaths the manifests use are the ones `make cluster` shares into the cluster node
    config_node = deployed_node_config("k3d")
    assert f":{config_node.task_dir}@server:0" in makefile
    data_dir = config_node.databases[0].uri.rsplit("/", 1)[0]
    assert f":{data_dir}:ro@server:0" in makefile
