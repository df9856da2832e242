"""core/v1 Events as the kubelet and the controllers record them, correlated as client-go's
recorder does: a repeat (same object, type, reason and message) counts up the existing event;
from the 10th distinct message of the same object, type and reason within 10 minutes on, they
are combined into one event, "(combined from similar events): <latest message>", that counts up
(a Job's FailedCreate names a new pod each time, so only this keeps them from piling up)."""
from __future__ import annotations

import logging
import time

from localcluster.apiserver.errors import ApiError
from localcluster.kubelet.status import rfc3339
from localcluster.apiserver.resources import EVENTS

log = logging.getLogger(__name__)

# client-go's EventAggregator defaults
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL = 600.0
COMBINED_PREFIX = "(combined from similar events): "


class EventRecorder:
    def __init__(self, store, node_name: str) -> None:
        self.store = store
        self.node_name = node_name
        self._seen: dict[tuple, str] = {}  # (uid, fieldPath, type, reason, message) -> event name
        # (uid, fieldPath, type, reason) -> (start of the interval, distinct messages in it)
        self._similar: dict[tuple, tuple[float, set[str]]] = {}

    def record(self, obj: dict, etype: str, reason: str, message: str,
               field_path: str | None = None, component: str = "kubelet") -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = (meta.get("uid"), field_path, etype, reason, message)
        if self._combine(key):
            message = COMBINED_PREFIX + message
            key = (*key[:4], COMBINED_PREFIX)
        now = rfc3339()
        name = self._seen.get(key)
        if name is not None:
            def bump(ev: dict) -> None:
                ev["count"] = int(ev.get("count") or 1) + 1
                ev["lastTimestamp"] = now
                ev["message"] = message
            try:
                self.store.mutate(EVENTS, ns, name, bump)
                return
            except ApiError:
                self._seen.pop(key, None)
        involved = {"kind": obj.get("kind", "Pod"), "namespace": ns, "name": meta["name"],
                    "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion", "v1"),
                    "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component}
        if component == "kubelet":
            source["host"] = self.node_name
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": involved, "reason": reason, "message": message, "type": etype,
            "source": source, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "eventTime": None, "reportingComponent": component,
            "reportingInstance": self.node_name if component == "kubelet" else "",
        }
        try:
            created = self.store.create(EVENTS, ns, event)
        except ApiError as e:
            log.debug("cannot record event %s for %s/%s: %s", reason, ns, meta["name"], e.message)
            return
        self._seen[key] = created["metadata"]["name"]
        if len(self._seen) > 10000:  # forget old keys; a repeat then makes a new event
            self._seen.pop(next(iter(self._seen)))

    def _combine(self, key: tuple) -> bool:
        """Whether this event is one of too many similar ones (client-go's aggregator)."""
        similar, message = key[:4], key[4]
        now = time.monotonic()
        start, messages = self._similar.get(similar, (now, set()))
        if now - start > AGGREGATE_INTERVAL:
            start, messages = now, set()
        messages.add(message)
        self._similar[similar] = (start, messages)
        if len(self._similar) > 10000:
            self._similar.pop(next(iter(self._similar)))
        return len(messages) >= AGGREGATE_MAX_EVENTS
