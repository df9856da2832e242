"""TokenRequest (``POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token``,
authentication.k8s.io/v1): a token for a ServiceAccount, as ``kubectl create token`` or the
official client's ``create_namespaced_service_account_token`` ask for it.

Defaults and limits as the real API server's: expirationSeconds 3600 (at least 600, at most
2^32), audiences the API's own; a token whose audiences leave out the API's is not accepted by the
API. Bound to the account alone, or with ``boundObjectRef`` to a Pod of that account (it then
dies with the pod). Deviation: a Secret or Node as boundObjectRef is refused (400).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from localcluster.apiserver import validation
from localcluster.apiserver.errors import ApiError, bad_request, not_found
from localcluster.apiserver.resources import PODS, SERVICEACCOUNTS

KIND, API_VERSION = "TokenRequest", "authentication.k8s.io/v1"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32

# (account, pod or None, expirationSeconds, audiences) -> token
Issue = Callable[[dict, "dict | None", int, "list[str]"], str]


def _invalid(name: str, field: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{KIND}.authentication.k8s.io "{name}" is invalid: '
                    f"{field}: {message}",
                    {"name": name, "group": "authentication.k8s.io", "kind": KIND,
                     "causes": [{"field": field, "message": message,
                                 "reason": "FieldValueInvalid"}]})


def _bound_pod(store, namespace: str, name: str, ref: dict) -> dict:
    kind = ref.get("kind")
    if kind != "Pod":
        raise bad_request(f"cannot bind token to object of type {kind}: the local cluster "
                          f"binds tokens to Pods only")
    pod = store.try_get(PODS, namespace, str(ref.get("name") or ""))
    if pod is None:
        raise not_found(PODS, str(ref.get("name") or ""))
    if ref.get("uid") and ref["uid"] != pod["metadata"]["uid"]:
        raise ApiError(409, "Conflict", f"the UID in the bound object reference ({ref['uid']}) "
                       f"does not match the UID in record. The object might have been deleted "
                       f"and then recreated")
    if ((pod.get("spec") or {}).get("serviceAccountName") or "default") != name:
        raise bad_request(f'cannot bind token for serviceaccount "{name}" to pod running with '
                          f"different serviceaccount name.")
    return pod


def answer(store, issue: Issue, namespace: str, name: str, body: Any, api_audience: str,
           now: float | None = None) -> dict:
    if not isinstance(body, dict):
        raise bad_request("the body of a TokenRequest must be a JSON object")
    spec = body.get("spec")
    if isinstance(spec, dict):  # null is a field's zero value for the real server (kubectl
        # sends "audiences": null)
        spec = {k: v for k, v in spec.items() if v is not None}
    body = {**body, "spec": spec, "kind": KIND, "apiVersion": API_VERSION}
    # the schema lists spec.audiences as required; the real server defaults an empty one
    causes = [c for c in validation.schema_causes(body) if c["reason"] != "FieldValueRequired"]
    if causes:
        c = causes[0]
        raise _invalid(name, c["field"], c["message"])
    sa = store.try_get(SERVICEACCOUNTS, namespace, name)
    if sa is None:
        raise not_found(SERVICEACCOUNTS, name)
    spec = dict(body.get("spec") or {})
    expiration = spec.get("expirationSeconds")
    expiration = DEFAULT_EXPIRATION if expiration is None else int(expiration)
    if expiration < MIN_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", f"Invalid value: {expiration}: may not "
                       "specify a duration less than 10 minutes")
    if expiration > MAX_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", f"Invalid value: {expiration}: may not "
                       "specify a duration larger than 2^32 seconds")
    audiences = [str(a) for a in spec.get("audiences") or []] or [api_audience]
    ref = spec.get("boundObjectRef")
    pod = _bound_pod(store, namespace, name, ref) if ref else None
    now = time.time() if now is None else now
    token = issue(sa, pod, expiration, audiences)
    expires = datetime.fromtimestamp(int(now) + expiration, timezone.utc)
    return {"kind": KIND, "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"audiences": audiences, "expirationSeconds": expiration,
                     "boundObjectRef": ref or None},
            "status": {"token": token,
                       "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}
