"""Validation of objects before they are stored: what the real API server would reject is a
422 Invalid with details.causes.

Two layers:
1. the official OpenAPI schemas of Kubernetes 1.30 bundled in ``kubernetes-validate`` (strict
   variant): unknown fields and wrong types (one cached validator per kind). Over HTTP, unknown
   fields are dropped or refused before this, per ``fieldValidation`` (``fieldvalidation``);
   here they are errors for in-process writers;
2. semantic rules the schema cannot express, table-driven in ``_RULES``:
   - metadata.name: DNS-1123 label (namespaces, services, jobs — a Job's name becomes a label
     value) or DNS-1123 subdomain (everything else); label keys and values; annotation keys;
   - pod specs (pods, and Job/Deployment templates): at least one container; container and
     volume names DNS-1123 labels, unique; image required; volumeMounts name an existing
     volume and mountPath is absolute; restartPolicy Always|OnFailure|Never (Job templates:
     Never|OnFailure); dnsPolicy, dnsConfig and hostAliases (`validation_dns`); port numbers;
     env var names;
   - jobs: non-negative counts, activeDeadlineSeconds > 0, the selector matches the template
     labels; on update the selector and template are immutable;
   - services: port numbers and unique port names;
   - RBAC objects: `rbac_objects` (their names are path segments, not DNS subdomains).
"""
from __future__ import annotations

import functools
import json
import re
from importlib import resources as importlib_resources
from typing import Any, Callable, Iterator

import jsonschema
from referencing import Registry
from referencing import Resource as RefResource

from localcluster.apiserver import rbac_objects
from localcluster.apiserver.errors import invalid
from localcluster.apiserver.resources import (CLUSTERROLEBINDINGS, CLUSTERROLES, DEPLOYMENTS, JOBS,
                                              NAMESPACES, PODS, ROLEBINDINGS, ROLES, SERVICES,
                                              Resource)
from localcluster.apiserver.selectors import LabelSelector
from localcluster.apiserver.validation_dns import dns_causes

K8S_SCHEMA_VERSION = "1.30.0"

Cause = dict[str, str]

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_QUALIFIED_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME_RE = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"field": field, "message": message, "reason": reason}


# --------------------------------------------------------------------------- name helpers
def dns1123_label_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_RE.fullmatch(value):
        errs.append("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character")
    return errs


def dns1123_subdomain_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _SUBDOMAIN_RE.fullmatch(value):
        errs.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric character")
    return errs


def qualified_name_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    errs = []
    if "/" in key and (not prefix or dns1123_subdomain_errors(prefix)):
        errs.append("prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _QUALIFIED_RE.fullmatch(name):
        errs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character (at most 63 characters)")
    return errs


def label_value_errors(value: Any) -> list[str]:
    if not isinstance(value, str):
        return ["must be a string"]
    if value == "":
        return []
    if len(value) > 63 or not _QUALIFIED_RE.fullmatch(value):
        return ["a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character "
                "(at most 63 characters)"]
    return []


# --------------------------------------------------------------------------- schema layer
@functools.lru_cache(maxsize=1)
def _schema_dir():
    return importlib_resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{K8S_SCHEMA_VERSION}-local-strict")


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    defs = json.loads(_schema_dir().joinpath("_definitions.json").read_text())
    return RefResource.from_contents(defs) @ Registry()


@functools.lru_cache(maxsize=None)
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir().joinpath(f"{kind.lower()}-{group_version}.json")
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = RefResource.from_contents(schema) @ _registry()
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _schema_causes(err: jsonschema.ValidationError) -> Iterator[Cause]:
    base = _path(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set((err.schema or {}).get("properties", {}))
        for extra in sorted(set(err.instance) - known):
            field = f"{base}.{extra}" if base else extra
            yield _cause(field, f'unknown field "{field}"', "FieldValueNotSupported")
        return
    if err.validator == "required":
        yield _cause(base or "<root>", f"Required value: {err.message}", "FieldValueRequired")
        return
    if err.validator == "type":
        yield _cause(base, f"Invalid value: {err.instance!r}: {err.message}",
                     "FieldValueTypeInvalid")
        return
    if err.validator in ("oneOf", "anyOf") and err.context:
        # report the most specific sub-error instead of "is not valid under any of the schemas"
        best = jsonschema.exceptions.best_match(err.context)
        yield from _schema_causes(best)
        return
    yield _cause(base, f"Invalid value: {err.message}")


def schema_causes(obj: dict) -> list[Cause]:
    validator = _validator(str(obj.get("kind", "")), str(obj.get("apiVersion", "")))
    if validator is None:
        return []
    causes: list[Cause] = []
    for err in validator.iter_errors(obj):
        causes.extend(_schema_causes(err))
    return causes


# --------------------------------------------------------------------------- semantic layer
def _metadata(res: Resource, obj: dict) -> Iterator[Cause]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if isinstance(name, str):
        check = dns1123_label_errors if res in (NAMESPACES, SERVICES, JOBS) \
            else rbac_objects.path_segment_errors if res in _RBAC else dns1123_subdomain_errors
        for msg in check(name):
            yield _cause("metadata.name", f'Invalid value: "{name}": {msg}')
    yield from _labels("metadata.labels", meta.get("labels"))
    for key in (meta.get("annotations") or {}) if isinstance(meta.get("annotations"), dict) else ():
        for msg in qualified_name_errors(key):
            yield _cause("metadata.annotations", f'Invalid value: "{key}": {msg}')


def _labels(field: str, labels: Any) -> Iterator[Cause]:
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        for msg in qualified_name_errors(key):
            yield _cause(field, f'Invalid value: "{key}": {msg}')
        for msg in label_value_errors(value):
            yield _cause(f"{field}", f'Invalid value: "{value}": {msg}')


def pod_spec_causes(spec: Any, field: str, restart_policies: tuple[str, ...]) -> Iterator[Cause]:
    if not isinstance(spec, dict):
        return
    volumes = set()
    for i, v in enumerate(spec.get("volumes") or []):
        vname = (v or {}).get("name", "")
        for msg in dns1123_label_errors(str(vname)):
            yield _cause(f"{field}.volumes[{i}].name", f'Invalid value: "{vname}": {msg}')
        if vname in volumes:
            yield _cause(f"{field}.volumes[{i}].name", f'Duplicate value: "{vname}"',
                         "FieldValueDuplicate")
        volumes.add(vname)
    containers = spec.get("containers")
    if not containers:
        yield _cause(f"{field}.containers", "Required value", "FieldValueRequired")
    names: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            yield from _container(c or {}, f"{field}.{key}[{i}]", names, volumes)
    policy = spec.get("restartPolicy")
    if policy is None and len(restart_policies) < 3:
        yield _cause(f"{field}.restartPolicy", "Required value: valid values: "
                     + ", ".join(f'"{p}"' for p in restart_policies), "FieldValueRequired")
    elif policy is not None and policy not in restart_policies:
        yield _cause(f"{field}.restartPolicy", f'Unsupported value: "{policy}": supported values: '
                     + ", ".join(f'"{p}"' for p in restart_policies), "FieldValueNotSupported")
    dns = spec.get("dnsPolicy")
    if dns is not None and dns not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        yield _cause(f"{field}.dnsPolicy", f'Unsupported value: "{dns}"', "FieldValueNotSupported")
    yield from dns_causes(spec, field, _cause, dns1123_subdomain_errors)
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        yield _cause(f"{field}.terminationGracePeriodSeconds",
                     f"Invalid value: {grace}: must be greater than or equal to 0")
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        yield _cause(f"{field}.activeDeadlineSeconds",
                     f"Invalid value: {deadline}: must be between 1 and 2147483647, inclusive")


def _container(c: dict, field: str, names: set[str], volumes: set[str]) -> Iterator[Cause]:
    name = str(c.get("name", ""))
    for msg in dns1123_label_errors(name):
        yield _cause(f"{field}.name", f'Invalid value: "{name}": {msg}')
    if name in names:
        yield _cause(f"{field}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
    names.add(name)
    if not str(c.get("image", "")).strip():
        yield _cause(f"{field}.image", "Required value", "FieldValueRequired")
    paths = set()
    for j, m in enumerate(c.get("volumeMounts") or []):
        m = m or {}
        if m.get("name") not in volumes:
            yield _cause(f"{field}.volumeMounts[{j}].name", f'Not found: "{m.get("name")}"',
                         "FieldValueNotFound")
        path = str(m.get("mountPath", ""))
        if not path.startswith("/"):
            yield _cause(f"{field}.volumeMounts[{j}].mountPath",
                         f'Invalid value: "{path}": must be an absolute path')
        if path in paths:
            yield _cause(f"{field}.volumeMounts[{j}].mountPath",
                         f'Invalid value: "{path}": must be unique')
        paths.add(path)
    for j, p in enumerate(c.get("ports") or []):
        port = (p or {}).get("containerPort")
        if isinstance(port, int) and not 1 <= port <= 65535:
            yield _cause(f"{field}.ports[{j}].containerPort",
                         f"Invalid value: {port}: must be between 1 and 65535, inclusive")
    for j, e in enumerate(c.get("env") or []):
        ename = str((e or {}).get("name", ""))
        if not _ENV_NAME_RE.fullmatch(ename):
            yield _cause(f"{field}.env[{j}].name", f'Invalid value: "{ename}": a valid '
                         "environment variable name must consist of alphabetic characters, "
                         "digits, '_', '-', or '.', and must not start with a digit")


def _pod(obj: dict, old: dict | None) -> Iterator[Cause]:
    yield from pod_spec_causes(obj.get("spec"), "spec", ("Always", "OnFailure", "Never"))
    if old is not None:
        def frozen(spec: dict) -> dict:
            s = dict(spec or {})
            for k in ("activeDeadlineSeconds", "tolerations", "nodeName"):
                s.pop(k, None)
            s["containers"] = [{k: v for k, v in c.items() if k != "image"}
                               for c in s.get("containers") or []]
            return s
        if frozen(obj.get("spec")) != frozen(old.get("spec")):
            yield _cause("spec", "Forbidden: pod updates may not change fields other than "
                         "`spec.containers[*].image`, `spec.activeDeadlineSeconds` or "
                         "`spec.tolerations`", "FieldValueForbidden")


def _job(obj: dict, old: dict | None) -> Iterator[Cause]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    yield from _labels("spec.template.metadata.labels",
                       (template.get("metadata") or {}).get("labels"))
    yield from pod_spec_causes(template.get("spec"), "spec.template.spec", ("OnFailure", "Never"))
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        v = spec.get(key)
        if isinstance(v, int) and v < 0:
            yield _cause(f"spec.{key}", f"Invalid value: {v}: must be greater than or equal to 0")
    v = spec.get("activeDeadlineSeconds")
    if isinstance(v, int) and v <= 0:
        yield _cause("spec.activeDeadlineSeconds", f"Invalid value: {v}: must be greater than 0")
    selector = spec.get("selector")
    if isinstance(selector, dict):
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not LabelSelector.from_dict(selector).matches(labels):
            yield _cause("spec.template.metadata.labels", "Invalid value: "
                         f"{labels!r}: `selector` does not match template `labels`")
    if old is not None:
        ospec = old.get("spec") or {}
        for key in ("selector", "template", "completions", "completionMode"):
            if spec.get(key) != ospec.get(key) and not (key == "completions" and spec.get("suspend")):
                yield _cause(f"spec.{key}", "Invalid value: field is immutable")


def _service(obj: dict, old: dict | None) -> Iterator[Cause]:
    spec = obj.get("spec") or {}
    names = set()
    for i, p in enumerate(spec.get("ports") or []):
        p = p or {}
        port = p.get("port")
        if isinstance(port, int) and not 1 <= port <= 65535:
            yield _cause(f"spec.ports[{i}].port",
                         f"Invalid value: {port}: must be between 1 and 65535, inclusive")
        name = p.get("name", "")
        if name in names:
            yield _cause(f"spec.ports[{i}].name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
        names.add(name)
    if len(spec.get("ports") or []) > 1 and "" in names:
        yield _cause("spec.ports", "Required value: port names are required when there is more "
                     "than one port", "FieldValueRequired")


def _deployment(obj: dict, old: dict | None) -> Iterator[Cause]:
    template = (obj.get("spec") or {}).get("template") or {}
    yield from pod_spec_causes(template.get("spec"), "spec.template.spec", ("Always",))


_RBAC = (ROLES, CLUSTERROLES, ROLEBINDINGS, CLUSTERROLEBINDINGS)
_RULES: dict[Resource, Callable[[dict, dict | None], Iterator[Cause]]] = {
    PODS: _pod, JOBS: _job, SERVICES: _service, DEPLOYMENTS: _deployment,
    **{r: rbac_objects.rules(dns1123_subdomain_errors)[r.kind] for r in _RBAC},
}


def validate(res: Resource, obj: dict, old: dict | None = None) -> None:
    """Raise ApiError 422 Invalid when the real API server would reject obj."""
    causes = schema_causes(obj)
    if not causes:  # semantic rules assume the shapes the schema guarantees
        causes.extend(_metadata(res, obj))
        rule = _RULES.get(res)
        if rule is not None:
            causes.extend(rule(obj, old))
    if causes:
        raise invalid(res, str((obj.get("metadata") or {}).get("name", "")), causes)
