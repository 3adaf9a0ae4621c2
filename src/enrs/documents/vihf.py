"""The VIHF (*Vecteur d'Identification et d'Habilitation Formelle*) the DMP requires in the
SOAP header of every ITI-41 and ITI-57 request: a SAML 2.0 ``Assertion`` (VIHF version 3.0)
signed with the structure's "personne morale" certificate (the one of the DMP's mutual TLS),
carried in a WS-Security 1.0 ``wsse:Security`` header, in *indirect* authentication mode: the
structure vouches for the professional who wrote the document.

From the ANS's published material (DMP integration guide, VIHF 3.0): the Assertion's shape
(Version 2.0, ID, IssueInstant, Issuer in ``X509SubjectName`` format naming the signing
certificate's subject, Subject/NameID = idNatPs with ``sender-vouches`` confirmation,
Conditions, AuthnStatement with the ``Password`` class in indirect mode), the attribute names
(``VIHF_Version``, ``Identifiant_Structure``, ``Secteur_Activite``, the XSPA subject-id,
role and purpose of use, ``Authentification_mode`` = ``INDIRECTE``, the XACML resource-id =
the patient's INS, ``Ressource_URN`` = ``urn:dmp``, ``LPS_Nom``, ``LPS_Version``,
``LPS_ID_HOMOLOGATION_DMP``), the code systems of the role (1.2.250.1.71.1.2.7 profession,
1.2.250.1.71.4.2.5 specialty) and of the purpose of use (1.2.250.1.213.1.1.4.248 ``normal``).

Assumptions, to be confirmed on the DMP's test platform: the Issuer DN is the RFC 4514 string
of :mod:`cryptography`; ``Identifiant_Structure`` is the idNatSt (``1`` + FINESS) of the
author's institution; ``Secteur_Activite`` is the document's healthcare facility type when it
is of the activity sector code system (1.2.250.1.71.4.2.4), else a setting; the resource-id CX
is ``INS^^^&OID&ISO`` without a type; string attribute values carry no ``xsi:type``; the
signature is enveloped, placed after the Issuer, exclusive c14n, SHA-256 digest, RSA-SHA256 or
ECDSA-SHA256 by the key's type, with the certificate in ``KeyInfo``. The role attribute
carries the author's ``role`` and ``specialty`` codes as :class:`XdsAuthor` holds them (not
translated to 1.2.250.1.71.1.2.7 / 1.2.250.1.71.4.2.5) and is left out when it has neither.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, SignatureMethod
from signxml.signer import XMLSigner

import enrs
from enrs.documents.xds import XdsCode, XdsDocument

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
HL7 = "urn:hl7-org:v3"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"

VIHF_VERSION = "3.0"
X509_SUBJECT_NAME = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
SENDER_VOUCHES = "urn:oasis:names:tc:SAML:2.0:cm:sender-vouches"
PASSWORD_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"  # noqa: S105 (a URN)
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
SUBJECT_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
INDIRECT = "INDIRECTE"
PROFESSION_OID = "1.2.250.1.71.1.2.7"
SPECIALTY_OID = "1.2.250.1.71.4.2.5"
ACTIVITY_SECTOR_OID = "1.2.250.1.71.4.2.4"
PURPOSE_OID = "1.2.250.1.213.1.1.4.248"
DEFAULT_SECTOR = f"SA01^{ACTIVITY_SECTOR_OID}"  # établissement public de santé
LPS_NAME = "ENRS"


class NoProfessionalId(ValueError):
    """The document's author has no national identifier: no VIHF can name them."""


@dataclass(frozen=True)
class VihfSigner:
    """The structure's certificate and key, and what every VIHF of this platform says."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    homologation: str = ""  # LPS_ID_HOMOLOGATION_DMP, given by the DMP; empty in development
    sector: str = DEFAULT_SECTOR  # code^OID when the document's facility type is not one
    validity: timedelta = timedelta(hours=1)

    @classmethod
    def from_files(
        cls,
        cert_file: str | Path,
        key_file: str | Path,
        *,
        homologation: str = "",
        sector: str = DEFAULT_SECTOR,
        validity: timedelta = timedelta(hours=1),
    ) -> VihfSigner:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: an RSA or EC key is needed to sign a VIHF")
        return cls(cert, key, homologation, sector, validity)

    @property
    def subject_dn(self) -> str:
        return self.cert.subject.rfc4514_string()


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _attribute(statement: etree._Element, name: str, *values: str | etree._Element) -> None:
    attribute = etree.SubElement(statement, f"{{{SAML}}}Attribute", Name=name)
    for value in values:
        node = etree.SubElement(attribute, f"{{{SAML}}}AttributeValue")
        if isinstance(value, str):
            node.text = value
        else:
            node.append(value)


def _hl7(tag: str, code: XdsCode) -> etree._Element:
    return etree.Element(
        f"{{{HL7}}}{tag}",
        code=code.code,
        codeSystem=code.scheme_oid,
        displayName=code.display,
        nsmap={None: HL7},
    )


def _roles(doc: XdsDocument) -> list[etree._Element]:
    roles = [doc.author.role, doc.author.specialty]
    return [_hl7("Role", code) for code in roles if code is not None]


def _sector(doc: XdsDocument, signer: VihfSigner) -> str:
    facility = doc.healthcare_facility_type
    if facility.scheme_oid == ACTIVITY_SECTOR_OID:
        return f"{facility.code}^{ACTIVITY_SECTOR_OID}"
    return signer.sector


def assertion(doc: XdsDocument, signer: VihfSigner, now: datetime) -> etree._Element:
    """The unsigned VIHF Assertion for sending ``doc``; raises :class:`NoProfessionalId`
    when its author has no RPPS number."""
    author = doc.author
    if author.rpps is None:
        raise NoProfessionalId(
            f"no VIHF: the author {author.given} {author.family} has no RPPS number"
        )
    root = etree.Element(
        f"{{{SAML}}}Assertion",
        Version="2.0",
        ID=f"_{uuid.uuid4().hex}",
        IssueInstant=_instant(now),
        nsmap={"saml2": SAML},
    )
    etree.SubElement(root, f"{{{SAML}}}Issuer", Format=X509_SUBJECT_NAME).text = signer.subject_dn
    etree.SubElement(root, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    subject = etree.SubElement(root, f"{{{SAML}}}Subject")
    etree.SubElement(subject, f"{{{SAML}}}NameID").text = f"8{author.rpps}"
    etree.SubElement(subject, f"{{{SAML}}}SubjectConfirmation", Method=SENDER_VOUCHES)
    etree.SubElement(
        root,
        f"{{{SAML}}}Conditions",
        NotBefore=_instant(now),
        NotOnOrAfter=_instant(now + signer.validity),
    )
    authn = etree.SubElement(root, f"{{{SAML}}}AuthnStatement", AuthnInstant=_instant(now))
    context = etree.SubElement(authn, f"{{{SAML}}}AuthnContext")
    etree.SubElement(context, f"{{{SAML}}}AuthnContextClassRef").text = PASSWORD_CLASS
    statement = etree.SubElement(root, f"{{{SAML}}}AttributeStatement")
    purpose = XdsCode("normal", PURPOSE_OID, "Accès normal")
    for name, values in (
        ("VIHF_Version", [VIHF_VERSION]),
        ("Identifiant_Structure", [f"1{author.institution_finess}"]),
        ("Secteur_Activite", [_sector(doc, signer)]),
        (SUBJECT_ID, [f"{author.given} {author.family}"]),
        (SUBJECT_ROLE, _roles(doc)),
        ("Authentification_mode", [INDIRECT]),
        (RESOURCE_ID, [f"{doc.patient_ins}^^^&{doc.patient_ins_oid}&ISO"]),
        ("Ressource_URN", ["urn:dmp"]),
        (PURPOSE_OF_USE, [_hl7("PurposeOfUse", purpose)]),
        ("LPS_Nom", [LPS_NAME]),
        ("LPS_Version", [enrs.__version__]),
        ("LPS_ID_HOMOLOGATION_DMP", [signer.homologation]),
    ):
        if values:
            _attribute(statement, name, *values)
    return root


def sign(unsigned: etree._Element, signer: VihfSigner) -> etree._Element:
    """The Assertion with its enveloped signature (Reference to its ID, exclusive c14n)."""
    method = (
        SignatureMethod.RSA_SHA256
        if isinstance(signer.key, rsa.RSAPrivateKey)
        else SignatureMethod.ECDSA_SHA256
    )
    exclusive = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
    xml_signer = XMLSigner(signature_algorithm=method, c14n_algorithm=exclusive)
    signed: etree._Element = xml_signer.sign(
        unsigned,
        key=signer.key,
        cert=[signer.cert],
        reference_uri=f"#{unsigned.get('ID')}",
        id_attribute="ID",
    )
    return signed


def signed_assertion(doc: XdsDocument, signer: VihfSigner, now: datetime) -> etree._Element:
    """The signed VIHF for ``doc`` at ``now``; raises :class:`NoProfessionalId`."""
    return sign(assertion(doc, signer, now), signer)


def security_header(doc: XdsDocument, signer: VihfSigner, now: datetime) -> etree._Element:
    """The ``wsse:Security`` header element carrying the signed VIHF of ``doc``."""
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    security.append(signed_assertion(doc, signer, now))
    return security
