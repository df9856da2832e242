"""The NetworkPolicies of the jobs namespace as they are now: a `node.watching.Watcher` keeps
this view current (list, then watch), so a run's provenance can name every policy that selected
its pod when its Job was created without a request per run."""
from __future__ import annotations

import threading

from node.provenance import selecting_policies

KIND = "networkpolicies"


class PolicyView:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._policies: dict[str, dict] = {}
        self.synced = threading.Event()

    def sink(self, item: tuple) -> None:
        """The watcher's ("sync", kind, items) and ("event", kind, WatchEvent)."""
        with self._lock:
            if item[0] == "sync":
                self._policies = {p["metadata"]["name"]: _kept(p) for p in item[2]}
                self.synced.set()
            elif item[0] == "event":
                event = item[2]
                name = event.object.get("metadata", {}).get("name", "")
                if event.type == "DELETED":
                    self._policies.pop(name, None)
                else:
                    self._policies[name] = _kept(event.object)

    def selecting(self, labels: dict[str, str]) -> list[dict] | None:
        """The policies selecting a pod with these labels; None until the first list came."""
        if not self.synced.is_set():
            return None
        with self._lock:
            policies = list(self._policies.values())
        return selecting_policies(policies, self.namespace, labels)


def _kept(policy: dict) -> dict:
    meta = policy.get("metadata") or {}
    return {"metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                         "resourceVersion": meta.get("resourceVersion", "")},
            "spec": policy.get("spec") or {}}
