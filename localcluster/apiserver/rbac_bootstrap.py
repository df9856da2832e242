"""The default ClusterRoles and ClusterRoleBindings a real API server makes at start (its RBAC
bootstrap policy), reduced to those that matter for clients of the local cluster:

- ``system:discovery`` and ``system:public-info-viewer``: every authenticated user may read
  /version, /api, /apis, /openapi and the health paths;
- ``system:basic-user``: every authenticated user may create SelfSubjectAccessReviews and
  SelfSubjectRulesReviews (and SelfSubjectReviews, a type not served here);
- ``cluster-admin``, bound to the group ``system:masters``.

Not made: the aggregated admin/edit/view roles (no aggregation here) and the controllers' roles
(the local cluster's controllers are in-process and use no tokens). The admin token of the
kubeconfig is let through before RBAC, as a real server lets ``system:masters`` through.
"""
from __future__ import annotations

import logging

from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.rbac import AUTHENTICATED, GROUP
from localcluster.apiserver.resources import CLUSTERROLEBINDINGS, CLUSTERROLES

log = logging.getLogger(__name__)

_META = {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
_HEALTH = ["/livez", "/readyz", "/healthz", "/version", "/version/"]

CLUSTER_ROLES: dict[str, list[dict]] = {
    "cluster-admin": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                      {"nonResourceURLs": ["*"], "verbs": ["*"]}],
    "system:discovery": [{"nonResourceURLs": [*_HEALTH, "/openapi", "/openapi/*", "/api",
                                              "/api/*", "/apis", "/apis/*"], "verbs": ["get"]}],
    "system:public-info-viewer": [{"nonResourceURLs": _HEALTH, "verbs": ["get"]}],
    "system:basic-user": [
        {"apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
         "verbs": ["create"]}],
}
# binding name (= its ClusterRole) -> groups
CLUSTER_ROLE_BINDINGS: dict[str, list[str]] = {
    "cluster-admin": ["system:masters"],
    "system:discovery": [AUTHENTICATED],
    "system:public-info-viewer": [AUTHENTICATED, "system:unauthenticated"],
    "system:basic-user": [AUTHENTICATED],
}


def _meta(name: str) -> dict:
    return {"name": name, "labels": dict(_META["labels"]),
            "annotations": dict(_META["annotations"])}


def bootstrap_objects() -> list[dict]:
    out: list[dict] = []
    for name, rules in CLUSTER_ROLES.items():
        out.append({"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole", "metadata": _meta(name),
                    "rules": [dict(r) for r in rules]})
    for name, groups in CLUSTER_ROLE_BINDINGS.items():
        out.append({"apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding",
                    "metadata": _meta(name),
                    "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
                    "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups]})
    return out


def seed(store) -> None:
    """Create the default objects that are missing (a real server puts back deleted ones at
    every start, and leaves existing ones alone when autoupdate is off; here: at start only)."""
    for obj in bootstrap_objects():
        res = CLUSTERROLES if obj["kind"] == "ClusterRole" else CLUSTERROLEBINDINGS
        try:
            store.create(res, None, obj)
        except ApiError as e:
            if e.code != 409:
                raise
            log.debug("%s %s exists", obj["kind"], obj["metadata"]["name"])
