"""The RuntimeClass admission plugin (mutating, Kubernetes v1.30), pure: a pod naming a
RuntimeClass that does not exist is refused; one that exists gives the pod its overhead and
merges its scheduling (nodeSelector, tolerations) into the pod, refusing conflicts as the real
plugin does."""
from __future__ import annotations

from localcluster.apiserver.admission.quantity import Quantity


class RuntimeClassRefused(Exception):
    """The message after 'pods "x" is forbidden: '."""


def _same_overhead(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    return all(Quantity.parse(a[k]).value == Quantity.parse(b[k]).value for k in a)


def admit(spec: dict, runtime_class: dict | None) -> None:
    """spec: the pod's spec (changed in place). runtime_class: the one the pod names, None
    when it does not exist (call only for pods that name one)."""
    name = spec.get("runtimeClassName")
    if runtime_class is None:
        raise RuntimeClassRefused(f'pod rejected: RuntimeClass "{name}" not found')
    fixed = (runtime_class.get("overhead") or {}).get("podFixed")
    if spec.get("overhead") is not None:
        if fixed is None:
            raise RuntimeClassRefused("pod rejected: Pod Overhead set without corresponding "
                                      "RuntimeClass defined Overhead")
        if not _same_overhead(spec["overhead"], fixed):
            raise RuntimeClassRefused("pod rejected: Pod's Overhead doesn't match RuntimeClass's "
                                      "defined Overhead")
    elif fixed is not None:
        spec["overhead"] = dict(fixed)
    scheduling = runtime_class.get("scheduling") or {}
    selector = scheduling.get("nodeSelector") or {}
    if selector:
        own = spec.get("nodeSelector") or {}
        for key, value in selector.items():
            if key in own and own[key] != value:
                raise RuntimeClassRefused(
                    f"conflict: runtimeClass.scheduling.nodeSelector[{key}] = "
                    f"{value}; pod.spec.nodeSelector[{key}] = {own[key]}")
        spec["nodeSelector"] = {**own, **selector}
    tolerations = list(spec.get("tolerations") or [])
    for t in scheduling.get("tolerations") or []:
        if t not in tolerations:
            tolerations.append(t)
    if tolerations:
        spec["tolerations"] = tolerations
