"""DNS-exfiltration probe: can the pod get a name of its choosing to any resolver? On a real
cluster a resolver forwards what it does not know upstream, so a pod that reaches one can send
data out inside names (`<hex-of-rows>.attacker.example`). A unique name is sent as a raw query
over UDP and TCP to every resolver found, and through the system resolver (getaddrinfo). ANY
answer, NXDOMAIN or SERVFAIL included, proves the query reached a resolver: a leak."""
from __future__ import annotations

import errno
import logging
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .dns_wire import DnsWireError, build_query, parse_reply, tcp_frame
from .probes import DnsProbes, Target
from .report import Check, failed, passed, undecided

log = logging.getLogger(__name__)

ANSWERED, REFUSED, TIMEOUT, ERROR = "answered", "refused", "timeout", "error"
# The network turned the query away before any resolver saw it.
REFUSING_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNRESET,
                   errno.EPERM, errno.EACCES}
# getaddrinfo: the name was answered (resolved, or "no such name" from a resolver) / not answered.
GAI_ANSWERED = {socket.EAI_NONAME} | {getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
GAI_UNANSWERED = {socket.EAI_AGAIN}

Lookup = Callable[..., list]


@dataclass(frozen=True)
class Attempt:
    resolver: str      # "10.96.0.10:53" or "getaddrinfo"
    transport: str     # "udp", "tcp" or "system"
    outcome: str       # ANSWERED, REFUSED, TIMEOUT or ERROR
    detail: str

    def __str__(self) -> str:
        return f"{self.transport} {self.outcome}: {self.detail}"


def probe_name(domain: str) -> str:
    """Unique per run, so a resolver's log (or our fake resolver) shows exactly this probe."""
    return f"{secrets.token_hex(8)}.{domain}"


def classify_error(e: OSError) -> tuple[str, str]:
    if isinstance(e, TimeoutError):
        return TIMEOUT, "no answer before the timeout"
    name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    if e.errno in REFUSING_ERRNOS:
        return REFUSED, name
    return ERROR, f"{name}: {e.strerror or e}"


def classify_reply(data: bytes, query_id: int) -> tuple[str, str]:
    try:
        reply = parse_reply(data, query_id)
    except DnsWireError as e:
        return ERROR, f"something answered, but not with a DNS response to our query ({e})"
    return ANSWERED, f"{reply.rcode_name}, {reply.answers} answer record(s)"


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "closed before a full answer")
        data += chunk
    return data


def query_udp(target: Target, name: str, timeout: float) -> Attempt:
    query_id = secrets.randbelow(0x10000)
    where = str(target)
    try:
        with socket.socket(_family(target.host), socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            # Connected, so an ICMP "port unreachable" comes back as ECONNREFUSED.
            sock.connect((target.host, target.port))
            sock.send(build_query(name, query_id))
            data = sock.recv(4096)
    except OSError as e:
        return Attempt(where, "udp", *classify_error(e))
    return Attempt(where, "udp", *classify_reply(data, query_id))


def query_tcp(target: Target, name: str, timeout: float) -> Attempt:
    query_id = secrets.randbelow(0x10000)
    where = str(target)
    try:
        with socket.socket(_family(target.host), socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((target.host, target.port))
            sock.sendall(tcp_frame(build_query(name, query_id)))
            length = int.from_bytes(_recv_exact(sock, 2), "big")
            data = _recv_exact(sock, length)
    except OSError as e:
        return Attempt(where, "tcp", *classify_error(e))
    return Attempt(where, "tcp", *classify_reply(data, query_id))


def query_system(name: str, lookup: Lookup = socket.getaddrinfo) -> Attempt:
    """getaddrinfo cannot tell a refused resolver from a SERVFAIL (both EAI_AGAIN): the raw
    queries decide those; here a resolved name or "no such name" is the leak."""
    try:
        infos = lookup(name, None, 0, socket.SOCK_STREAM)
    except socket.gaierror as e:
        if e.errno in GAI_ANSWERED:
            return Attempt("getaddrinfo", "system", ANSWERED, f"a resolver answered: {e}")
        if e.errno in GAI_UNANSWERED:
            return Attempt("getaddrinfo", "system", REFUSED, f"no resolver answered: {e}")
        return Attempt("getaddrinfo", "system", ERROR, str(e))
    except (OSError, UnicodeError) as e:
        return Attempt("getaddrinfo", "system", ERROR, f"{type(e).__name__}: {e}")
    shown = ", ".join(sorted({str(i[4][0]) for i in infos}))
    return Attempt("getaddrinfo", "system", ANSWERED, f"resolved to {shown}")


def verdict(check_name: str, attempts: list[Attempt]) -> Check:
    detail = "; ".join(str(a) for a in attempts)
    outcomes = {a.outcome for a in attempts}
    if ANSWERED in outcomes:
        return failed(check_name, "LEAK, a resolver answered: " + detail)
    if ERROR in outcomes or not attempts:
        return undecided(check_name, "cannot decide: " + (detail or "nothing tried"))
    return passed(check_name, "not reachable: " + detail)


def dns_checks(settings: DnsProbes, timeout: float, *,
               lookup: Lookup = socket.getaddrinfo) -> list[Check]:
    """One check per resolver (UDP and TCP), one for getaddrinfo when the system's resolvers are
    probed, and `dns_exfiltration`, the overall verdict: failed on any leak."""
    name = probe_name(settings.domain)
    resolvers = list(dict.fromkeys(settings.resolvers))
    with ThreadPoolExecutor(max_workers=min(16, 2 * len(resolvers) + 1)) as pool:
        futures = {t: (pool.submit(query_udp, t, name, timeout),
                       pool.submit(query_tcp, t, name, timeout)) for t in resolvers}
        system = pool.submit(query_system, name, lookup) if settings.system else None
        per_resolver = {t: [f.result() for f in fs] for t, fs in futures.items()}
        system_attempt = system.result() if system is not None else None
    checks = [verdict(f"dns_exfiltration:{t}", attempts)
              for t, attempts in per_resolver.items()]
    if system_attempt is not None:
        checks.append(verdict("dns_exfiltration:getaddrinfo", [system_attempt]))
    leaks = [c.name.split(":", 1)[1] for c in checks if c.ok is False]
    summary_name = "dns_exfiltration"
    if not checks:
        checks.append(undecided(summary_name, "cannot decide: no resolver given (probes."
                                              "dns_resolvers, probes.dns_system)"))
    elif leaks:
        log.warning("DNS exfiltration possible through %s", ", ".join(leaks))
        checks.append(failed(summary_name, f"LEAK: {name} reached {', '.join(leaks)}"))
    elif any(c.ok is None for c in checks):
        checks.append(undecided(summary_name, f"cannot decide for every resolver; {name} "
                                              f"got no answer from the others"))
    else:
        checks.append(passed(summary_name, f"no reachable resolver: {name} got no answer "
                                           f"from {len(checks)} probe(s)"))
    return checks
