"""The objects the static checks look at: kubeconfs/ rendered offline, and what the node generates
from the node configuration those manifests deploy."""
from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import yaml

from node.config import NodeConfig, parse_config
from node.manifests import build_job, build_network_policy
from node.models import parse_command
from node.proxy_address import ProxyAddress, parse_service
from tests.static.kustomize import render

REPO = Path(__file__).resolve().parents[2]
KUBECONFS = REPO / "kubeconfs"
# Every kustomization a user may apply, by variant name.
VARIANTS = {"k3d": KUBECONFS, "pvc": KUBECONFS / "overlays" / "pvc"}
K8S_VERSION = "1.30.0"
# The API server allocates a ClusterIP; rendered manifests have none.
CLUSTER_IP = "10.96.0.10"


@functools.lru_cache(maxsize=None)
def _rendered(variant: str) -> tuple[dict, ...]:
    return tuple(render(VARIANTS[variant]))


def manifests(variant: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(variant)))


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    for o in objects:
        meta = o.get("metadata") or {}
        if o["kind"] == kind and meta.get("name") == name and (namespace is None or meta.get("namespace") == namespace):
            return o
    raise LookupError(f"no {kind} {name} in the manifests")


def deployed_node_config(variant: str) -> NodeConfig:
    """The node configuration the variant's ConfigMap holds, parsed as the node parses it."""
    cm = find(manifests(variant), "ConfigMap", "v6-node-config", "v6-node")
    return parse_config(yaml.safe_load(cm["data"]["node.yaml"]), {"NODE_API_KEY": "static-check-key"})


def deployed_proxy_address(variant: str, config: NodeConfig) -> ProxyAddress:
    """The proxy's address as the node reads it from the variant's Service (a ClusterIP added)."""
    svc = find(manifests(variant), "Service", config.proxy.service, config.proxy.namespace)
    svc["spec"]["clusterIP"] = CLUSTER_IP
    return parse_service(svc, config.proxy.port)


def generated_job(config: NodeConfig, run_id: int = 7, proxy: ProxyAddress | None = None,
                  **payload) -> dict:
    raw = {"run_id": run_id, "task_id": run_id, "parent_id": None, "image": "v6-demo/avg",
           "input": {"method": "avg", "column": "Age"}, "databases": [d.label for d in config.databases],
           "token": "static-check-token", **payload}
    proxy = proxy or ProxyAddress(CLUSTER_IP, config.proxy.port, config.proxy.port)
    return build_job(parse_command(raw, config), config, proxy)


def with_live_channel(config: NodeConfig, enabled: bool = True) -> NodeConfig:
    """The configuration with the live channel on (a sidecar per pod, ingress from the node) or off."""
    return dataclasses.replace(config, live=dataclasses.replace(config.live, enabled=enabled))


def generated(variant: str) -> list[dict]:
    """The Job (one run) and the NetworkPolicy the node makes with the variant's configuration,
    with the live channel turned off (the plainest shape: nothing may reach the pod)."""
    config = with_live_channel(deployed_node_config(variant), enabled=False)
    proxy = deployed_proxy_address(variant, config)
    return [generated_job(config, proxy=proxy), build_network_policy(config, proxy)]


def generated_live(variant: str) -> list[dict]:
    """The same with the live channel on, as deployed (it is on by default); run 8, so both
    Jobs may sit side by side."""
    config = with_live_channel(deployed_node_config(variant))
    proxy = deployed_proxy_address(variant, config)
    return [generated_job(config, run_id=8, proxy=proxy), build_network_policy(config, proxy)]
