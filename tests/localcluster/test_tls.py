"""localcluster.apiserver.tls: the CA and server certificate of a cluster's API; the kubeconfig's CA."""
from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest

from localcluster import kubeconfig
from localcluster.apiserver import tls


def handshake(cluster_tls: tls.ClusterTls, ca_pem: bytes, hostname: str) -> None:
    """A TLS handshake over a socket pair: the server side with the cluster's certificate, the
    client side trusting only ca_pem and checking hostname. Raises ssl.SSLError on failure."""
    server_sock, client_sock = socket.socketpair()
    server_ctx = cluster_tls.server_context()
    errors: list[BaseException] = []

    def serve():
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            errors.append(e)
    t = threading.Thread(target=serve)
    t.start()
    try:
        client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
        with client_ctx.wrap_socket(client_sock, server_hostname=hostname) as c:
            c.sendall(b"x")
    finally:
        client_sock.close()
        t.join(10)
        server_sock.close()


def test_server_certificate_verifies_for_loopback_names(tmp_path):
    files = tls.create(tmp_path, ("10.244.0.1",))
    assert files.ca_file.read_bytes() == files.ca_pem
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    for name in ("127.0.0.1", "localhost", "10.244.0.1"):
        handshake(files, files.ca_pem, name)


def test_wrong_name_or_foreign_ca_is_refused(tmp_path):
    files = tls.create(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(files, files.ca_pem, "example.org")
    other_ca, _, _ = tls.make_certificates()
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(files, other_ca, "127.0.0.1")


def test_kubeconfig_carries_the_ca(tmp_path):
    ca_pem, _, _ = tls.make_certificates()
    path = tmp_path / "kubeconfig"
    kubeconfig.write(path, "https://127.0.0.1:6443", "tok", ca_pem=ca_pem)
    assert kubeconfig.read_token(path) == ("https://127.0.0.1:6443", "tok")
    assert kubeconfig.read_ca(path) == ca_pem
    kubeconfig.write(path, "http://127.0.0.1:6443", "tok")
    assert kubeconfig.read_ca(path) is None
