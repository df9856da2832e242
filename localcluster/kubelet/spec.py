"""Pure helpers of the kubelet: resource quantities and requests (which the scheduler uses too),
env and command expansion, container identity. No I/O here; lookups of Secrets/ConfigMaps are passed in as functions."""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable

from localcluster.runtime.registry import Image

NODE_NAME = "localcluster"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


class ConfigError(Exception):
    """A container cannot be configured (waiting reason CreateContainerConfigError)."""


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes resource quantity ("500m", "256Mi", "1", 2) as a number."""
    text = str(value).strip()
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"invalid resource quantity {value!r}")
    try:
        return Decimal(m[1]) * Decimal(_SUFFIXES[m[2]])
    except InvalidOperation as e:
        raise ValueError(f"invalid resource quantity {value!r}") from e


# --- requests ----------------------------------------------------------------------------------

def container_requests(container: dict) -> dict[str, Decimal]:
    res = container.get("resources") or {}
    # requests default to limits when only limits are given, as the API server defaults them
    merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
    return {k: parse_quantity(v) for k, v in merged.items()}


def pod_requests(pod: dict) -> dict[str, Decimal]:
    """Effective requests: the sum over containers, at least the largest init container's."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in container_requests(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    for c in spec.get("initContainers") or []:
        for k, v in container_requests(c).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    return total


# --- env and $(VAR) expansion -----------------------------------------------------------------

def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined vars are replaced, $$ escapes, the rest is kept."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end >= 0:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


Lookup = Callable[[str, str], "dict | None"]  # (namespace, name) -> object or None


def _field_value(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if m:
        return str((meta.get(m[1]) or {}).get(m[2], ""))
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"),
              "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP"),
              "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
              "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or [])}
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    return str(simple[path] or "")


def _resource_value(container: dict, ref: dict, allocatable: dict[str, Decimal]) -> str:
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    res = container.get("resources") or {}
    raw = (res.get(kind) or {}).get(name)
    value = parse_quantity(raw) if raw is not None else allocatable.get(name, Decimal(0))
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(value / divisor))


def _decode(obj: dict, key: str, is_secret: bool) -> str | None:
    if is_secret:
        if key in (obj.get("data") or {}):
            return base64.b64decode(obj["data"][key]).decode(errors="replace")
        return (obj.get("stringData") or {}).get(key)
    if key in (obj.get("data") or {}):
        return obj["data"][key]
    if key in (obj.get("binaryData") or {}):
        return base64.b64decode(obj["binaryData"][key]).decode(errors="replace")
    return None


def _key_ref(ref: dict, ns: str, lookup: Lookup, kind: str) -> str | None:
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    obj = lookup(ns, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    value = _decode(obj, key, kind == "Secret")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {ns}/{name}")
    return value


def build_env(pod: dict, container: dict, image: Image, secrets: Lookup, configmaps: Lookup,
              allocatable: dict[str, Decimal], *,
              service_env: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment: image env, HOSTNAME, the Services' variables (service_env:
    KUBERNETES_SERVICE_HOST ..., `localcluster.apiserver.incluster.service_env`), envFrom, env (in order,
    later ones win; $(VAR) in env values sees all before them)."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {"PATH": DEFAULT_PATH, **image.env,
                           "HOSTNAME": pod["metadata"]["name"], **(service_env or {})}
    declared: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key, lookup in (("Secret", "secretRef", secrets),
                                  ("ConfigMap", "configMapRef", configmaps)):
            ref = src.get(key)
            if not ref:
                continue
            obj = lookup(ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            keys = list(obj.get("data") or {}) + list(obj.get("stringData") or {}) + \
                list(obj.get("binaryData") or {})
            for k in keys:
                value = _decode(obj, k, kind == "Secret")
                if value is not None:
                    declared[prefix + k] = value
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "value" in var or "valueFrom" not in var:
            # expansion sees the variables declared before this one (and the image's)
            declared[name] = expand(str(var.get("value", "")), {**env, **declared})
            continue
        vf = var["valueFrom"] or {}
        value: str | None
        if "fieldRef" in vf:
            value = _field_value(pod, vf["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in vf:
            value = _resource_value(container, vf["resourceFieldRef"], allocatable)
        elif "secretKeyRef" in vf:
            value = _key_ref(vf["secretKeyRef"], ns, secrets, "Secret")
        elif "configMapKeyRef" in vf:
            value = _key_ref(vf["configMapKeyRef"], ns, configmaps, "ConfigMap")
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom")
        if value is not None:
            declared[name] = value
    env.update(declared)
    return env


def build_argv(container: dict, image: Image, env: dict[str, str]) -> list[str]:
    """command/args override the image's entrypoint/cmd, as Kubernetes defines it."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [expand(str(a), env) for a in command] + [expand(str(a), env) for a in args or []]
    elif args is not None:
        argv = list(image.entrypoint) + [expand(str(a), env) for a in args]
    else:
        argv = list(image.entrypoint) + list(image.cmd)
    if not argv:
        raise ConfigError("no command specified")
    return argv


# --- identity ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: list[int]
    root_readonly: bool
    no_new_privs: bool
    capabilities: list[str] | None


def identity(pod: dict, container: dict, image: Image) -> Identity:
    """uid/gid/groups and privileges; ConfigError on a runAsNonRoot violation."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    explicit_uid = csc.get("runAsUser", psc.get("runAsUser"))
    uid = int(explicit_uid) if explicit_uid is not None else image.uid
    gid_value = csc.get("runAsGroup", psc.get("runAsGroup"))
    gid = int(gid_value) if gid_value is not None else (image.gid if image.gid is not None else 0)
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    name = pod["metadata"]["name"]
    ns = pod["metadata"]["namespace"]
    if non_root and uid == 0:
        if explicit_uid is not None:
            raise ConfigError(f"container's runAsUser breaks non-root policy (pod: "
                              f"\"{name}_{ns}({pod['metadata'].get('uid')})\", container: "
                              f"{container.get('name')})")
        raise ConfigError(f"container has runAsNonRoot and image will run as root (pod: "
                          f"\"{name}_{ns}({pod['metadata'].get('uid')})\", container: "
                          f"{container.get('name')})")
    groups = [int(g) for g in psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        groups.insert(0, int(psc["fsGroup"]))
    caps: list[str] | None = None
    if csc.get("privileged"):
        caps = ["ALL"]
    cap_spec = csc.get("capabilities") or {}
    if cap_spec:
        from localcluster.runtime.shim import CAP_NUMBERS, DEFAULT_ROOT_CAPS
        base = set(DEFAULT_ROOT_CAPS) if caps is None else set(CAP_NUMBERS)
        drop = {c.upper().removeprefix("CAP_") for c in cap_spec.get("drop") or []}
        add = {c.upper().removeprefix("CAP_") for c in cap_spec.get("add") or []}
        base = set() if "ALL" in drop else base - drop
        base |= set(CAP_NUMBERS) if "ALL" in add else add
        caps = sorted(base)
    elif caps == ["ALL"]:
        from localcluster.runtime.shim import CAP_NUMBERS
        caps = sorted(CAP_NUMBERS)
    # no_new_privs unless privilege escalation is asked for (stricter than the Kubernetes
    # default, which allows it; nothing in this project needs setuid binaries)
    no_new_privs = csc.get("allowPrivilegeEscalation") is not True and not csc.get("privileged")
    return Identity(uid=uid, gid=gid, groups=groups,
                    root_readonly=bool(csc.get("readOnlyRootFilesystem")),
                    no_new_privs=no_new_privs, capabilities=caps)


def memory_limit(container: dict) -> int | None:
    raw = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(raw)) if raw is not None else None


def cpu_limit_millis(container: dict) -> int | None:
    raw = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
    return max(1, int(parse_quantity(raw) * 1000)) if raw is not None else None
