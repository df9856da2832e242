"""The sidecar's isolation probe (node/isolation_probe.py): address parsing, the settings from the
environment, each check against real loopback sockets, and run_probe's outcome.

Every name lookup goes through an injected resolver: no test resolves a real DNS name, and no
traffic leaves 127.0.0.1. Servers and sockets are fixtures that close themselves."""
from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from typing import Callable, Iterator

import pytest

from node import isolation_probe as ip
from node.isolation_probe import (ProbeSettings, check, check_blocked, check_dns, check_proxy,
                                  join_address, not_run, parse_address, resolve_bounded,
                                  run_probe)

TIMEOUT = 0.2          # small: a hanging resolver costs one of these


# --- resolvers (never the real one) ---------------------------------------------------------

def forbid_resolve(*args, **kwargs):
    """For checks on IP addresses: a lookup would be a bug in the test or the code."""
    raise AssertionError(f"unexpected name lookup: {args} {kwargs}")


def infos_for(*addresses: tuple[str, int]) -> list:
    return [(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
             socket.IPPROTO_TCP, "", (host, port) if ":" not in host else (host, port, 0, 0))
            for host, port in addresses]


class FakeResolver:
    """Names to answers (a list of getaddrinfo tuples, or an exception to raise); any other name
    raises socket.gaierror. Records every call."""

    def __init__(self, answers: dict[str, object] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, host, port, *args, **kwargs):
        with self.lock:
            self.calls.append((host, port))
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown: lets every hanging resolver's thread finish."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def hanging(release) -> Callable:
    """A resolver that gives no answer until the test ends."""
    def resolve(host, port, *args, **kwargs):
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "released at teardown")
    return resolve


# --- loopback servers and sockets -----------------------------------------------------------

class _Server:
    def __init__(self, server: socketserver.BaseServer) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-loopback-server")
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def http_server() -> Iterator[_Server]:
    """An HTTP server on 127.0.0.1 answering GET /health with 200 (404 otherwise); the paths it
    was asked for are in .paths."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = b"ok\n" if self.path == "/health" else b"no\n"
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False
    running = _Server(server)
    running.paths = paths
    yield running
    running.close()


NOT_HTTP = b"SSH-2.0-OpenSSH_9.6\r\n"


@pytest.fixture
def not_http_server() -> Iterator[_Server]:
    """A TCP listener on 127.0.0.1 that answers any connection with non-HTTP bytes and closes."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(NOT_HTTP)

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    running = _Server(server)
    yield running
    running.close()


@pytest.fixture
def listening() -> Iterator[str]:
    """A listening socket on 127.0.0.1 that never accepts (connections land in its backlog)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound once to pick it, then closed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# --- parse_address / join_address -----------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("example.test:80", ("example.test", 80)),
    ("10.96.0.1:443", ("10.96.0.1", 443)),
    ("db.internal:65535", ("db.internal", 65535)),
    ("h:1", ("h", 1)),
    ("[fd00::1]:443", ("fd00::1", 443)),
    ("[::1]:8080", ("::1", 8080)),
])
def test_parse_address_accepts_host_port_and_bracketed_v6(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "is not host:port"),
    ("example.test", "is not host:port"),
    (":80", "is not host:port"),
    ("example.test:", "is not a port number"),
    ("example.test:http", "is not a port number"),
    ("example.test:0", "is not a port number"),
    ("example.test:65536", "is not a port number"),
    ("example.test:-1", "is not a port number"),
    ("example.test: 80", "is not a port number"),
    ("fd00::1:443", "needs brackets"),
    ("[fd00::1:443", "unbalanced brackets"),
])
def test_parse_address_rejects_bad_forms_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_address(text)


@pytest.mark.parametrize("text", ["[not-an-address]:80", "[10.0.0.1]:80", "[]:80"])
def test_parse_address_brackets_must_hold_an_ipv6_address(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_parse_address_message_does_not_echo_a_huge_text():
    text = "x" * 5000
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert len(str(info.value)) < 200


# "²" is a digit to str.isdigit() that int() does not take: the port message, not int()'s
def test_parse_address_port_of_5000_digits_gets_the_port_message():
    # int() refuses strings past 4,300 digits with a message of its own
    with pytest.raises(ValueError, match="is not a port number"):
        parse_address("example.test:" + "9" * 5000)
    assert parse_address("example.test:" + "0" * 5000 + "80") == ("example.test", 80)


def test_parse_address_superscript_digit_port_gets_the_port_message():
    with pytest.raises(ValueError, match="is not a port number"):
        parse_address("example.test:\u00b2")


@pytest.mark.parametrize("host, port", [("example.test", 80), ("10.0.0.1", "443"),
                                        ("fd00::1", 443)])
def test_join_address_round_trips_through_parse_address(host, port):
    assert parse_address(join_address(host, port)) == (host, int(port))


# --- ProbeSettings.from_env -----------------------------------------------------------------

def test_from_env_empty_environment_gives_defaults():
    settings = ProbeSettings.from_env({})
    assert settings.proxy_host == "" and settings.proxy_port == ""
    assert settings.blocked == ()
    assert settings.dns_name == ip.DEFAULT_DNS_NAME


def test_from_env_reads_the_blocked_list_and_appends_the_api_server():
    env = {"PROBE_BLOCKED": " 10.0.0.1:443 , ,db.internal:5432,",
           "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
           "PROXY_HOST": " proxy.ns.svc ", "PROXY_PORT": " 8080 ",
           "PROBE_DNS_NAME": " cluster.example.test "}
    settings = ProbeSettings.from_env(env)
    assert settings.blocked == ("10.0.0.1:443", "db.internal:5432", "10.96.0.1:443")
    assert settings.proxy_host == "proxy.ns.svc"
    assert settings.proxy_port == "8080"
    assert settings.dns_name == "cluster.example.test"


def test_from_env_deduplicates_keeping_the_first_position():
    env = {"PROBE_BLOCKED": "10.96.0.1:443,db.internal:5432,db.internal:5432",
           "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert ProbeSettings.from_env(env).blocked == ("10.96.0.1:443", "db.internal:5432")


def test_from_env_brackets_an_ipv6_api_server_address():
    env = {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
    settings = ProbeSettings.from_env(env)
    assert settings.blocked == ("[fd00:10:96::1]:443",)
    assert parse_address(settings.blocked[0]) == ("fd00:10:96::1", 443)


@pytest.mark.parametrize("env", [{"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
                                 {"KUBERNETES_SERVICE_PORT": "443"},
                                 {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "443"}])
def test_from_env_needs_both_api_server_host_and_port(env):
    assert ProbeSettings.from_env(env).blocked == ()


def test_from_env_blank_dns_name_falls_back_to_the_default():
    assert ProbeSettings.from_env({"PROBE_DNS_NAME": "   "}).dns_name == ip.DEFAULT_DNS_NAME


# --- small helpers ---------------------------------------------------------------------------

def test_check_truncates_the_detail():
    result = check("x", True, "d" * (ip.MAX_DETAIL * 3))
    assert result == {"name": "x", "ok": True, "detail": "d" * ip.MAX_DETAIL}


def test_not_run_has_no_checks():
    facts = not_run("turned off")
    assert facts == {"outcome": "not run", "checks": [], "detail": "turned off"}


def test_resolve_bounded_returns_the_answer():
    answer = infos_for(("127.0.0.1", 9))
    resolver = FakeResolver({"svc.test": answer})
    assert resolve_bounded("svc.test", 9, TIMEOUT, resolver) == answer
    assert resolver.calls == [("svc.test", 9)]


def test_resolve_bounded_reraises_the_resolver_error():
    with pytest.raises(socket.gaierror):
        resolve_bounded("nowhere.test", 80, TIMEOUT, FakeResolver())


def test_resolve_bounded_gives_none_when_the_resolver_hangs(hanging):
    assert resolve_bounded("slow.test", 80, TIMEOUT, hanging) is None


# --- check_proxy -----------------------------------------------------------------------------

def test_check_proxy_ok_on_an_http_answer(http_server):
    result = check_proxy("127.0.0.1", str(http_server.port), TIMEOUT * 10, forbid_resolve)
    assert result["name"] == "proxy"
    assert result["ok"] is True, result
    assert result["detail"].startswith(f"127.0.0.1:{http_server.port}: HTTP/")
    assert " 200 " in result["detail"]
    assert http_server.paths == ["/health"]


def test_check_proxy_by_name_uses_the_resolver(http_server):
    resolver = FakeResolver({"proxy.ns.test": infos_for(("127.0.0.1", http_server.port))})
    result = check_proxy("proxy.ns.test", str(http_server.port), TIMEOUT * 10, resolver)
    assert result["ok"] is True, result
    assert result["detail"].startswith(f"proxy.ns.test:{http_server.port}: HTTP/")
    assert resolver.calls == [("proxy.ns.test", http_server.port)]


def test_check_proxy_fails_on_a_non_http_answer(not_http_server):
    result = check_proxy("127.0.0.1", str(not_http_server.port), TIMEOUT * 10, forbid_resolve)
    assert result["ok"] is False
    assert result["detail"] == f"127.0.0.1:{not_http_server.port}: not an HTTP answer"


def test_check_proxy_fails_on_a_closed_port(closed_port):
    result = check_proxy("127.0.0.1", str(closed_port), TIMEOUT, forbid_resolve)
    assert result["ok"] is False
    assert result["detail"].startswith(f"127.0.0.1:{closed_port}: ")
    assert "Refused" in result["detail"]


def test_check_proxy_fails_when_its_name_does_not_resolve():
    result = check_proxy("proxy.ns.test", "8080", TIMEOUT, FakeResolver())
    assert result["ok"] is False
    assert "proxy.ns.test:8080" in result["detail"]


def test_check_proxy_fails_when_the_lookup_hangs(hanging):
    result = check_proxy("proxy.ns.test", "8080", TIMEOUT, hanging)
    assert result["ok"] is False
    assert "proxy.ns.test:8080" in result["detail"]


@pytest.mark.parametrize("port_text", ["", "http", "0", "65536", "-1", "80a", " 80"])
def test_check_proxy_bad_port_text_fails_the_check(port_text):
    result = check_proxy("127.0.0.1", port_text, TIMEOUT, forbid_resolve)
    assert result["ok"] is False
    assert "PROXY_PORT" in result["detail"]


# a PROXY_PORT such as "²" fails the check; it does not raise out of check_proxy
def test_check_proxy_superscript_digit_port_fails_the_check_without_raising():
    result = check_proxy("127.0.0.1", "\u00b2", TIMEOUT, forbid_resolve)
    assert result["ok"] is False
    assert "PROXY_PORT" in result["detail"]


def test_check_proxy_without_a_host_fails():
    result = check_proxy("", "8080", TIMEOUT, forbid_resolve)
    assert result["ok"] is False
    assert "no proxy" in result["detail"]


# --- check_blocked ---------------------------------------------------------------------------

def test_check_blocked_ok_when_refused(closed_port):
    address = f"127.0.0.1:{closed_port}"
    result = check_blocked(address, TIMEOUT, forbid_resolve)
    assert result == {"name": f"blocked {address}", "ok": True, "detail": "refused"}


def test_check_blocked_fails_when_it_connects(listening):
    result = check_blocked(listening, TIMEOUT, forbid_resolve)
    assert result["name"] == f"blocked {listening}"
    assert result["ok"] is False
    assert "connected" in result["detail"]


def test_check_blocked_by_name_connects_to_the_resolved_address(listening):
    port = int(listening.rsplit(":", 1)[1])
    resolver = FakeResolver({"db.internal.test": infos_for(("127.0.0.1", port))})
    result = check_blocked(f"db.internal.test:{port}", TIMEOUT, resolver)
    assert result["ok"] is False
    assert "connected" in result["detail"]
    assert resolver.calls == [("db.internal.test", port)]


def test_check_blocked_by_name_ok_when_the_resolved_address_refuses(closed_port):
    resolver = FakeResolver({"db.internal.test": infos_for(("127.0.0.1", closed_port))})
    result = check_blocked(f"db.internal.test:{closed_port}", TIMEOUT, resolver)
    assert result["ok"] is True
    assert result["detail"] == "refused"


def test_check_blocked_ok_when_the_name_does_not_resolve():
    resolver = FakeResolver()
    result = check_blocked("api.cluster.test:443", TIMEOUT, resolver)
    assert result["name"] == "blocked api.cluster.test:443"
    assert result["ok"] is True
    assert "does not resolve" in result["detail"]
    assert resolver.calls == [("api.cluster.test", 443)]


def test_check_blocked_ok_when_the_lookup_hangs(hanging):
    result = check_blocked("api.cluster.test:443", TIMEOUT, hanging)
    assert result["ok"] is True
    assert "no answer" in result["detail"]


def test_check_blocked_ok_when_the_resolver_has_no_address():
    result = check_blocked("api.cluster.test:443", TIMEOUT, FakeResolver({"api.cluster.test": []}))
    assert result["ok"] is True


@pytest.mark.parametrize("address", ["no-port", "fd00::1:443", "host:99999", ""])
def test_check_blocked_bad_address_fails_as_not_checked(address):
    result = check_blocked(address, TIMEOUT, forbid_resolve)
    assert result["ok"] is False
    assert result["detail"].startswith("not checked")


def test_check_blocked_name_is_bounded():
    address = "h" * 300 + ":80"
    result = check_blocked(address, TIMEOUT, FakeResolver())
    assert result["name"] == f"blocked {address[:80]}"


# the real resolver raises UnicodeError, not gaierror, for a name it cannot IDNA-encode (a
# label over 63 characters): a name that cannot be looked up cannot be reached either
def test_check_blocked_unencodable_name_counts_as_blocked():
    long_label = "a" * 64
    with pytest.raises(UnicodeError):     # what socket.getaddrinfo does with such a name
        f"{long_label}.test".encode("idna")
    resolver = FakeResolver({f"{long_label}.test": UnicodeError("label too long")})
    result = check_blocked(f"{long_label}.test:443", TIMEOUT, resolver)
    assert result["ok"] is True


# --- check_dns -------------------------------------------------------------------------------

def test_check_dns_ok_when_the_name_does_not_resolve():
    resolver = FakeResolver()
    result = check_dns("kubernetes.default.svc.cluster.test", TIMEOUT, resolver)
    assert result["name"] == "dns"
    assert result["ok"] is True
    assert "kubernetes.default.svc.cluster.test" in result["detail"]
    assert [host for host, _ in resolver.calls] == ["kubernetes.default.svc.cluster.test"]


def test_check_dns_fails_naming_the_addresses_it_resolves_to():
    name = "kubernetes.default.svc.cluster.test"
    resolver = FakeResolver({name: infos_for(("10.96.0.1", 443), ("10.96.0.1", 443),
                                             ("fd00:10:96::1", 443))})
    result = check_dns(name, TIMEOUT, resolver)
    assert result["ok"] is False
    assert name in result["detail"]
    assert "10.96.0.1" in result["detail"]
    assert "fd00:10:96::1" in result["detail"]
    assert result["detail"].count("10.96.0.1") == 1      # once each


def test_check_dns_ok_when_the_lookup_hangs(hanging):
    result = check_dns("kubernetes.default.svc.cluster.test", TIMEOUT, hanging)
    assert result["ok"] is True
    assert "no answer" in result["detail"]


def test_check_dns_ok_on_an_unencodable_name():
    result = check_dns("x.test", TIMEOUT, FakeResolver({"x.test": UnicodeError("label too long")}))
    assert result["ok"] is True


# --- run_probe -------------------------------------------------------------------------------

def fixed_clock(*values: float) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def names(facts: dict) -> list[str]:
    return [c["name"] for c in facts["checks"]]


def test_run_probe_passes_when_every_check_is_ok(http_server, closed_port):
    closed = f"127.0.0.1:{closed_port}"
    settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(http_server.port),
                             blocked=(closed, "api.cluster.test:443"),
                             dns_name="kubernetes.default.svc.cluster.test", timeout=TIMEOUT * 10)
    resolver = FakeResolver()
    facts = run_probe(settings, resolve=resolver, clock=fixed_clock(100.0, 101.25))
    assert facts["outcome"] == "passed", facts
    assert names(facts) == ["proxy", f"blocked {closed}", "blocked api.cluster.test:443", "dns"]
    assert all(c["ok"] for c in facts["checks"])
    assert facts["seconds"] == 1.25
    assert sorted(host for host, _ in resolver.calls) == [
        "api.cluster.test", "kubernetes.default.svc.cluster.test"]


def test_run_probe_fails_when_one_check_fails(http_server, closed_port, listening):
    closed = f"127.0.0.1:{closed_port}"
    settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(http_server.port),
                             blocked=(closed, listening), dns_name="cluster.test",
                             timeout=TIMEOUT * 10)
    facts = run_probe(settings, resolve=FakeResolver())
    assert facts["outcome"] == "failed"
    assert names(facts) == ["proxy", f"blocked {closed}", f"blocked {listening}", "dns"]
    assert {c["name"]: c["ok"] for c in facts["checks"]} == {
        "proxy": True, f"blocked {closed}": True, f"blocked {listening}": False, "dns": True}


def test_run_probe_fails_when_the_proxy_is_not_given():
    settings = ProbeSettings(blocked=(), dns_name="cluster.test", timeout=TIMEOUT)
    facts = run_probe(settings, resolve=FakeResolver())
    assert facts["outcome"] == "failed"
    assert names(facts) == ["proxy", "dns"]
    assert [c["ok"] for c in facts["checks"]] == [False, True]


def test_run_probe_a_hanging_dns_lookup_counts_as_no_answer(http_server, hanging):
    settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(http_server.port),
                             dns_name="cluster.test", timeout=TIMEOUT)
    facts = run_probe(settings, resolve=hanging)
    assert names(facts) == ["proxy", "dns"]
    assert facts["checks"][1]["ok"] is True
    assert "no answer" in facts["checks"][1]["detail"]


def test_run_probe_checks_at_most_max_blocked_and_fails_for_the_rest(http_server):
    extra = 3
    blocked = tuple(f"b{i}.cluster.test:80" for i in range(ip.MAX_BLOCKED + extra))
    settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(http_server.port),
                             blocked=blocked, dns_name="cluster.test", timeout=TIMEOUT * 10)
    resolver = FakeResolver()
    facts = run_probe(settings, resolve=resolver)
    assert facts["outcome"] == "failed"
    expected = (["proxy"] + [f"blocked {a}" for a in blocked[:ip.MAX_BLOCKED]] + ["dns"]
                + ["blocked"])
    assert names(facts) == expected
    assert all(c["ok"] for c in facts["checks"][:-1])
    last = facts["checks"][-1]
    assert last["ok"] is False
    assert str(extra) in last["detail"]
    looked_up = {host for host, _ in resolver.calls}
    assert looked_up == {a.rsplit(":", 1)[0] for a in blocked[:ip.MAX_BLOCKED]} | {"cluster.test"}


def test_run_probe_exactly_max_blocked_has_no_extra_check(http_server):
    blocked = tuple(f"b{i}.cluster.test:80" for i in range(ip.MAX_BLOCKED))
    settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(http_server.port),
                             blocked=blocked, dns_name="cluster.test", timeout=TIMEOUT * 10)
    facts = run_probe(settings, resolve=FakeResolver())
    assert facts["outcome"] == "passed", facts
    assert len(facts["checks"]) == 1 + ip.MAX_BLOCKED + 1


def test_run_probe_a_check_that_raises_fails_that_check(http_server, caplog):
    settings = ProbeSettings(proxy_host="127.0.0.1", proxy_port=str(http_server.port),
                             blocked=("api.cluster.test:443",), dns_name="cluster.test",
                             timeout=TIMEOUT * 10)
    resolver = FakeResolver({"cluster.test": RuntimeError("resolver bug")})
    with caplog.at_level("ERROR", logger=ip.__name__):
        facts = run_probe(settings, resolve=resolver)
    assert facts["outcome"] == "failed"
    assert names(facts) == ["proxy", "blocked api.cluster.test:443", "dns"]
    by_name = {c["name"]: c for c in facts["checks"]}
    assert by_name["proxy"]["ok"] is True
    assert by_name["blocked api.cluster.test:443"]["ok"] is True
    assert by_name["dns"]["ok"] is False
    assert "RuntimeError" in by_name["dns"]["detail"]
    assert "resolver bug" in by_name["dns"]["detail"]
