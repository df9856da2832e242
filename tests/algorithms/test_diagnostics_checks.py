"""Diagnostics units: probe parsing, the isolation verdict rules, DNS, mount parsing."""
from __future__ import annotations

import errno
import socket

import pytest

from algorithms.common.errors import InputError
from algorithms.diagnostics import local, network
from algorithms.diagnostics.probes import (DEFAULT_TIMEOUT, Target, default_gateway,
                                           parse_probes, parse_target)
from algorithms.diagnostics.report import Check, summary


@pytest.mark.parametrize("text, target", [
    ("10.0.0.1:443", Target("10.0.0.1", 443)),
    ("kubernetes.default.svc:443", Target("kubernetes.default.svc", 443)),
    ("[::1]:8080", Target("::1", 8080)),
])
def test_parse_target(text, target):
    assert parse_target(text) == target


def test_parse_target_default_port_and_errors():
    assert parse_target("example.com", 443) == Target("example.com", 443)
    for bad, message in [("a", "needs a port"), ("a:0", "1 to 65535"), ("a:x", "not a number"),
                         ("::1:80", "IPv6"), ("[::1", "unclosed"), ("", "non-empty")]:
        with pytest.raises(InputError, match=message):
            parse_target(bad)
    assert str(Target("::1", 80)) == "[::1]:80"


def test_given_probes_are_used_exactly(tmp_path):
    settings = parse_probes({"probes": {"outside": ["127.0.0.1:9"], "timeout": 0.5}},
                            {"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                             "KUBERNETES_SERVICE_PORT": "443"}, tmp_path / "route")
    assert settings.targets == {"kubernetes_api": [], "node": [], "pods": [],
                                "outside": [Target("127.0.0.1", 9)]}
    assert settings.dns_names == [] and settings.timeout == 0.5


def test_defaults_for_a_real_cluster(tmp_path):
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway\tFlags\n"
                     "eth0\t0000FEA9\t00000000\t0001\n"
                     "eth0\t00000000\t0101FEA9\t0003\n")
    settings = parse_probes(None, {"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                   "KUBERNETES_SERVICE_PORT": "443"}, route)
    assert settings.targets["kubernetes_api"] == [Target("kubernetes.default.svc", 443),
                                                  Target("10.96.0.1", 443)]
    assert settings.targets["node"] == [Target("169.254.1.1", 10250)]
    assert settings.targets["pods"] == []
    assert settings.targets["outside"] == [Target("1.1.1.1", 443), Target("8.8.8.8", 53)]
    assert settings.dns_names == [Target("example.com", 443)]
    assert settings.timeout == DEFAULT_TIMEOUT


def test_no_default_gateway(tmp_path):
    assert default_gateway(tmp_path / "absent") is None
    (tmp_path / "route").write_text("Iface\tDestination\tGateway\n")
    assert default_gateway(tmp_path / "route") is None


# --- verdicts, with a resolver and connector that touch no network ------------------------------

def resolver_for(mapping):
    def resolve(host, port, family=0, type=0):
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in mapping[host]]
    return resolve


def connector_raising(outcomes):
    """outcomes: ip -> None (connects) or an exception to raise."""
    calls = []

    def connect(family, address, timeout):
        calls.append(address)
        exc = outcomes[address[0]]
        if exc is not None:
            raise exc
    connect.calls = calls
    return connect


@pytest.mark.parametrize("exc, ok, words", [
    (None, False, "reachable: 10.0.0.1:443 connected"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True, "ECONNREFUSED"),
    (socket.timeout("timed out"), True, "timed out after 0.5s"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), True, "EHOSTUNREACH"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), True, "ENETUNREACH"),
    (OSError(errno.EPERM, "Operation not permitted"), None, "cannot decide: 10.0.0.1:443 EPERM"),
    (OSError(errno.EACCES, "Permission denied"), None, "EACCES"),
])
def test_tcp_verdicts(exc, ok, words):
    check = network.probe_tcp("t", Target("10.0.0.1", 443), 0.5,
                              resolver=resolver_for({"10.0.0.1": ["10.0.0.1"]}),
                              connector=connector_raising({"10.0.0.1": exc}))
    assert check.ok is ok
    assert words in check.detail


def test_one_reachable_address_is_a_breach():
    connect = connector_raising({"10.0.0.1": ConnectionRefusedError(errno.ECONNREFUSED, "x"),
                                 "10.0.0.2": None})
    check = network.probe_tcp("t", Target("svc", 443), 1,
                              resolver=resolver_for({"svc": ["10.0.0.1", "10.0.0.2"]}),
                              connector=connect)
    assert check.ok is False and "10.0.0.2:443 connected" in check.detail


def test_unresolvable_tcp_target_is_undecided_without_a_connection_attempt():
    connect = connector_raising({})
    check = network.probe_tcp("t", Target("kubernetes.default.svc", 443), 1,
                              resolver=resolver_for({}), connector=connect)
    assert check.ok is None and "no connection attempted" in check.detail
    assert connect.calls == []


def test_dns_name_that_does_not_resolve_is_isolated():
    check = network.probe_dns("d", Target("example.com", 443), 1, resolver=resolver_for({}),
                              connector=connector_raising({}))
    assert check.ok is True and "not resolvable" in check.detail


def test_dns_name_that_resolves_is_judged_by_connecting():
    resolve = resolver_for({"example.com": ["93.184.216.34"]})
    refused = network.probe_dns(
        "d", Target("example.com", 443), 1, resolver=resolve,
        connector=connector_raising({"93.184.216.34": socket.timeout("timed out")}))
    assert refused.ok is True
    assert "example.com resolved to 93.184.216.34" in refused.detail
    connected = network.probe_dns("d", Target("example.com", 443), 1, resolver=resolve,
                                  connector=connector_raising({"93.184.216.34": None}))
    assert connected.ok is False


def test_isolation_checks_name_each_target_and_flag_empty_categories():
    from algorithms.diagnostics.probes import ProbeSettings
    settings = ProbeSettings(targets={"outside": [Target("10.0.0.1", 1)], "pods": []},
                             dns_names=[], timeout=1)
    checks = network.isolation_checks(
        settings, resolver=resolver_for({"10.0.0.1": ["10.0.0.1"]}),
        connector=connector_raising({"10.0.0.1": None}))
    assert [(c.name, c.ok) for c in checks] == [("isolation.outside:10.0.0.1:1", False),
                                               ("isolation.pods", None),
                                               ("isolation.dns_names", None)]


def test_real_connections_on_loopback():
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        closed.bind(("127.0.0.1", 0))
        open_check = network.probe_tcp("o", Target("127.0.0.1", listening.getsockname()[1]), 2)
        closed_check = network.probe_tcp("c", Target("127.0.0.1", closed.getsockname()[1]), 2)
    assert open_check.ok is False
    assert closed_check.ok is True and "ECONNREFUSED" in closed_check.detail


# --- local checks -------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:5 / /dev rw,nosuid - devtmpfs udev rw
41 22 0:40 / / ro,relatime - overlay overlay rw,lowerdir=/a
"""


def test_root_mount_options_takes_the_top_mount():
    assert local.root_mount_options(MOUNTINFO) == ("ro,relatime", "rw,lowerdir=/a")
    assert local.root_mount_options("garbage\n") is None


def test_root_fs_check_on_this_machine_agrees_with_statvfs(tmp_path):
    import os
    check = local.check_root_read_only()
    assert check.ok is bool(os.statvfs("/").f_flag & os.ST_RDONLY)
    assert check.detail.startswith("statvfs: ")


def test_service_account_token(tmp_path):
    token = tmp_path / "token"
    assert local.check_no_service_account(token).ok is True
    token.write_text("x")
    assert local.check_no_service_account(token) == Check(
        "no_service_account_token", False, f"{token} is mounted")


def test_writable_check(tmp_path):
    assert local.check_writable("w", tmp_path).ok is True
    assert list(tmp_path.iterdir()) == []
    failed = local.check_writable("w", tmp_path / "absent")
    assert failed.ok is False and "ENOENT" in failed.detail


def test_summary():
    text = summary([Check("a", True, "fine"), Check("b", False, "bad"), Check("c", None, "?")])
    assert text.splitlines() == ["PASS      a: fine", "FAIL      b: bad", "UNDECIDED c: ?",
                                 "1 passed, 1 failed, 1 undecided"]
