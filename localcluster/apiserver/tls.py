"""TLS for the local cluster's API: a CA and a server certificate per cluster state dir.

kubectl (client-go) never sends a bearer token over plain http, so the stand-in serves HTTPS like
a real API server. Each `serve` makes a fresh CA (the cluster is in memory, a restart is a new
cluster) and a server certificate for 127.0.0.1/localhost (plus any extra addresses, e.g. the
pod network's gateway); clients trust the CA through the kubeconfig's
``certificate-authority-data`` or ``DIR/ca.crt``. The CA key never leaves memory: only the
server key is written, mode 0600, next to the state it serves.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.crt"
CERT_FILE = "apiserver.crt"
KEY_FILE = "apiserver.key"
_VALIDITY = dt.timedelta(days=365)


class TlsError(Exception):
    """The certificate files could not be made or loaded."""


@dataclass(frozen=True)
class ClusterTls:
    ca_pem: bytes  # what clients trust
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load the API server certificate {self.cert_file}: {e}") from e
        return ctx


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "localcluster"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(addresses: tuple[str, ...] = ()) -> tuple[bytes, bytes, bytes]:
    """(ca_pem, server_cert_pem, server_key_pem): a CA and a server certificate it signed, valid
    for localhost, 127.0.0.1 and `addresses` (IPs or DNS names). Pure: no files."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("localcluster-ca")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for a in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localcluster-apiserver"))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    enc = serialization.Encoding.PEM
    key_pem = key.private_bytes(enc, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca.public_bytes(enc), cert.public_bytes(enc), key_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def create(state_dir: Path, addresses: tuple[str, ...] = ()) -> ClusterTls:
    """Make a new CA and server certificate under state_dir (replacing older ones)."""
    ca_pem, cert_pem, key_pem = make_certificates(addresses)
    state_dir = Path(state_dir)
    try:
        _write(state_dir / KEY_FILE, key_pem, 0o600)
        _write(state_dir / CERT_FILE, cert_pem, 0o644)
        _write(state_dir / CA_FILE, ca_pem, 0o644)
    except OSError as e:
        raise TlsError(f"cannot write the API server certificate in {state_dir}: {e}") from e
    return ClusterTls(ca_pem, state_dir / CA_FILE, state_dir / CERT_FILE, state_dir / KEY_FILE)
