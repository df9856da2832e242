"""The checks of the Pod Security Standards as Kubernetes v1.30's pod-security-admission runs
them, one function per check (pure: pod metadata and spec in, ``(reason, detail)`` out when the
pod fails it), with the real texts, and `CHECKS`: each check's id, level, versions and the
baseline check a restricted one replaces. `podsecurity` evaluates them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

Spec = dict[str, Any]
Meta = dict[str, Any]

# --------------------------------------------------------------------------- helpers
def _quote(s: str) -> str:  # Go's %q for the plain strings that occur here
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _join_quote(items) -> str:
    return ", ".join(_quote(i) for i in items)


def _plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


def _containers(spec: Spec) -> Iterator[dict]:
    # init containers first, as the real visitor
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                yield c


def _csc(c: dict) -> dict:
    return c.get("securityContext") or {}


def _psc(spec: Spec) -> dict:
    return spec.get("securityContext") or {}


def _who(names: list[str]) -> str:
    return f'{_plural("container", "containers", len(names))} {_join_quote(names)}'


def _setters(pod_bad: bool, containers: list[str]) -> list[str]:
    return (["pod"] if pod_bad else []) + ([_who(containers)] if containers else [])


Result = tuple[str, str] | None  # (reason, detail) when the check fails


# --------------------------------------------------------------------------- baseline checks
_APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def _app_armor(meta: Meta, spec: Spec) -> Result:
    ok = ("RuntimeDefault", "Localhost")
    bad_values: set[str] = set()
    pod_type = (_psc(spec).get("appArmorProfile") or {}).get("type")
    pod_bad = _psc(spec).get("appArmorProfile") is not None and pod_type not in ok
    if pod_bad:
        bad_values.add(str(pod_type))
    bad = []
    for c in _containers(spec):
        prof = _csc(c).get("appArmorProfile")
        if prof is not None and prof.get("type") not in ok:
            bad.append(c.get("name"))
            bad_values.add(str(prof.get("type")))
    setters = _setters(pod_bad, bad)
    annotations = sorted(f"{k}={_quote(v)}" for k, v in (meta.get("annotations") or {}).items()
                         if k.startswith(_APPARMOR_PREFIX) and not (
                             v in ("", "runtime/default") or v.startswith("localhost/")))
    values = sorted(bad_values) + annotations
    if annotations:
        setters.append(_plural("annotation", "annotations", len(annotations)))
    if not setters:
        return None
    return (_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values)),
            f"{' and '.join(setters)} must not set AppArmor profile type to {_join_quote(values)}")


_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                  "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def _capabilities_baseline(meta: Meta, spec: Spec) -> Result:
    bad, caps = [], set()
    for c in _containers(spec):
        extra = [x for x in (_csc(c).get("capabilities") or {}).get("add") or []
                 if x not in _BASELINE_CAPS]
        if extra:
            bad.append(c.get("name"))
            caps.update(extra)
    if not bad:
        return None
    return ("non-default capabilities", f"{_who(bad)} must not include {_join_quote(sorted(caps))} "
                                        f"in securityContext.capabilities.add")


def _host_namespaces(meta: Meta, spec: Spec) -> Result:
    used = sorted(f for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f))
    return ("host namespaces", ", ".join(used)) if used else None


def _host_path_volumes(meta: Meta, spec: Spec) -> Result:
    names = [v.get("name") for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
    if not names:
        return None
    return "hostPath volumes", f'{_plural("volume", "volumes", len(names))} {_join_quote(names)}'


def _host_ports(meta: Meta, spec: Spec) -> Result:
    bad, ports = [], set()
    for c in _containers(spec):
        found = {str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")}
        if found:
            bad.append(c.get("name"))
            ports |= found
    if not bad:
        return None
    return ("hostPort", f'{_who(bad)} {_plural("uses", "use", len(bad))} '
                        f'{_plural("hostPort", "hostPorts", len(ports))} {", ".join(sorted(ports))}')


def _privileged(meta: Meta, spec: Spec) -> Result:
    bad = [c.get("name") for c in _containers(spec) if _csc(c).get("privileged") is True]
    return ("privileged", f"{_who(bad)} must not set securityContext.privileged=true") if bad else None


def _proc_mount(meta: Meta, spec: Spec) -> Result:
    bad, kinds = [], set()
    for c in _containers(spec):
        pm = _csc(c).get("procMount")
        if pm is not None and pm != "Default":
            bad.append(c.get("name"))
            kinds.add(pm)
    if not bad:
        return None
    return "procMount", f"{_who(bad)} must not set securityContext.procMount to {_join_quote(sorted(kinds))}"


_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}


def _se_linux(meta: Meta, spec: Spec) -> Result:
    bad_types: set[str] = set()
    flags = {"user": False, "role": False}

    def valid(opts: dict) -> bool:
        ok = True
        if opts.get("type", "") not in _SELINUX_TYPES:
            ok = False
            bad_types.add(opts["type"])
        for k in ("user", "role"):
            if opts.get(k):
                ok, flags[k] = False, True
        return ok
    pod_opts = _psc(spec).get("seLinuxOptions")
    pod_bad = pod_opts is not None and not valid(pod_opts)
    bad = [c.get("name") for c in _containers(spec)
           if _csc(c).get("seLinuxOptions") is not None and not valid(_csc(c)["seLinuxOptions"])]
    setters = _setters(pod_bad, bad)
    if not setters:
        return None
    data = []
    if bad_types:  # as the v1.30 check: user/role are only named next to a bad type
        data.append(f'{_plural("type", "types", len(bad_types))} {_join_quote(sorted(bad_types))}')
        data += [f"{k} may not be set" for k in ("user", "role") if flags[k]]
    return ("seLinuxOptions", f"{' and '.join(setters)} set forbidden "
                              f"securityContext.seLinuxOptions: {'; '.join(data)}")


_SECCOMP_OK = ("RuntimeDefault", "Localhost")
_SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"


def _seccomp_baseline_1_0(meta: Meta, spec: Spec) -> Result:
    annotations = meta.get("annotations") or {}

    def ok(v: str) -> bool:
        return v in ("runtime/default", "docker/default") or v.startswith("localhost/")
    keys = [_SECCOMP_POD_ANNOTATION] + [_SECCOMP_CONTAINER_PREFIX + str(c.get("name"))
                                        for c in _containers(spec)]
    bad = sorted({f"{k}={_quote(annotations[k])}" for k in keys
                  if k in annotations and not ok(annotations[k])})
    if not bad:
        return None
    return "seccompProfile", f'forbidden {_plural("annotation", "annotations", len(bad))} {", ".join(bad)}'


def _seccomp_baseline(meta: Meta, spec: Spec) -> Result:
    values: set[str] = set()
    pod = _psc(spec).get("seccompProfile")
    pod_bad = pod is not None and pod.get("type") not in _SECCOMP_OK
    if pod_bad:
        values.add(str(pod.get("type")))
    bad = []
    for c in _containers(spec):
        prof = _csc(c).get("seccompProfile")
        if prof is not None and prof.get("type") not in _SECCOMP_OK:
            bad.append(c.get("name"))
            values.add(str(prof.get("type")))
    setters = _setters(pod_bad, bad)
    if not setters:
        return None
    return ("seccompProfile", f"{' and '.join(setters)} must not set "
                              f"securityContext.seccompProfile.type to {_join_quote(sorted(values))}")


_SYSCTLS_1_0 = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"}
_SYSCTLS_1_27 = _SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
_SYSCTLS_1_29 = _SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                                 "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def _sysctls(allowed: set[str]) -> Callable[[Meta, Spec], Result]:
    def check(meta: Meta, spec: Spec) -> Result:
        bad = [s.get("name") for s in _psc(spec).get("sysctls") or [] if s.get("name") not in allowed]
        return ("forbidden sysctls", ", ".join(bad)) if bad else None
    return check


def _windows_host_process(meta: Meta, spec: Spec) -> Result:
    def on(sc: dict) -> bool:
        return (sc.get("windowsOptions") or {}).get("hostProcess") is True
    setters = _setters(on(_psc(spec)), [c.get("name") for c in _containers(spec) if on(_csc(c))])
    if not setters:
        return None
    return ("hostProcess", f"{' and '.join(setters)} must not set "
                           f"securityContext.windowsOptions.hostProcess=true")


# --------------------------------------------------------------------------- restricted checks
def _allow_privilege_escalation(meta: Meta, spec: Spec) -> Result:
    bad = [c.get("name") for c in _containers(spec)
           if _csc(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return ("allowPrivilegeEscalation != false",
            f"{_who(bad)} must set securityContext.allowPrivilegeEscalation=false")


def _capabilities_restricted(meta: Meta, spec: Spec) -> Result:
    missing_drop, adding, caps = [], [], set()
    for c in _containers(spec):
        capabilities = _csc(c).get("capabilities")
        if capabilities is None:
            missing_drop.append(c.get("name"))
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing_drop.append(c.get("name"))
        extra = [x for x in capabilities.get("add") or [] if x != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c.get("name"))
            caps.update(extra)
    details = []
    if missing_drop:
        details.append(f'{_who(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_who(adding)} must not include {_join_quote(sorted(caps))} in "
                       f"securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


_RESTRICTED_VOLUME_OK = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                         "persistentVolumeClaim", "projected", "secret"}


def _restricted_volumes(meta: Meta, spec: Spec) -> Result:
    names, kinds = [], set()
    for v in spec.get("volumes") or []:
        sources = [k for k in v if k != "name" and v[k] is not None]
        if any(k in _RESTRICTED_VOLUME_OK for k in sources):
            continue
        names.append(v.get("name"))
        kinds.update(sources or ["unknown"])
    if not names:
        return None
    n = len(names)
    return ("restricted volume types",
            f'{_plural("volume", "volumes", n)} {_join_quote(names)} {_plural("uses", "use", n)} '
            f'{_plural("restricted volume type", "restricted volume types", len(kinds))} '
            f"{_join_quote(sorted(kinds))}")


def _run_as_non_root(meta: Meta, spec: Spec) -> Result:
    setting = _psc(spec).get("runAsNonRoot")
    pod_bad, pod_ok = setting is False, setting is True
    explicit, implicit = [], []
    for c in _containers(spec):
        own = _csc(c).get("runAsNonRoot")
        if own is False:
            explicit.append(c.get("name"))
        elif own is None and not pod_ok:
            implicit.append(c.get("name"))
    setters = _setters(pod_bad, explicit)
    if setters:
        return ("runAsNonRoot != true",
                f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return ("runAsNonRoot != true", f"pod or {_who(implicit)} must set "
                                        f"securityContext.runAsNonRoot=true")
    return None


def _run_as_user(meta: Meta, spec: Spec) -> Result:
    setters = _setters(_psc(spec).get("runAsUser") == 0,
                       [c.get("name") for c in _containers(spec) if _csc(c).get("runAsUser") == 0])
    return ("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def _seccomp_restricted(meta: Meta, spec: Spec) -> Result:
    values: set[str] = set()
    pod = _psc(spec).get("seccompProfile")
    pod_bad = pod is not None and pod.get("type") not in _SECCOMP_OK
    pod_set = pod is not None and not pod_bad
    if pod_bad:
        values.add(str(pod.get("type")))
    explicit, implicit = [], []
    for c in _containers(spec):
        prof = _csc(c).get("seccompProfile")
        if prof is not None:
            if prof.get("type") not in _SECCOMP_OK:
                explicit.append(c.get("name"))
                values.add(str(prof.get("type")))
        elif not pod_set:
            implicit.append(c.get("name"))
    setters = _setters(pod_bad, explicit)
    if setters:
        return ("seccompProfile", f"{' and '.join(setters)} must not set "
                                  f"securityContext.seccompProfile.type to {_join_quote(sorted(values))}")
    if implicit:
        return ("seccompProfile", f'pod or {_who(implicit)} must set securityContext.seccompProfile.'
                                  f'type to "RuntimeDefault" or "Localhost"')
    return None


# --------------------------------------------------------------------------- the registry
CheckFn = Callable[[Meta, Spec], Result]


@dataclass(frozen=True)
class Check:
    id: str
    level: str  # baseline | restricted
    versions: tuple[tuple[tuple[int, int], CheckFn], ...]  # (minimum version, fn), increasing
    overrides: tuple[str, ...] = ()  # baseline checks a restricted check replaces

    def at(self, version: tuple[int, int]) -> CheckFn | None:
        chosen = None
        for minimum, fn in self.versions:
            if minimum <= version:
                chosen = fn
        return chosen


CHECKS: tuple[Check, ...] = (
    Check("appArmorProfile", "baseline", (((1, 0), _app_armor),)),
    Check("capabilities_baseline", "baseline", (((1, 0), _capabilities_baseline),)),
    Check("hostNamespaces", "baseline", (((1, 0), _host_namespaces),)),
    Check("hostPathVolumes", "baseline", (((1, 0), _host_path_volumes),)),
    Check("hostPorts", "baseline", (((1, 0), _host_ports),)),
    Check("privileged", "baseline", (((1, 0), _privileged),)),
    Check("procMount", "baseline", (((1, 0), _proc_mount),)),
    Check("seLinuxOptions", "baseline", (((1, 0), _se_linux),)),
    Check("seccompProfile_baseline", "baseline",
          (((1, 0), _seccomp_baseline_1_0), ((1, 19), _seccomp_baseline))),
    Check("sysctls", "baseline", (((1, 0), _sysctls(_SYSCTLS_1_0)),
                                  ((1, 27), _sysctls(_SYSCTLS_1_27)),
                                  ((1, 29), _sysctls(_SYSCTLS_1_29)))),
    Check("windowsHostProcess", "baseline", (((1, 0), _windows_host_process),)),
    Check("allowPrivilegeEscalation", "restricted", (((1, 8), _allow_privilege_escalation),)),
    Check("capabilities_restricted", "restricted", (((1, 22), _capabilities_restricted),),
          ("capabilities_baseline",)),
    Check("restrictedVolumes", "restricted", (((1, 0), _restricted_volumes),),
          ("hostPathVolumes",)),
    Check("runAsNonRoot", "restricted", (((1, 0), _run_as_non_root),)),
    Check("runAsUser", "restricted", (((1, 23), _run_as_user),)),
    Check("seccompProfile_restricted", "restricted", (((1, 19), _seccomp_restricted),),
          ("seccompProfile_baseline",)),
)
