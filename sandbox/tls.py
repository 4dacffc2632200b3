"""A throw-away certificate authority for the sandbox's TLS services.

``create_authority`` makes a local CA (EC P-256, fast to generate) and ``issue_server_cert``
signs a server certificate for 127.0.0.1 and localhost with it. Clients verify the sandbox
with the CA file (``ssl.create_default_context(cafile=...)``), never by turning checks off.
The certificates follow RFC 5280 closely enough for OpenSSL's strict X.509 mode
(key identifiers, critical basic constraints and key usage).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from floorwatch.errors import SandboxError

NORMAL_VALIDITY_DAYS = 90
# Certificates start an hour in the past so a client whose clock lags a little accepts them.
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Authority:
    """The sandbox CA: its certificate and key, in memory and on disk."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ServerCert:
    """Files of one issued server certificate, and when it expires."""

    cert_file: Path
    key_file: Path
    not_after: dt.datetime


def create_authority(directory: Path, name: str = "Floorwatch Sandbox CA") -> Authority:
    """Create a fresh CA in ``directory`` (``ca.pem``, ``ca-key.pem``), replacing any old one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=3650))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / "ca.pem"
    key_file = directory / "ca-key.pem"
    _write(key_file, _key_pem(key), private=True)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return Authority(cert=cert, key=key, cert_file=cert_file, key_file=key_file)


def issue_server_cert(
    authority: Authority,
    directory: Path,
    days: float = NORMAL_VALIDITY_DAYS,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> ServerCert:
    """Sign a server certificate for ``hosts`` valid ``days`` from now; write
    ``server.pem`` / ``server-key.pem`` in ``directory`` (atomically, replacing old ones)."""
    if days <= 0:
        raise SandboxError(f"tls: a server certificate needs a positive validity, not {days} days")
    if not hosts:
        raise SandboxError("tls: a server certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    public = key.public_key()
    ca_ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(authority.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / "server.pem"
    key_file = directory / "server-key.pem"
    _write(key_file, _key_pem(key), private=True)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return ServerCert(cert_file=cert_file, key_file=key_file, not_after=not_after)


def _alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    # Write beside and rename, so a server or client reading the file never sees half of it;
    # keys are created 0600 from the start rather than chmod-ed after being readable.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SandboxError(f"tls: cannot write {path}: {exc}") from exc
