"""A test PKI and signed MSSanté trust lists, for the tests and the development setup.

:func:`make_pki` creates a CA and a list-signing certificate (EC P-256, valid for a day) in
memory; nothing is written to disk, so no key is ever committed. :func:`trust_list_xml`
writes a list for given domains and :func:`sign` signs it (enveloped XML-DSig, signxml) as the
national authority does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import SignatureMethod
from signxml.signer import XMLSigner

from enrs.messaging.trustlist import NAMESPACE, ROOT_ELEMENT


@dataclass(frozen=True)
class Pki:
    """A CA and the list signer it certified."""

    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    signer_cert: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ENRS test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    public = key.public_key()
    usage = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    usage.update(key_cert_sign=ca, crl_sign=ca, digital_signature=not ca)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(name: str = "Liste blanche test", *, lifetime: timedelta | None = None) -> Pki:
    """A CA ``<name> CA`` and a signer ``<name>``; the signer is valid from one hour ago for
    ``lifetime`` (a day by default; negative to make an expired signer)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{name} CA")
    ca_cert = _certificate(
        ca_name, ca_key, ca_name, ca_key, ca=True,
        not_before=now - timedelta(days=3), not_after=now + timedelta(days=3),
    )  # fmt: skip
    lifetime = timedelta(days=1) if lifetime is None else lifetime
    if lifetime > timedelta(0):
        start, end = now - timedelta(hours=1), now - timedelta(hours=1) + lifetime
    else:  # expired: valid two days ago until now + lifetime
        start, end = now - timedelta(days=2), now + lifetime
    signer_cert = _certificate(
        _name(name), signer_key, ca_name, ca_key, ca=False, not_before=start, not_after=end
    )
    return Pki(ca_cert, ca_key, signer_cert, signer_key)


@dataclass(frozen=True)
class Domain:
    """One ``Domaine`` as the authority writes it; ``None`` leaves the element out."""

    name: str
    operator_dn: str | None = "CN=mail.operateur.test,OU=123456789,O=Operateur test,C=FR"
    description: str | None = "Opérateur de test"
    responsible_contact: str | None = "responsable@operateur.test"
    support_contact: str | None = "support@operateur.test"
    updated: str | None = "2026-01-15T09:30:00+01:00"


_DOMAIN_FIELDS = (
    ("Nom", "name"),
    ("Description", "description"),
    ("DNCertificatOperateur", "operator_dn"),
    ("ResponsableContact", "responsible_contact"),
    ("SupportContact", "support_contact"),
    ("DateMAJ", "updated"),
)


def trust_list_xml(
    domains: Iterable[Domain],
    *,
    generated: str | None = "2026-12-01T02:00:00+01:00",
    namespace: str = NAMESPACE,
    root: str = ROOT_ELEMENT,
) -> bytes:
    """An unsigned trust list (``generated=None`` leaves DateDeGeneration out)."""
    tree = etree.Element(f"{{{namespace}}}{root}", nsmap={None: namespace})
    if generated is not None:
        etree.SubElement(tree, f"{{{namespace}}}DateDeGeneration").text = generated
    for domain in domains:
        element = etree.SubElement(tree, f"{{{namespace}}}Domaine")
        for tag, attribute in _DOMAIN_FIELDS:
            value = getattr(domain, attribute)
            if value is not None:
                etree.SubElement(element, f"{{{namespace}}}{tag}").text = value
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def sign(xml: bytes, pki: Pki, *, chain: bool = False) -> bytes:
    """``xml`` with an enveloped signature by ``pki``'s signer; its certificate in X509Data
    (and the CA's too when ``chain``)."""
    certs = [pki.signer_cert, pki.ca_cert] if chain else [pki.signer_cert]
    signer = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA256)
    signed = signer.sign(etree.fromstring(xml), key=pki.signer_key, cert=certs)
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def signed_trust_list(
    domains: Iterable[Domain], pki: Pki, *, generated: str | None = "2026-12-01T02:00:00+01:00"
) -> bytes:
    """:func:`trust_list_xml` signed by ``pki``."""
    return sign(trust_list_xml(domains, generated=generated), pki)
