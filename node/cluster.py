"""The node's only door to Kubernetes: a thin wrapper over the official client.

Objects go in and come out as plain dicts in the API's JSON shape (camelCase), the same shape the
pure core (manifests, status) works with; the client's model classes are never exposed. Every
ApiException and connection error is translated here into the node's own errors.
"""
from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from node.config import NodeConfig
from node.errors import (ClusterError, ConflictError, NotFoundError,
                         TransientClusterError)

log = logging.getLogger(__name__)

_TRANSIENT_CODES = {429, 500, 502, 503, 504}


class WatchExpired(ClusterError):
    """The resourceVersion a watch started from is gone (HTTP 410): relist."""


def _translate(e: BaseException, what: str) -> ClusterError:
    if isinstance(e, ApiException):
        code = e.status or 0
        try:
            message = json.loads(e.body or "{}").get("message") or e.reason
        except (ValueError, AttributeError):
            message = e.reason
        text = f"{what}: {code} {message}"
        if code == 404:
            return NotFoundError(text)
        if code == 409:
            return ConflictError(text)
        if code == 410:
            return WatchExpired(text)
        if code in _TRANSIENT_CODES or code == 0:
            retry_after = None
            headers = e.headers or {}
            if headers.get("Retry-After"):
                try:
                    retry_after = float(headers["Retry-After"])
                except ValueError:
                    retry_after = None
            return TransientClusterError(text, retry_after=retry_after)
        return ClusterError(text)
    if isinstance(e, (urllib3.exceptions.HTTPError, OSError, socket.timeout)):
        return TransientClusterError(f"{what}: {type(e).__name__}: {e}")
    return ClusterError(f"{what}: {type(e).__name__}: {e}")


translate_error = _translate  # for the few API calls made outside Cluster (node/live_version.py)


def _call(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise _translate(e, what) from e


def _json(resp) -> dict:
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def _done(resp) -> None:
    """Read the body before the connection goes back to the pool: a connection returned with
    an unread response breaks the next request made on it (ResponseNotReady)."""
    try:
        resp.data
    finally:
        resp.release_conn()


@dataclass(frozen=True)
class WatchEvent:
    type: str          # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict


def load_api_client(config: NodeConfig) -> k8s.ApiClient:
    """An ApiClient from the configured kubeconfig, else in-cluster config, else the default
    kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    kc = config.kubernetes
    try:
        if kc.kubeconfig:
            return k8s_config.new_client_from_config(config_file=kc.kubeconfig, context=kc.context,
                                                     client_configuration=_configuration(config))
        try:
            configuration = _configuration(config)
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except k8s_config.ConfigException:
            return k8s_config.new_client_from_config(context=kc.context,
                                                     client_configuration=_configuration(config))
    except (k8s_config.ConfigException, OSError, ValueError) as e:
        raise ClusterError(f"cannot load Kubernetes configuration: {e}") from e


def _configuration(config: NodeConfig) -> k8s.Configuration:
    configuration = k8s.Configuration()
    # a connection each for the finishing workers, the agent, the two watches and the proxy's
    # resolver: with fewer (the client's default is 5 per CPU) a busy pool opens and drops a TLS
    # connection per request
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0,
                                                config.finishing.workers + 4)
    return configuration


# The RBAC permissions each call below needs, as (verb, apiGroup, resource[/subresource]): in the
# jobs namespace, but for get_service (the object it names) and access_review (granted to every
# authenticated user). The node checks them at start (node/permissions.py); kubeconfs/base/rbac.yaml
# grants exactly these; tests/node/test_permissions.py keeps this table true to the calls.
PERMISSIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "create_job": (("create", "batch", "jobs"),),
    "get_job": (("get", "batch", "jobs"),),
    "delete_job": (("delete", "batch", "jobs"),),
    "list_objects": (("list", "batch", "jobs"), ("list", "", "pods"),
                     ("list", "networking.k8s.io", "networkpolicies")),
    "watch": (("watch", "batch", "jobs"), ("watch", "", "pods"),
              ("watch", "networking.k8s.io", "networkpolicies")),
    "pod_log": (("get", "", "pods/log"),),
    "pod_events": (("list", "", "events"),),
    "job_events": (("list", "", "events"),),
    "apply_network_policy": (("create", "networking.k8s.io", "networkpolicies"),
                             ("patch", "networking.k8s.io", "networkpolicies")),
    "get_service": (("get", "", "services"),),
    "access_review": (),
    # `python -m node explain --server-dry-run`, run by an operator, not by the node: never in
    # its start check (node/permissions.py); a dry run needs the rights of the real create
    "dry_run_create": (("create", "batch", "jobs"), ("create", "networking.k8s.io", "networkpolicies"),
                       ("patch", "networking.k8s.io", "networkpolicies"), ("create", "", "pods")),
}


class Cluster:
    """Namespaced operations the node needs, on the jobs namespace only (and the one Service
    it reads its proxy's address from)."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str, request_timeout: float):
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = request_timeout
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.net = k8s.NetworkingV1Api(api_client)
        self.authz = k8s.AuthorizationV1Api(api_client)

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, job: dict) -> dict:
        """Strict field validation: a field the API server does not know (a typo in
        node/manifests.py) is an error here, not a setting silently dropped from the Job."""
        name = job["metadata"]["name"]
        return _json(_call(f"create job {name}", lambda: self.batch.create_namespaced_job(
            self.namespace, job, field_validation="Strict", _preload_content=False,
            _request_timeout=self.timeout)))

    def get_job(self, name: str) -> dict:
        return _json(_call(f"get job {name}", lambda: self.batch.read_namespaced_job(
            name, self.namespace, _preload_content=False, _request_timeout=self.timeout)))

    def delete_job(self, name: str, grace_seconds: int | None = None) -> None:
        """Delete a Job and its pods. Background propagation: the API default for Jobs is to
        orphan their pods, which would leave them running."""
        body = k8s.V1DeleteOptions(propagation_policy="Background",
                                   grace_period_seconds=grace_seconds)
        _done(_call(f"delete job {name}", lambda: self.batch.delete_namespaced_job(
            name, self.namespace, body=body, _preload_content=False,
            _request_timeout=self.timeout)))

    def list_objects(self, kind: str, selector: str) -> tuple[list[dict], str]:
        fn = self._list_fn(kind)
        body = _json(_call(f"list {kind}", lambda: fn(
            self.namespace, label_selector=selector, _preload_content=False,
            _request_timeout=self.timeout)))
        return body.get("items") or [], body["metadata"]["resourceVersion"]

    def _list_fn(self, kind: str):
        return {"jobs": self.batch.list_namespaced_job,
                "pods": self.core.list_namespaced_pod,
                "networkpolicies": self.net.list_namespaced_network_policy}[kind]

    def watch(self, kind: str, selector: str, resource_version: str,
              timeout_seconds: int, on_response: Callable[[Any], None] | None = None
              ) -> Iterator[WatchEvent]:
        """One watch request from resource_version. Ends when the server closes the stream
        (timeoutSeconds); raises WatchExpired on 410 and TransientClusterError on a cut or on a
        silent connection (the client-side read timeout: without it the official client waits
        forever on a connection dropped without a FIN)."""
        fn = self._list_fn(kind)
        read_timeout = timeout_seconds + max(10.0, self.timeout)
        resp = _call(f"watch {kind}", lambda: fn(
            self.namespace, label_selector=selector, watch=True,
            resource_version=resource_version, timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True, _preload_content=False,
            _request_timeout=(self.timeout, read_timeout)))
        if on_response:
            on_response(resp)
        try:
            buffer = b""
            for chunk in resp.stream(amt=65536, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._event(kind, line)
            if buffer.strip():
                yield self._event(kind, buffer)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _translate(e, f"watch {kind}") from e
        finally:
            # a watch left early still has unread data: never hand that connection back
            resp.close()
            resp.release_conn()

    @staticmethod
    def _event(kind: str, line: bytes) -> WatchEvent:
        try:
            event = json.loads(line)
        except ValueError as e:
            raise TransientClusterError(f"watch {kind}: malformed event") from e
        if event.get("type") == "ERROR":
            status = event.get("object") or {}
            code = status.get("code")
            text = f"watch {kind}: {code} {status.get('reason')}: {status.get('message')}"
            if code == 410:
                raise WatchExpired(text)
            if code in _TRANSIENT_CODES:
                raise TransientClusterError(text)
            raise ClusterError(text)
        return WatchEvent(event.get("type", ""), event.get("object") or {})

    # -- pods ------------------------------------------------------------------------------
    def pod_log(self, pod: str, container: str, limit_bytes: int) -> str:
        resp = _call(f"read log {pod}/{container}", lambda: self.core.read_namespaced_pod_log(
            pod, self.namespace, container=container, limit_bytes=limit_bytes,
            _preload_content=False, _request_timeout=self.timeout))
        try:
            return resp.data.decode("utf-8", errors="replace")
        finally:
            resp.release_conn()

    def pod_events(self, pod: str) -> list[dict]:
        body = _json(_call(f"list events of {pod}", lambda: self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={pod}",
            _preload_content=False, _request_timeout=self.timeout)))
        return body.get("items") or []

    def job_events(self, job: str) -> list[dict]:
        """The Events about Job `job` (the Job controller's FailedCreate, say): by field selector,
        as events carry no labels."""
        body = _json(_call(f"list events of job {job}", lambda: self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.kind=Job,involvedObject.name={job}",
            _preload_content=False, _request_timeout=self.timeout)))
        return body.get("items") or []

    # -- services and access reviews -------------------------------------------------------
    def get_service(self, namespace: str, name: str) -> dict:
        return _json(_call(f"get service {namespace}/{name}", lambda: self.core.read_namespaced_service(
            name, namespace, _preload_content=False, _request_timeout=self.timeout)))

    def access_review(self, attributes: dict) -> dict:
        """A SelfSubjectAccessReview's status ({"allowed": ..., "reason": ...}) for attributes:
        {"resourceAttributes": {...}} or {"nonResourceAttributes": {...}}."""
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": attributes}
        try:
            resp = _call("create selfsubjectaccessreview",
                         lambda: self.authz.create_self_subject_access_review(
                             body, _preload_content=False, _request_timeout=self.timeout))
        except ConflictError as e:
            # a review is stored nowhere, so a 409 can only be passing (injected faults gave
            # them): worth another try, not a reason for the node to exit at start
            raise TransientClusterError(str(e)) from e
        return _json(resp).get("status") or {}

    # -- dry runs (python -m node explain) --------------------------------------------------
    def dry_run_create(self, obj: dict) -> list[str]:
        """Submit a Job, NetworkPolicy or Pod with ``dryRun=All``: admitted and validated as a
        real create (an existing policy: as the patch the node would make), nothing made. The API server's warnings (Pod Security's warn mode, unknown
        fields) on success; ClusterError with the refusal otherwise."""
        kind, name = obj.get("kind"), obj["metadata"].get("name") or obj["metadata"].get(
            "generateName", "")
        create = {"Job": self.batch.create_namespaced_job,
                  "NetworkPolicy": self.net.create_namespaced_network_policy,
                  "Pod": self.core.create_namespaced_pod}[kind]
        try:
            resp = _call(f"dry-run create {kind.lower()} {name}", lambda: create(
                self.namespace, obj, dry_run="All", field_validation="Strict",
                _preload_content=False, _request_timeout=self.timeout))
        except ConflictError:
            if kind != "NetworkPolicy":
                raise
            # the node's policy exists once it ran: the node would patch it (apply_network_policy)
            resp = _call(f"dry-run patch networkpolicy {name}",
                         lambda: self.net.patch_namespaced_network_policy(
                             name, self.namespace, obj, dry_run="All", field_validation="Strict",
                             _preload_content=False, _request_timeout=self.timeout))
        try:
            headers = getattr(resp, "headers", None)
            return list(headers.getlist("Warning")) if headers is not None else []
        finally:
            _done(resp)

    # -- network policy --------------------------------------------------------------------
    def apply_network_policy(self, policy: dict) -> None:
        name = policy["metadata"]["name"]
        try:
            _done(_call(f"create networkpolicy {name}",
                        lambda: self.net.create_namespaced_network_policy(
                            self.namespace, policy, field_validation="Strict",
                            _preload_content=False, _request_timeout=self.timeout)))
        except ConflictError:
            try:
                _done(_call(f"replace networkpolicy {name}",
                            lambda: self.net.patch_namespaced_network_policy(
                                name, self.namespace, policy, field_validation="Strict",
                                _preload_content=False, _request_timeout=self.timeout)))
            except ConflictError as e:
                # a concurrent change: worth another try, not a reason for the node to exit at
                # start (it did under API faults, tests/reliability/test_faults.py)
                raise TransientClusterError(str(e)) from e
