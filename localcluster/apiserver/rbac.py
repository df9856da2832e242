"""The RBAC authorizer: may this user do this request? Pure functions over RBAC objects (dicts in the
API's shape), with the real authorizer's semantics:

- a rule matches when its verbs, apiGroups, resources and resourceNames (or, for a non-resource
  request, its nonResourceURLs) all match; "*" matches anything in each list;
- resources name a subresource as "pods/log"; "*/log" matches that subresource of every resource,
  while "pods/*" is no wildcard (only an exact "pods/*" would match it, and no request is that);
- resourceNames restrict a rule to requests that carry a name: a list, watch or create without one
  (a list or watch can carry one through ``fieldSelector=metadata.name=x``) never matches such a
  rule;
- nonResourceURLs match exactly, or by prefix when they end in "*";
- ClusterRoleBindings grant their ClusterRole everywhere; RoleBindings grant their Role, or a
  ClusterRole, in their own namespace only, so a non-resource request or a request at the cluster
  scope is never granted by a RoleBinding;
- subjects: User and Group by name; ServiceAccount by namespace and name, the namespace defaulting
  to the RoleBinding's own.

RBAC only allows: nothing here denies, a request no rule allows is refused. A binding whose role is
missing is skipped and named in the reason, as the real one does ("RBAC: role... not found").
No aggregationRule: ClusterRoles are used with the rules they hold (the local cluster runs no
aggregation controller).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

from localcluster.apiserver.requestinfo import RequestInfo

GROUP = "rbac.authorization.k8s.io"
SA_PREFIX = "system:serviceaccount:"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


def service_account_user(username: str) -> User:
    """A service account's user with the groups the token authenticator gives it."""
    ns = username[len(SA_PREFIX):].split(":", 1)[0] if username.startswith(SA_PREFIX) else ""
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{ns}") if ns else ()
    return User(username, (*groups, AUTHENTICATED))


class Policy(Protocol):
    """Where the authorizer reads RBAC objects (the store, or a list of objects in tests)."""

    def cluster_role_bindings(self) -> Iterable[dict]: ...
    def role_bindings(self, namespace: str) -> Iterable[dict]: ...
    def role(self, namespace: str, name: str) -> dict | None: ...
    def cluster_role(self, name: str) -> dict | None: ...


class ObjectPolicy:
    """A Policy over a list of RBAC objects (e.g. loaded from manifests)."""

    def __init__(self, objects: Iterable[dict]) -> None:
        self.objects = [o for o in objects if isinstance(o, dict)]

    def _of(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def cluster_role_bindings(self) -> list[dict]:
        return self._of("ClusterRoleBinding")

    def role_bindings(self, namespace: str) -> list[dict]:
        return [o for o in self._of("RoleBinding") if _meta(o, "namespace") == namespace]

    def role(self, namespace: str, name: str) -> dict | None:
        return next((o for o in self._of("Role") if _meta(o, "namespace") == namespace
                     and _meta(o, "name") == name), None)

    def cluster_role(self, name: str) -> dict | None:
        return next((o for o in self._of("ClusterRole") if _meta(o, "name") == name), None)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def _meta(obj: dict, key: str) -> str:
    return str((obj.get("metadata") or {}).get(key) or "")


# ------------------------------------------------------------------------------- rule matching
def _has(values: list | None, wanted: str) -> bool:
    values = values or []
    return "*" in values or wanted in values


def _resource_matches(resources: list | None, info: RequestInfo) -> bool:
    combined = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    for r in resources or []:
        if r in ("*", combined):
            return True
        if info.subresource and r == f"*/{info.subresource}":
            return True
    return False


def _url_matches(urls: list | None, path: str) -> bool:
    for u in urls or []:
        if u in ("*", path) or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(rule: dict, info: RequestInfo) -> bool:
    if not _has(rule.get("verbs"), info.verb):
        return False
    if not info.is_resource:
        return _url_matches(rule.get("nonResourceURLs"), info.path)
    names = rule.get("resourceNames") or []
    return (_has(rule.get("apiGroups"), info.api_group)
            and _resource_matches(rule.get("resources"), info)
            and (not names or info.name in names))


# ------------------------------------------------------------------------------- bindings
def applies_to(subject: dict, user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and user.name == f"{SA_PREFIX}{ns}:{name}"
    return False


def _describe(subject: dict, binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{subject.get("name")}/{ns}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


@dataclass(frozen=True)
class Grant:
    """One binding's rules as they apply to the user: where from, and the rules (None: its role
    is missing, `error` says which)."""
    source: str
    rules: tuple[dict, ...] | None
    error: str = ""


def _role_rules(policy: Policy, binding: dict, namespace: str) -> tuple[tuple[dict, ...] | None, str]:
    ref = binding.get("roleRef") or {}
    kind, name = ref.get("kind"), str(ref.get("name") or "")
    if kind == "ClusterRole":
        role = policy.cluster_role(name)
        missing = f'clusterrole.{GROUP} "{name}" not found'
    elif kind == "Role" and namespace:
        role = policy.role(namespace, name)
        missing = f'role.{GROUP} "{name}" not found'
    else:
        return None, f"unsupported role reference kind: {kind!r}"
    if role is None:
        return None, missing
    return tuple(r for r in role.get("rules") or [] if isinstance(r, dict)), ""


def grants(policy: Policy, user: User, namespace: str) -> Iterator[Grant]:
    """Every binding that applies to the user for a request in namespace ("" for the cluster
    scope): ClusterRoleBindings first, then the namespace's RoleBindings (the real order)."""
    for binding in policy.cluster_role_bindings():
        for subject in binding.get("subjects") or []:
            if applies_to(subject, user, ""):
                ref = binding.get("roleRef") or {}
                source = (f'ClusterRoleBinding "{_meta(binding, "name")}" of '
                          f'{ref.get("kind")} "{ref.get("name")}" to {_describe(subject, "")}')
                rules, error = _role_rules(policy, binding, "")
                yield Grant(source, rules, error)
                break
    if not namespace:
        return
    for binding in policy.role_bindings(namespace):
        for subject in binding.get("subjects") or []:
            if applies_to(subject, user, namespace):
                ref = binding.get("roleRef") or {}
                source = (f'RoleBinding "{_meta(binding, "name")}/{namespace}" of '
                          f'{ref.get("kind")} "{ref.get("name")}" to {_describe(subject, namespace)}')
                rules, error = _role_rules(policy, binding, namespace)
                yield Grant(source, rules, error)
                break


def authorize(policy: Policy, user: User, info: RequestInfo) -> Decision:
    """Allowed with the grant that allows it as the reason (the real "RBAC: allowed by ..."), or
    not allowed with the missing roles met on the way as the reason ("" when none)."""
    errors: list[str] = []
    for grant in grants(policy, user, info.namespace if info.is_resource else ""):
        if grant.rules is None:
            errors.append(grant.error)
            continue
        if any(rule_allows(rule, info) for rule in grant.rules):
            return Decision(True, f"RBAC: allowed by {grant.source}")
    if not errors:
        return Decision(False, "")
    return Decision(False, "RBAC: " + (errors[0] if len(errors) == 1
                                       else "[" + ", ".join(errors) + "]"))


def rules_for(policy: Policy, user: User, namespace: str) -> tuple[list[dict], list[dict], list[str]]:
    """(resource rules, non-resource rules, errors) the user has in namespace: what a
    SelfSubjectRulesReview answers."""
    resource_rules: list[dict] = []
    url_rules: list[dict] = []
    errors: list[str] = []
    for grant in grants(policy, user, namespace):
        if grant.rules is None:
            errors.append(grant.error)
            continue
        for rule in grant.rules:
            if rule.get("nonResourceURLs"):
                url_rules.append({"verbs": list(rule.get("verbs") or []),
                                  "nonResourceURLs": list(rule["nonResourceURLs"])})
            else:
                out = {"verbs": list(rule.get("verbs") or []),
                       "apiGroups": list(rule.get("apiGroups") or []),
                       "resources": list(rule.get("resources") or [])}
                if rule.get("resourceNames"):
                    out["resourceNames"] = list(rule["resourceNames"])
                resource_rules.append(out)
    return resource_rules, url_rules, errors


# ------------------------------------------------------------------------------- the 403
def forbidden_message(user: User, info: RequestInfo, reason: str = "") -> str:
    """The real API server's words for a refused request."""
    if not info.is_resource:
        text = f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"'
    else:
        resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        scope = (f'in the namespace "{info.namespace}"' if info.namespace
                 else "at the cluster scope")
        what = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
        if info.name:
            what += f' "{info.name}"'
        text = (f'{what} is forbidden: User "{user.name}" cannot {info.verb} resource '
                f'"{resource}" in API group "{info.api_group}" {scope}')
    return f"{text}: {reason}" if reason else text


def forbidden_details(info: RequestInfo) -> dict:
    if not info.is_resource:
        return {}
    details = {"kind": info.resource}
    if info.api_group:
        details["group"] = info.api_group
    if info.name:
        details["name"] = info.name
    return details
