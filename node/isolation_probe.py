"""The live sidecar's isolation probe (CONTRACTS §9): does the pod's network look as intended?

Run once by the sidecar, in a background thread, from inside the algorithm's pod (both share one
network namespace, so what the sidecar can reach the algorithm can reach). Every check runs in
its own thread with a short timeout, so the whole probe takes about one timeout:

- ``proxy``: the proxy answers ``GET /health`` (any HTTP status line counts: it is reachable);
- ``blocked <host:port>``: a TCP connect to an address the pod must not reach does not succeed
  (refused, unreachable, timed out, or a name that does not resolve all count as blocked);
- ``dns``: a cluster name does not resolve (pods get no DNS; a timeout counts as no answer).

The outcome is ``passed`` only when every check ran and is ok. Pure but for the sockets: the
resolver is injectable, so tests never resolve a real name.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

DEFAULT_DNS_NAME = "kubernetes.default.svc.cluster.local"
DEFAULT_TIMEOUT = 1.5
SLACK = 0.5            # the whole probe: one timeout plus this for the threads to report
MAX_BLOCKED = 16       # addresses checked at most (each is a check in every facts frame)
MAX_DETAIL = 200
MAX_STATUS_LINE = 1024

Resolver = Callable[..., list]


@dataclass(frozen=True)
class ProbeSettings:
    """What to probe; raw texts from the environment, checked per check (a bad value fails its
    check, it does not stop the sidecar)."""
    proxy_host: str = ""
    proxy_port: str = ""
    blocked: tuple[str, ...] = ()      # "host:port" or "[v6 address]:port"
    dns_name: str = DEFAULT_DNS_NAME
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ProbeSettings":
        blocked = [a.strip() for a in env.get("PROBE_BLOCKED", "").split(",") if a.strip()]
        k8s_host, k8s_port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if k8s_host and k8s_port:  # the API server: set in every pod by the kubelet
            blocked.append(join_address(k8s_host, k8s_port))
        return cls(proxy_host=env.get("PROXY_HOST", "").strip(),
                   proxy_port=env.get("PROXY_PORT", "").strip(),
                   blocked=tuple(dict.fromkeys(blocked)),  # once each, in order
                   dns_name=env.get("PROBE_DNS_NAME", "").strip() or DEFAULT_DNS_NAME)


def join_address(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port`` → (host, port); ValueError when it is not one."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text[:60]!r} is not host:port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{text[:60]!r}: unbalanced brackets")
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # ValueError when not one
    elif ":" in host:
        raise ValueError(f"{text[:60]!r}: an IPv6 address needs brackets: [addr]:port")
    port = port_number(port_text)
    if port is None:
        raise ValueError(f"{text[:60]!r}: {port_text[:10]!r} is not a port number")
    return host, port


def port_number(text: str) -> int | None:
    """The port a decimal string names (1-65535), or None."""
    # isdecimal, not isdigit: "²" is a digit that int() refuses; at most 5 significant digits,
    # as int() refuses strings of more than 4,300 digits with a message about itself
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdecimal() and len(digits) <= 5):
        return None
    port = int(digits or "0")
    return port if 0 < port < 65536 else None


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail[:MAX_DETAIL]}


def not_run(detail: str) -> dict[str, Any]:
    """The isolation facts when no probe ran (turned off, or no pod network to probe)."""
    return {"outcome": "not run", "checks": [], "detail": detail[:MAX_DETAIL]}


def _error(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def resolve_bounded(host: str, port: int, timeout: float,
                    resolve: Resolver = socket.getaddrinfo) -> list | None:
    """getaddrinfo in a thread: the resolver has no timeout of its own. None when it gave no
    answer in time; raises what it raised (socket.gaierror for an unknown name)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            box["value"] = resolve(host, port, type=socket.SOCK_STREAM)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
        finally:
            done.set()
    # a daemon thread: a hung lookup cannot be cancelled, and must not hold the sidecar's exit
    threading.Thread(target=lookup, name="probe-resolve", daemon=True).start()
    if not done.wait(timeout):
        return None
    if "error" in box:
        raise box["error"]
    return box["value"]


def _connect(host: str, port: int, deadline: float, resolve: Resolver) -> socket.socket:
    """A TCP connection to host:port before the deadline; OSError (TimeoutError) otherwise."""
    if _is_ip(host):
        return socket.create_connection((host, port), timeout=max(0.01, deadline - time.monotonic()))
    infos = resolve_bounded(host, port, max(0.01, deadline - time.monotonic()), resolve)
    if infos is None:
        raise TimeoutError("the name lookup gave no answer")
    error: OSError = OSError("no address")
    for family, kind, proto, _, address in infos[:4]:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_proxy(host: str, port_text: str, timeout: float = DEFAULT_TIMEOUT,
                resolve: Resolver = socket.getaddrinfo) -> dict[str, Any]:
    """ok when ``GET /health`` gets an HTTP status line within the timeout."""
    if not host:
        return check("proxy", False, "no proxy address given")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = port_number(port_text)
    if port is None:
        return check("proxy", False, f"PROXY_PORT is not a port number: {port_text[:10]!r}")
    where = join_address(host, port_text)
    deadline = time.monotonic() + timeout
    try:
        with _connect(host, port, deadline, resolve) as sock:
            request = (f"GET /health HTTP/1.1\r\nHost: {where}\r\nConnection: close\r\n\r\n")
            sock.sendall(request.encode("ascii", "replace"))
            line = _status_line(sock, deadline)
    except (OSError, UnicodeError) as e:
        return check("proxy", False, f"{where}: {_error(e)}")
    if not line.startswith(b"HTTP/"):
        return check("proxy", False, f"{where}: not an HTTP answer")
    return check("proxy", True, f"{where}: {line.decode('ascii', 'replace').strip()}")


def _status_line(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_STATUS_LINE:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        sock.settimeout(left)
        piece = sock.recv(MAX_STATUS_LINE)
        if not piece:
            break
        data += piece
    return data.split(b"\n", 1)[0]


def check_blocked(address: str, timeout: float = DEFAULT_TIMEOUT,
                  resolve: Resolver = socket.getaddrinfo) -> dict[str, Any]:
    """ok when a TCP connect to the address does not succeed."""
    name = f"blocked {address[:80]}"
    try:
        host, port = parse_address(address)
    except ValueError as e:
        return check(name, False, f"not checked: {e}")
    try:
        sock = _connect(host, port, time.monotonic() + timeout, resolve)
    except socket.gaierror:
        return check(name, True, "the name does not resolve")
    except TimeoutError:
        return check(name, True, "no answer (timed out)")
    except ConnectionRefusedError:
        return check(name, True, "refused")
    except UnicodeError:  # a name the resolver cannot even encode (a label over 63 chars)
        return check(name, True, "the name cannot be looked up")
    except OSError as e:
        return check(name, True, _error(e))
    sock.close()
    return check(name, False, "connected: the pod can reach it")


def check_dns(name: str, timeout: float = DEFAULT_TIMEOUT,
              resolve: Resolver = socket.getaddrinfo) -> dict[str, Any]:
    """ok when the name does not resolve (or the lookup gives no answer in time)."""
    try:
        infos = resolve_bounded(name, 443, timeout, resolve)
    except (OSError, UnicodeError) as e:
        return check("dns", True, f"{name[:80]}: no address ({_error(e)})")
    if infos is None:
        return check("dns", True, f"{name[:80]}: no answer within {timeout:g}s")
    addresses = sorted({str(info[4][0]) for info in infos})[:3]
    return check("dns", False, f"{name[:80]} resolves to {', '.join(addresses)}: the pod has DNS")


def run_probe(settings: ProbeSettings, *, resolve: Resolver = socket.getaddrinfo,
              clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Every check at once, each in a thread; the outcome dict (JSON-able)."""
    t = settings.timeout
    blocked = settings.blocked[:MAX_BLOCKED]
    jobs: list[tuple[str, Callable[[], dict]]] = [
        ("proxy", lambda: check_proxy(settings.proxy_host, settings.proxy_port, t, resolve))]
    jobs += [(f"blocked {a[:80]}", lambda a=a: check_blocked(a, t, resolve)) for a in blocked]
    jobs.append(("dns", lambda: check_dns(settings.dns_name, t, resolve)))
    started = clock()
    results: list[dict | None] = [None] * len(jobs)
    threads = [threading.Thread(target=_run_one, args=(name, fn, results, i), daemon=True,
                                name=f"probe-{i}") for i, (name, fn) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + t + SLACK
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    checks = [r if r is not None else check(name, False, f"no result within {t + SLACK:g}s")
              for (name, _), r in zip(jobs, results)]
    if len(settings.blocked) > MAX_BLOCKED:
        checks.append(check("blocked", False, f"{len(settings.blocked) - MAX_BLOCKED} more "
                                              f"addresses not checked (at most {MAX_BLOCKED})"))
    passed = all(c["ok"] for c in checks)
    return {"outcome": "passed" if passed else "failed", "checks": checks,
            "seconds": round(clock() - started, 3)}


def _run_one(name: str, fn: Callable[[], dict], results: list, i: int) -> None:
    try:
        results[i] = fn()
    except Exception as e:  # a check's bug fails that check, never the sidecar
        log.exception("isolation probe: check %s failed", name)
        results[i] = check(name, False, _error(e))
