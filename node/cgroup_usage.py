"""The pod's CPU time and peak memory, read by the live sidecar when the algorithm ended
(CONTRACTS §9). Pure but for reading files; the roots are injectable for tests.

Only the POD's cgroup is reported: the sidecar's own container cgroup holds the sidecar alone,
and passing that off as the algorithm's use would be wrong. The pod's cgroup is found from
``/proc/self/cgroup``: a path with a pod directory (``.../pod<uid>/<container>`` for the cgroupfs
driver, ``.../kubepods-<qos>-pod<uid>.slice/<container>.scope`` for systemd), whose directory
must be visible under ``/sys/fs/cgroup``. With a private cgroup namespace (the default on cgroup
v2) the sidecar sees ``0::/`` only, and usage is reported unavailable.

cgroup v2: ``cpu.stat`` ``usage_usec`` and ``memory.peak`` (kernel 5.19+; else the peak is null).
cgroup v1: ``cpuacct/cpuacct.usage`` (ns) and ``memory/memory.max_usage_in_bytes``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# "pod<uid>" (cgroupfs) or "kubepods-burstable-pod<uid>.slice" (systemd)
POD_DIR_RE = re.compile(rf"(?:pod{_UID}|.*[-_]pod{_UID}(?:\.slice)?)")


class Unavailable(Exception):
    """Usage cannot be read (the reason is the message)."""


def read_usage(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> dict[str, Any]:
    """``{"available": true, "scope": "pod", "cpu_seconds", "memory_peak_bytes"}`` or
    ``{"available": false, "reason"}``; never raises."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError as e:
        return unavailable(f"cannot read {proc_cgroup}: {e.strerror or e}")
    except UnicodeDecodeError:
        return unavailable(f"{proc_cgroup} is not text")
    try:
        return _read(root, parse_proc_cgroup(lines))
    except Unavailable as e:
        return unavailable(str(e))


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason[:200]}


def parse_proc_cgroup(lines: list[str]) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controller: path}; cgroup v2's unified line is under ""."""
    out: dict[str, str] = {}
    for line in lines:
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in controllers.split(",") if controllers else [""]:
            out[name.removeprefix("name=")] = path
    return out


def pod_dir(path: str) -> str | None:
    """The pod's cgroup path in a container's cgroup path, or None when there is none."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        if POD_DIR_RE.fullmatch(parts[i]):
            return "/".join(parts[:i + 1])
    return None


def _read(root: Path, paths: dict[str, str]) -> dict[str, Any]:
    unified = pod_dir(paths.get("", ""))
    if unified is not None and (root / unified).is_dir():
        return _read_v2(root / unified)
    cpu_pod = pod_dir(paths.get("cpuacct", ""))
    if cpu_pod is not None:  # cgroup v1 (or hybrid with the pod under the v1 controllers)
        return _read_v1(root, cpu_pod, paths)
    if unified is not None:
        raise Unavailable(f"the pod's cgroup {unified} is not visible under {root}")
    return unavailable("no pod cgroup in /proc/self/cgroup (a private cgroup namespace, or "
                       "not in a Kubernetes pod): the sidecar's own cgroup is not the pod's")


def _read_v2(pod: Path) -> dict[str, Any]:
    usec = _stat_field(pod / "cpu.stat", "usage_usec")
    return used(usec / 1e6, _optional_int(pod / "memory.peak"))


def _read_v1(root: Path, pod: str, paths: dict[str, str]) -> dict[str, Any]:
    cpu_dir = _controller_dir(root, "cpuacct", pod)
    nanos = _int(cpu_dir / "cpuacct.usage")
    memory_pod = pod_dir(paths.get("memory", ""))
    peak = None
    if memory_pod is not None:
        memory_dir = _controller_dir(root, "memory", memory_pod, required=False)
        if memory_dir is not None:
            peak = _optional_int(memory_dir / "memory.max_usage_in_bytes")
    return used(nanos / 1e9, peak)


def _controller_dir(root: Path, controller: str, pod: str, required: bool = True) -> Path | None:
    # v1 mounts a controller alone or co-mounted: cpuacct, cpu,cpuacct, cpuacct,cpu
    for name in (controller, f"cpu,{controller}", f"{controller},cpu"):
        if (root / name / pod).is_dir():
            return root / name / pod
    if required:
        raise Unavailable(f"the pod's {controller} cgroup {pod} is not visible under {root}")
    return None


def used(cpu_seconds: float, memory_peak_bytes: int | None) -> dict[str, Any]:
    return {"available": True, "scope": "pod", "cpu_seconds": round(cpu_seconds, 3),
            "memory_peak_bytes": memory_peak_bytes}


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise Unavailable(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise Unavailable(f"{path} is not text") from e


def _int(path: Path) -> int:
    text = _text(path).strip()
    if not (text.isascii() and text.isdecimal()):
        raise Unavailable(f"{path} does not hold a number: {text[:20]!r}")
    return int(text)


def _optional_int(path: Path) -> int | None:
    """A memory figure: missing or unreadable leaves the peak unknown, not the CPU time."""
    try:
        return _int(path)
    except Unavailable as e:
        log.debug("memory peak unknown: %s", e)
        return None


def _stat_field(path: Path, key: str) -> int:
    for line in _text(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isascii() and value.strip().isdecimal():
            return int(value)
    raise Unavailable(f"{path} has no {key}")
