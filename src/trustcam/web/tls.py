"""The server's TLS certificate: the configured one, or a self-signed one made on first start.

A self-signed certificate still encrypts; what it cannot do is prove who the server is, so its SHA-256
fingerprint is printed at start for users to compare with what their browser shows.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustcam.config import ConfigError
from trustcam.config.schema import Settings
from trustcam.storage.private import private_dir

VALID_DAYS = 825  # the longest validity browsers accept for a TLS server certificate


class TlsError(ConfigError):
    """The certificate or key cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex (as browsers show it)
    generated: bool  # True: self-signed, made by trustcam


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def generate(cert_path: Path, key_path: Path, hostname: str | None = None) -> None:
    """A self-signed EC P-256 certificate for ``hostname``, localhost and 127.0.0.1; the key is written 0600."""
    hostname = hostname or socket.gethostname() or "localhost"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustcam (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([hostname, "localhost"])]
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    private_dir(key_path.parent)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _read(path: Path, what: str, setting: str) -> bytes:
    path = path.expanduser()
    if not path.exists():
        raise TlsError(f"{setting}: {what} {path} not found; fix the path or remove both tls_cert and tls_key to "
                       "use a generated self-signed certificate")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{setting}: {what} {path} is not readable ({exc.strerror}); check its permissions") from None


def check_pair(cert_path: Path, key_path: Path) -> x509.Certificate:
    """Load and check a PEM certificate and key: both parse, and the key belongs to the certificate."""
    cert_data = _read(cert_path, "certificate", "server.tls_cert")
    key_data = _read(key_path, "private key", "server.tls_key")
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise TlsError(f"server.tls_cert: {cert_path} is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"server.tls_key: {key_path} is not an unencrypted PEM private key ({exc}); export it "
                       "without a passphrase") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != cert.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise TlsError(f"server.tls_key: {key_path} does not belong to the certificate {cert_path}; give the key "
                       "the certificate was issued for")
    return cert


def ensure_certificate(settings: Settings) -> TlsFiles:
    """The configured pair (checked), or ``<data_dir>/tls/server.{crt,key}`` (generated when absent)."""
    server = settings.server
    if server.tls_cert is not None and server.tls_key is not None:
        cert = check_pair(server.tls_cert, server.tls_key)
        return TlsFiles(server.tls_cert.expanduser(), server.tls_key.expanduser(), fingerprint(cert), False)
    folder = settings.data_dir / "tls"
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    if not (cert_path.is_file() and key_path.is_file()):
        try:
            generate(cert_path, key_path)
        except OSError as exc:
            raise TlsError(f"cannot write the self-signed certificate in {folder} ({exc.strerror}); check that "
                           "data_dir is writable") from None
    cert = check_pair(cert_path, key_path)
    return TlsFiles(cert_path, key_path, fingerprint(cert), True)
