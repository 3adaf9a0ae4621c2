"""A fake DMP (Mon espace santé): an ITI-41 *Provide and Register Document Set-b* and ITI-57
*Update Document Set* endpoint (one URL: a plain SOAP 1.2 request whose action is ITI-57's is
an update, anything else is read as ITI-41) served over real HTTP on localhost by the
standard library's threading server.

It reads the request as a DMP would, not as our generator writes it: the MTOM/XOP
``multipart/related`` package with the standard library's ``email`` parser, the SOAP 1.2
envelope and the ebRIM ``SubmitObjectsRequest`` with lxml, the attached document through its
``xop:Include`` reference. It checks the metadata the DMP requires and answers a
``RegistryResponse`` (``Success``, or ``Failure`` with the XDS error codes):

- ``XDSUnknownPatientId``: a patientId that is not an INS (CX ``NIR^^^&OID&ISO^NH`` with a
  known INS OID and a right NIR key), or a patient the DMP does not know (``known_patients``);
- ``XDSPatientIdDoesNotMatch``: the DocumentEntry's patient is not the SubmissionSet's;
- ``XDSRegistryMetadataError``: a required attribute missing or malformed (uniqueId,
  sourceId, submissionTime, creationTime, languageCode, hash, size, mimeType, the class, type,
  format, confidentiality, facility type, practice setting and content type codes, an author
  with national identifiers, the HasMember association);
- ``XDSMissingDocument``: a DocumentEntry without its attached document;
- ``XDSRepositoryMetadataError``: hash or size that do not describe the attached document;
- ``XDSDuplicateUniqueIdInRegistry``: a uniqueId (document or submission set) already stored
  with the same content; ``XDSNonIdenticalHash``: a document uniqueId stored with another hash;
- an ``RPLC`` association deprecates the version it targets, which must be held
  (``UnresolvedReferenceException``) and Approved (``XDSRegistryDeprecatedDocumentError``).

It keeps every version of a document (``lid``, version number, availability status) and takes
ITI-57 as ITI TF-2b 3.57.4.1.3.3 describes it: a new version of a DocumentEntry (same ``lid``,
uniqueId, patient, hash and size; ``PreviousVersion`` on the SubmissionSet's ``HasMember``)
becomes the Approved latest version and deprecates the previous one; an
``UpdateAvailabilityStatus`` association changes the status of a version it holds. An update
of a document it does not hold, or of a version that is not Approved, is refused with
``XDSMetadataUpdateError``; a ``PreviousVersion`` that is not the latest version with
``XDSMetadataVersionError`` naming the latest version's entryUUID; an ``OriginalStatus`` that
is not the status with ``XDSMetadataUpdateError`` naming the current status. So a repeat of an
update already applied names what the update asked for (``enrs.documents.dmp.classify`` counts
it as done); another patient is ``XDSPatientIDReconciliationError``.

A request that is not an ITI-41 SOAP 1.2 MTOM message gets a SOAP ``Sender`` fault (HTTP 400).
Given the structure's certificate it trusts (``vihf_cert``), it also requires in every
request's ``wsse:Security`` header a VIHF (SAML 2.0 Assertion) signed by that certificate
(signxml, which checks the signature and its reference), whose Issuer is that certificate's
subject, within its ``Conditions`` now, with ``VIHF_Version`` 3.0, a NameID,
``Authentification_mode`` ``INDIRECTE`` and a resource-id naming the submission's patient;
otherwise a SOAP ``Sender`` fault saying what is wrong. It then also requires the submission
set's signature document (IHE DSG as the DMP takes it): one DocumentEntry classified
``urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1``, a member of the set that ``signs`` it, an XML
signature made with that certificate (signxml checks it; the unsigned ``purposeOfSignature``
must say "Source") whose signed XAdES ``SigningCertificate`` is that certificate and whose
signed ``IHEManifest`` names the set and each document with the digest of its content; else a
``Failure`` with ``XDSRegistryMetadataError``. A signature document is never stored. With
``tls`` (a server ``ssl.SSLContext``) it is served over HTTPS.
``fail_next`` answers the next calls with an HTTP error (503 by default), ``hang_next`` holds
them without an answer; ``documents()`` lists what was stored.

The UUIDs and OIDs below are written here again on purpose, not imported from
``enrs.documents.xds``: the fake is the tests' independent reading of IHE ITI TF-3 and of the
CI-SIS, so a wrong constant in the adapter makes the tests fail.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import re
import ssl
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.verifier import XMLVerifier
from stdnum.fr import nir

from tests.support.live_server import free_port

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
XOP = "http://www.w3.org/2004/08/xop/include"
XDSB = "urn:ihe:iti:xds-b:2007"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NS = {"soap": SOAP, "wsa": WSA, "xop": XOP, "xdsb": XDSB, "lcm": LCM, "rim": RIM, "rs": RS}
ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RESPONSE_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
UPDATE_ACTION = "urn:ihe:iti:2010:UpdateDocumentSet"
UPDATE_RESPONSE_ACTION = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
VIHF_NS = {"soap": SOAP, "wsse": WSSE, "saml": SAML}
STABLE_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
ENTRY_CODES = {  # IHE ITI TF-3 Table 4.2.5-1, the DocumentEntry's coded attributes
    "classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "typeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "formatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "confidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "healthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practiceSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
}
ENTRY_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
ENTRY_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"  # eventCodeList (optional)
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
SIGNATURE_CLASS = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"  # IHE DSG "Digital Signature"
SOURCE_PURPOSE = "1.2.840.10065.1.12.1.14"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
DSIG_NS = {"ds": DSIG, "xades": XADES}
C14N_WITH_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
DIGESTS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
}
ENTRY_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
ENTRY_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SET_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SET_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SET_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SET_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SET_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"

INS_OIDS = frozenset(
    {
        "1.2.250.1.213.1.4.8",  # INS-NIR
        "1.2.250.1.213.1.4.9",  # INS-NIA
        "1.2.250.1.213.1.4.10",  # INS-NIR of test
        "1.2.250.1.213.1.4.11",  # INS-NIR of demonstration
    }
)
_OID = r"[0-2](?:\.(?:0|[1-9][0-9]*))+"
_PATIENT_CX = re.compile(rf"^([0-9][0-9AB][0-9]{{13}})\^\^\^&({_OID})&ISO\^NH$")
_UNIQUE_ID = re.compile(rf"^{_OID}(?:\^[A-Za-z0-9.\-]{{1,16}})?$")
_PLAIN_OID = re.compile(rf"^{_OID}$")
_DTM = re.compile(r"^\d{14}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_DIGITS = re.compile(r"^\d+$")
# authorPerson: idNatPs ("8" + RPPS, "0" + ADELI) under 1.2.250.1.71.4.2.1 typed IDNPS, or the
# names alone; authorInstitution: idNatSt ("1" + FINESS) under 1.2.250.1.71.4.2.2 typed IDNST.
_AUTHOR_PERSON = re.compile(
    r"^(?:(?:8\d{11}|0[0-9A-Z]{9})\^[^^]+\^[^^]*\^{6}&1\.2\.250\.1\.71\.4\.2\.1&ISO\^D\^{3}IDNPS"
    r"|\^[^^]+\^[^^]*)$"
)
_AUTHOR_INSTITUTION = re.compile(
    r"^[^^]+\^{5}&1\.2\.250\.1\.71\.4\.2\.2&ISO\^IDNST\^{3}1[0-9][0-9AB][0-9]{7}$"
)


@dataclass(frozen=True)
class StoredDocument:
    """One document the fake DMP accepted, with the metadata it was registered with."""

    unique_id: str
    entry_uuid: str
    patient_id: str
    submission_set_unique_id: str
    source_id: str
    mime_type: str
    title: str
    slots: dict[str, list[str]]
    codes: dict[str, list[tuple[str, str]]]  # attribute → [(code, codingScheme)]
    author: dict[str, list[str]]
    content: bytes
    lid: str = ""  # the logicalId: the first version's entryUUID
    version: int = 1
    status: str = APPROVED
    replaces: str | None = None  # the entryUUID an RPLC association targets
    events: list[tuple[str, str]] = field(default_factory=list)  # eventCodeList (code, scheme)


class _Failure(Exception):
    """A request read, whose metadata the registry refuses: ``(errorCode, codeContext)``s."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class _Fault(Exception):
    """A request the fake cannot read as ITI-41: a SOAP Sender fault."""


def registry_response(
    errors: Iterable[tuple[str, str]] = (),
    status: str | None = None,
    action: str = RESPONSE_ACTION,
) -> bytes:
    """A SOAP 1.2 envelope with a RegistryResponse: ``Success``, or ``Failure`` with
    ``errors`` as ``(errorCode, codeContext)`` (``status``: another status URN)."""
    errors = list(errors)
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "wsa": WSA, "rs": RS})
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    etree.SubElement(header, f"{{{WSA}}}Action").text = action
    response = etree.SubElement(
        etree.SubElement(envelope, f"{{{SOAP}}}Body"),
        f"{{{RS}}}RegistryResponse",
        status=status or (FAILURE if errors else SUCCESS),
    )
    if errors:
        listed = etree.SubElement(response, f"{{{RS}}}RegistryErrorList")
        for code, context in errors:
            etree.SubElement(
                listed,
                f"{{{RS}}}RegistryError",
                errorCode=code,
                codeContext=context,
                severity=SEVERITY_ERROR,
                location="fake-dmp",
            )
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def soap_fault(code: str, reason: str) -> bytes:
    """A SOAP 1.2 Fault, ``code`` being ``Sender`` or ``Receiver``."""
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP})
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
    etree.SubElement(
        etree.SubElement(fault, f"{{{SOAP}}}Code"), f"{{{SOAP}}}Value"
    ).text = f"soap:{code}"
    text = etree.SubElement(etree.SubElement(fault, f"{{{SOAP}}}Reason"), f"{{{SOAP}}}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def as_mtom(envelope: bytes) -> tuple[bytes, str]:
    """``envelope`` as the root (and only) part of an MTOM package, as many SOAP stacks answer."""
    boundary, cid = f"uuid:{uuid.uuid4()}", f"<root.{uuid.uuid4().hex}@fake-dmp>"
    head = (
        f"--{boundary}\r\n"
        'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
        "Content-Transfer-Encoding: binary\r\n"
        f"Content-ID: {cid}\r\n\r\n"
    )
    body = head.encode("ascii") + envelope + f"\r\n--{boundary}--\r\n".encode("ascii")
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="{cid}"; start-info="application/soap+xml"'
    )
    return body, content_type


# --- reading an ITI-41 request --------------------------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _mime_parts(content_type: str, body: bytes) -> tuple[bytes, dict[str, tuple[str, bytes]]]:
    """The root part and the other parts by Content-ID (without ``<>``) of an MTOM package."""
    if not content_type.lower().startswith("multipart/related"):
        raise _Fault(f"not an MTOM package: Content-Type {content_type!r}")
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    assert isinstance(message, EmailMessage)
    if message.get_param("type", header="content-type") != "application/xop+xml":
        raise _Fault('the multipart/related package is not of type "application/xop+xml"')
    parts: dict[str, tuple[str, bytes]] = {}
    root: bytes | None = None
    start = message.get_param("start", header="content-type")
    for index, part in enumerate(message.iter_parts()):
        payload = part.get_payload(decode=True)
        cid = str(part.get("Content-ID", "")).strip()
        assert isinstance(payload, bytes)
        if (isinstance(start, str) and cid == start) or (start is None and index == 0):
            if part.get_content_type() != "application/xop+xml":
                raise _Fault("the root part is not application/xop+xml")
            root = payload
        else:
            parts[cid.removeprefix("<").removesuffix(">")] = (part.get_content_type(), payload)
    if root is None:
        raise _Fault("no root part")
    return root, parts


def _slots(node: Any) -> dict[str, list[str]]:
    return {
        slot.get("name"): [
            value.text or "" for value in slot.iterfind("rim:ValueList/rim:Value", NS)
        ]
        for slot in node.iterfind("rim:Slot", NS)
    }


def _name(node: Any) -> str:
    return str(node.xpath("string(rim:Name/rim:LocalizedString/@value)", namespaces=NS))


def _external_id(node: Any, scheme: str) -> str | None:
    found = node.find(f"rim:ExternalIdentifier[@identificationScheme='{scheme}']", NS)
    return None if found is None else found.get("value")


def _classifications(node: Any, scheme: str) -> list[Any]:
    return list(node.iterfind(f"rim:Classification[@classificationScheme='{scheme}']", NS))


class _Reader:
    """The checks of one request, collecting every error as the registry reports them."""

    def __init__(self, dmp: FakeDmp) -> None:
        self.dmp = dmp
        self.errors: list[tuple[str, str]] = []

    def error(self, code: str, context: str) -> None:
        self.errors.append((code, context))

    def required(self, value: str | None, pattern: re.Pattern[str], what: str) -> str:
        if not value or not pattern.match(value):
            self.error("XDSRegistryMetadataError", f"{what}: missing or malformed ({value!r})")
            return ""
        return value

    def patient(self, value: str | None, where: str) -> str:
        match = _PATIENT_CX.match(value or "")
        if match is None:
            self.error("XDSUnknownPatientId", f"{where}.patientId {value!r} is not an INS CX")
        elif match.group(2) not in self.dmp.ins_oids:
            self.error("XDSUnknownPatientId", f"{where}.patientId: unknown INS OID {match[2]}")
        elif not nir.is_valid(match.group(1)):
            self.error("XDSUnknownPatientId", f"{where}.patientId: {match[1]} has a wrong key")
        elif self.dmp.known_patients is not None and match[1] not in self.dmp.known_patients:
            self.error("XDSUnknownPatientId", f"{where}.patientId: no DMP for {match[1]}")
        return value or ""

    def author(self, node: Any, scheme: str, where: str) -> dict[str, list[str]]:
        authors = _classifications(node, scheme)
        if not authors:
            self.error("XDSRegistryMetadataError", f"{where}.author is missing")
            return {}
        slots = _slots(authors[0])
        person, institution = slots.get("authorPerson", []), slots.get("authorInstitution", [])
        if not person and not institution:
            self.error("XDSRegistryMetadataError", f"{where}.author names nobody")
        if person and not _AUTHOR_PERSON.match(person[0]):
            self.error("XDSRegistryMetadataError", f"{where}.authorPerson {person[0]!r}")
        if institution and not _AUTHOR_INSTITUTION.match(institution[0]):
            self.error("XDSRegistryMetadataError", f"{where}.authorInstitution {institution[0]!r}")
        return slots

    def code(self, node: Any, scheme: str, what: str) -> list[tuple[str, str]]:
        found = []
        for item in _classifications(node, scheme):
            scheme_oid = _slots(item).get("codingScheme", [""])[0]
            code = item.get("nodeRepresentation") or ""
            if not code or not scheme_oid or not _name(item):
                self.error("XDSRegistryMetadataError", f"{what} needs a code, scheme and name")
            found.append((code, scheme_oid))
        if not found:
            self.error("XDSRegistryMetadataError", f"{what} is missing")
        return found


def _vihf_attribute(assertion: Any, name: str) -> str:
    values = assertion.xpath(
        "saml:AttributeStatement/saml:Attribute[@Name=$n]/saml:AttributeValue",
        namespaces=VIHF_NS,
        n=name,
    )
    return (values[0].text or "").strip() if values else ""


def _instant(value: str | None) -> datetime:
    try:
        return datetime.strptime(value or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _Fault(f"VIHF: {value!r} is not a UTC instant") from None


def check_vihf(dmp: FakeDmp, envelope: Any, patient_cx: str) -> None:
    """The VIHF of a request about ``patient_cx`` (the submission's ``patientId``), when the
    fake trusts a structure's certificate; raises ``_Fault`` saying what is wrong."""
    if dmp.vihf_cert is None:
        return
    found = envelope.xpath("soap:Header/wsse:Security/saml:Assertion", namespaces=VIHF_NS)
    if len(found) != 1:
        raise _Fault("VIHF: no SAML Assertion in the wsse:Security header")
    assertion = copy.deepcopy(found[0])
    try:
        verified = XMLVerifier().verify(assertion, x509_cert=dmp.vihf_cert, id_attribute="ID")
    except (InvalidSignature, InvalidInput) as exc:
        raise _Fault(f"VIHF: the signature does not verify: {exc}") from None
    signed = verified.signed_xml  # from here on, only what the signature covers
    if signed is None or signed.tag != f"{{{SAML}}}Assertion":
        raise _Fault("VIHF: the signature does not cover the Assertion")
    issuer = (signed.findtext("saml:Issuer", "", VIHF_NS) or "").strip()
    if issuer != dmp.vihf_cert.subject.rfc4514_string():
        raise _Fault(f"VIHF: Issuer {issuer!r} is not the signing certificate's subject")
    conditions = signed.find("saml:Conditions", VIHF_NS)
    now = datetime.now(UTC)
    if conditions is None or not (
        _instant(conditions.get("NotBefore")) <= now < _instant(conditions.get("NotOnOrAfter"))
    ):
        raise _Fault("VIHF: expired or not yet valid (Conditions)")
    if not (signed.findtext("saml:Subject/saml:NameID", "", VIHF_NS) or "").strip():
        raise _Fault("VIHF: no NameID (the professional's idNatPs)")
    for name, expected in (("VIHF_Version", "3.0"), ("Authentification_mode", "INDIRECTE")):
        if _vihf_attribute(signed, name) != expected:
            raise _Fault(f"VIHF: {name} is not {expected}")
    resource = _vihf_attribute(signed, "urn:oasis:names:tc:xacml:2.0:resource:resource-id")
    if resource != patient_cx.removesuffix("^NH"):
        raise _Fault(f"VIHF: resource-id {resource!r} is not the patient {patient_cx!r}")


def read_request(dmp: FakeDmp, content_type: str, body: bytes) -> list[StoredDocument]:
    """The documents of an ITI-41 request, checked; raises ``_Failure`` or ``_Fault``."""
    root_xml, parts = _mime_parts(content_type, body)
    try:
        envelope = etree.fromstring(root_xml, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise _Fault(f"the root part is not XML: {exc}") from None
    if envelope.tag != f"{{{SOAP}}}Envelope":
        raise _Fault(f"not a SOAP 1.2 envelope: {envelope.tag}")
    if (envelope.findtext("soap:Header/wsa:Action", None, NS) or "").strip() != ACTION:
        raise _Fault("wsa:Action is not ProvideAndRegisterDocumentSet-b")
    provide = envelope.find("soap:Body/xdsb:ProvideAndRegisterDocumentSetRequest", NS)
    request = None if provide is None else provide.find("lcm:SubmitObjectsRequest", NS)
    if request is None:
        raise _Fault("no ProvideAndRegisterDocumentSetRequest/SubmitObjectsRequest")
    attached: dict[str, bytes] = {}
    for document in provide.iterfind("xdsb:Document", NS):
        href = document.xpath("string(xop:Include/@href)", namespaces=NS)
        cid = unquote(href.removeprefix("cid:"))
        if cid in parts:
            attached[document.get("id")] = parts[cid][1]
    reader = _Reader(dmp)
    objects = request.find("rim:RegistryObjectList", NS)
    if objects is None:
        raise _Fault("no RegistryObjectList")
    submission = _read_submission_set(reader, objects)
    check_vihf(dmp, envelope, submission["patient"])
    entries = list(objects.iterfind("rim:ExtrinsicObject", NS))
    signatures = [entry for entry in entries if _is_signature(entry)]
    stored = [
        _read_entry(reader, objects, entry, submission, attached)
        for entry in entries
        if not _is_signature(entry)
    ]
    if not stored:
        reader.error("XDSRegistryMetadataError", "no DocumentEntry")
    if dmp.vihf_cert is not None:  # a structure that signs its VIHF signs its submission sets
        check_submission_signature(reader, objects, signatures, submission, attached, stored)
    if reader.errors:
        raise _Failure(reader.errors)
    return stored


# --- the submission set's signature (IHE DSG, XAdES) ----------------------------------------


def _is_signature(entry: Any) -> bool:
    return any(
        item.get("nodeRepresentation") == SIGNATURE_CLASS
        for item in _classifications(entry, ENTRY_CODES["classCode"])
    )


def _manifest_digest(content: bytes, reference: Any) -> bytes:
    """What a Manifest reference's digest must be for ``content``: of its C14N form with
    comments when the reference says so (an XML document), of its bytes otherwise."""
    transforms = reference.xpath("ds:Transforms/ds:Transform/@Algorithm", namespaces=DSIG_NS)
    method = reference.xpath("string(ds:DigestMethod/@Algorithm)", namespaces=DSIG_NS)
    if method not in DIGESTS:
        raise ValueError(f"digest method {method!r}")
    if transforms == [C14N_WITH_COMMENTS]:
        tree = etree.fromstring(content, _PARSER).getroottree()
        content = etree.tostring(tree, method="c14n", exclusive=False, with_comments=True)
    elif transforms:
        raise ValueError(f"transforms {transforms!r}")
    return hashlib.new(DIGESTS[method], content).digest()


def check_submission_signature(
    reader: _Reader,
    objects: Any,
    signatures: list[Any],
    submission: dict[str, str],
    attached: dict[str, bytes],
    stored: list[StoredDocument],
) -> None:
    """The submission set's signature document: one, a member of the set that ``signs`` it,
    an XML signature made with the structure's certificate (signxml checks it) whose signed
    Manifest names the set and every document with the digest of its content."""
    where = "signature of the submission set"
    if len(signatures) != 1:
        reader.error("XDSRegistryMetadataError", f"{where}: {len(signatures)} signature documents")
        return
    entry_id = signatures[0].get("id") or ""
    for kind, source, target in (
        (HAS_MEMBER, submission["id"], entry_id),
        (SIGNS, entry_id, submission["id"]),
    ):
        if not objects.xpath(
            "rim:Association[@associationType=$t and @sourceObject=$s and @targetObject=$e]",
            namespaces=NS,
            t=kind,
            s=source,
            e=target,
        ):
            reader.error("XDSRegistryMetadataError", f"{where}: no {kind} association")
    content = attached.get(entry_id)
    if content is None:
        reader.error("XDSMissingDocument", f"{where}: not attached")
        return
    try:
        signature = etree.fromstring(content, _PARSER)
    except etree.XMLSyntaxError as exc:
        reader.error("XDSRegistryMetadataError", f"{where}: not XML: {exc}")
        return
    purpose = signature.xpath(
        "string(ds:Object/ds:SignatureProperties/ds:SignatureProperty[@Id='purposeOfSignature'])",
        namespaces=DSIG_NS,
    )
    if purpose.strip() != SOURCE_PURPOSE:
        reader.error("XDSRegistryMetadataError", f"{where}: purposeOfSignature is {purpose!r}")
    checked = copy.deepcopy(signature)  # the purpose is unsigned text, which the schema refuses
    for holder in checked.xpath("ds:Object[ds:SignatureProperties]", namespaces=DSIG_NS):
        checked.remove(holder)
    try:
        verified = XMLVerifier().verify(
            checked, x509_cert=reader.dmp.vihf_cert, expect_references=2
        )
    except (InvalidSignature, InvalidInput) as exc:
        reader.error("XDSRegistryMetadataError", f"{where}: does not verify: {exc}")
        return
    signed = {result.signed_xml.tag: result.signed_xml for result in verified}
    manifest = signed.get(f"{{{DSIG}}}Manifest")
    properties = signed.get(f"{{{XADES}}}SignedProperties")
    if manifest is None or manifest.get("Id") != "IHEManifest" or properties is None:
        reader.error(
            "XDSRegistryMetadataError", f"{where}: the Manifest or SignedProperties unsigned"
        )
        return
    assert reader.dmp.vihf_cert is not None
    cert_digest = properties.xpath(
        "string(xades:SignedSignatureProperties/xades:SigningCertificate/xades:Cert"
        "/xades:CertDigest/ds:DigestValue)",
        namespaces=DSIG_NS,
    )
    der = reader.dmp.vihf_cert.public_bytes(Encoding.DER)
    if base64.b64decode(cert_digest or "=") != hashlib.sha256(der).digest():
        reader.error("XDSRegistryMetadataError", f"{where}: SigningCertificate is not the signer")
    references = {ref.get("URI"): ref for ref in manifest.iterfind("ds:Reference", DSIG_NS)}
    if f"urn:oid:{submission['unique_id']}" not in references:
        reader.error("XDSRegistryMetadataError", f"{where}: the submission set is not in it")
    for doc in stored:
        reference = references.get(f"urn:oid:{doc.unique_id}")
        if reference is None:
            reader.error("XDSRegistryMetadataError", f"{where}: {doc.unique_id} is not in it")
            continue
        given = reference.findtext("ds:DigestValue", "", DSIG_NS).strip()
        try:
            expected = _manifest_digest(doc.content, reference)
        except (ValueError, etree.XMLSyntaxError) as exc:
            reader.error("XDSRegistryMetadataError", f"{where}: {doc.unique_id}: {exc}")
            continue
        if base64.b64decode(given or "=") != expected:
            reader.error(
                "XDSRegistryMetadataError", f"{where}: the digest of {doc.unique_id} is wrong"
            )


def _read_submission_set(reader: _Reader, objects: Any) -> dict[str, str]:
    nodes = objects.xpath(
        f".//rim:Classification[@classificationNode='{SUBMISSION_SET}']/@classifiedObject",
        namespaces=NS,
    )
    package = next(
        (p for p in objects.iterfind("rim:RegistryPackage", NS) if p.get("id") in nodes), None
    )
    if package is None:
        raise _Failure([("XDSRegistryMetadataError", "no SubmissionSet")])
    where = "SubmissionSet"
    slots = _slots(package)
    reader.required(slots.get("submissionTime", [""])[0], _DTM, f"{where}.submissionTime")
    reader.author(package, SET_AUTHOR, where)
    reader.code(package, SET_CONTENT_TYPE, f"{where}.contentTypeCode")
    unique_id = reader.required(
        _external_id(package, SET_UNIQUE_ID), _PLAIN_OID, f"{where}.uniqueId"
    )
    source_id = reader.required(
        _external_id(package, SET_SOURCE_ID), _PLAIN_OID, f"{where}.sourceId"
    )
    patient = reader.patient(_external_id(package, SET_PATIENT_ID), where)
    if unique_id and unique_id in reader.dmp.submission_sets():
        reader.error("XDSDuplicateUniqueIdInRegistry", f"SubmissionSet uniqueId {unique_id}")
    return {
        "id": package.get("id"),
        "unique_id": unique_id,
        "source_id": source_id,
        "patient": patient,
    }


def _read_entry(
    reader: _Reader,
    objects: Any,
    entry: Any,
    submission: dict[str, str],
    attached: dict[str, bytes],
    previous: StoredDocument | None = None,
) -> StoredDocument:
    """One DocumentEntry of an ITI-41 request, or (``previous``: the version it updates) the new
    version of an ITI-57 one, which has no document attached: it describes the one held."""
    entry_id = entry.get("id") or ""
    where = f"DocumentEntry {entry_id}"
    if entry.get("objectType") != STABLE_ENTRY:
        reader.error("XDSRegistryMetadataError", f"{where}: objectType is not a stable entry")
    members = objects.xpath(
        "rim:Association[@associationType=$t and @sourceObject=$s and @targetObject=$e]",
        namespaces=NS,
        t=HAS_MEMBER,
        s=submission["id"],
        e=entry_id,
    )
    if not members:
        reader.error("XDSRegistryMetadataError", f"{where}: no HasMember from the SubmissionSet")
    slots = _slots(entry)
    reader.required(slots.get("creationTime", [""])[0], _DTM, f"{where}.creationTime")
    if not slots.get("languageCode", [""])[0]:
        reader.error("XDSRegistryMetadataError", f"{where}.languageCode is missing")
    hash_ = reader.required(slots.get("hash", [""])[0], _SHA1, f"{where}.hash")
    size = reader.required(slots.get("size", [""])[0], _DIGITS, f"{where}.size")
    mime_type = entry.get("mimeType") or ""
    if not mime_type:
        reader.error("XDSRegistryMetadataError", f"{where}.mimeType is missing")
    codes = {
        name: reader.code(entry, scheme, f"{where}.{name}") for name, scheme in ENTRY_CODES.items()
    }
    author = reader.author(entry, ENTRY_AUTHOR, where)
    patient = reader.patient(_external_id(entry, ENTRY_PATIENT_ID), where)
    if patient and submission["patient"] and patient != submission["patient"]:
        reader.error(
            "XDSPatientIdDoesNotMatch", f"{where}: {patient} in a set for {submission['patient']}"
        )
    unique_id = reader.required(
        _external_id(entry, ENTRY_UNIQUE_ID), _UNIQUE_ID, f"{where}.uniqueId"
    )
    content = previous.content if previous is not None else attached.get(entry_id)
    if content is None:
        reader.error("XDSMissingDocument", f"{where}: no attached document")
        content = b""
    else:
        if hash_ and hashlib.sha1(content, usedforsecurity=False).hexdigest() != hash_:
            reader.error("XDSRepositoryMetadataError", f"{where}: hash does not match the document")
        if size and int(size) != len(content):
            reader.error(
                "XDSRepositoryMetadataError", f"{where}: size {size} is not {len(content)}"
            )
    if previous is not None:
        _check_new_version(reader, where, previous, unique_id, patient)
    else:
        held = reader.dmp.held(unique_id)
        if held is not None:
            same = hashlib.sha1(held.content, usedforsecurity=False).hexdigest() == hash_
            code = "XDSDuplicateUniqueIdInRegistry" if same else "XDSNonIdenticalHash"
            reader.error(code, f"DocumentEntry uniqueId {unique_id}")
    replaced = objects.xpath(
        "rim:Association[@associationType=$t and @sourceObject=$e]/@targetObject",
        namespaces=NS,
        t=RPLC,
        e=entry_id,
    )
    for target in replaced:
        _check_replaced(reader, where, target, patient)
    return StoredDocument(
        unique_id=unique_id,
        entry_uuid=entry_id,
        patient_id=patient,
        submission_set_unique_id=submission["unique_id"],
        source_id=submission["source_id"],
        mime_type=mime_type,
        title=_name(entry),
        slots=slots,
        codes=codes,
        author=author,
        content=content,
        lid=previous.lid if previous is not None else entry_id,
        version=previous.version + 1 if previous is not None else 1,
        replaces=replaced[0] if replaced else None,
        events=[
            (item.get("nodeRepresentation") or "", _slots(item).get("codingScheme", [""])[0])
            for item in _classifications(entry, ENTRY_EVENT)
        ],
    )


def _check_replaced(reader: _Reader, where: str, target: str, patient: str) -> None:
    old = reader.dmp.version_by_uuid(target)
    if old is None:
        reader.error("UnresolvedReferenceException", f"{where}: RPLC of unknown {target}")
    elif old.status != APPROVED:
        reader.error("XDSRegistryDeprecatedDocumentError", f"{where}: RPLC of deprecated {target}")
    elif old.patient_id != patient:
        reader.error("XDSPatientIdDoesNotMatch", f"{where}: RPLC of another patient's {target}")


def _check_new_version(
    reader: _Reader, where: str, previous: StoredDocument, unique_id: str, patient: str
) -> None:
    if unique_id != previous.unique_id:
        reader.error("XDSMetadataUpdateError", f"{where}: uniqueId is not {previous.unique_id}")
    if patient != previous.patient_id:
        reader.error("XDSPatientIDReconciliationError", f"{where}: {patient} is another patient")


# --- reading an ITI-57 request ----------------------------------------------------------------


@dataclass(frozen=True)
class _Update:
    """What an ITI-57 request changes: a new version, or a version's availability status."""

    new_version: StoredDocument | None = None
    target: str = ""  # the entryUUID whose status changes
    new_status: str = ""


def _slot_value(node: Any, name: str) -> str:
    return str(
        node.xpath("string(rim:Slot[@name=$n]/rim:ValueList/rim:Value)", namespaces=NS, n=name)
    )


def read_update(dmp: FakeDmp, content_type: str, body: bytes) -> _Update:
    """The change an ITI-57 request asks for, checked; raises ``_Failure`` or ``_Fault``."""
    if not content_type.lower().startswith("application/soap+xml"):
        raise _Fault(f"ITI-57 is a plain SOAP 1.2 message, not {content_type!r}")
    try:
        envelope = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise _Fault(f"not XML: {exc}") from None
    if (envelope.findtext("soap:Header/wsa:Action", None, NS) or "").strip() != UPDATE_ACTION:
        raise _Fault("wsa:Action is not UpdateDocumentSet")
    objects = envelope.find("soap:Body/lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
    if objects is None:
        raise _Fault("no SubmitObjectsRequest/RegistryObjectList")
    reader = _Reader(dmp)
    submission = _read_submission_set(reader, objects)
    check_vihf(dmp, envelope, submission["patient"])
    entries = list(objects.iterfind("rim:ExtrinsicObject", NS))
    statuses = objects.xpath("rim:Association[@associationType=$t]", namespaces=NS, t=UPDATE_STATUS)
    if len(entries) + len(statuses) != 1:
        reader.error("XDSMetadataUpdateError", "one new version or one status change expected")
        raise _Failure(reader.errors)
    update = (
        _read_new_version(reader, objects, entries[0], submission)
        if entries
        else _read_status_change(reader, statuses[0], submission)
    )
    if reader.errors:
        raise _Failure(reader.errors)
    return update


def _read_new_version(
    reader: _Reader, objects: Any, entry: Any, submission: dict[str, str]
) -> _Update:
    entry_id, lid = entry.get("id") or "", entry.get("lid") or ""
    where = f"DocumentEntry {entry_id}"
    latest = reader.dmp.latest(lid)
    if not lid or lid == entry_id or latest is None:
        raise _Failure([("XDSMetadataUpdateError", f"{where}: no document of logicalId {lid!r}")])
    if latest.status != APPROVED:
        reader.error("XDSMetadataUpdateError", f"{where}: the latest version is {latest.status}")
    member = objects.xpath(
        "rim:Association[@associationType=$t and @sourceObject=$s and @targetObject=$e]",
        namespaces=NS,
        t=HAS_MEMBER,
        s=submission["id"],
        e=entry_id,
    )
    previous = _slot_value(member[0], "PreviousVersion") if member else ""
    if previous != str(latest.version):
        reader.error(  # names the latest version, not the one submitted
            "XDSMetadataVersionError",
            f"PreviousVersion {previous!r} is not the latest version {latest.version} "
            f"({latest.entry_uuid}) of {lid}",
        )
    return _Update(new_version=_read_entry(reader, objects, entry, submission, {}, latest))


def _read_status_change(reader: _Reader, association: Any, submission: dict[str, str]) -> _Update:
    target = association.get("targetObject") or ""
    where = f"UpdateAvailabilityStatus of {target}"
    if association.get("sourceObject") != submission["id"]:
        reader.error("XDSMetadataUpdateError", f"{where}: sourceObject is not the SubmissionSet")
    original = _slot_value(association, "OriginalStatus")
    new = _slot_value(association, "NewStatus")
    held = reader.dmp.version_by_uuid(target)
    if held is None:
        raise _Failure([("XDSMetadataUpdateError", f"{where}: no such DocumentEntry")])
    if new not in (APPROVED, DEPRECATED):
        reader.error("XDSMetadataUpdateError", f"{where}: NewStatus {new!r}")
    if held.status != original:
        reader.error(
            "XDSMetadataUpdateError", f"{where}: {target} is {held.status}, not {original}"
        )
    if submission["patient"] and held.patient_id != submission["patient"]:
        reader.error("XDSPatientIDReconciliationError", f"{where}: another patient's document")
    return _Update(target=target, new_status=new)


# --- the server -----------------------------------------------------------------------------


class FakeDmp:
    """The fake DMP on ``127.0.0.1:{port}``; its ITI-41 endpoint is :attr:`url`.

    ``ins_oids``: the INS OIDs it takes; ``known_patients``: the INS that have a DMP (all by
    default); ``mtom_answers``: answer in an MTOM package (default) or as a bare SOAP envelope;
    ``vihf_cert``: the structure's certificate its VIHF must be signed with (no VIHF checked
    without it); ``tls``: serve over HTTPS with this server context.
    """

    def __init__(
        self,
        *,
        ins_oids: Iterable[str] = INS_OIDS,
        known_patients: Iterable[str] | None = None,
        mtom_answers: bool = True,
        vihf_cert: x509.Certificate | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = free_port()
        self.vihf_cert = vihf_cert
        self.tls = tls
        self.ins_oids = frozenset(ins_oids)
        self.known_patients = None if known_patients is None else frozenset(known_patients)
        self.mtom_answers = mtom_answers
        self.calls = 0
        self.requests: list[dict[str, str]] = []  # the headers of each call
        self._stored: list[StoredDocument] = []
        self._sets: set[str] = set()
        self._failures: list[int] = []
        self._hangs: list[tuple[float, bool]] = []
        self._lock = threading.Lock()
        self._registering = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/dmp/iti41"

    # what the tests tell it and read from it

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` calls with HTTP ``status`` and a plain-text body."""
        with self._lock:
            self._failures.extend([status] * count)

    def hang_next(self, count: int, seconds: float = 30.0, *, then_process: bool = False) -> None:
        """Hold the next ``count`` calls ``seconds`` without answering (or until :meth:`stop`);
        then drop them, or with ``then_process`` handle them as usual (the DMP that registers a
        document after the client gave up waiting)."""
        with self._lock:
            self._hangs.extend([(seconds, then_process)] * count)

    def documents(self) -> list[StoredDocument]:
        """Every version of every document it holds, in the order they came."""
        with self._lock:
            return list(self._stored)

    def versions(self, unique_id: str) -> list[StoredDocument]:
        with self._lock:
            return [d for d in self._stored if d.unique_id == unique_id]

    def held(self, unique_id: str) -> StoredDocument | None:
        """The latest version of the document ``unique_id``."""
        return next(reversed(self.versions(unique_id)), None)

    def latest(self, lid: str) -> StoredDocument | None:
        with self._lock:
            return next((d for d in reversed(self._stored) if d.lid == lid), None)

    def version_by_uuid(self, entry_uuid: str) -> StoredDocument | None:
        with self._lock:
            return next((d for d in self._stored if d.entry_uuid == entry_uuid), None)

    def _set_status(self, entry_uuid: str, status: str) -> None:
        self._stored = [
            dataclasses.replace(d, status=status) if d.entry_uuid == entry_uuid else d
            for d in self._stored
        ]

    def submission_sets(self) -> set[str]:
        with self._lock:
            return set(self._sets)

    # one call

    def handle(self, content_type: str, body: bytes) -> tuple[int, bytes, str]:
        """``(HTTP status, body, Content-Type)`` of the answer to one ITI-41 or ITI-57 request
        (ITI-57: a plain SOAP 1.2 message whose ``action`` is UpdateDocumentSet)."""
        if (
            content_type.lower().startswith("application/soap+xml")
            and UPDATE_ACTION in content_type
        ):
            return self._update(content_type, body)
        with self._registering:  # one registration at a time, as the duplicate checks need
            try:
                documents = read_request(self, content_type, body)
            except _Fault as fault:
                return self._fault(fault)
            except _Failure as failure:
                return self._answer(registry_response(failure.errors))
            with self._lock:
                for replaced in (d.replaces for d in documents if d.replaces):
                    self._set_status(replaced, DEPRECATED)
                self._stored.extend(documents)
                self._sets.update(d.submission_set_unique_id for d in documents)
        return self._answer(registry_response())

    def _update(self, content_type: str, body: bytes) -> tuple[int, bytes, str]:
        with self._registering:
            try:
                update = read_update(self, content_type, body)
            except _Fault as fault:
                return self._fault(fault)
            except _Failure as failure:
                answer = registry_response(failure.errors, action=UPDATE_RESPONSE_ACTION)
                return self._answer(answer, UPDATE_RESPONSE_ACTION)
            new = update.new_version
            latest = self.latest(new.lid) if new is not None else None
            with self._lock:
                if new is not None and latest is not None:
                    self._set_status(latest.entry_uuid, DEPRECATED)
                    self._stored.append(new)
                    self._sets.add(new.submission_set_unique_id)
                else:
                    self._set_status(update.target, update.new_status)
        answer = registry_response(action=UPDATE_RESPONSE_ACTION)
        return self._answer(answer, UPDATE_RESPONSE_ACTION)

    def _fault(self, fault: _Fault) -> tuple[int, bytes, str]:
        return 400, soap_fault("Sender", str(fault)), "application/soap+xml; charset=UTF-8"

    def _answer(self, envelope: bytes, action: str = RESPONSE_ACTION) -> tuple[int, bytes, str]:
        if self.mtom_answers:
            body, content_type = as_mtom(envelope)
            return 200, body, content_type
        return 200, envelope, f'application/soap+xml; charset=UTF-8; action="{action}"'

    def _next_trouble(self) -> tuple[int | None, tuple[float, bool] | None]:
        with self._lock:
            self.calls += 1
            if self._failures:
                return self._failures.pop(0), None
            if self._hangs:
                return None, self._hangs.pop(0)
            return None, None

    # the server

    def start(self) -> FakeDmp:
        dmp = self
        self._release.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with dmp._lock:
                    dmp.requests.append(dict(self.headers.items()))
                failure, hang = dmp._next_trouble()
                if failure is not None:
                    self._send(failure, b"Service Unavailable", "text/plain", {"Retry-After": "1"})
                    return
                if hang is not None:
                    dmp._release.wait(hang[0])
                    if not hang[1]:
                        self.close_connection = True
                        return
                status, answer, content_type = dmp.handle(
                    self.headers.get("Content-Type", ""), body
                )
                self._send(status, answer, content_type, {})

            def _send(
                self, status: int, body: bytes, content_type: str, extra: dict[str, str]
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> FakeDmp:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
