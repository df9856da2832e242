"""Defaulting and validation of Role, ClusterRole, RoleBinding and ClusterRoleBinding as the real
API server does them (beyond the schema, which `validation` checks first):

- names are path segments (``system:discovery`` is a valid name), not DNS subdomains;
- a rule has verbs; a resource rule has apiGroups and resources; nonResourceURLs only in
  ClusterRoles and never together with resources;
- a binding's roleRef is in rbac.authorization.k8s.io, of kind Role or ClusterRole (a
  ClusterRoleBinding: ClusterRole), and cannot change; subjects are ServiceAccount (a valid name,
  no apiGroup, a namespace in a ClusterRoleBinding), User or Group (apiGroup
  rbac.authorization.k8s.io, which defaulting fills in).
"""
from __future__ import annotations

import json
from typing import Callable, Iterator

from localcluster.apiserver.rbac import GROUP

Cause = dict[str, str]


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"field": field, "message": message, "reason": reason}


def _go_strings(values) -> str:
    return "[]string{" + ", ".join(json.dumps(str(v)) for v in values) + "}"


def path_segment_errors(name: str) -> list[str]:
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in "/%" if c in name]


# ------------------------------------------------------------------------------- defaulting
def default_binding(obj: dict, creating: bool, old: dict | None) -> None:
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for subject in obj.get("subjects") or []:
        if isinstance(subject, dict) and not subject.get("apiGroup") \
                and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = GROUP


# ------------------------------------------------------------------------------- validation
def _rules(obj: dict, namespaced: bool) -> Iterator[Cause]:
    for i, rule in enumerate(obj.get("rules") or []):
        field = f"rules[{i}]"
        if not rule.get("verbs"):
            yield _cause(f"{field}.verbs", "Required value: verbs must contain at least one value",
                         "FieldValueRequired")
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                yield _cause(f"{field}.nonResourceURLs", f"Invalid value: {_go_strings(urls)}: "
                             "namespaced rules cannot apply to non-resource URLs")
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                yield _cause(f"{field}.nonResourceURLs", f"Invalid value: {_go_strings(urls)}: "
                             "rules cannot apply to both regular resources and non-resource URLs")
            continue
        if not rule.get("apiGroups"):
            yield _cause(f"{field}.apiGroups", "Required value: resource rules must supply at "
                         "least one api group", "FieldValueRequired")
        if not rule.get("resources"):
            yield _cause(f"{field}.resources", "Required value: resource rules must supply at "
                         "least one resource", "FieldValueRequired")


def _role(obj: dict, old: dict | None) -> Iterator[Cause]:
    yield from _rules(obj, namespaced=True)


def _cluster_role(obj: dict, old: dict | None) -> Iterator[Cause]:
    yield from _rules(obj, namespaced=False)


def _subject(subject: dict, field: str, namespaced: bool,
             subdomain_errors: Callable[[str], list[str]]) -> Iterator[Cause]:
    kind, name, group = subject.get("kind"), subject.get("name") or "", subject.get("apiGroup") or ""
    if not name:
        yield _cause(f"{field}.name", "Required value", "FieldValueRequired")
    if kind == "ServiceAccount":
        for msg in subdomain_errors(name) if name else ():
            yield _cause(f"{field}.name", f'Invalid value: "{name}": {msg}')
        if group:
            yield _cause(f"{field}.apiGroup", f'Unsupported value: "{group}": supported values: '
                         '""', "FieldValueNotSupported")
        if not namespaced and not subject.get("namespace"):
            yield _cause(f"{field}.namespace", "Required value", "FieldValueRequired")
    elif kind in ("User", "Group"):
        if group != GROUP:
            yield _cause(f"{field}.apiGroup", f'Unsupported value: "{group}": supported values: '
                         f'"{GROUP}"', "FieldValueNotSupported")
    else:
        yield _cause(f"{field}.kind", f'Unsupported value: "{kind}": supported values: '
                     '"ServiceAccount", "User", "Group"', "FieldValueNotSupported")


def _binding(obj: dict, old: dict | None, kinds: tuple[str, ...], namespaced: bool,
             subdomain_errors: Callable[[str], list[str]]) -> Iterator[Cause]:
    ref = obj.get("roleRef") or {}
    if ref.get("apiGroup") != GROUP:
        yield _cause("roleRef.apiGroup", f'Unsupported value: "{ref.get("apiGroup", "")}": '
                     f'supported values: "{GROUP}"', "FieldValueNotSupported")
    if ref.get("kind") not in kinds:
        yield _cause("roleRef.kind", f'Unsupported value: "{ref.get("kind", "")}": supported '
                     "values: " + ", ".join(f'"{k}"' for k in kinds), "FieldValueNotSupported")
    name = ref.get("name") or ""
    if not name:
        yield _cause("roleRef.name", "Required value", "FieldValueRequired")
    for msg in path_segment_errors(name):
        yield _cause("roleRef.name", f'Invalid value: "{name}": {msg}')
    for i, subject in enumerate(obj.get("subjects") or []):
        yield from _subject(subject, f"subjects[{i}]", namespaced, subdomain_errors)
    if old is not None and old.get("roleRef") != obj.get("roleRef"):
        yield _cause("roleRef", f"Invalid value: {json.dumps(obj.get('roleRef'))}: cannot change "
                     "roleRef")


def rules(subdomain_errors: Callable[[str], list[str]]) -> dict[str, Callable]:
    """Validation rules by kind (the subdomain check is validation's, passed in)."""
    return {
        "Role": _role,
        "ClusterRole": _cluster_role,
        "RoleBinding": lambda obj, old: _binding(obj, old, ("Role", "ClusterRole"), True,
                                                 subdomain_errors),
        "ClusterRoleBinding": lambda obj, old: _binding(obj, old, ("ClusterRole",), False,
                                                        subdomain_errors),
    }
