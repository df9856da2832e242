"""The pods/binding subresource: what a scheduler POSTs to assign a pod to a node.

As the real pod registry (pkg/registry/core/pod/storage): the Binding's name must be the pod's,
its target a Node (kind empty or "Node") with a name; a pod already assigned, or being deleted,
is a 409 Conflict; the bound pod gets ``spec.nodeName`` and the condition PodScheduled=True, and
the Binding's annotations are copied onto the pod. The node need not exist (nor does the real
server check it). The answer is a Success Status with code 201.
"""
from __future__ import annotations

from typing import Any

from localcluster.apiserver.errors import ApiError, bad_request, invalid
from localcluster.apiserver.resources import PODS, Resource
from localcluster.apiserver.timestamps import now_rfc3339

# only for error messages and details ("pods/binding"), as the registry names it
_BINDING = Resource("", "v1", "pods/binding", "Binding", True)


def _conflict(name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": {why}',
                    {"name": name, "kind": "pods/binding"})


def check_binding(body: Any, name: str) -> tuple[str, dict[str, str]]:
    """(node name, annotations) of a valid Binding for pod `name`, else the API's error."""
    if not isinstance(body, dict):
        raise bad_request("the object must be a JSON object of kind Binding")
    if body.get("kind") not in (None, "", "Binding"):
        raise bad_request(f"the body is a {body.get('kind')}, not a Binding")
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    if meta.get("name") and meta["name"] != name:
        raise bad_request("name in URL does not match name in Binding object")
    target = body.get("target") or {}
    if not isinstance(target, dict):
        raise bad_request("target must be an object")
    causes = []
    if target.get("kind") not in (None, "", "Node"):
        causes.append({"field": "target.kind", "reason": "FieldValueNotSupported",
                       "message": f'Unsupported value: "{target["kind"]}": supported values: '
                                  f'"Node", "<empty>"'})
    if not target.get("name"):
        causes.append({"field": "target.name", "reason": "FieldValueRequired",
                       "message": "Required value"})
    if causes:
        raise invalid(_BINDING, name, causes)
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise bad_request("metadata.annotations must be an object")
    return str(target["name"]), {str(k): str(v) for k, v in annotations.items()}


def bind(store, namespace: str, name: str, body: Any) -> dict:
    """Assign the pod to the Binding's node; returns the Success Status."""
    node, annotations = check_binding(body, name)
    pod = store.get(PODS, namespace, name)  # 404 as for the pod itself
    uid = ((body.get("metadata") or {}).get("uid")) or None
    if uid and uid != pod["metadata"]["uid"]:
        raise _conflict(name, f"Precondition failed: UID in precondition: {uid}, UID in object "
                              f"meta: {pod['metadata']['uid']}")
    if pod["metadata"].get("deletionTimestamp"):
        raise _conflict(name, f"pod {name} is being deleted, cannot be assigned to a host")
    assigned = (pod.get("spec") or {}).get("nodeName")
    if assigned:
        raise _conflict(name, f'pod {name} is already assigned to node "{assigned}"')
    now = now_rfc3339()

    def assign(obj: dict) -> None:
        obj.setdefault("spec", {})["nodeName"] = node
        if annotations:
            obj["metadata"]["annotations"] = {**(obj["metadata"].get("annotations") or {}),
                                              **annotations}
        status = obj.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        old = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"),
                   None)
        since = old["lastTransitionTime"] if old and old.get("status") == "True" else now
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": since})
        status["conditions"] = conds
    store.mutate(PODS, namespace, name, assign)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}
