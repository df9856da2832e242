"""API validation of a pod's DNS fields, as the real API server checks them: ``dnsPolicy: None``
needs ``dnsConfig`` with at least one nameserver; nameservers are IP addresses (at most 3);
search domains are DNS subdomains (at most 32); ``hostAliases`` give an IP and DNS names."""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterator

MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


def _ip_ok(value: Any) -> bool:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        return False
    return True


def dns_causes(spec: dict, field: str, cause: Callable[..., Any],
               subdomain_errors: Callable[[str], list[str]]) -> Iterator[Any]:
    dns = spec.get("dnsPolicy")
    cfg = spec.get("dnsConfig")
    if dns == "None":
        if not isinstance(cfg, dict):
            yield cause(f"{field}.dnsConfig", "Required value: must provide `dnsConfig` when "
                        "`dnsPolicy` is None", "FieldValueRequired")
        elif not cfg.get("nameservers"):
            yield cause(f"{field}.dnsConfig.nameservers", "Required value: must provide at least "
                        "one DNS nameserver when `dnsPolicy` is None", "FieldValueRequired")
    if isinstance(cfg, dict):
        servers = cfg.get("nameservers") or []
        if len(servers) > MAX_NAMESERVERS:
            yield cause(f"{field}.dnsConfig.nameservers", f"Invalid value: {servers!r}: must not "
                        f"have more than {MAX_NAMESERVERS} nameservers")
        for i, ns in enumerate(servers):
            if not _ip_ok(ns):
                yield cause(f"{field}.dnsConfig.nameservers[{i}]",
                            f'Invalid value: "{ns}": must be a valid IP address')
        searches = cfg.get("searches") or []
        if len(searches) > MAX_SEARCHES:
            yield cause(f"{field}.dnsConfig.searches", f"Invalid value: must not have more than "
                        f"{MAX_SEARCHES} search paths")
        for i, s in enumerate(searches):
            for msg in subdomain_errors(str(s).rstrip(".")):
                yield cause(f"{field}.dnsConfig.searches[{i}]", f'Invalid value: "{s}": {msg}')
        for i, o in enumerate(cfg.get("options") or []):
            if not isinstance(o, dict) or not o.get("name"):
                yield cause(f"{field}.dnsConfig.options[{i}].name", "Required value: Option.Name "
                            "must not be empty", "FieldValueRequired")
    for i, alias in enumerate(spec.get("hostAliases") or []):
        alias = alias if isinstance(alias, dict) else {}
        if not _ip_ok(alias.get("ip")):
            yield cause(f"{field}.hostAliases[{i}].ip",
                        f'Invalid value: "{alias.get("ip")}": must be a valid IP address')
        for j, host in enumerate(alias.get("hostnames") or []):
            for msg in subdomain_errors(str(host)):
                yield cause(f"{field}.hostAliases[{i}].hostnames[{j}]",
                            f'Invalid value: "{host}": {msg}')
