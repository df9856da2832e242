"""A pod's hostAliases and dnsConfig (localcluster/kubelet/dns.py, validation_dns.py): checked by the
API as a real API server checks them, and written to the pod's /etc/hosts and /etc/resolv.conf as a
kubelet writes them."""
from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
from kubernetes.client import ApiException

from localcluster.kubelet.dns import hosts_file, resolv_conf, write_dns_files
from localcluster.testing import wait_until

from .kubelet_fixtures import kcluster, needs_root  # noqa: F401 - kcluster is a fixture

NO_DNS = {"nameservers": ["127.0.0.1"], "searches": [],
          "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}
ALIASES = [{"ip": "10.96.0.10", "hostnames": ["v6-proxy.v6-node.svc.cluster.local", "v6-proxy"]}]


def _pod(name, args, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": "test/sh", "args": args}], **spec}}


def test_the_files_are_what_a_kubelet_writes(tmp_path):
    pod = _pod("p", ["true"], hostAliases=ALIASES, dnsPolicy="None", dnsConfig=NO_DNS)
    hosts = hosts_file(pod, "10.0.0.5")
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.0.0.5\tp\n" in hosts
    assert hosts.endswith("# Entries added by HostAliases.\n"
                          "10.96.0.10\tv6-proxy.v6-node.svc.cluster.local\tv6-proxy\n")
    assert resolv_conf(pod["spec"]) == "nameserver 127.0.0.1\noptions ndots:1 edns0\n"
    mounts = write_dns_files(pod, "10.0.0.5", tmp_path / "etc")
    assert [(m.target, m.readonly) for m in mounts] == [("/etc/hosts", False), ("/etc/resolv.conf", True)]
    assert (tmp_path / "etc" / "etc-hosts").read_text() == hosts


def test_a_pod_asking_for_nothing_keeps_its_runtimes_files(tmp_path):
    assert write_dns_files(_pod("p", ["true"]), "10.0.0.5", tmp_path / "etc") == []
    assert not (tmp_path / "etc").exists()
    # hostAliases alone: the hosts file, and the runtime's resolver
    mounts = write_dns_files(_pod("p", ["true"], hostAliases=ALIASES), "10.0.0.5", tmp_path / "etc")
    assert [m.target for m in mounts] == ["/etc/hosts"]


@pytest.mark.parametrize("spec, field, says", [
    ({"dnsPolicy": "None"}, "spec.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"),
    ({"dnsPolicy": "None", "dnsConfig": {"searches": ["a"]}}, "spec.dnsConfig.nameservers",
     "at least one DNS nameserver"),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["resolver.example"]}},
     "spec.dnsConfig.nameservers[0]", "must be a valid IP address"),
    ({"dnsConfig": {"nameservers": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]}},
     "spec.dnsConfig.nameservers", "must not have more than 3 nameservers"),
    ({"dnsConfig": {"nameservers": ["127.0.0.1"], "options": [{"value": "1"}]}},
     "spec.dnsConfig.options[0].name", "must not be empty"),
    ({"hostAliases": [{"ip": "v6-proxy", "hostnames": ["a"]}]}, "spec.hostAliases[0].ip",
     "must be a valid IP address"),
    ({"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["Not_A_Name"]}]},
     "spec.hostAliases[0].hostnames[0]", "Invalid value"),
])
def test_bad_dns_fields_are_refused_as_a_real_api_server_refuses_them(api, namespace, spec, field, says):
    core = api[0]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(namespace, _pod("bad", ["true"], **spec))
    assert e.value.status == 422
    causes = json.loads(e.value.body)["details"]["causes"]
    assert any(c["field"] == field and says in c["message"] for c in causes), causes


def test_good_dns_fields_are_accepted(api, namespace):
    core = api[0]
    core.create_namespaced_pod(namespace, _pod("good", ["true"], hostAliases=ALIASES, dnsPolicy="None",
                                               dnsConfig=NO_DNS))
    spec = core.read_namespaced_pod("good", namespace).spec
    assert spec.dns_policy == "None" and spec.dns_config.nameservers == ["127.0.0.1"]
    assert spec.host_aliases[0].ip == "10.96.0.10"


@needs_root
@pytest.mark.integration
def test_the_pod_sees_its_host_aliases_and_its_resolver(kcluster):  # noqa: F811
    core = kubernetes.client.CoreV1Api(kcluster.api_client())
    ns = "k-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_pod(ns, _pod("dns", ["cat /etc/hosts /etc/resolv.conf"], hostAliases=ALIASES,
                                        dnsPolicy="None", dnsConfig=NO_DNS))
    wait_until(lambda: core.read_namespaced_pod("dns", ns).status.phase in ("Succeeded", "Failed"), 20,
               "the pod to finish")
    log = core.read_namespaced_pod_log("dns", ns)
    assert core.read_namespaced_pod("dns", ns).status.phase == "Succeeded", log
    assert "10.96.0.10\tv6-proxy.v6-node.svc.cluster.local\tv6-proxy\n" in log
    assert "nameserver 127.0.0.1\n" in log
    # the host's own resolvers are not visible to the pod
    with open("/etc/resolv.conf") as f:
        host_servers = [line for line in f if line.startswith("nameserver") and "127.0.0.1" not in line]
    assert not any(line in log for line in host_servers)
