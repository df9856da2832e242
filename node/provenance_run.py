"""A run's provenance from what the node holds of it (node.provenance has the pieces)."""
from __future__ import annotations

from node import __version__
from node.config import NodeConfig
from node.manifests import CONTAINER_NAME
from node.objects import JOB_FACTS
from node.provenance import (NOT_AVAILABLE, Provenance, container_facts, image_digest,
                             policies_hash)
from node.runs import Run

NO_LIVE = {"outcome": "not run", "checks": [], "detail": "the live channel is off"}
NO_FACTS = {"outcome": "not run", "checks": [],
            "detail": "the sidecar's probe did not reach the node"}


def job_image(job: dict | None) -> str:
    return ((job or {}).get(JOB_FACTS) or {}).get("image") or ""


def provenance_of(run: Run, config: NodeConfig, policies: list[dict] | None,
                  live_facts: dict | None, pin: str | None) -> Provenance:
    facts = container_facts(run.pods.values(), CONTAINER_NAME)
    job = (run.job or {}).get(JOB_FACTS) or {}
    live_facts = live_facts or {}
    isolation = live_facts.get("isolation")
    if not isinstance(isolation, dict):
        isolation = NO_FACTS if config.live.enabled else NO_LIVE
    usage = live_facts.get("usage")
    if not isinstance(usage, dict):
        usage = {"available": False, "reason": NOT_AVAILABLE if config.live.enabled
                 else f"{NOT_AVAILABLE} (the live channel is off)"}
    records = tuple(policies or ())
    return Provenance(
        node_id=config.node_id, node_version=__version__,
        image=run.image or job.get("image") or "",
        image_id=facts.image_id, image_digest=image_digest(facts.image_id),
        job_spec_sha256=job.get("spec_sha256"),
        network_policies=records,
        network_policies_sha256=policies_hash(list(records)),
        isolation=isolation, started_at=facts.started_at, finished_at=facts.finished_at,
        exit_code=facts.exit_code, usage=usage, pin=pin)
