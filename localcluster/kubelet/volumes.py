"""Volume set-up for the kubelet: each pod volume becomes a host path the runtime bind-mounts.

hostPath (with its type checks; with a host root DIR, hostPath /x is DIR/x: the filesystem of
"the cluster node", as a k3d node container has its own), emptyDir (a directory in the pod's
directory, removed with the pod; ``medium: Memory`` is a plain directory too), secret, configMap,
downwardAPI and projected (files written from the objects), persistentVolumeClaim
(``<state dir>/pvc/<ns>/<claim>``, kept across pods). Secret/configMap/downwardAPI/projected
volumes are mounted read-only, as a kubelet does. A projected ``serviceAccountToken`` gets a
token from the cluster's issuer (`localcluster.apiserver.incluster`), bound to the pod.
"""
from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from localcluster.apiserver.incluster import TokenError
from localcluster.kubelet.spec import ConfigError, _field_value, expand
from localcluster.runtime.base import Mount


class MountError(Exception):
    """A volume cannot be set up (a FailedMount event; the pod stays ContainerCreating)."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')
        self.volume = volume


@dataclass(frozen=True)
class Volume:
    path: Path
    readonly: bool = False  # forced for the whole volume (secret, configMap, pvc readOnly...)


Lookup = Callable[[str, str], "dict | None"]
# (pod, serviceAccountToken source) -> token; raises incluster.TokenError
TokenSource = Callable[[dict, dict], str]

_HOSTPATH_CHECKS = {
    "Directory": (stat.S_ISDIR, "is not a directory"),
    "File": (stat.S_ISREG, "is not a file"),
    "Socket": (stat.S_ISSOCK, "is not a socket file"),
    "CharDevice": (stat.S_ISCHR, "is not a character device"),
    "BlockDevice": (stat.S_ISBLK, "is not a block device"),
}


def node_path(path: Path, host_root: Path | None) -> Path:
    """Where hostPath `path` (absolute) is on this machine: itself, or under the node's root."""
    if host_root is None:
        return path
    return host_root / path.relative_to("/")


def _host_path(name: str, src: dict, host_root: Path | None) -> Volume:
    given = Path(src.get("path", ""))
    kind = src.get("type") or ""
    if not given.is_absolute():
        raise MountError(name, f"hostPath {given} must be absolute")
    path = node_path(given, host_root)
    if host_root is not None:
        # A symlink on the node resolves inside the node's filesystem, never to this machine's.
        real = Path(os.path.realpath(path))
        root = Path(os.path.realpath(host_root))
        if real != root and root not in real.parents:
            raise MountError(name, f"hostPath {given} leaves the node's filesystem {host_root}")
    try:
        if kind == "DirectoryOrCreate":
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            if not path.exists():
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                path.touch(mode=0o644)
        elif kind == "":
            # no checks; a missing path is created as a directory, as Docker did for a bind source
            if not path.exists():
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        raise MountError(name, f"cannot create hostPath {path}: {e.strerror}") from e
    if kind in ("DirectoryOrCreate", "FileOrCreate"):
        check = (stat.S_ISDIR if kind == "DirectoryOrCreate" else stat.S_ISREG,
                 "is not a directory" if kind == "DirectoryOrCreate" else "is not a file")
    else:
        check = _HOSTPATH_CHECKS.get(kind)
        if check is None and kind:
            raise MountError(name, f"hostPath type {kind!r} is not supported")
    if check is not None:
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0
        if not check[0](mode):
            raise MountError(name, f"hostPath type check failed: {path} {check[1]}")
    return Volume(path)


def _write_files(root: Path, files: dict[str, tuple[bytes, int]]) -> None:
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    for rel, (data, mode) in files.items():
        target = root / rel
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)


def _items(name: str, obj_data: dict[str, bytes], items: list | None, default_mode: int,
           kind: str, obj_name: str, optional: bool) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {k: (v, default_mode) for k, v in obj_data.items()}
    out = {}
    for item in items:
        key = item.get("key", "")
        if key not in obj_data:
            if optional:
                continue
            raise MountError(name, f"couldn't find key {key} in {kind} {obj_name}")
        out[_safe_rel(name, item.get("path", key))] = (obj_data[key],
                                                       int(item.get("mode", default_mode)))
    return out


def _safe_rel(volume: str, rel: str) -> str:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise MountError(volume, f"invalid path {rel!r}")
    return rel


def _secret_data(obj: dict) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return data


def _configmap_data(obj: dict) -> dict[str, bytes]:
    data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def _object_files(name: str, src: dict, ns: str, lookup: Lookup, kind: str,
                  default_mode: int) -> dict[str, tuple[bytes, int]]:
    obj_name = src.get("secretName") if kind == "Secret" else src.get("name")
    obj_name = obj_name or ""
    obj = lookup(ns, obj_name)
    optional = bool(src.get("optional"))
    if obj is None:
        if optional:
            return {}
        raise MountError(name, f'{kind.lower()} "{obj_name}" not found')
    data = _secret_data(obj) if kind == "Secret" else _configmap_data(obj)
    return _items(name, data, src.get("items"), int(src.get("defaultMode", default_mode)),
                  kind, f"{ns}/{obj_name}", optional)


def _downward_files(name: str, src: dict, pod: dict, default_mode: int) -> dict:
    out = {}
    for item in src.get("items") or []:
        if "fieldRef" not in item:
            raise MountError(name, "only fieldRef items are supported in downwardAPI volumes")
        path = item["fieldRef"].get("fieldPath", "")
        if path in ("metadata.labels", "metadata.annotations"):
            values = pod["metadata"].get(path.split(".")[1]) or {}
            text = "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        else:
            try:
                text = _field_value(pod, path)
            except ConfigError as e:
                raise MountError(name, str(e)) from e
        out[_safe_rel(name, item.get("path", ""))] = (text.encode(),
                                                      int(item.get("mode", default_mode)))
    return out


def _token(name: str, pod: dict, src: dict, tokens: TokenSource | None) -> bytes:
    if tokens is None:
        raise MountError(name, "failed to fetch token: the cluster issues no service account "
                               "tokens (in-cluster access is not set up)")
    try:
        return tokens(pod, src).encode()
    except TokenError as e:
        raise MountError(name, str(e)) from e


def prepare_volumes(pod: dict, pod_dir: Path, state_dir: Path, secrets: Lookup,
                    configmaps: Lookup, *, tokens: TokenSource | None = None,
                    host_root: Path | None = None) -> dict[str, Volume]:
    """Set up every pod volume; MountError for the first that fails. tokens: the cluster's
    issuer of service account tokens; host_root: the node's filesystem root (None: "/")."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, Volume] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol.get("name", "")
        vdir = pod_dir / "volumes" / name
        try:
            if "hostPath" in vol:
                out[name] = _host_path(name, vol["hostPath"], host_root)
            elif "emptyDir" in vol:
                vdir.mkdir(parents=True, exist_ok=True)
                os.chmod(vdir, 0o777)  # writable by any container uid, as a kubelet makes it
                out[name] = Volume(vdir)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"].get("claimName", "")
                _safe_rel(name, claim)
                cdir = state_dir / "pvc" / ns / claim
                if not cdir.exists():
                    cdir.mkdir(parents=True, exist_ok=True)
                    os.chmod(cdir, 0o777)  # as a local-path provisioner creates them
                out[name] = Volume(cdir, bool(vol["persistentVolumeClaim"].get("readOnly")))
            elif "secret" in vol:
                _write_files(vdir, _object_files(name, vol["secret"], ns, secrets, "Secret",
                                                 0o644))
                out[name] = Volume(vdir, True)
            elif "configMap" in vol:
                _write_files(vdir, _object_files(name, vol["configMap"], ns, configmaps,
                                                 "ConfigMap", 0o644))
                out[name] = Volume(vdir, True)
            elif "downwardAPI" in vol:
                src = vol["downwardAPI"]
                _write_files(vdir, _downward_files(name, src, pod,
                                                   int(src.get("defaultMode", 0o644))))
                out[name] = Volume(vdir, True)
            elif "projected" in vol:
                src = vol["projected"]
                mode = int(src.get("defaultMode", 0o644))
                files: dict = {}
                for s in src.get("sources") or []:
                    if "secret" in s:
                        files.update(_object_files(name, s["secret"], ns, secrets, "Secret", mode))
                    elif "configMap" in s:
                        files.update(_object_files(name, s["configMap"], ns, configmaps,
                                                   "ConfigMap", mode))
                    elif "downwardAPI" in s:
                        files.update(_downward_files(name, s["downwardAPI"], pod, mode))
                    elif "serviceAccountToken" in s:
                        path = _safe_rel(name, s["serviceAccountToken"].get("path", "token"))
                        files[path] = (_token(name, pod, s["serviceAccountToken"], tokens), mode)
                _write_files(vdir, files)
                out[name] = Volume(vdir, True)
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise MountError(name, f"volume type {kinds} is not supported by the local "
                                       f"cluster")
        except OSError as e:
            raise MountError(name, f"{e.strerror}: {e.filename}") from e
    return out


def container_mounts(pod: dict, container: dict, volumes: dict[str, Volume],
                     env: dict[str, str]) -> list[Mount]:
    """The container's volumeMounts as runtime mounts (subPath created when missing)."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        vname = vm.get("name", "")
        vol = volumes.get(vname)
        if vol is None:
            raise ConfigError(f"cannot find volume \"{vname}\" to mount into container "
                              f"\"{container.get('name')}\"")
        source = vol.path
        sub = vm.get("subPath") or (expand(vm["subPathExpr"], env) if vm.get("subPathExpr")
                                    else "")
        if sub:
            parts = Path(sub).parts
            if Path(sub).is_absolute() or ".." in parts:
                raise ConfigError(f"failed to prepare subPath for volumeMount \"{vname}\" of "
                                  f"container \"{container.get('name')}\": invalid subPath {sub!r}")
            source = source / sub
            if not source.exists():
                source.mkdir(mode=0o755, parents=True, exist_ok=True)
                if vol.path.stat().st_mode & 0o002:
                    os.chmod(source, 0o777)
            real = source.resolve()
            if real != vol.path.resolve() and vol.path.resolve() not in real.parents:
                raise ConfigError(f"subPath {sub!r} of volume \"{vname}\" leaves the volume")
        mounts.append(Mount(str(source), vm.get("mountPath", ""),
                            bool(vm.get("readOnly")) or vol.readonly))
    return mounts
