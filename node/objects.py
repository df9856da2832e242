"""What the node keeps of the API objects it watches.

A Pod or Job as the API returns it is 10–20 KB in memory, mostly its spec; with a thousand runs
in flight, and events queued while the agent works through a burst, that was most of the node's
memory. The status mapping and recovery read only metadata and status, and the log collection
the container names, so that is all the node keeps.
"""
from __future__ import annotations

from node.cluster import WatchEvent
from node.manifests import CONTAINER_NAME
from node.provenance import canonical_hash


def slim(obj: dict) -> dict:
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    kept = {"kind": obj.get("kind"), "metadata": meta, "status": obj.get("status") or {}}
    spec = obj.get("spec") or {}
    if "containers" in spec or "initContainers" in spec:  # a Pod: names for its logs
        kept["spec"] = {key: [{"name": c.get("name")} for c in spec.get(key) or []]
                        for key in ("initContainers", "containers")}
    elif "template" in spec:  # a Job: what its provenance names (node.provenance)
        kept[JOB_FACTS] = job_facts(spec)
    return kept


JOB_FACTS = "v6Facts"  # not an API field: the node's own, on its slim copies only


def job_facts(spec: dict) -> dict:
    """The hash of a Job's spec as the API holds it, and the algorithm container's image (the
    reference the pin policy checks): kept when the rest of the spec is dropped."""
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    image = next((c.get("image") for c in containers if c.get("name") == CONTAINER_NAME), None)
    return {"spec_sha256": canonical_hash(spec), "image": image}


def slim_item(item: tuple) -> tuple:
    """A watcher's ("sync", kind, items) or ("event", kind, WatchEvent), slimmed."""
    if item[0] == "sync":
        return ("sync", item[1], [slim(o) for o in item[2]])
    if item[0] == "event":
        event: WatchEvent = item[2]
        return ("event", item[1], WatchEvent(event.type, slim(event.object)))
    return item
