"""Deletion semantics of the store: graceful pod deletion, finalizers, garbage collection of
dependents (Background / Foreground / Orphan) and namespace termination.

A mixin of `localcluster.apiserver.store.Store`; it uses the store's tables and write primitives.
"""
from __future__ import annotations

import copy
import logging

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import NAMESPACES, Resource
from localcluster.apiserver.timestamps import now_rfc3339

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"


class DeletionMixin:
    @staticmethod
    def _pod_grace(pod: dict, requested: int | None) -> int:
        # Unscheduled and terminated pods go at once, as in the real pod strategy.
        if not pod.get("spec", {}).get("nodeName"):
            return 0
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return requested
        return int(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))

    def _begin_graceful(self, res: Resource, obj: dict, grace: int) -> dict:
        meta = obj["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and current <= grace:
            return copy.deepcopy(obj)  # already terminating, with a shorter grace
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = now_rfc3339(grace)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        self._write(res, new, obj, "MODIFIED")
        return copy.deepcopy(new)

    def _delete_quietly(self, res: Resource, obj: dict, propagation: str) -> None:
        try:
            self.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                        propagation=propagation, copy_result=False)
        except ApiError as e:
            if e.code != 404:
                log.warning("garbage collection of %s %s failed: %s", res,
                            obj["metadata"]["name"], e.message)

    def _dependents_of(self, owner: dict) -> list[tuple[Resource, dict]]:
        out = []
        for res, key in list(self._dependents.get(owner["metadata"]["uid"], ())):
            dep = self._table(res).get(key)
            if dep is not None:
                out.append((res, dep))
        return out

    def _orphan(self, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for res, dep in self._dependents_of(owner):
            new = copy.deepcopy(dep)
            refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self._write(res, new, dep, "MODIFIED")

    def _collect(self, owner: dict) -> None:
        """Garbage collection after an owner is gone: dependents whose owners are all gone are
        deleted (Background); others just lose the dangling reference."""
        uid = owner["metadata"]["uid"]
        for res, dep in self._dependents_of(owner):
            refs = dep["metadata"].get("ownerReferences") or []
            if any(r.get("uid") != uid and r.get("uid") in self._by_uid for r in refs):
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self._write(res, new, dep, "MODIFIED")
            else:
                self._delete_quietly(res, dep, "Background")
        self._dependents.pop(uid, None)

    def _check_foreground(self, owner_uid: str | None) -> None:
        ref = self._by_uid.get(owner_uid or "")
        if ref is None:
            return
        res, key = ref
        owner = self._table(res)[key]
        finalizers = owner["metadata"].get("finalizers") or []
        if FOREGROUND not in finalizers or not owner["metadata"].get("deletionTimestamp"):
            return
        blocking = [d for _, d in self._dependents_of(owner)
                    if any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion")
                           for r in d["metadata"].get("ownerReferences") or [])]
        if blocking:
            return
        new = copy.deepcopy(owner)
        rest = [f for f in finalizers if f != FOREGROUND]
        if rest:
            new["metadata"]["finalizers"] = rest
            self._write(res, new, owner, "MODIFIED")
        else:
            new["metadata"].pop("finalizers", None)
            self._write(res, new, owner, None)
            self._remove(res, new)
            self._collect(new)

    def _delete_namespace(self, ns_obj: dict) -> dict:
        name = ns_obj["metadata"]["name"]
        if not ns_obj["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(ns_obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            new.setdefault("status", {})["phase"] = "Terminating"
            self._write(NAMESPACES, new, ns_obj, "MODIFIED")
            for res in list(self._objects):
                if res.namespaced:
                    for obj in list(self._iter(res, name)):
                        self._delete_quietly(res, obj, "Background")
            self._check_namespace_done(name)
        return copy.deepcopy(self._objects[NAMESPACES].get(("", name), ns_obj))

    def _check_namespace_done(self, name: str) -> None:
        ns_obj = self._objects[NAMESPACES].get(("", name))
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        if any(self._iter(res, name) for res in self._objects if res.namespaced):
            return
        self._remove(NAMESPACES, ns_obj)
