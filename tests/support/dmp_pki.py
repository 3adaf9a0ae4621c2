"""A test PKI for the DMP: a CA, the structure's "personne morale" certificate (the TLS client
of the DMP and the signer of its VIHF) and the fake DMP's server certificate for 127.0.0.1."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enrs.documents import vihf


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CH de Brive"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "190000364"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    elif issuer is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    signer: vihf.VihfSigner  # the structure's certificate (TLS client and VIHF)
    cert_file: Path
    key_file: Path
    server: ssl.SSLContext


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, *chunks: bytes) -> Path:
    path.write_bytes(b"".join(chunks))
    return path


def make_pki(tmp: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("ENRS test CA", ca_key, None)
    issuer = (ca.subject, ca_key)
    structure = _cert("enrs.ch-brive.test", key, issuer)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("dmp.test", server_key, issuer, server=True)
    pem = serialization.Encoding.PEM
    ca_file = _write(tmp / "ca.pem", ca.public_bytes(pem))
    cert_file = _write(tmp / "structure.pem", structure.public_bytes(pem))
    key_file = _write(tmp / "structure.key", _pem_key(key))
    server_file = _write(tmp / "server.pem", server.public_bytes(pem), _pem_key(server_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.verify_mode = ssl.CERT_REQUIRED  # the DMP's mutual TLS
    context.load_cert_chain(str(server_file))
    signer = vihf.VihfSigner.from_files(cert_file, key_file, homologation="HOMOL-TEST-01")
    return Pki(ca_file, signer, cert_file, key_file, context)
