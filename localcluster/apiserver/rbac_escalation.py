"""RBAC's escalation prevention, as the real API server's RBAC storage applies it: a user may create
or change a Role or ClusterRole only with permissions it holds itself (or the ``escalate`` verb on
it), and bind a role only when it holds the role's permissions (or the ``bind`` verb on it). The
admin token is let through, as ``system:masters`` is.

Pure: ``covers`` decides whether the owner's rules hold every atomic rule of the requested ones
(the real ``Covers``: a requested "*" is held only by an owner's "*").
"""
from __future__ import annotations

import json
from typing import Iterable

from localcluster.apiserver.rbac import GROUP, Policy, User, authorize, rules_for
from localcluster.apiserver.requestinfo import RequestInfo


def _atoms(rule: dict) -> list[dict]:
    """One rule per verb, group, resource and name (the real BreakdownRule)."""
    verbs = rule.get("verbs") or []
    if rule.get("nonResourceURLs"):
        return [{"nonResourceURLs": [u], "verbs": [v]} for u in rule["nonResourceURLs"]
                for v in verbs]
    out = []
    for g in rule.get("apiGroups") or []:
        for r in rule.get("resources") or []:
            for v in verbs:
                names = rule.get("resourceNames") or []
                for n in names or [None]:
                    atom = {"apiGroups": [g], "resources": [r], "verbs": [v]}
                    if n is not None:
                        atom["resourceNames"] = [n]
                    out.append(atom)
    return out


def _holds(values: list, wanted: list) -> bool:
    return "*" in values or all(w in values for w in wanted)


def _resources_held(owner: list, wanted: list) -> bool:
    if "*" in owner:
        return True
    for r in wanted:
        if r in owner:
            continue
        if "/" in r and "*/" + r.split("/", 1)[1] in owner:
            continue
        return False
    return True


def _urls_held(owner: list, wanted: list) -> bool:
    return all(u in owner or any(o.endswith("*") and u.startswith(o.rstrip("*")) for o in owner)
               for u in wanted)


def _rule_covers(owner: dict, sub: dict) -> bool:
    owner_names, sub_names = owner.get("resourceNames") or [], sub.get("resourceNames") or []
    names = not owner_names if not sub_names else (not owner_names or
                                                   all(n in owner_names for n in sub_names))
    return (_holds(owner.get("verbs") or [], sub.get("verbs") or [])
            and _holds(owner.get("apiGroups") or [], sub.get("apiGroups") or [])
            and _resources_held(owner.get("resources") or [], sub.get("resources") or [])
            and _urls_held(owner.get("nonResourceURLs") or [], sub.get("nonResourceURLs") or [])
            and names)


def compact(rule: dict) -> str:
    """A rule as the real server prints it: {APIGroups:["batch"], Resources:["jobs"], ...}."""
    def q(values) -> str:
        return "[" + " ".join(json.dumps(str(v)) for v in values) + "]"
    parts = [f"{label}:{q(rule[key])}" for label, key in (
        ("APIGroups", "apiGroups"), ("Resources", "resources"),
        ("NonResourceURLs", "nonResourceURLs"), ("ResourceNames", "resourceNames"),
        ("Verbs", "verbs")) if rule.get(key)]
    return "{" + ", ".join(parts) + "}"


def missing(owner_rules: Iterable[dict], requested: Iterable[dict]) -> list[dict]:
    """The atomic rules of requested that owner_rules do not hold."""
    owner_rules = list(owner_rules)
    out = [a for rule in requested for a in _atoms(rule)
           if not any(_rule_covers(o, a) for o in owner_rules)]
    return sorted(out, key=compact)


def _verb_allowed(policy: Policy, user: User, verb: str, resource: str, namespace: str,
                  name: str) -> bool:
    info = RequestInfo(True, "", verb, GROUP, "v1", namespace, resource, "", name)
    return authorize(policy, user, info).allowed


def _role_rules(policy: Policy, ref: dict, namespace: str) -> list[dict] | None:
    role = (policy.cluster_role(str(ref.get("name") or "")) if ref.get("kind") == "ClusterRole"
            else policy.role(namespace, str(ref.get("name") or "")))
    return None if role is None else [r for r in role.get("rules") or [] if isinstance(r, dict)]


def escalation(policy: Policy, user: User, kind: str, namespace: str,
               obj: dict) -> tuple[int, str] | None:
    """Why user may not write obj (a Role, ClusterRole, RoleBinding or ClusterRoleBinding): (403,
    the real words) or (404, the bound role that does not exist); None when it may."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    if kind in ("Role", "ClusterRole"):
        resource = "roles" if kind == "Role" else "clusterroles"
        if _verb_allowed(policy, user, "escalate", resource, namespace, name):
            return None
        requested = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
    else:
        ref = obj.get("roleRef") or {}
        resource = "roles" if ref.get("kind") == "Role" else "clusterroles"
        if _verb_allowed(policy, user, "bind", resource, namespace, str(ref.get("name") or "")):
            return None
        rules = _role_rules(policy, ref, namespace)
        if rules is None:
            return 404, f'{resource}.{GROUP} "{ref.get("name")}" not found'
        requested = rules
    resource_rules, url_rules, errors = rules_for(policy, user, namespace)
    lacking = missing(resource_rules + url_rules, requested)
    if not lacking:
        return None
    groups = "[" + " ".join(json.dumps(g) for g in user.groups) + "]"
    text = (f'user "{user.name}" (groups={groups}) is attempting to grant RBAC permissions not '
            f"currently held:\n" + "\n".join(compact(r) for r in lacking))
    if errors:
        text += "; resolution errors: [" + ", ".join(errors) + "]"
    return 403, text
