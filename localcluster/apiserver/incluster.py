"""In-cluster access for pods, as a real cluster gives it: a ServiceAccount token, the cluster's CA
and namespace under /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST /
KUBERNETES_SERVICE_PORT. With them the official clients' ``load_incluster_config()`` works in a
pod of the local cluster.

The parts, and who uses them:
- `admit_pod` (the store, on pod create): the ServiceAccount admission plugin. Unless
  ``automountServiceAccountToken`` is false (the pod's, else its ServiceAccount's), the pod gets a
  projected volume ``kube-api-access-<5 chars>`` (token, the ``kube-root-ca.crt`` ConfigMap's
  ``ca.crt``, the namespace) mounted read-only at `SA_MOUNT_PATH` in every container. Deviation:
  a pod whose ServiceAccount does not exist is admitted without the volume (a real API server
  refuses it, but here no controller makes the ``default`` account of each namespace).
- `InClusterAccess` (one per cluster, shared by the API server and the kubelet):
  - `token_for` (the kubelet, for a ``serviceAccountToken`` projection): a JWT bound to the pod
    and its ServiceAccount, signed with a key made at start (HS256; a real API server signs with
    RS256 — clients never verify it, only the server does). Valid for this cluster only, and only
    while the pod and the account exist, as bound tokens are; their expiry is the "extended" one
    of a kube-api-access token (a year), so nothing needs to rotate them.
  - `authenticate` (the API server's auth): an ``Authorization: Bearer`` header to the user name
    ``system:serviceaccount:<ns>:<name>``, or None (`localcluster.apiserver.authorization`
    then checks its RBAC).
  - `request_token` (the API's ``serviceaccounts/token``, `tokenrequest`): a token bound to the
    account alone, or to a pod of it, as ``kubectl create token`` asks for.
  - `service_env` (the kubelet, every container): the ``kubernetes`` Service's variables, pointing
    at where the pod reaches the API (the host's loopback on the host network, the gateway of
    the pod's network otherwise).
  - `RootCaPublisher` (started with the controllers): keeps a ``kube-root-ca.crt`` ConfigMap with
    the cluster CA, as kube-controller-manager's root-ca-cert-publisher does. Deviation: only in
    the namespaces where a pod with a token was created (a real cluster has it in every
    namespace), so the API's lists of other namespaces hold only what clients made.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass

from localcluster.apiserver import tokenrequest
from localcluster.apiserver.errors import ApiError
from localcluster.apiserver.resources import CONFIGMAPS, NAMESPACES, PODS, SERVICEACCOUNTS

log = logging.getLogger(__name__)

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ISSUER = "https://kubernetes.default.svc.cluster.local"
TOKEN_EXPIRATION_SECONDS = 3607  # what the admission asks for (the kubelet refreshes at 80%)
EXTENDED_EXPIRATION_SECONDS = 365 * 24 * 3600  # --service-account-extend-token-expiration
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet


class TokenError(Exception):
    """A token cannot be issued (the pod or its ServiceAccount is gone)."""


# --- admission ---------------------------------------------------------------------------------

def automount(pod: dict, service_account: dict | None) -> bool:
    """Whether the pod gets a token: the pod's field, else the account's, else yes."""
    own = (pod.get("spec") or {}).get("automountServiceAccountToken")
    if own is not None:
        return bool(own)
    if service_account is not None and service_account.get("automountServiceAccountToken") \
            is not None:
        return bool(service_account["automountServiceAccountToken"])
    return True


def access_volume(name: str) -> dict:
    """The projected volume the admission adds, field for field as a real API server adds it."""
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def random_suffix() -> str:
    return "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(5))


def admit_pod(pod: dict, service_account: dict | None, suffix: str | None = None) -> None:
    """The ServiceAccount admission of a pod being created (in place). service_account: the
    pod's account as stored, None when it does not exist (then nothing is added)."""
    spec = pod.get("spec")
    if not isinstance(spec, dict) or service_account is None or not automount(pod, service_account):
        return
    containers = [c for key in ("initContainers", "containers")
                  for c in spec.get(key) or [] if isinstance(c, dict)]
    volumes = spec.setdefault("volumes", [])
    if not isinstance(volumes, list):
        return
    existing = [v for v in volumes if isinstance(v, dict)
                and str(v.get("name", "")).startswith(VOLUME_PREFIX) and "projected" in v]
    if existing:  # the pod was admitted before (e.g. a copy of an admitted pod)
        name = existing[0]["name"]
    else:
        name = VOLUME_PREFIX + (suffix or random_suffix())
        volumes.append(access_volume(name))
    for c in containers:
        mounts = c.setdefault("volumeMounts", [])
        if not isinstance(mounts, list):
            continue
        if any(isinstance(m, dict) and m.get("mountPath") == SA_MOUNT_PATH for m in mounts):
            continue  # the container mounts something there itself
        mounts.append({"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH})


# --- tokens --------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    namespace: str
    service_account: str
    service_account_uid: str
    pod: str = ""  # "": a token bound to the account only (a TokenRequest without boundObjectRef)
    pod_uid: str = ""

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


class TokenIssuer:
    """Signs and checks bound ServiceAccount tokens (JWT, HS256) with a key of its own."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._kid = hashlib.sha256(self._key).hexdigest()[:16]  # names the key, reveals nothing

    def _sign(self, signing_input: bytes) -> bytes:
        return hmac.new(self._key, signing_input, hashlib.sha256).digest()

    def issue(self, claims: TokenClaims, now: float | None = None,
              expiration_seconds: int = EXTENDED_EXPIRATION_SECONDS,
              audiences: list[str] | None = None) -> str:
        now = int(time.time() if now is None else now)
        header = {"alg": "HS256", "typ": "JWT", "kid": self._kid}
        k8s: dict = {"namespace": claims.namespace,
                     "serviceaccount": {"name": claims.service_account,
                                        "uid": claims.service_account_uid}}
        if claims.pod:
            k8s["pod"] = {"name": claims.pod, "uid": claims.pod_uid}
        body = {"iss": ISSUER, "aud": list(audiences or [ISSUER]), "sub": claims.username,
                "iat": now, "nbf": now, "exp": now + expiration_seconds,
                "jti": secrets.token_hex(16), "kubernetes.io": k8s}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(body, separators=(",", ":")).encode())).encode()
        return signing_input.decode() + "." + _b64(self._sign(signing_input))

    def verify(self, token: str, now: float | None = None) -> TokenClaims | None:
        """The claims of a token this issuer signed and that has not expired, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            signature = _unb64(parts[2])
            if not hmac.compare_digest(signature, self._sign(f"{parts[0]}.{parts[1]}".encode())):
                return None
            header, body = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
            now = time.time() if now is None else now
            if header.get("alg") != "HS256" or body.get("iss") != ISSUER or \
                    ISSUER not in (body.get("aud") or []):
                return None
            if not body["nbf"] - 60 <= now < body["exp"]:  # a minute of clock skew, as the real one
                return None
            k8s = body["kubernetes.io"]
            pod = k8s.get("pod") or {"name": "", "uid": ""}
            return TokenClaims(k8s["namespace"], k8s["serviceaccount"]["name"],
                               k8s["serviceaccount"]["uid"], pod["name"], pod["uid"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # not a token of ours (bad base64, JSON or claims)


# --- the cluster's side --------------------------------------------------------------------------

class InClusterAccess:
    """In-cluster access of one cluster: token issue and check, the pods' service env."""

    def __init__(self, store, api_port: int, pod_api_host: str = "127.0.0.1",
                 issuer: TokenIssuer | None = None) -> None:
        """api_port: where the API listens, on 127.0.0.1 and pod_api_host (the address pods on
        the pod network reach the host at: 127.0.0.1 with the host network, else its gateway)."""
        self.store = store
        self.api_port = api_port
        self.pod_api_host = pod_api_host
        self.issuer = issuer or TokenIssuer()

    def token_for(self, pod: dict, source: dict | None = None) -> str:
        """A token bound to the pod and its ServiceAccount (a projected serviceAccountToken)."""
        meta = pod["metadata"]
        ns = meta["namespace"]
        sa_name = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        sa = self.store.try_get(SERVICEACCOUNTS, ns, sa_name)
        if sa is None:
            raise TokenError(f'failed to fetch token: serviceaccounts "{sa_name}" not found')
        audience = (source or {}).get("audience")
        if audience and audience != ISSUER:
            raise TokenError(f"audience {audience!r} is not supported by the local cluster")
        return self.issuer.issue(TokenClaims(ns, sa_name, sa["metadata"]["uid"], meta["name"],
                                             meta["uid"]))

    def authenticate(self, authorization: str) -> str | None:
        """The user of an ``Authorization`` header carrying a live token of this cluster."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:  # the Python client sends "bearer"
            return None
        claims = self.issuer.verify(token.strip())
        if claims is None:
            return None
        # Bound tokens die with their pod and their account (a new object of the same name too).
        sa = self.store.try_get(SERVICEACCOUNTS, claims.namespace, claims.service_account)
        if claims.pod:
            pod = self.store.try_get(PODS, claims.namespace, claims.pod)
            if pod is None or pod["metadata"]["uid"] != claims.pod_uid or \
                    pod["metadata"].get("deletionTimestamp"):
                return None
        if sa is None or sa["metadata"]["uid"] != claims.service_account_uid:
            return None
        return claims.username

    def request_token(self, namespace: str, name: str, body) -> dict:
        """A TokenRequest (POST .../serviceaccounts/<name>/token) answered."""
        def issue(sa: dict, pod: dict | None, expiration: int, audiences: list[str]) -> str:
            claims = TokenClaims(namespace, name, sa["metadata"]["uid"],
                                 pod["metadata"]["name"] if pod else "",
                                 pod["metadata"]["uid"] if pod else "")
            return self.issuer.issue(claims, expiration_seconds=expiration, audiences=audiences)
        return tokenrequest.answer(self.store, issue, namespace, name, body, ISSUER)

    def service_env(self, pod: dict, host: str | None = None) -> dict[str, str]:
        """The ``kubernetes`` Service's variables for the pod; host: where this pod reaches the
        API when the runtime knows better (default: loopback with hostNetwork, else
        pod_api_host)."""
        if host is None:
            host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
            host = "127.0.0.1" if host_network else self.pod_api_host
        return service_env(host, self.api_port)


def service_env(host: str, port: int) -> dict[str, str]:
    """The variables a kubelet sets for the ``kubernetes`` Service (port name ``https``)."""
    url = f"tcp://{host}:{port}"
    prefix = f"KUBERNETES_PORT_{port}_TCP"
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url,
            prefix: url, f"{prefix}_PROTO": "tcp", f"{prefix}_PORT": str(port),
            f"{prefix}_ADDR": host}


class RootCaPublisher:
    """Keeps ConfigMap ``kube-root-ca.crt`` (key ``ca.crt``: the cluster CA) in each namespace
    that has had a pod with a kube-api-access volume: made with the first such pod, put back when
    changed or deleted."""

    def __init__(self, store, ca_pem: bytes) -> None:
        self.store = store
        self.ca = ca_pem.decode()
        self.namespaces: set[str] = set()

    def start(self) -> None:
        self.store.subscribe(self._on_event, shared=True)  # read only
        for pod in self.store.list(PODS)[0]:
            self._on_event("ADDED", PODS, pod)

    def close(self) -> None:
        self.store.unsubscribe(self._on_event)

    def _on_event(self, etype: str, res, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "")
        if res == PODS and etype == "ADDED" and ns not in self.namespaces and any(
                str(v.get("name", "")).startswith(VOLUME_PREFIX)
                for v in (obj.get("spec") or {}).get("volumes") or []):
            self.namespaces.add(ns)
            self._ensure(ns)
        elif res == CONFIGMAPS and meta.get("name") == ROOT_CA_CONFIGMAP and ns in self.namespaces:
            self._ensure(ns)
        elif res == NAMESPACES and etype == "DELETED":
            self.namespaces.discard(meta.get("name", ""))

    def _ensure(self, ns: str) -> None:
        namespace = self.store.try_get(NAMESPACES, None, ns)
        if namespace is None or namespace["metadata"].get("deletionTimestamp"):
            return
        data = {"ca.crt": self.ca}
        current = self.store.try_get(CONFIGMAPS, ns, ROOT_CA_CONFIGMAP)
        try:
            if current is None:
                self.store.create(CONFIGMAPS, ns, {"metadata": {
                    "name": ROOT_CA_CONFIGMAP, "namespace": ns,
                    "annotations": {"kubernetes.io/description": (
                        "Contains a CA bundle that can be used to verify the kube-apiserver "
                        "when using internal endpoints such as the internal service IP or "
                        "kubernetes.default.svc. No other usage is guaranteed across "
                        "distributions of Kubernetes clusters.")}}, "data": data})
            elif current.get("data") != data or current.get("binaryData"):
                def fix(obj: dict) -> None:
                    obj["data"] = dict(data)
                    obj.pop("binaryData", None)
                self.store.mutate(CONFIGMAPS, ns, ROOT_CA_CONFIGMAP, fix)
        except ApiError as e:  # e.g. the namespace began terminating in between
            log.debug("cannot publish %s in %s: %s", ROOT_CA_CONFIGMAP, ns, e.message)
