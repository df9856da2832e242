"""The kubeconfig the local cluster writes once it serves (context ``localcluster``)."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

CONTEXT = "localcluster"


def build(server: str, token: str, namespace: str = "default",
          ca_pem: bytes | None = None) -> dict:
    """ca_pem: the CA that signed an https server's certificate (certificate-authority-data)."""
    cluster = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT,
                                                   "namespace": namespace}}],
        "current-context": CONTEXT,
    }


def write(path: Path, server: str, token: str, ca_pem: bytes | None = None) -> None:
    """Write atomically (readers polling for the file never see half of it), mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(build(server, token, ca_pem=ca_pem), f, sort_keys=False)
    os.replace(tmp, path)


def read_token(path: Path) -> tuple[str, str]:
    """(server, token) of a kubeconfig this module wrote."""
    data = yaml.safe_load(Path(path).read_text())
    return data["clusters"][0]["cluster"]["server"], data["users"][0]["user"]["token"]


def read_ca(path: Path) -> bytes | None:
    """The CA (PEM) a kubeconfig this module wrote trusts; None for a plain-http server."""
    data = yaml.safe_load(Path(path).read_text())
    ca = data["clusters"][0]["cluster"].get("certificate-authority-data")
    return base64.b64decode(ca) if ca else None
