"""Every manifest and every object the node generates is valid Kubernetes 1.30 (offline schemas,
strict: unknown fields are errors)."""
from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.static.support import K8S_VERSION, VARIANTS, generated, generated_live, manifests


def _id(o: dict) -> str:
    return f"{o['kind']}/{o['metadata'].get('namespace', '-')}/{o['metadata']['name']}"


def _cases():
    for variant in VARIANTS:
        for o in manifests(variant):
            yield pytest.param(o, id=f"{variant}:{_id(o)}")
        for o in generated(variant):
            yield pytest.param(o, id=f"{variant}:generated:{_id(o)}")
        for o in generated_live(variant):
            yield pytest.param(o, id=f"{variant}:generated-live:{_id(o)}")


@pytest.mark.parametrize("obj", list(_cases()))
def test_object_is_valid_kubernetes_1_30(obj):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_gpu_and_runtime_class_job_is_valid():
    """The GPU variant of a Job adds fields the default one lacks."""
    from node.config import parse_config
    from tests.static.support import generated_job
    config = parse_config({"node_id": "node-a", "api_key": "k" * 8, "server_url": "http://s:5000",
                           "task_dir": "/var/lib/v6-node/tasks", "images": {"allowed": ["v6-demo/*"]},
                           "job": {"gpu_runtime_class_name": "nvidia"}}, {})
    job = generated_job(config, databases=[], resources={"cpu": "1", "memory": "1Gi", "gpu": 1})
    assert job["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_the_schema_check_catches_a_mistake():
    """The check is live: a misspelt field in a real manifest is refused."""
    deployment = copy.deepcopy(next(o for o in manifests("k3d") if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
