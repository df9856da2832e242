"""The DNS-exfiltration probe: wire format, outcome rules, resolver discovery, and real queries
on 127.0.0.1 to a fake resolver the test runs (answered: a leak), a closed port (refused) and a
socket that never answers (timeout)."""
from __future__ import annotations

import errno
import socket
import struct

import pytest

from algorithms.common.errors import InputError
from algorithms.diagnostics import dns_probe
from algorithms.diagnostics.dns_probe import ANSWERED, ERROR, REFUSED, TIMEOUT, Attempt
from algorithms.diagnostics.dns_wire import (DnsWireError, build_query, encode_name, parse_reply,
                                             tcp_frame)
from algorithms.diagnostics.probes import (DEFAULT_DNS_DOMAIN, DnsProbes, Target,
                                           cluster_dns_resolvers, parse_probes,
                                           resolv_conf_resolvers)
from tests.support.fake_resolver import FakeResolver, answer, parse_question

# --- wire format ----------------------------------------------------------------------------


def test_query_is_a_standard_recursive_a_question():
    query = build_query("ab12.v6-exfil-probe.invalid", 0x1234)
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", query)
    assert (ident, flags, qd, an, ns, ar) == (0x1234, 0x0100, 1, 0, 0, 0)
    assert query[12:] == (b"\x04ab12\x0ev6-exfil-probe\x07invalid\x00" + b"\x00\x01\x00\x01")
    # an independent parser (the fake resolver's) reads the same question
    assert parse_question(query)[:3] == (0x1234, "ab12.v6-exfil-probe.invalid", 1)
    assert tcp_frame(query)[:2] == len(query).to_bytes(2, "big")


@pytest.mark.parametrize("name, says", [
    ("a..b", "1-63"), ("x" * 64 + ".invalid", "1-63"), ("é.invalid", "1-63"),
    (".".join(["x" * 60] * 5), "255 bytes")])
def test_names_that_cannot_be_sent_are_refused(name, says):
    with pytest.raises(DnsWireError, match=says):
        encode_name(name)
    with pytest.raises(DnsWireError):
        build_query("ok.invalid", 0x10000)


@pytest.mark.parametrize("rcode, name", [(0, "NOERROR"), (2, "SERVFAIL"), (3, "NXDOMAIN"),
                                         (5, "REFUSED"), (9, "RCODE9")])
def test_reply_header_is_read(rcode, name):
    data = struct.pack("!HHHHHH", 7, 0x8180 | rcode, 1, 2, 0, 0)
    reply = parse_reply(data, 7)
    assert (reply.rcode, reply.rcode_name, reply.answers) == (rcode, name, 2)


@pytest.mark.parametrize("data, says", [
    (b"\x00\x07", "shorter"),
    (struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0), "not a response"),
    (struct.pack("!HHHHHH", 8, 0x8180, 1, 0, 0, 0), "not ours")])
def test_what_is_no_reply_to_our_query(data, says):
    with pytest.raises(DnsWireError, match=says):
        parse_reply(data, 7)


# --- outcome rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("exc, outcome", [
    (TimeoutError("timed out"), TIMEOUT),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), REFUSED),
    (OSError(errno.ENETUNREACH, "unreachable"), REFUSED),
    (OSError(errno.EHOSTUNREACH, "no route"), REFUSED),
    (OSError(errno.EPERM, "firewalled in the pod"), REFUSED),
    (OSError(errno.EADDRNOTAVAIL, "odd"), ERROR)])
def test_errors_are_classified(exc, outcome):
    assert dns_probe.classify_error(exc)[0] == outcome


def test_any_dns_answer_is_a_leak_even_nxdomain():
    nxdomain = struct.pack("!HHHHHH", 9, 0x8183, 1, 0, 0, 0)
    assert dns_probe.classify_reply(nxdomain, 9) == (ANSWERED, "NXDOMAIN, 0 answer record(s)")
    assert dns_probe.classify_reply(b"HTTP/1.1 400", 9)[0] == ERROR


def test_verdicts():
    refused = Attempt("10.0.0.1:53", "udp", REFUSED, "ECONNREFUSED")
    timeout = Attempt("10.0.0.1:53", "tcp", TIMEOUT, "no answer")
    answered = Attempt("10.0.0.1:53", "tcp", ANSWERED, "NXDOMAIN")
    assert dns_probe.verdict("d", [refused, timeout]).ok is True
    leak = dns_probe.verdict("d", [refused, answered])
    assert leak.ok is False and leak.detail.startswith("LEAK")
    assert dns_probe.verdict("d", [refused, Attempt("x", "tcp", ERROR, "?")]).ok is None
    assert dns_probe.verdict("d", []).ok is None


@pytest.mark.parametrize("result, outcome", [
    ([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0))], ANSWERED),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), ANSWERED),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), REFUSED),
    (socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure"), ERROR)])
def test_system_lookup_outcomes(result, outcome):
    def lookup(*_args):
        if isinstance(result, Exception):
            raise result
        return result
    assert dns_probe.query_system("x.invalid", lookup).outcome == outcome


# --- where resolvers are found ----------------------------------------------------------------

def test_resolv_conf_nameservers():
    text = "search v6-jobs.svc.cluster.local\nnameserver 10.96.0.10\n# nameserver 1.2.3.4\n" \
           "nameserver fe80::1%eth0\nnameserver not-an-ip\noptions ndots:5\n"
    assert resolv_conf_resolvers(text) == [Target("10.96.0.10", 53), Target("fe80::1", 53)]
    assert resolv_conf_resolvers("options ndots:5\n") == [Target("127.0.0.1", 53)]


def test_cluster_dns_service_env():
    env = {"KUBE_DNS_SERVICE_HOST": "10.96.0.10", "KUBE_DNS_SERVICE_PORT_DNS": "5353",
           "COREDNS_SERVICE_HOST": "fd00::a", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
           "BROKEN_DNS_SERVICE_HOST": "not-an-ip"}
    assert cluster_dns_resolvers(env) == [Target("fd00::a", 53), Target("10.96.0.10", 5353)]


def test_given_probes_ask_only_the_listed_resolvers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.96.0.10\n")
    env = {"V6_DIAG_DNS_RESOLVERS": "127.0.0.1:5353, [::1]", "KUBE_DNS_SERVICE_HOST": "10.96.0.10"}
    given = parse_probes({"probes": {"dns_resolvers": ["127.0.0.2"]}}, env, resolv_conf=conf)
    assert given.dns == DnsProbes([Target("127.0.0.2", 53), Target("127.0.0.1", 5353),
                                   Target("::1", 53)], system=False, domain=DEFAULT_DNS_DOMAIN)
    system = parse_probes({"probes": {"dns_system": True, "dns_domain": "probe.example."}}, {},
                          resolv_conf=conf)
    assert system.dns == DnsProbes([Target("10.96.0.10", 53)], True, "probe.example")
    assert parse_probes({"probes": {}}, {}).dns == DnsProbes()


def test_defaults_ask_everything_and_the_env_replaces_the_public_resolvers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.96.0.10\n")
    route = tmp_path / "route"
    public = parse_probes(None, {}, route, conf).dns
    assert public.system is True
    assert public.resolvers[0] == Target("10.96.0.10", 53)
    assert Target("8.8.8.8", 53) in public.resolvers
    only = parse_probes(None, {"V6_DIAG_DNS_RESOLVERS": ""}, route, conf).dns
    assert only.resolvers == [Target("10.96.0.10", 53)]


@pytest.mark.parametrize("probes, env, says", [
    ({"dns_resolvers": ["dns.example:53"]}, {}, "IP address"),
    ({"dns_resolvers": "127.0.0.1"}, {}, "list"),
    ({"dns_system": "yes"}, {}, "true or false"),
    ({"dns_domain": "a..b"}, {}, "dns_domain"),
    ({}, {"V6_DIAG_DNS_RESOLVERS": "127.0.0.1:x"}, "V6_DIAG_DNS_RESOLVERS")])
def test_bad_dns_settings_are_refused_clearly(probes, env, says):
    with pytest.raises(InputError, match=says):
        parse_probes({"probes": probes}, env)


# --- real queries on loopback ------------------------------------------------------------------

@pytest.fixture
def silent_udp():
    """A UDP port on 127.0.0.1 that receives but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_a_reachable_resolver_is_a_leak_and_sees_the_name():
    with FakeResolver("127.0.0.1") as fake:
        target = Target("127.0.0.1", fake.port)
        checks = dns_probe.dns_checks(DnsProbes([target]), timeout=2)
        names = list(fake.names)
    by_name = {c.name: c for c in checks}
    per = by_name[f"dns_exfiltration:{target}"]
    assert per.ok is False and "udp answered: NOERROR" in per.detail \
        and "tcp answered: NOERROR" in per.detail
    overall = by_name["dns_exfiltration"]
    assert overall.ok is False and f"reached {target}" in overall.detail
    # both queries (UDP and TCP) carried the same unique probe name, named in the report
    assert len(names) == 2 and names[0] == names[1]
    assert names[0].endswith("." + DEFAULT_DNS_DOMAIN) and names[0] in overall.detail


def test_closed_and_silent_resolvers_are_no_leak(silent_udp):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: UDP and TCP both refused
        refused = Target("127.0.0.1", closed.getsockname()[1])
        silent = Target("127.0.0.1", silent_udp)
        checks = dns_probe.dns_checks(DnsProbes([refused, silent]), timeout=0.5)
    by_name = {c.name: c for c in checks}
    assert by_name[f"dns_exfiltration:{refused}"].ok is True
    assert "udp refused: ECONNREFUSED" in by_name[f"dns_exfiltration:{refused}"].detail
    silent_check = by_name[f"dns_exfiltration:{silent}"]
    assert silent_check.ok is True and "udp timeout" in silent_check.detail
    assert by_name["dns_exfiltration"].ok is True
    assert by_name["dns_exfiltration"].detail.startswith("no reachable resolver")


def test_no_resolver_at_all_is_undecided():
    [check] = dns_probe.dns_checks(DnsProbes(), timeout=1)
    assert check.name == "dns_exfiltration" and check.ok is None


def test_fake_resolver_answers_a_records():
    name, response = answer(build_query("q.invalid", 5))
    reply = parse_reply(response, 5)
    assert (name, reply.rcode, reply.answers) == ("q.invalid", 0, 1)
    assert response.endswith(bytes([192, 0, 2, 1]))
