"""Offline rendering of kubeconfs/ — the subset of kustomize the project's kustomizations use.

No kubectl or kustomize binary exists where the tests run, so this renders `resources` (files and
directories with a kustomization.yaml) and `patches` (strategic-merge patches by file path).
Any other kustomization field is refused loudly, so the tests never silently check something
other than what `kubectl apply -k` would apply.

Strategic merge, as far as these manifests need it: maps merge recursively, `null` deletes a key,
lists of maps merge by their patch merge key (`name` for containers, volumes, env, ports;
`mountPath` for volumeMounts), other lists are replaced.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches"}
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "ports": "containerPort", "volumeMounts": "mountPath"}


class RenderError(Exception):
    pass


def load_documents(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{path}: {e}") from e
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            raise RenderError(f"{path}: a document is not a Kubernetes object")
    return docs


def object_key(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["kind"], meta.get("namespace", ""), meta.get("name", "")


def render(directory: Path) -> list[dict]:
    """The objects `kubectl apply -k directory` would apply, in order."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise RenderError(f"{kfile}: fields not supported by the offline renderer: {sorted(unknown)}")
    objects: list[dict] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        objects.extend(render(target) if target.is_dir() else load_documents(target))
    keys = [object_key(o) for o in objects]
    if len(keys) != len(set(keys)):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise RenderError(f"{kfile}: objects defined twice: {dupes}")
    for patch_entry in spec.get("patches") or []:
        if set(patch_entry) != {"path"}:
            raise RenderError(f"{kfile}: only `patches: [{{path: file}}]` is supported")
        patch_docs = load_documents(directory / patch_entry["path"])
        if len(patch_docs) != 1:
            raise RenderError(f"{kfile}: {patch_entry['path']} must hold exactly one patch")
        patch = patch_docs[0]
        matches = [i for i, o in enumerate(objects) if object_key(o) == object_key(patch)]
        if not matches:
            raise RenderError(f"{kfile}: patch {patch_entry['path']} matches no object {object_key(patch)}")
        objects[matches[0]] = strategic_merge(objects[matches[0]], patch)
    return objects


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, b in enumerate(out) if b.get(key) == item.get(key)), None)
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = strategic_merge(out[index], item, field)
        return out
    return copy.deepcopy(patch)
