"""Defaulting, as the real API server (and its default admission plugins) applies it, for the
fields nodes, controllers and clients rely on. Applied on create and update, before validation.

Per type: Pod (restartPolicy Always, terminationGracePeriodSeconds 30, dnsPolicy ClusterFirst,
schedulerName, serviceAccountName "default", container imagePullPolicy / terminationMessage*,
port protocol TCP, status.phase Pending and qosClass on create); Job (parallelism/completions 1,
backoffLimit 6, completionMode NonIndexed, suspend false, selector and template labels with the
controller uid unless manualSelector); Namespace (phase Active, kubernetes.io/metadata.name
label); Service (type ClusterIP, allocated clusterIP, targetPort = port); Secret (type Opaque);
NetworkPolicy (policyTypes); Secret stringData merged into data; RoleBinding and
ClusterRoleBinding (roleRef and User/Group subjects in rbac.authorization.k8s.io).
"""
from __future__ import annotations

import base64
import ipaddress
import itertools
from typing import Callable

from localcluster.apiserver import rbac_objects
from localcluster.apiserver.resources import (CLUSTERROLEBINDINGS, DEPLOYMENTS, JOBS, NAMESPACES,
                                              NETWORKPOLICIES, PODS, ROLEBINDINGS, SECRETS,
                                              SERVICES, Resource)

_service_ips = itertools.count(10)
_SERVICE_NET = ipaddress.ip_address("10.96.0.0")


def _containers(spec: dict):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


def default_pod_spec(spec: dict, *, bare_pod: bool) -> None:
    if bare_pod:
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in _containers(spec):
        image = str(c.get("image", ""))
        last = image.rsplit("/", 1)[-1]
        untagged = ":" not in last and "@" not in image
        c.setdefault("imagePullPolicy",
                     "Always" if untagged or last.endswith(":latest") else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
        for e in c.get("env") or []:
            vf = e.get("valueFrom") if isinstance(e, dict) else None
            if isinstance(vf, dict) and isinstance(vf.get("fieldRef"), dict):
                vf["fieldRef"].setdefault("apiVersion", "v1")
    for v in spec.get("volumes") or []:
        if isinstance(v, dict):
            for kind in ("secret", "configMap"):
                if isinstance(v.get(kind), dict):
                    v[kind].setdefault("defaultMode", 420)
            if isinstance(v.get("hostPath"), dict):
                v["hostPath"].setdefault("type", "")


def _qos_class(spec: dict) -> str:
    requests_any = limits_any = False
    guaranteed = True
    for c in spec.get("containers") or []:
        r = (c.get("resources") or {})
        req, lim = r.get("requests") or {}, r.get("limits") or {}
        requests_any |= bool(req)
        limits_any |= bool(lim)
        for k in ("cpu", "memory"):
            if k not in lim or str(req.get(k, lim.get(k))) != str(lim.get(k)):
                guaranteed = False
    if not requests_any and not limits_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _requests_from_limits(spec: dict) -> None:
    """SetDefaults_Pod: a limit without a request is also the request (pods only, not
    templates); quota counts requests, e.g. of nvidia.com/gpu, which may be given as a limit."""
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            res = c.get("resources") if isinstance(c, dict) else None
            if isinstance(res, dict) and isinstance(res.get("limits"), dict) and res["limits"]:
                requests = res.setdefault("requests", {})
                if isinstance(requests, dict):
                    for k, v in res["limits"].items():
                        requests.setdefault(k, v)


def _pod(obj: dict, creating: bool, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        default_pod_spec(spec, bare_pod=True)
        if creating:
            _requests_from_limits(spec)
    if creating:
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        if isinstance(spec, dict):
            status.setdefault("qosClass", _qos_class(spec))


def _job(obj: dict, creating: bool, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimitPerIndex") is None:
        spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podFailurePolicy") is None:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    tspec = template.setdefault("spec", {})
    if isinstance(tspec, dict):
        default_pod_spec(tspec, bare_pod=False)
    meta = obj["metadata"]
    if creating and not spec.get("manualSelector"):
        uid, name = meta.get("uid", ""), meta.get("name", "")
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        if isinstance(labels, dict):
            labels.update({"controller-uid": uid, "batch.kubernetes.io/controller-uid": uid,
                           "job-name": name, "batch.kubernetes.io/job-name": name})
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})


def _namespace(obj: dict, creating: bool, old: dict | None) -> None:
    name = obj["metadata"].get("name", "")
    labels = obj["metadata"].setdefault("labels", {})
    if isinstance(labels, dict):
        labels["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("finalizers", ["kubernetes"])
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Active")


def _service(obj: dict, creating: bool, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
        if old_ip:
            spec.setdefault("clusterIP", old_ip)
        if not spec.get("clusterIP"):
            spec["clusterIP"] = str(_SERVICE_NET + next(_service_ips))
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if "port" in p:
                p.setdefault("targetPort", p["port"])
    if creating:
        obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _secret(obj: dict, creating: bool, old: dict | None) -> None:
    obj.setdefault("type", "Opaque")
    # stringData is write-only: the API server merges it into data (base64) and drops it.
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        if isinstance(data, dict):
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()


def _network_policy(obj: dict, creating: bool, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
        for p in (rule or {}).get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def _deployment(obj: dict, creating: bool, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("strategy", {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    tspec = (spec.get("template") or {}).get("spec")
    if isinstance(tspec, dict):
        default_pod_spec(tspec, bare_pod=True)


_DEFAULTERS: dict[Resource, Callable[[dict, bool, dict | None], None]] = {
    PODS: _pod, JOBS: _job, NAMESPACES: _namespace, SERVICES: _service, SECRETS: _secret,
    NETWORKPOLICIES: _network_policy, DEPLOYMENTS: _deployment,
    ROLEBINDINGS: rbac_objects.default_binding, CLUSTERROLEBINDINGS: rbac_objects.default_binding,
}


def apply_defaults(res: Resource, obj: dict, *, creating: bool, old: dict | None = None) -> None:
    """Fill in defaults in place. obj has metadata (name, namespace, and uid on create)."""
    fn = _DEFAULTERS.get(res)
    if fn is not None:
        fn(obj, creating, old)
