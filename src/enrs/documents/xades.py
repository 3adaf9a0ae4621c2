"""The signature of a submission set sent to the DMP: an XAdES signature document, as IHE DSG
(*Document Digital Signature*) and the DMP's integration material describe it.

The DMP takes, with every ITI-41 submission, one more document in the submission set: an XML
signature (``ds:Signature``, XAdES-BES) made with the structure's certificate, which signs a
``ds:Manifest`` (``Id="IHEManifest"``) listing the submission set's uniqueId and each
document's uniqueId with the digest of its content. Its DocumentEntry is classified as a
signature (class ``urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1`` "Digital Signature", type ``E1762``
"Full Document" of ASTM, format ``http://www.w3.org/2000/09/xmldsig#``, event
``1.2.840.10065.1.12.1.14`` "Source", masked to professionals and invisible to the patient),
is a member of the submission set and ``signs`` it (``urn:ihe:iti:2007:AssociationType:signs``).
:mod:`enrs.documents.xds` writes that metadata; this module writes the signature.

From the ANS's published DMP integration kit: the shape above; ``SignedInfo`` is canonicalised
with C14N 1.0 *with comments* and has two references, the Manifest (``Type``
``…xmldsig#Manifest``) and the XAdES ``SignedProperties``; the Manifest's first reference is
``urn:oid:`` + the submission set's uniqueId with a one-byte zero digest (``AA==``: the
submission set is not a byte stream), then one per document, ``urn:oid:`` + its uniqueId, the
digest of its content canonicalised with C14N with comments when it is XML (a CDA), of its
bytes otherwise; a ``SignatureProperty`` ``purposeOfSignature`` = ``1.2.840.10065.1.12.1.14``;
XAdES ``SigningTime``, ``SigningCertificate`` (digest, issuer and serial number of the
certificate) and ``SignaturePolicyImplied``.

Assumptions, to be confirmed on the DMP's test platform: the ``ds:Signature``'s ``Id`` is
``Signature-`` + the hex of the signature document's entryUUID (the kit puts the uniqueId
there, but an OID is not an ``xs:ID`` and a schema-checking verifier refuses it); SHA-256
digests and RSA-SHA256 (or ECDSA-SHA256) where the kit uses SHA-1, which the DMP is known to
accept; the XAdES 1.3.2 namespace; the signing certificate is the one of the VIHF and of the
mutual TLS (IGC-Santé issues a structure a separate signature certificate:
``ENRS_DMP_CERT_FILE`` may name it if the DMP accepts it for TLS too). The XML is built here
with lxml (the DMP's layout is fixed, which a generic signer does not produce) and checked by
signxml and by xmlsec1 in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from enrs.documents.vihf import VihfSigner
from enrs.documents.xds import XdsDocument, XdsSignature

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
C14N_WITH_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
MANIFEST_ID = "IHEManifest"
SOURCE_PURPOSE = "1.2.840.10065.1.12.1.14"  # the signature's purpose: "Source"
XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml"})


def signature_unique_id(submission_unique_id: str) -> str:
    """The signature document's uniqueId: an OID under the submission set's own."""
    return f"{submission_unique_id}.1"


def content_digest(content: bytes, mime_type: str) -> tuple[bytes, bool]:
    """The SHA-256 digest the Manifest gives a document, and whether it was canonicalised
    (C14N with comments, for XML) first."""
    if mime_type.split(";")[0].strip().lower() in XML_TYPES:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        tree = etree.fromstring(content, parser).getroottree()
        canonical = etree.tostring(tree, method="c14n", exclusive=False, with_comments=True)
        return hashlib.sha256(canonical).digest(), True
    return hashlib.sha256(content).digest(), False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _reference(
    parent: etree._Element,
    uri: str,
    digest: bytes | None,
    *,
    type_: str | None = None,
    c14n: bool = False,
) -> etree._Element:
    """A ``ds:Reference``; returns its ``DigestValue`` (filled when ``digest`` is given)."""
    reference = etree.SubElement(parent, f"{{{DS}}}Reference", URI=uri)
    if type_ is not None:
        reference.set("Type", type_)
    if c14n:
        transforms = etree.SubElement(reference, f"{{{DS}}}Transforms")
        etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=C14N_WITH_COMMENTS)
    etree.SubElement(reference, f"{{{DS}}}DigestMethod", Algorithm=SHA256)
    value = etree.SubElement(reference, f"{{{DS}}}DigestValue")
    if digest is not None:
        value.text = _b64(digest)
    return value


def _canonical(element: etree._Element) -> bytes:
    """C14N 1.0 with comments of ``element`` where it stands (its in-scope namespaces)."""
    return bytes(etree.tostring(element, method="c14n", exclusive=False, with_comments=True))


def _signature_value(signer: VihfSigner, data: bytes) -> bytes:
    if isinstance(signer.key, rsa.RSAPrivateKey):
        return signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    # XML-DSig's ECDSA value is r || s, each as long as the curve's order (RFC 4050)
    r, s = decode_dss_signature(signer.key.sign(data, ec.ECDSA(hashes.SHA256())))
    size = (signer.key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _qualifying_properties(
    signature: etree._Element, signer: VihfSigner, signature_id: str, now: datetime
) -> etree._Element:
    holder = etree.SubElement(signature, f"{{{DS}}}Object")
    qualifying = etree.SubElement(
        holder,
        f"{{{XADES}}}QualifyingProperties",
        Target=f"#{signature_id}",
        nsmap={"xades": XADES},
    )
    signed = etree.SubElement(
        qualifying, f"{{{XADES}}}SignedProperties", Id=f"{signature_id}-SignedProperties"
    )
    properties = etree.SubElement(signed, f"{{{XADES}}}SignedSignatureProperties")
    etree.SubElement(properties, f"{{{XADES}}}SigningTime").text = now.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    certificate = etree.SubElement(properties, f"{{{XADES}}}SigningCertificate")
    cert = etree.SubElement(certificate, f"{{{XADES}}}Cert")
    cert_digest = etree.SubElement(cert, f"{{{XADES}}}CertDigest")
    etree.SubElement(cert_digest, f"{{{DS}}}DigestMethod", Algorithm=SHA256)
    der = signer.cert.public_bytes(Encoding.DER)
    etree.SubElement(cert_digest, f"{{{DS}}}DigestValue").text = _b64(hashlib.sha256(der).digest())
    issuer_serial = etree.SubElement(cert, f"{{{XADES}}}IssuerSerial")
    etree.SubElement(
        issuer_serial, f"{{{DS}}}X509IssuerName"
    ).text = signer.cert.issuer.rfc4514_string()
    etree.SubElement(issuer_serial, f"{{{DS}}}X509SerialNumber").text = str(
        signer.cert.serial_number
    )
    policy = etree.SubElement(properties, f"{{{XADES}}}SignaturePolicyIdentifier")
    etree.SubElement(policy, f"{{{XADES}}}SignaturePolicyImplied")
    return signed


def sign_submission(doc: XdsDocument, signer: VihfSigner, now: datetime) -> XdsSignature:
    """The signature document of the submission set that carries ``doc`` (ITI-41 sends one
    document per submission set), signed with the structure's key at ``now``."""
    unique_id = signature_unique_id(doc.submission_unique_id)
    entry_uuid = uuid.uuid5(uuid.NAMESPACE_OID, unique_id)
    signature_id = f"Signature-{entry_uuid.hex}"  # an xs:ID: an OID cannot be one
    signature = etree.Element(f"{{{DS}}}Signature", Id=signature_id, nsmap={"ds": DS})
    signed_info = etree.SubElement(signature, f"{{{DS}}}SignedInfo")
    etree.SubElement(signed_info, f"{{{DS}}}CanonicalizationMethod", Algorithm=C14N_WITH_COMMENTS)
    is_rsa = isinstance(signer.key, rsa.RSAPrivateKey)
    etree.SubElement(
        signed_info, f"{{{DS}}}SignatureMethod", Algorithm=RSA_SHA256 if is_rsa else ECDSA_SHA256
    )
    manifest_digest = _reference(
        signed_info, f"#{MANIFEST_ID}", None, type_=MANIFEST_TYPE, c14n=True
    )
    properties_digest = _reference(
        signed_info,
        f"#{signature_id}-SignedProperties",
        None,
        type_=SIGNED_PROPERTIES_TYPE,
        c14n=True,
    )
    signature_value = etree.SubElement(signature, f"{{{DS}}}SignatureValue")
    key_info = etree.SubElement(signature, f"{{{DS}}}KeyInfo")
    x509_data = etree.SubElement(key_info, f"{{{DS}}}X509Data")
    etree.SubElement(x509_data, f"{{{DS}}}X509Certificate").text = _b64(
        signer.cert.public_bytes(Encoding.DER)
    )
    purpose_holder = etree.SubElement(signature, f"{{{DS}}}Object")
    purpose_list = etree.SubElement(purpose_holder, f"{{{DS}}}SignatureProperties")
    purpose = etree.SubElement(purpose_list, f"{{{DS}}}SignatureProperty", Id="purposeOfSignature")
    purpose.set("Target", f"#{signature_id}")
    purpose.text = SOURCE_PURPOSE
    manifest_holder = etree.SubElement(signature, f"{{{DS}}}Object")
    manifest = etree.SubElement(manifest_holder, f"{{{DS}}}Manifest", Id=MANIFEST_ID)
    _reference(manifest, f"urn:oid:{doc.submission_unique_id}", b"\x00")
    digest, canonicalised = content_digest(doc.content, doc.mime_type)
    _reference(manifest, f"urn:oid:{doc.unique_id}", digest, c14n=canonicalised)
    signed_properties = _qualifying_properties(signature, signer, signature_id, now)

    manifest_digest.text = _b64(hashlib.sha256(_canonical(manifest)).digest())
    properties_digest.text = _b64(hashlib.sha256(_canonical(signed_properties)).digest())
    signature_value.text = _b64(_signature_value(signer, _canonical(signed_info)))
    content = etree.tostring(signature, xml_declaration=True, encoding="UTF-8")
    return XdsSignature(
        unique_id=unique_id,
        entry_uuid=entry_uuid.urn,
        signed_at=now,
        content=bytes(content),
    )
