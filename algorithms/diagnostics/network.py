"""Network checks. A target counts as isolated only after a real TCP connection attempt to it was
refused, timed out or found no route; a connection that succeeds is a breach; anything else
(including a name that does not resolve, outside the DNS check) leaves the check undecided.
No UDP "connect": it sends nothing and always succeeds, so it proves nothing."""
from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from algorithms.common.client import ServerClient
from algorithms.common.env import AlgorithmEnv
from algorithms.common.errors import EnvError, ServerError

from .probes import ProbeSettings, Target
from .report import Check, failed, passed, undecided

ISOLATING_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT}

Resolver = Callable[..., list]
Connector = Callable[[int, tuple, float], None]

# Outcome of one connection attempt: "connected", "isolated" or "undecided", and why.
Outcome = tuple[str, str]


def connect(family: int, address: tuple, timeout: float) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)


def attempt(family: int, address: tuple, timeout: float, connector: Connector) -> Outcome:
    where = f"{address[0]}:{address[1]}"
    try:
        connector(family, address, timeout)
    except TimeoutError:
        return "isolated", f"{where} timed out after {timeout:g}s"
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
        if e.errno in ISOLATING_ERRNOS:
            return "isolated", f"{where} {name}"
        return "undecided", f"{where} {name}: {e.strerror or e}"
    return "connected", f"{where} connected"


def resolve(host: str, port: int, resolver: Resolver) -> list[tuple[int, tuple]]:
    """(family, address) pairs for host; raises socket.gaierror when the name does not resolve."""
    infos = resolver(host, port, 0, socket.SOCK_STREAM)
    seen, result = set(), []
    for family, _type, _proto, _canon, address in infos:
        key = (family, address[:2])
        if key not in seen:
            seen.add(key)
            result.append((family, address))
    return result


def _verdict(name: str, outcomes: list[Outcome], prefix: str = "") -> Check:
    detail = prefix + "; ".join(why for _, why in outcomes)
    kinds = {kind for kind, _ in outcomes}
    if "connected" in kinds:
        return failed(name, "reachable: " + detail)
    if "undecided" in kinds or not outcomes:
        return undecided(name, "cannot decide: " + (detail or "no address to try"))
    return passed(name, "not reachable: " + detail)


def probe_tcp(name: str, target: Target, timeout: float, *,
              resolver: Resolver = socket.getaddrinfo, connector: Connector = connect) -> Check:
    try:
        addresses = resolve(target.host, target.port, resolver)
    except (socket.gaierror, UnicodeError) as e:
        return undecided(name, f"cannot decide: {target.host} does not resolve ({e}); "
                               f"no connection attempted")
    return _verdict(name, [attempt(f, a, timeout, connector) for f, a in addresses])


def probe_dns(name: str, target: Target, timeout: float, *,
              resolver: Resolver = socket.getaddrinfo, connector: Connector = connect) -> Check:
    """A name outside the cluster must not resolve. If it does resolve, that alone is no breach
    (cluster DNS may forward): the check then fails only if a TCP connection to a resolved
    address succeeds, as for the other isolation checks."""
    try:
        addresses = resolve(target.host, target.port, resolver)
    except (socket.gaierror, UnicodeError) as e:
        return passed(name, f"not resolvable: {target.host}: {e}")
    shown = ", ".join(a[0] for _, a in addresses)
    return _verdict(name, [attempt(f, a, timeout, connector) for f, a in addresses],
                    prefix=f"{target.host} resolved to {shown}; ")


def isolation_checks(settings: ProbeSettings, *, resolver: Resolver = socket.getaddrinfo,
                     connector: Connector = connect) -> list[Check]:
    """Every target probed concurrently (each attempt may take the full timeout)."""
    jobs = []
    for category, targets in settings.targets.items():
        for target in targets:
            jobs.append((probe_tcp, f"isolation.{category}:{target}", target))
    for target in settings.dns_names:
        jobs.append((probe_dns, f"isolation.dns_names:{target.host}:{target.port}", target))
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(jobs)))) as pool:
        futures = [pool.submit(fn, name, target, settings.timeout,
                               resolver=resolver, connector=connector)
                   for fn, name, target in jobs]
        checks = [f.result() for f in futures]
    for category, targets in settings.targets.items():
        if not targets:
            checks.append(undecided(f"isolation.{category}", "cannot decide: no targets given"))
    if not settings.dns_names:
        checks.append(undecided("isolation.dns_names", "cannot decide: no names given"))
    return checks


def check_proxy(env: AlgorithmEnv, timeout: float) -> Check:
    """The proxy must answer GET {API_PATH}/version with the server's version."""
    name = "proxy_api_version"
    try:
        client = ServerClient.from_env(env, timeout=timeout)
    except EnvError as e:
        return undecided(name, f"cannot decide: {e}")
    try:
        version = client.version()
    except ServerError as e:
        return failed(name, str(e))
    return passed(name, f"{client.base_url}/version answered version {version}")
