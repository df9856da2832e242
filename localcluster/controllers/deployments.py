"""Deployment controller (apps/v1), simplified.

Pods are made from ``spec.template`` directly, with no ReplicaSet in between (a simplification:
``kubectl get rs`` shows nothing): each pod is named ``<deployment>-<hash>-<5 chars>``, carries the
template's labels plus ``pod-template-hash`` (a hash of the template) and a controller
ownerReference to the Deployment, so deleting the Deployment removes its pods (Background
propagation, the store's garbage collector).

- ``spec.replicas`` pods of the current template are kept: a missing one (deleted, evicted) is
  made again; a pod that finished (phase Succeeded/Failed) is deleted and replaced. Restarting
  containers of a running pod (restartPolicy Always) is the kubelet's job.
- Rolling update, simplified for both strategies: on a template change every old pod is deleted
  and the new ones are made once the old are gone (Recreate semantics; maxSurge/maxUnavailable
  are not used, so pods on the host network never fight over a port).
- ``status``: replicas, updatedReplicas, readyReplicas, availableReplicas (ready, no
  minReadySeconds), unavailableReplicas, observedGeneration and the conditions Available and
  Progressing, as ``kubectl rollout status`` reads them. ``spec.paused`` holds changes back.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import DEPLOYMENTS, PODS
from localcluster.apiserver.timestamps import now_rfc3339
from localcluster.controllers.workqueue import Reconciler

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
_HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of real pod-template-hash values


def template_hash(template: dict) -> str:
    """A stable short hash of a pod template (not the real FNV value; the same role)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_CHARS[b % len(_HASH_CHARS)] for b in digest[:10])


def _owner(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and ref.get("controller"):
            return ref.get("name")
    return None


def _owned_by(pod: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller")
               for ref in pod["metadata"].get("ownerReferences") or [])


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _finished(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_from_template(dep: dict, pod_hash: str) -> dict:
    meta = dep["metadata"]
    tmpl = (dep.get("spec") or {}).get("template") or {}
    tmeta = tmpl.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash}
    pod_meta: dict = {"generateName": f"{meta['name'][:46]}-{pod_hash}-",
                      "namespace": meta["namespace"], "labels": labels,
                      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                           "name": meta["name"], "uid": meta["uid"],
                                           "controller": True, "blockOwnerDeletion": True}]}
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(tmpl.get("spec") or {})}


def _condition(old: list[dict], ctype: str, status: str, reason: str, message: str) -> dict:
    now = now_rfc3339()
    prev = next((c for c in old if c.get("type") == ctype), None)
    if prev and (prev.get("status"), prev.get("reason")) == (status, reason):
        return prev  # unchanged: keep its times, so a no-op sync writes nothing
    changed = prev is None or prev.get("status") != status
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now if changed else prev.get("lastTransitionTime", now)}


def compute_status(dep: dict, pods: list[dict], pod_hash: str) -> dict:
    """The Deployment's status from its live (not terminating) pods. Pure."""
    spec, meta = dep.get("spec") or {}, dep["metadata"]
    want = int(spec.get("replicas", 1))
    updated = [p for p in pods if p["metadata"].get("labels", {}).get(HASH_LABEL) == pod_hash]
    ready = [p for p in pods if _ready(p)]
    available = len(ready)
    old_conditions = (dep.get("status") or {}).get("conditions") or []
    name = meta["name"]
    conditions = [
        _condition(old_conditions, "Available", "True" if available >= want else "False",
                   "MinimumReplicasAvailable" if available >= want
                   else "MinimumReplicasUnavailable",
                   "Deployment has minimum availability." if available >= want
                   else "Deployment does not have minimum availability."),
    ]
    if spec.get("paused"):
        conditions.append(_condition(old_conditions, "Progressing", "Unknown",
                                     "DeploymentPaused", "Deployment is paused"))
    elif len(updated) == want == len(pods) and available >= want:
        conditions.append(_condition(old_conditions, "Progressing", "True",
                                     "NewReplicaSetAvailable",
                                     f'Pods of deployment "{name}" have successfully progressed.'))
    else:
        conditions.append(_condition(old_conditions, "Progressing", "True", "ReplicaSetUpdated",
                                     f'Deployment "{name}" is progressing.'))
    status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods),
              "updatedReplicas": len(updated), "readyReplicas": len(ready),
              "availableReplicas": available, "conditions": conditions}
    if want - available > 0:
        status["unavailableReplicas"] = want - available
    return {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}


class DeploymentController(Reconciler):
    kind = "deployment"

    def __init__(self, store) -> None:
        super().__init__()
        self.store = store

    def start(self) -> None:
        self.store.subscribe(self._on_event, shared=True)  # read only
        for dep in self.store.list(DEPLOYMENTS)[0]:
            self._enqueue((dep["metadata"]["namespace"], dep["metadata"]["name"]))

    def close(self) -> None:
        self.store.unsubscribe(self._on_event)
        super().close()

    def _on_event(self, event_type: str, res, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        if res == DEPLOYMENTS:
            self._enqueue((meta.get("namespace"), meta.get("name")))
        elif res == PODS:
            owner = _owner(obj)
            if owner:
                self._enqueue((meta.get("namespace"), owner))

    # ------------------------------------------------------------------ reconcile
    def sync(self, namespace: str, name: str) -> None:
        dep = self.store.try_get(DEPLOYMENTS, namespace, name)
        if dep is None or dep["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the pods
        uid = dep["metadata"]["uid"]
        spec = dep.get("spec") or {}
        pod_hash = template_hash(spec.get("template") or {})
        owned = [p for p in self.store.list(PODS, namespace)[0] if _owned_by(p, uid)]
        terminating = [p for p in owned if p["metadata"].get("deletionTimestamp")]
        live = [p for p in owned if not p["metadata"].get("deletionTimestamp")]
        for pod in [p for p in live if _finished(p)]:
            self._delete(pod)  # replaced below or on the next sync
            live.remove(pod)
        if not spec.get("paused"):
            live = self._scale(dep, live, terminating, pod_hash)
        self._write_status(dep, live, pod_hash)

    def _scale(self, dep: dict, live: list[dict], terminating: list[dict],
               pod_hash: str) -> list[dict]:
        want = int((dep.get("spec") or {}).get("replicas", 1))
        old = [p for p in live if p["metadata"].get("labels", {}).get(HASH_LABEL) != pod_hash]
        current = [p for p in live if p not in old]
        for pod in old:
            self._delete(pod)
        if old or any(p["metadata"].get("labels", {}).get(HASH_LABEL) != pod_hash
                      for p in terminating):
            return current  # new pods once the old ones are gone
        # Excess: not-ready pods go first, then the newest.
        current.sort(key=lambda p: (_ready(p), p["metadata"].get("creationTimestamp", "")),
                     reverse=True)
        while len(current) > want:
            self._delete(current.pop())
        for _ in range(want - len(current)):
            try:
                current.append(self.store.create(PODS, dep["metadata"]["namespace"],
                                                 pod_from_template(dep, pod_hash)))
            except ApiError as e:
                log.warning("deployment %s/%s: cannot create a pod: %s",
                            dep["metadata"]["namespace"], dep["metadata"]["name"], e.message)
                break
        return current

    def _delete(self, pod: dict) -> None:
        try:
            self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError as e:
            if e.code != 404:
                raise

    def _write_status(self, dep: dict, live: list[dict], pod_hash: str) -> None:
        status = compute_status(dep, live, pod_hash)
        if status == dep.get("status"):
            return

        def put(obj: dict) -> None:
            obj["status"] = status
        try:
            self.store.mutate(DEPLOYMENTS, dep["metadata"]["namespace"], dep["metadata"]["name"],
                              put)
        except ApiError as e:
            if e.code != 404:
                raise
