"""Throwaway certificate authorities for the TLS tests, written as PEM files.

:class:`Authority` makes a CA (an EC P-256 key and a self-signed certificate)
in a directory and issues certificates signed by it, each valid for
127.0.0.1 and localhost and for both server and client use, as a node's
certificate must be when it both listens and dials. :func:`require_tls` skips
a test when pyOpenSSL is missing, but fails it under ``CI=true``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest


def require_tls() -> None:
    """Skip without pyOpenSSL and cryptography; fail under CI=true."""
    try:
        import cryptography.x509  # noqa: F401
        import OpenSSL.SSL  # noqa: F401
    except ImportError as e:
        message = f"pyOpenSSL is not installed ({e}): pip install 'txdistkv[tls]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: Any, path: Path, password: Optional[bytes] = None) -> Path:
    from cryptography.hazmat.primitives import serialization

    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption))
    return path


def _write_cert(cert: Any, path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class Authority:
    """A certificate authority whose files live in ``directory``."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.name = name
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        #: The CA certificate: what --tls-ca and clients' --cacert take.
        self.path = _write_cert(self.cert, directory / f"{name}.pem")

    def issue(self, name: str, expired: bool = False,
              password: Optional[bytes] = None) -> Tuple[Path, Path]:
        """(certificate, key) files for ``name``, signed by this CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        start = now - datetime.timedelta(days=10 if expired else 1)
        end = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=30)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([
                ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
            ]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        prefix = f"{self.name}-{name}"
        return (_write_cert(cert, self.directory / f"{prefix}.crt"),
                _write_key(key, self.directory / f"{prefix}.key", password))
