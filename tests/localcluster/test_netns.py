"""Pod networks (localcluster.network.netns): the pure parts everywhere; namespaces, veths, routes and the
nftables firewall for real where root, `ip` and `nft` are available; and that nothing is left
behind — after a clean stop, and after a killed cluster once the next one starts.

All traffic stays on this host: in namespaces these tests (or the clusters they start) make, or
on loopback. The only "outside" target is a listener on the cluster's own gateway address."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys

import pytest

from localcluster.network import netns
from localcluster.network.netns import (Egress, IsolatedNetwork, Layout, NetworkError, NetworkSettings,
                                parse_egress)
from localcluster.testing import LocalCluster, require_isolation, wait_until



@pytest.fixture
def isolation() -> None:
    require_isolation()

PROBE = """
import errno, socket, sys
out = []
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(3)
        try:
            s.connect((host, int(port)))
            out.append("connected")
        except socket.timeout:
            out.append("timeout")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(" ".join(out))
"""


def probe_from(ns_path: str, *targets: str) -> list[str]:
    """Try a TCP connection to each target from inside a network namespace."""
    done = subprocess.run(["nsenter", f"--net={ns_path}", sys.executable, "-I", "-c", PROBE,
                           *targets], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def ours(index: int) -> list[tuple[str, str]]:
    """What exists on this host named for cluster index `index`."""
    found = netns.parse_indexes(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout,
        subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout,
        subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout)
    return sorted(found.get(index, []))


@contextlib.contextmanager
def listener(host: str, port: int = 0):
    with socket.socket() as s:
        s.bind((host, port))
        s.listen(8)
        yield s.getsockname()[1]


# -- pure --------------------------------------------------------------------------------------------

def test_egress_accepts_an_address_or_the_gateway_with_a_port():
    assert parse_egress("gateway:8080") == Egress("gateway", 8080)
    assert parse_egress("192.0.2.7:1") == Egress("192.0.2.7", 1)


@pytest.mark.parametrize("text, says", [
    ("8080", "HOST:PORT"), ("gateway:http", "not a number"), ("gateway:0", "1 to 65535"),
    ("proxy.local:80", "IPv4 address"), ("127.0.0.1:8080", "loopback"),
    ("0.0.0.0:80", "loopback")])
def test_bad_egress_is_refused_clearly(text, says):
    with pytest.raises(NetworkError, match=says):
        parse_egress(text)


@pytest.mark.parametrize("kwargs, says", [
    ({"mode": "bridge"}, "expected one of"), ({"cidr": "10.244.0.0/23"}, "at least a /22"),
    ({"cidr": "10.244.0.1/16"}, "host bits")])
def test_bad_settings_are_refused_clearly(kwargs, says):
    with pytest.raises(NetworkError, match=says):
        NetworkSettings(**kwargs)


def test_layout_names_and_addresses():
    lay = Layout(3, netns.subnet_of("10.244.0.0/16", 3))
    assert str(lay.subnet) == "10.244.12.0/22"
    assert (lay.gateway, lay.pod_ip(2), lay.pod_ip(1022)) == ("10.244.12.1", "10.244.12.2",
                                                              "10.244.15.254")
    assert list(lay.hosts)[0] == 2 and list(lay.hosts)[-1] == 1022
    assert (lay.netns(7), lay.veth(7), lay.gateway_link, lay.table) == (
        "lcn3-7", "lcn3p7", "lcn3gw", "localcluster_3")
    assert all(len(n) <= 15 for n in (Layout(63, lay.subnet).veth(1022), lay.gateway_link))
    assert netns.subnet_count("10.244.0.0/16") == 64
    with pytest.raises(NetworkError):
        netns.subnet_of("10.244.0.0/22", 1)


def test_pods_route_only_to_the_gateway_and_the_egress_hosts():
    lay = Layout(0, ipaddress.IPv4Network("10.244.0.0/24"))
    lines = netns.pod_batch(lay, 5, (Egress("gateway", 80), Egress("192.0.2.9", 81))).splitlines()
    routes = [ln for ln in lines if ln.startswith("route")]
    assert routes == ["route add 10.244.0.1/32 dev eth0 scope link src 10.244.0.5",
                      "route add 192.0.2.9/32 via 10.244.0.1 dev eth0 src 10.244.0.5"]
    assert not any("default" in ln for ln in lines)
    host = netns.host_batch(lay, 5)
    assert "route add 10.244.0.5/32 dev lcn0p5 src 10.244.0.1" in host


def test_firewall_allows_only_the_egress_and_replies_from_pods():
    lay = Layout(4, ipaddress.IPv4Network("10.244.4.0/24"))
    script = netns.nft_script(lay, (Egress("gateway", 8080),))
    assert "table inet localcluster_4 {" in script
    assert "elements = { 10.244.4.1 . 8080 }" in script
    assert 'iifname "lcn4p*" ct state established,related accept' in script
    assert 'iifname "lcn4p*" ip daddr . tcp dport @egress ct state new accept' in script
    assert script.index("@egress") < script.index("reject with tcp reset")
    assert 'iifname "lcn4p*" reject with icmpx type admin-prohibited' in script  # forward too
    assert "elements" not in netns.nft_script(lay, ())


def test_leftovers_are_found_by_their_names_only():
    found = netns.parse_indexes(
        "lcn2-5 (id: 0)\nlcn2-6\nother-ns\nlcnx-1\n",
        "1: lo: <LOOPBACK>\n7: lcn2p5@if2: <BROADCAST>\n8: lcn2gw: <UP>\n9: lcn12gwx: <UP>\n"
        "10: eth0: <UP>\n",
        "table inet localcluster_2\ntable inet localcluster_x\ntable ip nat\n")
    assert found == {2: [("netns", "lcn2-5"), ("netns", "lcn2-6"), ("link", "lcn2p5"),
                         ("link", "lcn2gw"), ("table", "localcluster_2")]}


def test_host_network_hands_out_loopback_ips_and_takes_them_back():
    async def go():
        net = netns.HostNetwork()
        a, b = await net.setup("a"), await net.setup("b")
        assert (a.ip, a.netns, b.ip) == ("127.0.1.2", None, "127.0.1.3")
        assert (await net.setup("a")).ip == a.ip
        net.release("a")
        assert net.describe() == {"mode": "host"}
    asyncio.run(go())


def test_auto_falls_back_to_the_host_network_when_isolation_is_impossible(monkeypatch):
    monkeypatch.setattr(netns, "isolation_unavailable", lambda: "not running as root")
    net = netns.open_network(NetworkSettings(mode="auto"))
    assert net.describe() == {"mode": "host", "reason": "not running as root"}
    with pytest.raises(NetworkError, match="not running as root"):
        netns.open_network(NetworkSettings(mode="isolated"))


# -- real namespaces ---------------------------------------------------------------------------------

def test_a_pod_reaches_only_the_egress_and_the_host_reaches_the_pod(isolation):
    with listener("127.0.0.1") as port:  # a port number nobody else holds: allowed for pods
        pass

    async def go():
        net = IsolatedNetwork.open(NetworkSettings(mode="isolated",
                                                   egress=(Egress("gateway", port),)))
        index, gw = net.layout.index, net.layout.gateway
        try:
            assert {k for k, _ in ours(index)} == {"link", "table"}  # gateway and firewall
            a, b = await net.setup("uid-a"), await net.setup("uid-b")
            assert ipaddress.IPv4Address(a.ip) in net.layout.subnet and a.ip != b.ip
            assert (await net.setup("uid-a")) == a  # idempotent
            with listener(gw, port), listener(gw) as other, listener("127.0.0.1") as loop:
                got = probe_from(a.netns, f"{gw}:{port}", f"{gw}:{other}",
                                 f"127.0.0.1:{loop}", f"{b.ip}:{port}")
                assert got == ["connected", "ECONNREFUSED", "ECONNREFUSED", "ENETUNREACH"]
                # the firewall is what refuses the gateway's other port
                subprocess.run(["nft", "delete", "table", "inet", net.layout.table], check=True)
                try:
                    assert probe_from(a.netns, f"{gw}:{other}") == ["connected"]
                finally:
                    subprocess.run(["nft", "-f", "-"], check=True, text=True,
                                   input=netns.nft_script(net.layout, net.egress))
            # host -> pod: the node must reach pods
            server = subprocess.Popen(
                ["nsenter", f"--net={b.netns}", sys.executable, "-I", "-c",
                 "import socket,sys; s=socket.create_server((sys.argv[1], 0)); "
                 "print(s.getsockname()[1], flush=True); c, _ = s.accept(); c.sendall(b'hi')",
                 b.ip], stdout=subprocess.PIPE, text=True)
            try:
                pod_port = int(server.stdout.readline())
                with socket.create_connection((b.ip, pod_port), timeout=5) as c:
                    assert c.recv(2) == b"hi"
            finally:
                server.kill()
                server.wait()
                server.stdout.close()
            net.release("uid-a")
            c = await net.setup("uid-c")  # while a's teardown may still run: another number
            assert c.ip not in (a.ip, b.ip)
            assert probe_from(c.netns, f"{b.ip}:{port}") == ["ENETUNREACH"]
            await net.drain()
            assert not any(os.path.exists(x.netns) for x in (a, b, c))
        finally:
            net.close()
        assert ours(index) == []
        assert not (net.run_dir / f"{index}.json").exists()
    asyncio.run(go())


POD_SCRIPT = """
import os, socket
with socket.socket() as s:
    s.bind((os.environ["POD_IP"], 0))  # an address only the pod's namespace has
print("bound", os.environ["POD_IP"], flush=True)
"""


def _pod(name: str, script: str, restart: str = "Never") -> dict:
    return {"metadata": {"name": name}, "spec": {"restartPolicy": restart, "containers": [{
        "name": "c", "image": "test/python", "args": ["-c", script],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}}


def test_cluster_pods_live_in_their_namespace_and_a_stop_leaves_nothing(isolation, tmp_path):
    import kubernetes
    from tests.localcluster.kubelet_fixtures import TEST_IMAGES
    lc = LocalCluster(images=[TEST_IMAGES], state_dir=tmp_path / "c", pod_network="isolated",
                      egress_allow=["gateway:9"])
    with lc:
        info = lc.network()
        assert info["mode"] == "isolated" and info["egress"] == [f"{info['gateway']}:9"]
        core = kubernetes.client.CoreV1Api(lc.api_client())
        core.create_namespaced_pod("default", _pod("bind", POD_SCRIPT))
        core.create_namespaced_pod("default", _pod("sleep", "import time; time.sleep(600)",
                                                   restart="Always"))
        wait_until(lambda: core.read_namespaced_pod("bind", "default").status.phase
                   == "Succeeded", 30, "the pod to finish")
        ip = core.read_namespaced_pod("bind", "default").status.pod_ip
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(info["subnet"])
        assert core.read_namespaced_pod_log("bind", "default") == f"bound {ip}\n"
        wait_until(lambda: core.read_namespaced_pod("sleep", "default").status.phase
                   == "Running", 30, "the sleeping pod")
        assert any(k == "netns" for k, _ in ours(info["index"]))
    assert ours(info["index"]) == []  # SIGTERM: namespaces, veths, gateway and table gone
    assert not (netns.RUN_DIR / f"{info['index']}.json").exists()


def test_leftovers_of_a_killed_cluster_are_removed_and_a_live_clusters_kept(isolation, tmp_path):
    import kubernetes
    from tests.localcluster.kubelet_fixtures import TEST_IMAGES
    live = IsolatedNetwork.open(NetworkSettings(mode="isolated"))
    lc = LocalCluster(images=[TEST_IMAGES], state_dir=tmp_path / "c", pod_network="isolated")
    try:
        lc.start()
        index = lc.network()["index"]
        core = kubernetes.client.CoreV1Api(lc.api_client())
        core.create_namespaced_pod("default", _pod("sleep", "import time; time.sleep(600)",
                                                   restart="Always"))
        wait_until(lambda: core.read_namespaced_pod("sleep", "default").status.phase
                   == "Running", 30, "the sleeping pod")
        # the lock keeps clusters started meanwhile (other test runs) from cleaning up first
        with netns._locked(netns.RUN_DIR):
            os.killpg(lc._proc.pid, signal.SIGKILL)  # no chance to clean up
            lc._proc.wait()
            assert {k for k, _ in ours(index)} == {"netns", "link", "table"}
            removed = netns._cleanup_locked(netns.RUN_DIR)
        assert {f"table localcluster_{index}", f"link lcn{index}gw"} <= set(removed)
        assert ours(index) == []
        assert {k for k, _ in ours(live.layout.index)} == {"link", "table"}  # still alive
        done = subprocess.run([sys.executable, "-m", "localcluster", "cleanup-network"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert {k for k, _ in ours(live.layout.index)} == {"link", "table"}
    finally:
        lc.stop()
        live.close()
    assert ours(live.layout.index) == []


def test_a_failed_sandbox_is_reported_and_retried(tmp_path):
    """As a kubelet does: a FailedCreatePodSandBox event, then a retry that succeeds."""
    from localcluster.controllers import run_controllers
    from localcluster.kubelet.kubelet import KubeletConfig
    from localcluster.apiserver.resources import EVENTS, PODS
    from localcluster.apiserver.store import Store
    from tests.localcluster.kubelet_fixtures import TEST_IMAGES, simple_pod

    class FailsOnce(netns.HostNetwork):
        failed = False

        async def setup(self, uid, host_network=False):
            if not self.failed:
                self.failed = True
                raise NetworkError("no veth today")
            return await super().setup(uid, host_network)

    async def go(tmp_path):
        store = Store()
        config = KubeletConfig(network=FailsOnce(), backoff_initial=0.05)
        task = asyncio.ensure_future(run_controllers(store, tmp_path, [TEST_IMAGES], config))
        try:
            store.create(PODS, "default", simple_pod("p"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while (store.get(PODS, "default", "p").get("status") or {}).get("phase") \
                    != "Succeeded":
                assert loop.time() < deadline, store.get(PODS, "default", "p")
                await asyncio.sleep(0.02)
            reasons = [(e["reason"], e["message"]) for e in store.list(EVENTS, "default")[0]]
            assert ("FailedCreatePodSandBox",
                    "Failed to create pod sandbox: no veth today") in reasons
            assert store.get(PODS, "default", "p")["status"]["podIP"] == "127.0.1.2"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            store.close()
    asyncio.run(go(tmp_path))


def test_host_network_pods_of_an_isolated_cluster_get_the_host_ip(tmp_path):
    net = IsolatedNetwork(Layout(0, ipaddress.IPv4Network("10.244.0.0/24")), (), tmp_path)
    got = asyncio.run(net.setup("uid", host_network=True))
    assert got == netns.PodNet("127.0.0.1", None) and net.pods == {}
