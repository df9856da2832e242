"""ResourceQuota controller: keeps each quota's ``status.hard`` (its spec's) and ``status.used``
(what the namespace's pods use of it, terminal pods not counted) current, as the real
resourcequota controller does; quota admission (localcluster.apiserver.admission) takes part
for a quota only once its status.hard is set, as on a real cluster."""
from __future__ import annotations

import logging

from localcluster.apiserver.admission.quantity import Quantity, QuantityError
from localcluster.apiserver.admission.quota import usage_of
from localcluster.apiserver.resources import PODS, RESOURCEQUOTAS
from localcluster.controllers.workqueue import Reconciler

log = logging.getLogger(__name__)


def quota_status(quota: dict, pods: list[dict]) -> dict:
    hard = (quota.get("spec") or {}).get("hard") or {}
    used = usage_of(quota, pods)
    return {"hard": {k: str(Quantity.parse(v)) for k, v in hard.items()},
            "used": {k: str(v) for k, v in used.items()}}


class QuotaController(Reconciler):
    kind = "resourcequota"

    def __init__(self, store) -> None:
        super().__init__()
        self.store = store

    def start(self) -> None:
        self.store.subscribe(self._on_event, shared=True)  # read only
        for q in self.store.list(RESOURCEQUOTAS)[0]:
            self._enqueue((q["metadata"]["namespace"], q["metadata"]["name"]))

    def close(self) -> None:
        self.store.unsubscribe(self._on_event)
        super().close()

    def _on_event(self, etype: str, res, obj: dict) -> None:
        meta = obj["metadata"]
        if res == RESOURCEQUOTAS and etype != "DELETED":
            self._enqueue((meta["namespace"], meta["name"]))
        elif res == PODS:
            for q in self.store.list(RESOURCEQUOTAS, meta["namespace"])[0]:
                self._enqueue((meta["namespace"], q["metadata"]["name"]))

    def sync(self, ns: str, name: str) -> None:
        quota = self.store.try_get(RESOURCEQUOTAS, ns, name)
        if quota is None:
            return
        try:
            status = quota_status(quota, self.store.list(PODS, ns)[0])
        except QuantityError as e:
            log.warning("ResourceQuota %s/%s: %s", ns, name, e)
            return
        if quota.get("status") == status:
            return

        def write(obj: dict) -> None:
            obj["status"] = status
        self.store.mutate(RESOURCEQUOTAS, ns, name, write)
