"""Authorization of the API's requests, escalation prevention on writes of RBAC objects, and the
access reviews, over the store's RBAC objects (the decisions are `localcluster.apiserver.rbac`'s
and `rbac_escalation`'s).

Who is checked: every request authenticated with a service-account token. The kubeconfig's admin
token is let through (as a real server lets ``system:masters`` through before RBAC); requests
without a valid token never get here (401).
"""
from __future__ import annotations

from typing import Any

from localcluster.apiserver import rbac, rbac_escalation, validation
from localcluster.apiserver.errors import ApiError, bad_request, invalid
from localcluster.apiserver.patch import apply_patch
from localcluster.apiserver.requestinfo import RequestInfo
from localcluster.apiserver.resources import (CLUSTERROLEBINDINGS, CLUSTERROLES, ROLEBINDINGS,
                                              ROLES, SELFSUBJECTACCESSREVIEWS,
                                              SELFSUBJECTRULESREVIEWS)

# Who the admin token is when a review needs a user (a kubeadm cluster's admin kubeconfig).
ADMIN = rbac.User("kubernetes-admin", ("system:masters", rbac.AUTHENTICATED))


class StorePolicy:
    """rbac.Policy over the store (it returns copies; the authorizer only reads them)."""

    def __init__(self, store) -> None:
        self.store = store

    def cluster_role_bindings(self) -> list[dict]:
        return self.store.list(CLUSTERROLEBINDINGS)[0]

    def role_bindings(self, namespace: str) -> list[dict]:
        return self.store.list(ROLEBINDINGS, namespace)[0]

    def role(self, namespace: str, name: str) -> dict | None:
        return self.store.try_get(ROLES, namespace, name)

    def cluster_role(self, name: str) -> dict | None:
        return self.store.try_get(CLUSTERROLES, None, name)


def check(store, user: rbac.User, info: RequestInfo) -> None:
    """Raise the real 403 when RBAC does not allow the request."""
    decision = rbac.authorize(StorePolicy(store), user, info)
    if not decision.allowed:
        raise ApiError(403, "Forbidden", rbac.forbidden_message(user, info, decision.reason),
                       rbac.forbidden_details(info))


_RBAC_KINDS = {ROLES: "Role", CLUSTERROLES: "ClusterRole", ROLEBINDINGS: "RoleBinding",
               CLUSTERROLEBINDINGS: "ClusterRoleBinding"}


def check_rbac_write(store, user: rbac.User | None, res, namespace: str | None,
                     name: str | None, body: Any, patch_type: str | None = None) -> None:
    """Escalation prevention for a create (name None), update or patch (patch_type) of an RBAC
    object by a service account: the real 403 when it would grant what the user lacks."""
    kind = _RBAC_KINDS.get(res)
    if user is None or kind is None or not isinstance(body, (dict, list)):
        return  # the admin; other types; a malformed body is refused by the store
    obj = body
    if patch_type is not None:
        obj = apply_patch(store.get(res, namespace, name), body, patch_type)
    if not isinstance(obj, dict):
        return
    why = rbac_escalation.escalation(StorePolicy(store), user, kind, namespace or "", obj)
    if why is None:
        return
    code, text = why
    obj_name = str((obj.get("metadata") or {}).get("name") or name or "")
    details = {"name": obj_name, "group": rbac.GROUP, "kind": res.plural}
    if code == 404:
        raise ApiError(404, "NotFound", text, details)
    raise ApiError(403, "Forbidden", f'{res} "{obj_name}" is forbidden: {text}', details)


def _spec(res, body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request(f"the body of a {res.kind} must be a JSON object")
    body = {**body, "kind": res.kind, "apiVersion": res.api_version}
    validation.validate(res, body)
    spec = body.get("spec")
    return spec if isinstance(spec, dict) else {}


def _review_info(spec: dict) -> RequestInfo:
    res_attrs, url_attrs = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if res_attrs is not None and url_attrs is not None:
        raise invalid(SELFSUBJECTACCESSREVIEWS, "", [{
            "field": "spec.nonResourceAttributes", "reason": "FieldValueInvalid",
            "message": "Invalid value: \"object\": cannot be specified in combination with "
                       "resourceAttributes"}])
    if res_attrs is None and url_attrs is None:
        raise invalid(SELFSUBJECTACCESSREVIEWS, "", [{
            "field": "spec.resourceAttributes", "reason": "FieldValueInvalid",
            "message": "Invalid value: \"null\": exactly one of nonResourceAttributes or "
                       "resourceAttributes must be specified"}])
    if url_attrs is not None:
        return RequestInfo(False, str(url_attrs.get("path") or ""), str(url_attrs.get("verb") or ""))
    a = res_attrs
    return RequestInfo(True, "", str(a.get("verb") or ""), str(a.get("group") or ""),
                       str(a.get("version") or ""), str(a.get("namespace") or ""),
                       str(a.get("resource") or ""), str(a.get("subresource") or ""),
                       str(a.get("name") or ""))


def access_review(store, user: rbac.User | None, body: Any) -> dict:
    """A SelfSubjectAccessReview answered for user (None: the admin, allowed everything)."""
    res = SELFSUBJECTACCESSREVIEWS
    spec = _spec(res, body)
    info = _review_info(spec)
    if user is None:
        decision = rbac.Decision(True)
    else:
        decision = rbac.authorize(StorePolicy(store), user, info)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    return {"kind": res.kind, "apiVersion": res.api_version,
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def rules_review(store, user: rbac.User | None, body: Any) -> dict:
    """A SelfSubjectRulesReview: the rules the user has in spec.namespace."""
    res = SELFSUBJECTRULESREVIEWS
    spec = _spec(res, body)
    namespace = str(spec.get("namespace") or "")
    resource_rules, url_rules, errors = rbac.rules_for(StorePolicy(store), user or ADMIN,
                                                       namespace)
    status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": url_rules,
                              "incomplete": bool(errors)}
    if errors:
        status["evaluationError"] = "; ".join(errors)
    return {"kind": res.kind, "apiVersion": res.api_version,
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


REVIEWS = {SELFSUBJECTACCESSREVIEWS: access_review, SELFSUBJECTRULESREVIEWS: rules_review}
