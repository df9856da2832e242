"""Discovery documents: /version, /api, /apis, /api/v1, /apis/<group>/<version>."""
from __future__ import annotations

from localcluster.apiserver.resources import Resource, group_versions

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "localcluster",
           "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
           "compiler": "gc", "platform": "linux/amd64"}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SUB_VERBS = {"status": ["get", "patch", "update"], "log": ["get"], "binding": ["create"],
              "token": ["create"]}
# Subresources whose kind is not their parent's: (group, version, kind)
_SUB_KINDS = {"log": ("", "", "Pod"), "binding": ("", "", "Binding"),
              "token": ("authentication.k8s.io", "v1", "TokenRequest")}


def core_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def group_list() -> dict:
    groups: dict[str, list[str]] = {}
    for api_version in group_versions():
        if "/" in api_version:
            g, v = api_version.split("/")
            groups.setdefault(g, []).append(v)
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(g, vs) for g, vs in groups.items()]}


def group(name: str) -> dict | None:
    versions = [gv.split("/")[1] for gv in group_versions() if gv.split("/")[0] == name
                and "/" in gv]
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _entry(res: Resource) -> list[dict]:
    out = [{"name": res.plural, "singularName": res.singular or res.kind.lower(),
            "namespaced": res.namespaced, "kind": res.kind, "verbs": list(res.verbs) or _VERBS,
            **({"shortNames": list(res.short_names)} if res.short_names else {})}]
    for sub in res.subresources:
        group, version, kind = _SUB_KINDS.get(sub, ("", "", res.kind))
        out.append({"name": f"{res.plural}/{sub}", "singularName": "",
                    "namespaced": res.namespaced, "kind": kind,
                    **({"group": group, "version": version} if group else {}),
                    "verbs": _SUB_VERBS.get(sub, ["get"])})
    return out


def resource_list(api_version: str) -> dict | None:
    resources = group_versions().get(api_version)
    if resources is None:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version,
            "resources": [e for r in resources for e in _entry(r)]}
