"""The installation's certificate authority: server TLS and proxy client certificates."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 20
LEAF_YEARS = 5


class CertificateError(Exception):
    """A CSR or certificate was refused."""


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER certificate, hex."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class CertificateAuthority:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)

    @classmethod
    def create(
        cls, cert_path: Path, key_path: Path, name: str = "Ferryman"
    ) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} installation CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(cert, key)

    def _leaf(self, subject: x509.Name, public_key, usage, sans=None) -> x509.Certificate:  # type: ignore[no-untyped-def]
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * LEAF_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server_certificate(self, cert_path: Path, key_path: Path, host: str) -> None:
        """The HTTPS certificate; its names cover every way a proxy may reach this host."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
        names = {host, "127.0.0.1", "::1", *host_names()}
        for item in sorted(n for n in names if n and n not in ("0.0.0.0", "::", "localhost")):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(item)))
            except ValueError:
                sans.append(x509.DNSName(item))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferryman-server")])
        cert = self._leaf(subject, key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH, sans)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def sign_proxy_csr(self, csr_pem: str, proxy_name: str) -> tuple[str, int]:
        """Sign a proxy's CSR; the subject is forced to the proxy's name. Returns (PEM, serial)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise CertificateError("csr_pem is not a PEM certificate signing request") from exc
        if not csr.is_signature_valid:
            raise CertificateError("the certificate signing request has a bad signature")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, proxy_name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ferryman-proxy"),
            ]
        )
        cert = self._leaf(subject, csr.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH)
        return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.serial_number


def host_names() -> set[str]:
    """This host's names and addresses (best effort, no network traffic)."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=5
        )
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[2] in ("inet", "inet6"):
                names.add(parts[3].split("/")[0])
    except (OSError, subprocess.SubprocessError):
        pass
    return {n for n in names if n and not n.startswith("fe80")}


def serial_of_der(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number
