"""The start check of the node's RBAC: every permission it will use (node/cluster.py PERMISSIONS,
for the configured namespaces and Service), asked with SelfSubjectAccessReviews, so that a
missing one stops the node at start with its name instead of failing runs later."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from node.cluster import PERMISSIONS
from node.config import NodeConfig
from node.errors import MissingPermissionsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str = ""
    resource: str = ""   # "pods/log": resource and subresource
    namespace: str = ""
    name: str = ""
    path: str = ""       # a non-resource URL ("/version") instead of a resource

    def attributes(self) -> dict:
        """The spec of a SelfSubjectAccessReview for this permission."""
        if self.path:
            return {"nonResourceAttributes": {"path": self.path, "verb": self.verb}}
        resource, _, sub = self.resource.partition("/")
        attrs = {"verb": self.verb, "group": self.group, "resource": resource}
        for key, value in (("subresource", sub), ("namespace", self.namespace),
                           ("name", self.name)):
            if value:
                attrs[key] = value
        return {"resourceAttributes": attrs}

    def __str__(self) -> str:
        if self.path:
            return f"{self.verb} {self.path}"
        resource, _, sub = self.resource.partition("/")
        what = f"{resource}.{self.group}" if self.group else resource
        what += f"/{sub}" if sub else ""
        if self.name:
            what += f' "{self.name}"'
        return f"{self.verb} {what} in namespace {self.namespace}"


def needed(config: NodeConfig) -> list[Permission]:
    """What this configuration of the node will do in the cluster."""
    jobs_ns = config.kubernetes.jobs_namespace
    methods = [m for m in PERMISSIONS if m not in ("get_service", "access_review",
                                                   "dry_run_create")]
    if config.completion.mode == "poll":
        methods.remove("watch")  # the poller only lists
    out = [Permission(verb, group, resource, jobs_ns)
           for m in methods for verb, group, resource in PERMISSIONS[m]]
    out += [Permission(verb, group, resource, config.proxy.namespace, config.proxy.service)
            for verb, group, resource in PERMISSIONS["get_service"]]
    if config.live.enabled:  # node/live_version.py reads the cluster's version
        out.append(Permission("get", path="/version"))
    return out


def check(review: Callable[[dict], dict], config: NodeConfig) -> None:
    """Raise MissingPermissionsError naming every needed permission the cluster denies.
    review: a SelfSubjectAccessReview's spec -> its status (Cluster.access_review)."""
    missing = []
    for permission in needed(config):
        status = review(permission.attributes())
        if not status.get("allowed"):
            missing.append(str(permission))
            log.debug("not allowed: %s (%s)", permission, status.get("reason") or "no reason given")
    if missing:
        raise MissingPermissionsError(missing)
    log.info("RBAC: the node has the %d permissions it needs", len(needed(config)))
