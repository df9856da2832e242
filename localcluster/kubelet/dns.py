"""A pod's /etc/hosts and /etc/resolv.conf, written as a kubelet writes them (pure but for the
files): ``hostAliases`` entries are appended to the pod's hosts file, and ``dnsPolicy: None``
makes resolv.conf from ``dnsConfig`` alone. Both files are bind-mounted into every container of
the pod, in either runtime (the process runtime's private mount namespace, Docker bind mounts).

Only pods that ask for it (hostAliases, or dnsPolicy None) get the files; other pods keep what
their runtime gives them (the host's files, Docker's own), as before.
"""
from __future__ import annotations

from pathlib import Path

from localcluster.runtime.base import Mount

HOSTS_FILE = "etc-hosts"
RESOLV_FILE = "resolv.conf"

_HOSTS_HEADER = ("# Kubernetes-managed hosts file.\n"
                 "127.0.0.1\tlocalhost\n"
                 "::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::0\tip6-localnet\n"
                 "fe00::0\tip6-mcastprefix\n"
                 "fe00::1\tip6-allnodes\n"
                 "fe00::2\tip6-allrouters\n")


def wants_dns_files(spec: dict) -> bool:
    return bool(spec.get("hostAliases")) or spec.get("dnsPolicy") == "None"


def hosts_file(pod: dict, pod_ip: str | None) -> str:
    """The kubelet's managed hosts file: localhost, the pod's own name, then hostAliases."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    text = _HOSTS_HEADER
    hostname = spec.get("hostname") or meta.get("name", "")
    if pod_ip and hostname:
        text += f"{pod_ip}\t{hostname}\n"
    aliases = spec.get("hostAliases") or []
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        for a in aliases:
            text += f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) + "\n"
    return text


def resolv_conf(spec: dict) -> str:
    """resolv.conf for ``dnsPolicy: None``: nameservers, searches and options of dnsConfig only."""
    cfg = spec.get("dnsConfig") or {}
    lines = [f"nameserver {ns}" for ns in cfg.get("nameservers") or []]
    if cfg.get("searches"):
        lines.append("search " + " ".join(cfg["searches"]))
    options = []
    for o in cfg.get("options") or []:
        value = o.get("value")
        options.append(o["name"] if value in (None, "") else f"{o['name']}:{value}")
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def write_dns_files(pod: dict, pod_ip: str | None, directory: Path) -> list[Mount]:
    """Write the pod's files into ``directory`` and return the mounts every container gets."""
    spec = pod.get("spec") or {}
    if not wants_dns_files(spec):
        return []
    directory.mkdir(parents=True, exist_ok=True)
    hosts = directory / HOSTS_FILE
    hosts.write_text(hosts_file(pod, pod_ip))
    hosts.chmod(0o644)  # read by the containers' non-root users
    mounts = [Mount(str(hosts), "/etc/hosts", readonly=False)]
    if spec.get("dnsPolicy") == "None":
        resolv = directory / RESOLV_FILE
        resolv.write_text(resolv_conf(spec))
        resolv.chmod(0o644)
        mounts.append(Mount(str(resolv), "/etc/resolv.conf", readonly=True))
    return mounts
