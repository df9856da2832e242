"""The Kubernetes 1.30 type definitions (``kubernetes-validate``'s strict JSON schemas), by the
names the real OpenAPI documents use (``io.k8s.api.core.v1.Pod``).

Shared by field pruning (``fieldvalidation``) and the OpenAPI documents (``openapi``); the
per-kind validators stay in ``validation``. Pure and cached: the file is read once.
"""
from __future__ import annotations

import functools
import json
from importlib import resources as importlib_resources
from typing import Any

from localcluster.apiserver.validation import K8S_SCHEMA_VERSION

REF_PREFIX = "#/$defs/"


@functools.lru_cache(maxsize=1)
def definitions() -> dict[str, dict]:
    """Definition name -> JSON schema (draft 2020-12; refs are ``#/$defs/<name>``)."""
    path = importlib_resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{K8S_SCHEMA_VERSION}-local-strict", "_definitions.json")
    return json.loads(path.read_text())["$defs"]


@functools.lru_cache(maxsize=None)
def name_of(group: str, version: str, kind: str) -> str | None:
    """The definition of one kind, found by its x-kubernetes-group-version-kind."""
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            if (gvk.get("group"), gvk.get("version"), gvk.get("kind")) == (group, version, kind):
                # meta types (Status, DeleteOptions, ...) list every group; kinds list one
                if len(schema["x-kubernetes-group-version-kind"]) == 1:
                    return name
    return None


def resolve(schema: Any) -> dict:
    """Follow a ``$ref`` (one level is all the definitions use); {} for anything else."""
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        return definitions().get(ref[len(REF_PREFIX):], {})
    return schema
