"""The in-memory object store: the API server's registry, used in-process by the controllers.

Contract: CONTRACTS.md §7. All methods are synchronous and must be called on the event loop's
thread. Stored objects are never modified in place (every write stores a new dict), so history
entries and watch events can share them; callers always get deep copies.
"""
from __future__ import annotations

import copy
import logging
import os
import random
import uuid
from collections import deque
from typing import Any, Callable, Iterable

from localcluster.apiserver import defaults, incluster, validation
from localcluster.apiserver.admission import Admission
from localcluster.apiserver.deletion import FOREGROUND, DeletionMixin
from localcluster.apiserver.errors import (ApiError, Gone, already_exists, bad_request, conflict,
                                 forbidden, invalid, not_found)
from localcluster.apiserver.patch import apply_patch
from localcluster.apiserver.resources import (ALL, CONFIGMAPS, DEPLOYMENTS, EVENTS, JOBS, NAMESPACES,
                                    NETWORKPOLICIES, PODS, RESOURCEQUOTAS, ROLEBINDINGS, ROLES,
                                    RUNTIMECLASSES, SECRETS, SERVICEACCOUNTS, SERVICES, Resource)
from localcluster.apiserver.index import Index
from localcluster.apiserver.selectors import FieldSelector, LabelSelector, make_filter
from localcluster.apiserver.timestamps import now_rfc3339
from localcluster.apiserver.watch import Watch

__all__ = ["Store", "Resource", "ApiError", "Gone", "Watch", "ALL", "NAMESPACES", "PODS",
           "SERVICES", "SECRETS", "CONFIGMAPS", "EVENTS", "JOBS", "NETWORKPOLICIES",
           "DEPLOYMENTS", "SERVICEACCOUNTS", "ROLES", "ROLEBINDINGS", "RESOURCEQUOTAS",
           "RUNTIMECLASSES", "now_rfc3339"]

log = logging.getLogger(__name__)

PROPAGATIONS = ("Background", "Foreground", "Orphan")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # as k8s.io/apimachinery's rand.String
# Metadata fields the server owns; clients cannot change them with update or patch.
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                "generation")

Key = tuple[str, str]  # (namespace or "", name)
Subscriber = Callable[[str, Resource, dict], None]


def _spec_part(obj: dict) -> dict:
    """Everything that counts for metadata.generation: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


_ATOMS = (str, int, float, bool, type(None))


def _clone(obj: Any) -> Any:
    """A deep copy of a JSON-shaped object. Objects here are JSON (dicts, lists, scalars), for
    which this is several times faster than copy.deepcopy: with 1,000 pods, controllers that
    list them spent most of the loop's time in deepcopy. Anything else falls back to it."""
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    if isinstance(obj, _ATOMS):
        return obj
    return copy.deepcopy(obj)


clone = _clone  # for subscribers that keep a shared object
# Tests set this (tests/conftest.py): every shared subscriber is checked not to change the object.
CHECK_SHARED = os.environ.get("LOCALCLUSTER_CHECK_SHARED") == "1"


class SharedObjectChanged(AssertionError):
    """A subscriber changed an object it was given to read (a bug in the stand-in)."""


class Store(DeletionMixin):
    def __init__(self, history: int = 5000, *, admission: bool = True,
                 namespaces: Iterable[str] = ("default", "kube-system"),
                 seed: int | None = None) -> None:
        """history: how many events watches can resume from. admission: apply defaulting and
        validation on create/replace/patch (mutate() never validates: controllers are trusted)."""
        self._objects: dict[Resource, dict[Key, dict]] = {r: {} for r in ALL}
        self._indexes: dict[Resource, Index] = {r: Index(r.plural) for r in ALL}
        self._rv = 0
        self._history: deque[tuple[int, str, Resource, dict, dict | None]] = deque(
            maxlen=max(1, history))
        self._floor = 0  # events with a resourceVersion <= floor are forgotten
        self._watches: set[Watch] = set()
        self._subscribers: list[tuple[Subscriber, bool]] = []  # (fn, shared)
        self._by_uid: dict[str, tuple[Resource, Key]] = {}
        self._dependents: dict[str, set[tuple[Resource, Key]]] = {}
        self._admission = admission
        self._chain = Admission(self)
        self._rand = random.Random(seed)
        for ns in namespaces:
            self.create(NAMESPACES, None, {"metadata": {"name": ns}})

    # ----------------------------------------------------------------- reads
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        return _clone(self._require(res, namespace, name))

    def try_get(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        obj = self._table(res).get(self._key(res, namespace, name))
        return _clone(obj) if obj is not None else None

    def list(self, res: Resource, namespace: str | None = None, label_selector: Any = None,
             field_selector: Any = None) -> tuple[list[dict], str]:
        ls = label_selector if isinstance(label_selector, LabelSelector) \
            else LabelSelector.parse(label_selector)
        fs = field_selector if isinstance(field_selector, FieldSelector) \
            else FieldSelector.parse(field_selector, res.selectable_fields)
        filt = make_filter(ls, fs)
        table = self._table(res)
        if not res.namespaced:
            namespace = None
        keys = self._index(res).candidates(namespace, ls, fs)
        if keys is None:
            keys = table.keys()
        # sorted by namespace and name, as etcd's key order makes the real server's lists
        items = [_clone(o) for o in (table[k] for k in sorted(keys)) if filt(o)]
        return items, str(self._rv)

    def get_by_uid(self, uid: str) -> tuple[Resource, dict] | None:
        ref = self._by_uid.get(uid)
        if ref is None:
            return None
        return ref[0], _clone(self._objects[ref[0]][ref[1]])

    # ---------------------------------------------------------------- writes
    def create(self, res: Resource, namespace: str | None, obj: dict,
               warnings: list[str] | None = None, dry_run: bool = False) -> dict:
        """warnings: admission's warnings (the Warning headers of the answer) are added here.
        dry_run (``dryRun=All``): defaulted, admitted and validated as for real, then not
        stored: the answer is the object as it would be, without a resourceVersion."""
        obj = _clone(obj)
        if not isinstance(obj, dict):
            raise bad_request("the object must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        ns = self._check_namespace(res, namespace, meta)
        shown_name = str(meta.get("name") or meta.get("generateName") or "")
        if not meta.get("name"):
            gen = meta.get("generateName")
            if not gen:
                raise invalid(res, "", [{"field": "metadata.name", "reason": "FieldValueRequired",
                                         "message": "Required value: name or generateName is required"}])
            meta["name"] = gen + "".join(self._rand.choice(_NAME_CHARS) for _ in range(5))
        name = meta["name"]
        if self._key(res, ns, name) in self._table(res):
            raise already_exists(res, name)
        if ns is not None:
            parent = self._objects[NAMESPACES].get(("", ns))
            if parent is None:
                raise not_found(NAMESPACES, ns)
            if parent["metadata"].get("deletionTimestamp"):
                raise forbidden(f'{res.kind.lower()}s "{name}" is forbidden: unable to create new '
                                f"content in namespace {ns} because it is being terminated")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        for f in _SERVER_META + ("resourceVersion",):
            meta.pop(f, None)
        if res.has_status and not (res.create_keeps_status and isinstance(obj.get("status"), dict)):
            obj["status"] = {}
        meta["uid"] = str(uuid.uuid4())  # before defaulting: a Job's selector uses it
        if self._admission:
            defaults.apply_defaults(res, obj, creating=True)
            if res == PODS:  # the ServiceAccount admission plugin (needs the account)
                incluster.admit_pod(obj, self.try_get(SERVICEACCOUNTS, ns, (
                    obj.get("spec") or {}).get("serviceAccountName") or "default"))
            self._chain.mutate(res, obj, shown_name)
            validation.validate(res, obj)
            self._chain.validate_create(res, obj, warnings)
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if dry_run:
            return obj  # a copy already: nobody else holds it
        self._write(res, obj, None, "ADDED")
        return _clone(obj)

    def replace(self, res: Resource, namespace: str | None, name: str, obj: dict,
                subresource: str | None = None, warnings: list[str] | None = None,
                dry_run: bool = False) -> dict:
        old = self._require(res, namespace, name)
        obj = _clone(obj)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("the object must be a JSON object with metadata")
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match the '
                              f"name on the URL ({name})")
        if res.namespaced and meta.get("namespace", namespace) != namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res, name, "the object has been modified; please apply your changes "
                                      "to the latest version and try again")
        return self._update(res, old, obj, subresource, admit=True, warnings=warnings,
                            dry_run=dry_run)

    def patch(self, res: Resource, namespace: str | None, name: str, patch: Any, patch_type: str,
              subresource: str | None = None, decode: Callable[[dict], dict] | None = None,
              warnings: list[str] | None = None, dry_run: bool = False) -> dict:
        """decode: what the API server's decoder makes of the patched object (drops unknown
        fields, or refuses them: localcluster.apiserver.writes); warnings: admission's."""
        old = self._require(res, namespace, name)
        new = apply_patch(old, patch, patch_type)
        if decode is not None:
            new = decode(new)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("name") != name or (res.namespaced and meta.get("namespace") != namespace):
            raise bad_request("a patch cannot change the name or namespace of an object")
        if meta.get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise conflict(res, name, "the object has been modified; please apply your changes "
                                      "to the latest version and try again")
        return self._update(res, old, new, subresource, admit=True, warnings=warnings,
                            dry_run=dry_run)

    def mutate(self, res: Resource, namespace: str | None, name: str,
               fn: Callable[[dict], Any]) -> dict:
        """Controller helper: fn edits a copy in place (spec, status, metadata.labels,
        finalizers...). No validation. No change → no new resourceVersion, no event. Returns
        the stored object, shared: read it, do not change or keep it (clone() to keep)."""
        old = self._require(res, namespace, name)
        new = _clone(old)
        fn(new)
        return self._update(res, old, new, "*", admit=False, shared=True)

    def delete(self, res: Resource, namespace: str | None, name: str, propagation: str | None = None,
               grace_period_seconds: int | None = None,
               preconditions: dict | None = None, copy_result: bool = True,
               dry_run: bool = False) -> dict:
        """Delete per Kubernetes semantics; returns the object's last state (with
        deletionTimestamp when it is not removed yet). Dependents are handled per propagation:
        Background (default; Orphan for Jobs) removes them after the owner, Foreground keeps
        the owner (finalizer foregroundDeletion) until blocking dependents are gone, Orphan
        removes their ownerReferences to it. ``copy_result=False`` (the garbage collector,
        which ignores it) may return the stored object itself. dry_run: checked as for real,
        nothing changes, and the answer is the object as it is."""
        obj = self._require(res, namespace, name)
        meta = obj["metadata"]
        for field, have in (("uid", meta["uid"]), ("resourceVersion", meta["resourceVersion"])):
            want = (preconditions or {}).get(field)
            if want and want != have:
                raise conflict(res, name, f"Precondition failed: {field} in precondition: {want}, "
                                          f"{field} in object meta: {have}")
        if propagation is None:
            propagation = "Orphan" if res == JOBS else "Background"
        if propagation not in PROPAGATIONS:
            raise bad_request(f"unsupported propagationPolicy {propagation!r}; "
                              f"one of {', '.join(PROPAGATIONS)}")
        if grace_period_seconds is not None and grace_period_seconds < 0:
            grace_period_seconds = 1  # as the API server: negative means "as soon as possible"
        if dry_run:
            return _clone(obj)
        if res == NAMESPACES:
            return self._delete_namespace(obj)
        if res == PODS:
            grace = self._pod_grace(obj, grace_period_seconds)
            if grace > 0:
                return self._begin_graceful(res, obj, grace)
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and FOREGROUND not in finalizers and self._dependents_of(obj):
            finalizers.append(FOREGROUND)
        if propagation == "Orphan":
            self._orphan(obj)
        if finalizers:
            new = _clone(obj)
            nmeta = new["metadata"]
            nmeta["finalizers"] = finalizers
            nmeta.setdefault("deletionTimestamp", now_rfc3339())
            nmeta["deletionGracePeriodSeconds"] = 0
            if new != obj:
                self._write(res, new, obj, "MODIFIED")
            if FOREGROUND in finalizers:
                for dres, dobj in self._dependents_of(new):
                    self._delete_quietly(dres, dobj, "Foreground")
                self._check_foreground(new["metadata"]["uid"])
            return _clone(self._table(res).get(self._key_of(res, new), new))
        self._remove(res, obj)
        if propagation == "Background":
            self._collect(obj)
        return _clone(obj) if copy_result else obj

    # ------------------------------------------------------------ watch/events
    def watch(self, res: Resource, namespace: str | None, resource_version: str | None,
              label_selector: Any = None, field_selector: Any = None) -> Watch:
        """Events after resource_version; None, "" or "0" first replays current objects as
        ADDED. Raises Gone (410) right here when resource_version is older than the kept
        history, and ApiError 400 for a malformed one."""
        filt = make_filter(label_selector, field_selector, res.selectable_fields)
        w = Watch(res, namespace, filt, str(self._rv), self._watches.discard)
        if resource_version in (None, "", "0"):
            for obj in sorted(self._iter(res, namespace),
                              key=lambda o: int(o["metadata"]["resourceVersion"])):
                w.offer("ADDED", obj, None)
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {resource_version!r}") from None
            if since < self._floor:
                raise Gone(f"too old resource version: {since} ({self._floor})")
            for rv, etype, eres, obj, old in self._history:
                if rv > since and eres == res:
                    w.offer(etype, obj, old)
        self._watches.add(w)
        return w

    def subscribe(self, fn: Subscriber, shared: bool = False) -> None:
        """fn(event_type, res, obj) is called synchronously after every change. obj is a copy,
        or with shared=True the stored object itself, which fn must neither change nor keep (as
        client-go's shared informer cache): a copy for each of six controllers was the largest
        single cost of the stand-in at 1,000 runs."""
        self._subscribers.append((fn, shared))

    def unsubscribe(self, fn: Subscriber) -> None:
        self._subscribers = [(f, s) for f, s in self._subscribers if f != fn]

    def close(self) -> None:
        """End every open watch."""
        for w in list(self._watches):
            w.close()

    @property
    def oldest_resource_version(self) -> int:
        """Watches may resume from this resourceVersion or any later one."""
        return self._floor

    # -------------------------------------------------------------- internals
    def _table(self, res: Resource) -> dict[Key, dict]:
        try:
            return self._objects[res]
        except KeyError:
            return self._objects.setdefault(res, {})

    def _index(self, res: Resource) -> Index:
        try:
            return self._indexes[res]
        except KeyError:
            return self._indexes.setdefault(res, Index(res.plural))

    @staticmethod
    def _key(res: Resource, namespace: str | None, name: str) -> Key:
        return ((namespace or "") if res.namespaced else "", name)

    def _key_of(self, res: Resource, obj: dict) -> Key:
        return self._key(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _require(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self._table(res).get(self._key(res, namespace, name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def _iter(self, res: Resource, namespace: str | None) -> list[dict]:
        table = self._table(res)
        if namespace and res.namespaced:
            return [table[k] for k in self._index(res).candidates(namespace, LabelSelector(),
                                                                  FieldSelector()) or ()]
        return list(table.values())

    def _check_namespace(self, res: Resource, namespace: str | None, meta: dict) -> str | None:
        if not res.namespaced:
            meta.pop("namespace", None)
            return None
        given = meta.get("namespace")
        if namespace and given and given != namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        ns = namespace or given or "default"
        meta["namespace"] = ns
        return ns

    def _update(self, res: Resource, old: dict, new: dict, subresource: str | None,
                admit: bool, warnings: list[str] | None = None, shared: bool = False,
                dry_run: bool = False) -> dict:
        """subresource None: spec/metadata update (status kept for types with a status
        subresource); "status": only .status; "*": everything (controllers)."""
        if subresource == "status":
            merged = _clone(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif subresource not in (None, "*"):
            raise bad_request(f"unsupported subresource {subresource!r}")
        meta = new.setdefault("metadata", {})
        for f in _SERVER_META:
            if f in old["metadata"]:
                meta[f] = old["metadata"][f]
            else:
                meta.pop(f, None)
        meta["name"] = old["metadata"]["name"]
        if res.namespaced:
            meta["namespace"] = old["metadata"]["namespace"]
        new["kind"], new["apiVersion"] = res.kind, res.api_version
        if subresource is None and res.has_status:
            if "status" in old:
                new["status"] = _clone(old["status"])
            else:
                new.pop("status", None)
        if admit and self._admission:
            defaults.apply_defaults(res, new, creating=False, old=old)
            validation.validate(res, new, old)
            if subresource is None:
                self._chain.validate_update(res, new, old, warnings)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        give = (lambda o: o) if shared else _clone
        if new == old:
            return give(old)
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if dry_run:
            return _clone(new)
        if old["metadata"].get("deletionTimestamp") and not meta.get("finalizers") \
                and not meta.get("deletionGracePeriodSeconds"):
            # The last finalizer is gone: the update becomes the deletion (watchers see DELETED).
            self._write(res, new, old, None)
            self._remove(res, new)
            self._collect(new)
            return give(new)
        self._write(res, new, old, "MODIFIED")
        return give(new)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _write(self, res: Resource, obj: dict, old: dict | None, event_type: str | None) -> None:
        """Store obj (a new dict) and emit event_type (None: store only, a removal follows)."""
        if event_type is not None:
            obj["metadata"]["resourceVersion"] = self._next_rv()
        key = self._key_of(res, obj)
        table, index = self._table(res), self._index(res)
        previous = table.get(key)
        if previous is not None:
            index.discard(key, previous)
        table[key] = obj
        index.add(key, obj)
        uid = obj["metadata"]["uid"]
        self._by_uid[uid] = (res, key)
        old_owners = {r.get("uid") for r in (old or {}).get("metadata", {}).get(
            "ownerReferences") or []}
        new_owners = {r.get("uid") for r in obj["metadata"].get("ownerReferences") or []}
        for o in old_owners - new_owners:
            self._dependents.get(o, set()).discard((res, key))
        for o in new_owners - old_owners:
            self._dependents.setdefault(o, set()).add((res, key))
        if event_type is not None:
            self._emit(event_type, res, obj, old)

    def _remove(self, res: Resource, obj: dict) -> None:
        key = self._key_of(res, obj)
        current = self._table(res).pop(key, None)
        if current is None:
            return
        self._index(res).discard(key, current)
        # only metadata changes: the rest may stay shared with earlier events (nobody keeps
        # the removed object but watchers, and they must not change it)
        gone = {**current, "metadata": {**current["metadata"]}}
        gone["metadata"]["resourceVersion"] = self._next_rv()
        uid = gone["metadata"]["uid"]
        self._by_uid.pop(uid, None)
        for r in gone["metadata"].get("ownerReferences") or []:
            self._dependents.get(r.get("uid"), set()).discard((res, key))
        self._emit("DELETED", res, gone, None)
        for r in gone["metadata"].get("ownerReferences") or []:
            self._check_foreground(r.get("uid"))
        ns = gone["metadata"].get("namespace")
        if ns:
            self._check_namespace_done(ns)

    def _emit(self, event_type: str, res: Resource, obj: dict, old: dict | None) -> None:
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0][0]
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append((rv, event_type, res, obj, old))
        for w in list(self._watches):
            if w.res == res:
                w.offer(event_type, obj, old)
        for fn, shared in list(self._subscribers):
            before = _clone(obj) if shared and CHECK_SHARED else None
            try:
                fn(event_type, res, obj if shared else _clone(obj))
            except Exception:  # a failing controller must not break the API server's write
                log.exception("store subscriber %r failed on %s %s", fn, event_type, res)
            if before is not None and before != obj:
                raise SharedObjectChanged(f"store subscriber {fn!r} changed the shared "
                                          f"{res.kind} {obj['metadata'].get('name')!r}")
