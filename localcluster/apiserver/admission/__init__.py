"""Admission: the plugins a v1.30 API server runs on a write, after defaulting, in the real
chain's order — mutating: ServiceAccount (`localcluster.apiserver.incluster`, called by the
store), RuntimeClass; then the object's validation; then validating: PodSecurity,
ResourceQuota. A refusal is the real 403 ``pods "x" is forbidden: ...`` (or 422 for a
namespace's invalid pod-security labels).

PodSecurity: ``enforce`` refuses pods; ``warn`` answers ``Warning: 299`` headers (collected in
the ``warnings`` list the caller passes); ``audit`` has no audit log to annotate here, so it
is a log line of this module (``audit-violations`` as the real audit annotation would say).
Workloads with a pod template (Jobs, Deployments) are never refused: like the real plugin,
their template is checked against the enforce and the warn level and answered with warnings.
"""
from __future__ import annotations

import logging

from localcluster.apiserver.admission import podsecurity, quota, runtimeclass
from localcluster.apiserver.admission.quantity import Quantity, QuantityError
from localcluster.apiserver.errors import ApiError, bad_request, invalid
from localcluster.apiserver.resources import (DEPLOYMENTS, JOBS, NAMESPACES, PODS,
                                              RESOURCEQUOTAS, RUNTIMECLASSES, Resource)

log = logging.getLogger(__name__)

WORKLOADS = (JOBS, DEPLOYMENTS)  # served types with a pod template


def forbidden(res: Resource, name: str, why: str) -> ApiError:
    """admission.NewForbidden: 403 with the resource and name in the message and details."""
    details = {"name": name, "kind": res.plural}
    if res.group:
        details["group"] = res.group
    return ApiError(403, "Forbidden", f'{res} "{name}" is forbidden: {why}', details)


def _quantity_maps(res: Resource, obj: dict):
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if res == RESOURCEQUOTAS:
        yield spec.get("hard")
    elif res == PODS:
        yield spec.get("overhead")
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            res_ = c.get("resources") if isinstance(c, dict) else None
            if isinstance(res_, dict):
                yield res_.get("requests")
                yield res_.get("limits")


def check_quantities(res: Resource, obj: dict) -> None:
    """The real server cannot even decode an object with a malformed quantity (400); quota
    and overhead arithmetic rely on that."""
    for values in _quantity_maps(res, obj):
        for v in (values or {}).values() if isinstance(values, dict) else ():
            try:
                Quantity.parse(v)
            except QuantityError as e:
                raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a '
                                  f"{res.kind}: quantities must match the regular expression "
                                  f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'") from e


def _would_violate(lv: podsecurity.LevelVersion, violations) -> str:
    return f'would violate PodSecurity "{lv}": {podsecurity.forbidden_detail(violations)}'


class Admission:
    """The chain, reading what it needs (namespaces, RuntimeClasses, quotas, pods) from the
    store it serves."""

    def __init__(self, store) -> None:
        self.store = store

    # ----------------------------------------------------------------- mutating
    def mutate(self, res: Resource, obj: dict, display_name: str) -> None:
        """display_name: the name admission messages show; for generateName, as on a real
        server, the prefix (mutating admission runs before the name is generated)."""
        check_quantities(res, obj)
        if res != PODS:
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not spec.get("runtimeClassName"):
            return
        rc = self.store.try_get(RUNTIMECLASSES, None, str(spec["runtimeClassName"]))
        try:
            runtimeclass.admit(spec, rc)
        except runtimeclass.RuntimeClassRefused as e:
            raise forbidden(res, display_name, str(e)) from e

    # ----------------------------------------------------------------- validating
    def validate_create(self, res: Resource, obj: dict, warnings: list[str] | None) -> None:
        if res == NAMESPACES:
            self._namespace_labels(obj)
        elif res == PODS:
            self._pod_security(obj, warnings)
            self._quota(obj)
        elif res in WORKLOADS:
            self._workload_security(res, obj, warnings)

    def validate_update(self, res: Resource, obj: dict, old: dict,
                        warnings: list[str] | None) -> None:
        check_quantities(res, obj)
        if res == NAMESPACES:
            self._namespace_labels(obj)
            self._existing_pods(obj, old, warnings)
        elif res in WORKLOADS and podsecurity.pod_template(obj) != podsecurity.pod_template(old):
            self._workload_security(res, obj, warnings)

    def _namespace_labels(self, ns: dict) -> None:
        causes = podsecurity.label_causes(ns["metadata"].get("labels"))
        if causes:
            raise invalid(NAMESPACES, ns["metadata"].get("name", ""), causes)

    def _existing_pods(self, ns: dict, old: dict, warnings: list[str] | None) -> None:
        """A new enforce level warns about the namespace's pods that break it (they keep running),
        one line per distinct reason, as the real plugin does."""
        new = podsecurity.namespace_policy(ns["metadata"].get("labels")).enforce
        if warnings is None or new.level == "privileged" or \
                new == podsecurity.namespace_policy(old["metadata"].get("labels")).enforce:
            return
        name = ns["metadata"]["name"]
        by_reason: dict[str, list[str]] = {}
        for pod in self.store.list(PODS, name)[0]:
            found = podsecurity.evaluate(new, pod["metadata"], pod.get("spec"))
            if found:
                by_reason.setdefault(", ".join(v.reason for v in found), []).append(pod["metadata"]["name"])
        if not by_reason:
            return
        warnings.append(f'existing pods in namespace "{name}" violate the new PodSecurity enforce '
                        f'level "{new}"')
        for reason, pods in by_reason.items():
            others = f" (and {len(pods) - 1} other pods)" if len(pods) > 1 else ""
            warnings.append(f"{min(pods)}{others}: {reason}")

    def _policy(self, namespace: str | None) -> podsecurity.Policy:
        ns = self.store.try_get(NAMESPACES, None, namespace or "default") or {}
        return podsecurity.namespace_policy((ns.get("metadata") or {}).get("labels"))

    def _pod_security(self, pod: dict, warnings: list[str] | None) -> None:
        meta = pod["metadata"]
        policy = self._policy(meta.get("namespace"))
        if policy.fully_privileged:
            return
        spec = pod.get("spec") or {}
        enforced = podsecurity.evaluate(policy.enforce, meta, spec)
        self._audit(PODS, meta, policy, spec)
        if enforced:
            raise forbidden(PODS, meta["name"], f'violates PodSecurity "{policy.enforce}": '
                                                f"{podsecurity.forbidden_detail(enforced)}")
        warned = podsecurity.evaluate(policy.warn, meta, spec)
        if warned and warnings is not None:
            warnings.append(_would_violate(policy.warn, warned))

    def _workload_security(self, res: Resource, obj: dict, warnings: list[str] | None) -> None:
        meta = obj["metadata"]
        policy = self._policy(meta.get("namespace"))
        template = podsecurity.pod_template(obj)
        if policy.fully_privileged or template is None:
            return
        tmeta, tspec = template
        self._audit(res, meta, policy, tspec, tmeta)
        seen = set()
        for lv in (policy.enforce, policy.warn):
            if lv in seen:
                continue
            seen.add(lv)
            found = podsecurity.evaluate(lv, tmeta, tspec)
            if found and warnings is not None:
                warnings.append(_would_violate(lv, found))

    @staticmethod
    def _audit(res: Resource, meta: dict, policy: podsecurity.Policy, spec: dict,
               pod_meta: dict | None = None) -> None:
        found = podsecurity.evaluate(policy.audit, pod_meta if pod_meta is not None else meta, spec)
        if found:
            log.info("audit: %s %s/%s: pod-security.kubernetes.io/audit-violations: %s", res,
                     meta.get("namespace"), meta.get("name"), _would_violate(policy.audit, found))

    def _quota(self, pod: dict) -> None:
        ns = pod["metadata"].get("namespace")
        quotas, _ = self.store.list(RESOURCEQUOTAS, ns)
        if not quotas:
            return
        pods, _ = self.store.list(PODS, ns)
        used = {q["metadata"]["name"]: quota.usage_of(q, pods) for q in quotas}
        try:
            quota.admit(pod, quotas, used)
        except quota.QuotaRefused as e:
            raise forbidden(PODS, pod["metadata"]["name"], str(e)) from e
