"""Pure kubelet logic: quantities, env/$(VAR) expansion, argv, identity, phase."""
from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from localcluster.kubelet.spec import (ConfigError, build_argv, build_env, expand, identity,
                                       parse_quantity, pod_requests)
from localcluster.kubelet.status import pod_phase
from localcluster.runtime.registry import Image

IMG = Image(reference="a/b", image_id="a/b@sha256:0", entrypoint=("/ep",), cmd=("c1", "c2"),
            uid=0, env={"IMG": "i", "PATH": "/img/bin"})
ALLOC = {"cpu": Decimal(4), "memory": parse_quantity("8Gi"), "pods": Decimal(10)}


def _pod(containers=None, **spec):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"containers": containers or [{"name": "c", "image": "a/b"}],
                     "nodeName": "localcluster", "serviceAccountName": "sa", **spec},
            "status": {"podIP": "127.0.1.9", "hostIP": "127.0.0.1"}}


@pytest.mark.parametrize("text,value", [("500m", Decimal("0.5")), ("2", Decimal(2)),
                                        ("256Mi", Decimal(256 * 2**20)), ("1G", Decimal(10**9)),
                                        ("1e3", Decimal(1000)), (3, Decimal(3))])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError):
        parse_quantity("12XB")


def test_requests_are_summed_over_containers_and_at_least_the_largest_init_container():
    pod = _pod([{"name": "a", "resources": {"requests": {"cpu": "1500m"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": 1}}}],
               initContainers=[{"name": "i", "resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}])
    assert pod_requests(pod) == {"cpu": Decimal(3), "nvidia.com/gpu": Decimal(1),
                                 "memory": Decimal(2**30)}


@pytest.mark.parametrize("text,out", [
    ("$(A)-$(B)", "1-$(B)"), ("$$(A)", "$(A)"), ("$(A", "$(A"), ("a$b", "a$b"), ("$", "$"),
    ("x$(A)y$(A)", "x1y1"),
])
def test_expand_follows_kubernetes_rules(text, out):
    assert expand(text, {"A": "1"}) == out


def test_env_from_values_fields_secrets_and_configmaps_in_order():
    secrets = {("ns", "s"): {"data": {"k": base64.b64encode(b"sv").decode()}}}
    cms = {("ns", "cm"): {"data": {"k": "cv", "other": "o"}}}
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
         "env": [{"name": "A", "value": "a"},
                 {"name": "B", "value": "$(A)-$(IMG)-$(LATER)"},
                 {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "APP", "valueFrom": {"fieldRef": {
                     "fieldPath": "metadata.labels['app']"}}},
                 {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                 {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                 {"name": "O", "valueFrom": {"secretKeyRef": {"name": "none", "key": "k",
                                                              "optional": True}}},
                 {"name": "LATER", "value": "l"}]}
    env = build_env(_pod([c]), c, IMG, lambda ns, n: secrets.get((ns, n)),
                    lambda ns, n: cms.get((ns, n)), ALLOC)
    assert env["B"] == "a-i-$(LATER)"  # only variables defined before are expanded
    assert (env["POD"], env["IP"], env["APP"], env["S"], env["C"]) == \
        ("p", "127.0.1.9", "x", "sv", "cv")
    assert env["CM_other"] == "o" and "O" not in env
    assert env["PATH"] == "/img/bin" and env["HOSTNAME"] == "p"


@pytest.mark.parametrize("ref,match", [
    ({"secretKeyRef": {"name": "none", "key": "k"}}, 'secret "none" not found'),
    ({"configMapKeyRef": {"name": "cm", "key": "zz"}}, "couldn't find key zz in ConfigMap ns/cm"),
])
def test_missing_env_sources_are_config_errors(ref, match):
    c = {"name": "c", "env": [{"name": "X", "valueFrom": ref}]}
    with pytest.raises(ConfigError, match=match):
        build_env(_pod([c]), c, IMG, lambda ns, n: None,
                  lambda ns, n: {"data": {"k": "v"}} if n == "cm" else None, ALLOC)


@pytest.mark.parametrize("container,argv", [
    ({}, ["/ep", "c1", "c2"]),
    ({"args": ["$(A)", "z"]}, ["/ep", "1", "z"]),
    ({"command": ["/bin/x", "$(A)"]}, ["/bin/x", "1"]),
    ({"command": ["/bin/x"], "args": ["y"]}, ["/bin/x", "y"]),
])
def test_command_and_args_override_entrypoint_and_cmd(container, argv):
    assert build_argv(container, IMG, {"A": "1"}) == argv


def test_run_as_non_root_with_a_root_image_is_refused():
    pod = _pod(securityContext={"runAsNonRoot": True})
    with pytest.raises(ConfigError, match="container has runAsNonRoot and image will run as root"):
        identity(pod, pod["spec"]["containers"][0], IMG)


def test_identity_takes_container_over_pod_over_image():
    pod = _pod(securityContext={"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000,
                                "supplementalGroups": [4000], "runAsNonRoot": True})
    c = {"name": "c", "securityContext": {"runAsUser": 1500, "readOnlyRootFilesystem": True,
                                          "capabilities": {"drop": ["ALL"]}}}
    ident = identity(pod, c, IMG)
    assert (ident.uid, ident.gid, ident.groups) == (1500, 2000, [3000, 4000])
    assert ident.root_readonly and ident.no_new_privs and ident.capabilities == []


@pytest.mark.parametrize("policy,states,phase", [
    ("Never", [{"terminated": {"exitCode": 0}}], "Succeeded"),
    ("Never", [{"terminated": {"exitCode": 1}}], "Failed"),
    ("Never", [{"terminated": {"exitCode": 0}}, {"running": {}}], "Running"),
    ("Always", [{"terminated": {"exitCode": 0}}], "Running"),
    ("OnFailure", [{"terminated": {"exitCode": 1}}], "Running"),
    ("Never", [{"waiting": {"reason": "ErrImagePull"}}], "Pending"),
])
def test_pod_phase(policy, states, phase):
    statuses = [{"name": str(i), "state": s, "lastState": {}} for i, s in enumerate(states)]
    assert pod_phase(policy, True, False, statuses) == phase


def test_pod_phase_is_pending_until_init_containers_are_done():
    assert pod_phase("Never", False, False, [{"name": "a", "state": {"running": {}}}]) == "Pending"
    assert pod_phase("Never", False, True, []) == "Failed"
