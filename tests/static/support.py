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
from tests.static.kustomize import render

REPO = Path(__file__).resolve().parents[2]
KUBECONFS = REPO / "kubeconfs"
# Every kustomization a user may apply, by variant name.
VARIANTS = {"k3d": KUBECONFS, "pvc": KUBECONFS / "overlays" / "pvc"}
K8S_VERSION = "1.30.0"


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


def generated_job(config: NodeConfig, run_id: int = 7, **payload) -> dict:
    raw = {"run_id": run_id, "task_id": run_id, "parent_id": None, "image": "v6-demo/avg",
           "input": {"method": "avg", "column": "Age"}, "databases": [d.label for d in config.databases],
           "token": "static-check-token", **payload}
    return build_job(parse_command(raw, config), config)


def with_live_channel(config: NodeConfig, enabled: bool = True) -> NodeConfig:
    """The configuration with the live channel on (a sidecar per pod, ingress from the node) or off."""
    return dataclasses.replace(config, live=dataclasses.replace(config.live, enabled=enabled))


def generated(variant: str) -> list[dict]:
    """The Job (one run) and the NetworkPolicy the node makes with the variant's configuration,
    with the live channel turned off (the plainest shape: nothing may reach the pod)."""
    config = with_live_channel(deployed_node_config(variant), enabled=False)
    return [generated_job(config), build_network_policy(config)]


def generated_live(variant: str) -> list[dict]:
    """The same with the live channel on, as deployed (it is on by default); run 8, so both
    Jobs may sit side by side."""
    config = with_live_channel(deployed_node_config(variant))
    return [generated_job(config, run_id=8), build_network_policy(config)]
