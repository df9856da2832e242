"""The table of served resource types.

Adding a type is one line in ``ALL`` (plus, optionally, defaulting/validation rules elsewhere).
"""
from __future__ import annotations

from dataclasses import dataclass

# Field selectors every type supports (as the real API server does).
_META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    """One served resource type (contract: CONTRACTS.md §7)."""

    group: str  # "" for core
    version: str  # "v1"
    plural: str  # "pods"
    kind: str  # "Pod"
    namespaced: bool
    # Extensions (all defaulted so the contract's 5-argument form keeps working).
    subresources: tuple[str, ...] = ()  # e.g. ("status", "log")
    field_labels: tuple[str, ...] = ()  # extra field-selector labels besides metadata.name/namespace
    short_names: tuple[str, ...] = ()
    singular: str = ""
    # DELETE answers with the object (as the real registry for pods, services, service
    # accounts) rather than a Success Status once the object is gone.
    delete_returns_object: bool = False
    # create keeps the given .status (Nodes: the kubelet registers with its capacity) instead
    # of resetting it, as the real registry's PrepareForCreate does for most types
    create_keeps_status: bool = False
    # The verbs served, when not all of the standard ones (e.g. ("create",) for access reviews,
    # which are answered, never stored).
    verbs: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def selectable_fields(self) -> tuple[str, ...]:
        return _META_FIELDS + self.field_labels

    def __str__(self) -> str:  # for logs and error messages: "jobs.batch"
        return f"{self.plural}.{self.group}" if self.group else self.plural


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, ("status",),
                      ("status.phase",), ("ns",))
PODS = Resource("", "v1", "pods", "Pod", True, ("status", "log", "binding"),
                ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                 "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                 "status.podIP", "status.nominatedNodeName"), ("po",),
                delete_returns_object=True)
SERVICES = Resource("", "v1", "services", "Service", True, ("status",), (), ("svc",),
                    delete_returns_object=True)
SECRETS = Resource("", "v1", "secrets", "Secret", True, (), ("type",))
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True, (), (), ("cm",))
EVENTS = Resource("", "v1", "events", "Event", True, (),
                  ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                   "involvedObject.uid", "involvedObject.apiVersion",
                   "involvedObject.resourceVersion", "involvedObject.fieldPath",
                   "reason", "reportingComponent", "source", "type"), ("ev",))
# serviceaccounts/token: TokenRequest (localcluster.apiserver.incluster), how clients such as
# `kubectl create token` get a token for an account
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("token",), (),
                           ("sa",), delete_returns_object=True)
JOBS = Resource("batch", "v1", "jobs", "Job", True, ("status",), ("status.successful",))
NETWORKPOLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True,
                           (), (), ("netpol",))
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True, ("status",), (),
                       ("deploy",))
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True)
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True)
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
CLUSTERROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings",
                               "ClusterRoleBinding", False)
SELFSUBJECTACCESSREVIEWS = Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
                                    "SelfSubjectAccessReview", False, verbs=("create",))
SELFSUBJECTRULESREVIEWS = Resource("authorization.k8s.io", "v1", "selfsubjectrulesreviews",
                                   "SelfSubjectRulesReview", False, verbs=("create",))

# --- admission (localcluster.apiserver.admission): quotas and runtime classes
RESOURCEQUOTAS = Resource("", "v1", "resourcequotas", "ResourceQuota", True, ("status",), (),
                          ("quota",))
RUNTIMECLASSES = Resource("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", False)
ADMISSION_RESOURCES = (RESOURCEQUOTAS, RUNTIMECLASSES)

# --- scheduling: Nodes, registered by the kubelet; pods/binding is on PODS above ---
NODES = Resource("", "v1", "nodes", "Node", False, ("status",), ("spec.unschedulable",), ("no",),
                 create_keeps_status=True)

ALL: tuple[Resource, ...] = (NAMESPACES, PODS, SERVICES, SECRETS, CONFIGMAPS, EVENTS,
                             SERVICEACCOUNTS, JOBS, NETWORKPOLICIES, DEPLOYMENTS, ROLES,
                             ROLEBINDINGS, CLUSTERROLES, CLUSTERROLEBINDINGS,
                             SELFSUBJECTACCESSREVIEWS, SELFSUBJECTRULESREVIEWS,
                             NODES) + ADMISSION_RESOURCES

_BY_KEY = {(r.group, r.version, r.plural): r for r in ALL}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    return _BY_KEY.get((group, version, plural))


def group_versions() -> dict[str, list[Resource]]:
    """Served resources grouped by apiVersion ("v1", "batch/v1", ...), in table order."""
    out: dict[str, list[Resource]] = {}
    for r in ALL:
        out.setdefault(r.api_version, []).append(r)
    return out
