"""IHE XDS.b metadata for the DMP (Mon espace santé): the ITI-41 *Provide and Register Document
Set-b* request, the ITI-57 *Update Document Set* request (XDS Metadata Update), the same
metadata as an XDM package (ITI-32 media, a ZIP), and the reading of the ``RegistryResponse``
the DMP answers.

The metadata are those of IHE ITI TF-3 §4.2 in ebRIM 3.0: one ``SubmitObjectsRequest`` holding
the SubmissionSet (a ``RegistryPackage`` classified ``XDSSubmissionSet``), one stable
DocumentEntry (an ``ExtrinsicObject``) and the ``HasMember`` association between them, with the
French forms of the CI-SIS *Volet Partage de Documents de Santé* that the DMP checks:

- ``patientId`` is the INS as a CX: ``{NIR}^^^&1.2.250.1.213.1.4.8&ISO^NH`` (``.10``, ``.11``
  for the test and demonstration INS);
- ``authorPerson`` is an XCN carrying the national professional id (``8`` + RPPS) under the
  authority 1.2.250.1.71.4.2.1, type ``IDNPS``:
  ``8{RPPS}^FAMILY^Given^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS``;
- ``authorInstitution`` is an XON carrying the national structure id (``1`` + FINESS) under the
  authority 1.2.250.1.71.4.2.2, type ``IDNST``:
  ``Name^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1{FINESS}``;
- ``authorRole`` and ``authorSpecialty`` are ``code^display^OID``; coded attributes are
  classifications whose ``codingScheme`` slot is the code system's OID;
- times are ``YYYYMMDDhhmmss`` in UTC.

A replacement carries an ``RPLC`` association to the entryUUID of the version it replaces
(:attr:`XdsDocument.replaces`): the DMP deprecates that version. ITI-57 (plain SOAP 1.2, no
attachment) sends either a new version of a DocumentEntry (same ``lid`` and uniqueId, a new
entryUUID, ``PreviousVersion`` on the ``HasMember`` association) or an
``UpdateAvailabilityStatus`` association (Approved → Deprecated for a withdrawn document):
:class:`XdsUpdate`, :func:`update_document_set`.

What is emitted is checked first (strict out): an inconsistent :class:`XdsDocument` (hash or size
that do not describe the content, a naive time, an identifier of the wrong form) raises
:class:`InvalidXdsDocument` and nothing is produced. Values reach the XML only through lxml.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from lxml import etree

from enrs.kit.errors import Unprocessable

# Namespaces of ITI-41 (SOAP 1.2, WS-Addressing, XOP) and of ebXML RegRep 3.0.
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
XOP = "http://www.w3.org/2004/08/xop/include"
XDSB = "urn:ihe:iti:xds-b:2007"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

ITI_41_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI_41_RESPONSE_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ITI_57_ACTION = "urn:ihe:iti:2010:UpdateDocumentSet"
ITI_57_RESPONSE_ACTION = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"

# IHE ITI TF-3 §4.2.5: the UUIDs of the metadata objects, classification schemes (Table 4.2.5-1)
# and external identifier schemes (Table 4.2.5-2).
DOCUMENT_ENTRY_STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_HEALTHCARE_FACILITY_TYPE_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE_CODE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
DE_EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
STATUS_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
ASSOCIATION_OBJECT_TYPE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
CLASSIFICATION_OBJECT_TYPE = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
)
EXTERNAL_IDENTIFIER_OBJECT_TYPE = (
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
)

# French national identifiers (CI-SIS; ANS "Référentiel d'identification des acteurs").
INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_TEST_NIR_OID = "1.2.250.1.213.1.4.10"
INS_DEMO_NIR_OID = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_TEST_NIR_OID, INS_DEMO_NIR_OID})
ID_NAT_PS_OID = "1.2.250.1.71.4.2.1"  # idNatPs: "8" + RPPS
ID_NAT_ST_OID = "1.2.250.1.71.4.2.2"  # idNatSt: "1" + FINESS

# Symbolic ids (ITI TF-3 §4.2.3.1.6 allows them in a submission; the registry gives UUIDs).
SUBMISSION_SET_ID = "SubmissionSet01"
ASSOCIATION_ID = "Association01"
REPLACEMENT_ID = "Association02"
SIGNATURE_MEMBER_ID = "Association03"
SIGNS_ID = "Association04"

XDM_SUBSET = "IHE_XDM/SUBSET01"
XDM_EXTENSIONS = {
    "application/pdf": "PDF",
    "text/xml": "XML",
    "application/xml": "XML",
    "application/hl7-v3+xml": "XML",
    "text/plain": "TXT",
    "text/rtf": "RTF",
    "image/jpeg": "JPG",
    "image/png": "PNG",
    "image/tiff": "TIF",
    "application/dicom": "DCM",
}

_OID = r"[0-2](?:\.(?:0|[1-9][0-9]*))+"
_OID_RE = re.compile(rf"^{_OID}$")
_UNIQUE_ID_RE = re.compile(rf"^{_OID}(?:\^[A-Za-z0-9.\-]{{1,16}})?$")
_ENTRY_UUID_RE = re.compile(
    r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_RPPS_RE = re.compile(r"^\d{11}$")
_FINESS_RE = re.compile(r"^\d[\dAB]\d{7}$")
_INS_RE = re.compile(r"^[0-9][0-9AB][0-9]{13}$")
_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_CX_RE = re.compile(rf"^[^\^&~|\\]+\^\^\^&{_OID}&ISO\^[A-Z]+$")


class InvalidXdsDocument(Unprocessable):
    """The document and its metadata cannot make valid XDS metadata (nothing was produced)."""


@dataclass(frozen=True)
class XdsCode:
    """A coded value: ``code`` of the code system ``scheme_oid`` (XDS ``codingScheme``)."""

    code: str
    scheme_oid: str
    display: str


@dataclass(frozen=True)
class XdsAuthor:
    """The author of the document (XDS ``author``): a professional of a structure."""

    rpps: str | None  # the 11-digit RPPS number; the XCN carries "8" + it
    family: str
    given: str
    institution_name: str
    institution_finess: str  # the 9-character FINESS number; the XON carries "1" + it
    role: XdsCode | None = None
    specialty: XdsCode | None = None


@dataclass(frozen=True)
class XdsPatientInfo:
    """What ``sourcePatientInfo`` says of the patient (PID-5, PID-7, PID-8)."""

    family: str
    given: str
    birth_date: date
    gender: Literal["M", "F", "U"]


@dataclass(frozen=True)
class XdsDocument:
    """One document and the metadata of its SubmissionSet, as the DMP takes them."""

    entry_uuid: str  # "urn:uuid:…", the DocumentEntry's entryUUID
    unique_id: str  # OID (or OID^extension), the DocumentEntry's uniqueId
    patient_ins: str
    patient_ins_oid: str
    source_patient_id: str | None  # a CX under the facility's authority: "IPP^^^&OID&ISO^PI"
    author: XdsAuthor
    class_code: XdsCode
    type_code: XdsCode
    format_code: XdsCode
    confidentiality: tuple[XdsCode, ...]
    healthcare_facility_type: XdsCode
    practice_setting: XdsCode
    title: str
    creation_time: datetime
    service_start: datetime | None
    service_stop: datetime | None
    mime_type: str
    size: int
    sha1_hex: str
    language: str
    content: bytes
    submission_unique_id: str
    source_id: str  # OID of the repository that submits
    submission_time: datetime
    content_type_code: XdsCode
    source_patient_info: XdsPatientInfo | None = None
    replaces: str | None = None  # the entryUUID of the version it replaces (RPLC association)
    # referenceIdList (CXi values, ITI TF-3 4.2.3.2.28) and eventCodeList (e.g. XDS-I.b's
    # modalities): read from the DocumentReference by :func:`reference_ids_of`, :func:`events_of`
    reference_ids: tuple[str, ...] = ()
    event_codes: tuple[XdsCode, ...] = ()


@dataclass(frozen=True)
class XdsUpdate:
    """One ITI-57 *Update Document Set* of a document the DMP holds: a new version of its
    metadata (``new_status`` is None; ``doc.entry_uuid`` is the new version's entryUUID,
    ``logical_id`` the document's logicalId, ``previous_version`` the DMP's latest version), or
    a change of the availability status of its latest version (``doc.entry_uuid``) from
    Approved to ``new_status``. ``doc`` also gives the SubmissionSet's metadata."""

    doc: XdsDocument
    logical_id: str
    previous_version: int
    new_status: str | None = None

    @property
    def evidence(self) -> str:
        """What an answer names when the DMP already holds the update (see ``dmp.classify``):
        the new status, or the new version's entryUUID."""
        return self.new_status or self.doc.entry_uuid


@dataclass(frozen=True)
class XdsSignature:
    """The signature document of a submission set (:mod:`enrs.documents.xades`): its
    uniqueId, entryUUID, signing time and bytes (a ``ds:Signature``, ``text/xml``)."""

    unique_id: str
    entry_uuid: str
    signed_at: datetime
    content: bytes


# The signature document of a submission set (IHE DSG, as the DMP's kit classifies it)
SIGNATURE_CLASS = XdsCode("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN", "Digital Signature")
SIGNATURE_TYPE = XdsCode("E1762", "ASTM", "Full Document")
SIGNATURE_FORMAT = XdsCode("http://www.w3.org/2000/09/xmldsig#", "URN", "Default Signature Style")
SIGNATURE_EVENT = XdsCode("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12", "Source")
SIGNATURE_CONFIDENTIALITY = (
    XdsCode("N", "2.16.840.1.113883.5.25", "Normal"),
    XdsCode("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient"),
    XdsCode("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué aux professionnels de santé"),
)


@dataclass(frozen=True)
class RegistryError:
    """One ``rs:RegistryError`` of a RegistryResponse."""

    code: str
    context: str
    severity: Literal["Error", "Warning"]
    location: str = ""


@dataclass(frozen=True)
class RegistryResult:
    """A RegistryResponse: its status and its errors and warnings."""

    status: Literal["Success", "PartialSuccess", "Failure"]
    errors: tuple[RegistryError, ...] = ()


class SoapFault(Exception):
    """The answer is a SOAP 1.2 Fault: ``code`` (``Sender``, ``Receiver``…, without prefix),
    ``subcodes`` (qualified names as written) and the reason text."""

    def __init__(self, code: str, subcodes: tuple[str, ...], reason: str) -> None:
        super().__init__(f"SOAP fault {code} {'/'.join(subcodes)}: {reason}".strip())
        self.code = code
        self.subcodes = subcodes
        self.reason = reason


class UnreadableResponse(Exception):
    """The answer is neither a RegistryResponse nor a SOAP Fault."""


# --- values in their XDS forms ------------------------------------------------------------


def xds_time(moment: datetime) -> str:
    """``YYYYMMDDhhmmss`` in UTC (XDS DTM); a naive time is refused, its zone unknown."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidXdsDocument(f"time {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def hl7_escape(value: str) -> str:
    """An HL7 v2 component value with its delimiters escaped (``^`` → ``\\S\\`` …)."""
    escapes = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
    return "".join(escapes.get(char, char) for char in value)


def patient_cx(ins: str, oid: str) -> str:
    """The INS as the XDS ``patientId`` CX: ``{INS}^^^&{OID}&ISO^NH``."""
    return f"{ins}^^^&{oid}&ISO^NH"


def author_person_xcn(author: XdsAuthor) -> str:
    """``8{RPPS}^FAMILY^Given^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS`` (no id: the names only)."""
    names = f"{hl7_escape(author.family)}^{hl7_escape(author.given)}"
    if author.rpps is None:
        return f"^{names}"
    return f"8{author.rpps}^{names}^^^^^^&{ID_NAT_PS_OID}&ISO^D^^^IDNPS"


def author_institution_xon(author: XdsAuthor) -> str:
    """``Name^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1{FINESS}``."""
    name = hl7_escape(author.institution_name)
    return f"{name}^^^^^&{ID_NAT_ST_OID}&ISO^IDNST^^^1{author.institution_finess}"


def coded_slot_value(code: XdsCode) -> str:
    """``code^display^OID``, the CI-SIS form of ``authorRole`` and ``authorSpecialty``."""
    return f"{hl7_escape(code.code)}^{hl7_escape(code.display)}^{code.scheme_oid}"


def xdm_file_name(doc: XdsDocument) -> str:
    """The document's file name in the XDM subset (ISO 9660 8.3): ``DOC0001.PDF``."""
    return f"DOC0001.{XDM_EXTENSIONS.get(doc.mime_type, 'BIN')}"


def check(doc: XdsDocument) -> None:
    """Raise :class:`InvalidXdsDocument` naming every attribute that cannot be emitted."""
    problems = list(_problems(doc))
    if problems:
        raise InvalidXdsDocument("; ".join(problems))


def _problems(doc: XdsDocument) -> Iterable[str]:
    for name in ("entry_uuid", "replaces"):
        value = getattr(doc, name)
        if value is not None and not _ENTRY_UUID_RE.match(value):
            yield f"{name} {value!r} is not a lower-case urn:uuid"
    if not _UNIQUE_ID_RE.match(doc.unique_id) or len(doc.unique_id) > 128:
        yield f"unique_id {doc.unique_id!r} is not an OID (or OID^extension)"
    for name in ("submission_unique_id", "source_id"):
        if not _OID_RE.match(getattr(doc, name)) or len(getattr(doc, name)) > 64:
            yield f"{name} {getattr(doc, name)!r} is not an OID"
    if doc.patient_ins_oid not in INS_OIDS:
        yield f"patient_ins_oid {doc.patient_ins_oid!r} is not an INS OID"
    if not _INS_RE.match(doc.patient_ins):
        yield "patient_ins is not a 15-character NIR or NIA"
    if doc.source_patient_id is not None and not _CX_RE.match(doc.source_patient_id):
        yield f"source_patient_id {doc.source_patient_id!r} is not a CX id^^^&OID&ISO^TYPE"
    if doc.author.rpps is not None and not _RPPS_RE.match(doc.author.rpps):
        yield "author.rpps is not an 11-digit RPPS number"
    if not _FINESS_RE.match(doc.author.institution_finess):
        yield "author.institution_finess is not a FINESS number"
    if not doc.confidentiality:
        yield "confidentiality needs at least one code"
    for code in _codes(doc):
        if not code.code or not code.display or not _OID_RE.match(code.scheme_oid):
            yield f"code {code.code!r} of {code.scheme_oid!r}: a code, a display and an OID"
    if not _MIME_RE.match(doc.mime_type):
        yield f"mime_type {doc.mime_type!r} is not a media type"
    if not _SHA1_RE.match(doc.sha1_hex):
        yield "sha1_hex is not 40 lower-case hexadecimal digits"
    elif hashlib.sha1(doc.content, usedforsecurity=False).hexdigest() != doc.sha1_hex:
        yield "sha1_hex is not the SHA-1 of the content"
    if doc.size != len(doc.content):
        yield f"size {doc.size} is not the content's length {len(doc.content)}"
    if not doc.title.strip():
        yield "title is empty"
    for name in ("creation_time", "service_start", "service_stop", "submission_time"):
        moment = getattr(doc, name)
        if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
            yield f"{name} has no time zone"


def _codes(doc: XdsDocument) -> list[XdsCode]:
    codes = [
        doc.class_code,
        doc.type_code,
        doc.format_code,
        *doc.confidentiality,
        doc.healthcare_facility_type,
        doc.practice_setting,
        doc.content_type_code,
    ]
    authors = [c for c in (doc.author.role, doc.author.specialty) if c is not None]
    return codes + authors + list(doc.event_codes)


# --- referenceIdList and eventCodeList from the DocumentReference (MHD's context) -----------

REFERENCE_ID_LIST = "urn:ihe:iti:xds:2013:referenceIdList"
STUDY_INSTANCE_UID = "urn:ihe:iti:xds:2016:studyInstanceUID"
ACCESSION = "urn:ihe:iti:xds:2013:accession"
# FHIR code systems of eventCodeList and their XDS codingScheme.
EVENT_SYSTEMS = {"http://dicom.nema.org/resources/ontology/DCM": "1.2.840.10008.2.16.4"}
_CXI_FORBIDDEN = re.compile(r"[\^&~|]")


def reference_ids_of(resource: dict[str, Any]) -> tuple[str, ...]:
    """The referenceIdList CXi values of a DocumentReference's ``context.related`` identifiers
    whose type is an XDS identifier type: a Study Instance UID (``urn:oid:`` value, no
    assigning authority) or an accession number (its ``urn:oid:`` system the authority)."""
    found: list[str] = []
    for related in (resource.get("context") or {}).get("related") or []:
        ident = related.get("identifier") or {} if isinstance(related, dict) else {}
        codings = (ident.get("type") or {}).get("coding") or []
        kind = next((c.get("code") for c in codings if isinstance(c, dict)), None)
        value = str(ident.get("value") or "").removeprefix("urn:oid:")
        if not value or _CXI_FORBIDDEN.search(value):
            continue
        if kind == STUDY_INSTANCE_UID:
            found.append(f"{value}^^^^{kind}")
        elif kind == ACCESSION:
            authority = str(ident.get("system") or "").removeprefix("urn:oid:")
            if _OID_RE.match(authority):
                found.append(f"{value}^^^&{authority}&ISO^{kind}")
    return tuple(found)


def events_of(resource: dict[str, Any]) -> tuple[XdsCode, ...]:
    """The eventCodeList of a DocumentReference's ``context.event`` codings of a known system."""
    found: list[XdsCode] = []
    for concept in (resource.get("context") or {}).get("event") or []:
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            scheme = EVENT_SYSTEMS.get(str(coding.get("system")))
            if scheme and coding.get("code"):
                code = str(coding["code"])
                found.append(XdsCode(code, scheme, str(coding.get("display") or code)))
    return tuple(found)


# --- the ebRIM SubmitObjectsRequest -----------------------------------------------------------


def _rim(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{RIM}}}{tag}", attributes)


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = _rim(parent, "Slot", name=name)
    value_list = _rim(slot, "ValueList")
    for value in values:
        _rim(value_list, "Value").text = value


def _name(parent: etree._Element, text: str, lang: str | None = None) -> None:
    localized = _rim(_rim(parent, "Name"), "LocalizedString", value=text)
    if lang:
        localized.set(XML_LANG, lang)


class _Ids:
    """Symbolic ids for the classifications and external identifiers of one request."""

    def __init__(self) -> None:
        self.count = 0

    def next(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count:02d}"


def _classification(
    parent: etree._Element, ids: _Ids, scheme: str, owner: str, code: XdsCode
) -> None:
    node = _rim(
        parent,
        "Classification",
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation=code.code,
        id=ids.next("cl"),
        objectType=CLASSIFICATION_OBJECT_TYPE,
    )
    _slot(node, "codingScheme", code.scheme_oid)
    _name(node, code.display)


def _author(parent: etree._Element, ids: _Ids, scheme: str, owner: str, author: XdsAuthor) -> None:
    node = _rim(
        parent,
        "Classification",
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation="",
        id=ids.next("cl"),
        objectType=CLASSIFICATION_OBJECT_TYPE,
    )
    _slot(node, "authorPerson", author_person_xcn(author))
    _slot(node, "authorInstitution", author_institution_xon(author))
    if author.role is not None:
        _slot(node, "authorRole", coded_slot_value(author.role))
    if author.specialty is not None:
        _slot(node, "authorSpecialty", coded_slot_value(author.specialty))


def _external_id(
    parent: etree._Element, ids: _Ids, scheme: str, owner: str, value: str, name: str
) -> None:
    node = _rim(
        parent,
        "ExternalIdentifier",
        identificationScheme=scheme,
        registryObject=owner,
        value=value,
        id=ids.next("ei"),
        objectType=EXTERNAL_IDENTIFIER_OBJECT_TYPE,
    )
    _name(node, name)


def _document_entry(
    objects: etree._Element, ids: _Ids, doc: XdsDocument, uri: str | None
) -> etree._Element:
    entry = _rim(
        objects,
        "ExtrinsicObject",
        id=doc.entry_uuid,
        mimeType=doc.mime_type,
        objectType=DOCUMENT_ENTRY_STABLE,
    )
    _slot(entry, "creationTime", xds_time(doc.creation_time))
    _slot(entry, "hash", doc.sha1_hex)
    _slot(entry, "languageCode", doc.language)
    if doc.service_start is not None:
        _slot(entry, "serviceStartTime", xds_time(doc.service_start))
    if doc.service_stop is not None:
        _slot(entry, "serviceStopTime", xds_time(doc.service_stop))
    _slot(entry, "size", str(doc.size))
    if doc.source_patient_id is not None:
        _slot(entry, "sourcePatientId", doc.source_patient_id)
    if doc.source_patient_info is not None:
        info = doc.source_patient_info
        _slot(
            entry,
            "sourcePatientInfo",
            f"PID-5|{hl7_escape(info.family)}^{hl7_escape(info.given)}^^^^^L",
            f"PID-7|{info.birth_date.strftime('%Y%m%d')}",
            f"PID-8|{info.gender}",
        )
    if uri is not None:
        _slot(entry, "URI", uri)
    if doc.reference_ids:
        _slot(entry, REFERENCE_ID_LIST, *doc.reference_ids)
    _name(entry, doc.title, doc.language)
    owner = doc.entry_uuid
    _author(entry, ids, DE_AUTHOR, owner, doc.author)
    _classification(entry, ids, DE_CLASS_CODE, owner, doc.class_code)
    for code in doc.confidentiality:
        _classification(entry, ids, DE_CONFIDENTIALITY_CODE, owner, code)
    for event in doc.event_codes:
        _classification(entry, ids, DE_EVENT_CODE, owner, event)
    _classification(entry, ids, DE_FORMAT_CODE, owner, doc.format_code)
    _classification(
        entry, ids, DE_HEALTHCARE_FACILITY_TYPE_CODE, owner, doc.healthcare_facility_type
    )
    _classification(entry, ids, DE_PRACTICE_SETTING_CODE, owner, doc.practice_setting)
    _classification(entry, ids, DE_TYPE_CODE, owner, doc.type_code)
    patient = patient_cx(doc.patient_ins, doc.patient_ins_oid)
    _external_id(entry, ids, DE_PATIENT_ID, owner, patient, "XDSDocumentEntry.patientId")
    _external_id(entry, ids, DE_UNIQUE_ID, owner, doc.unique_id, "XDSDocumentEntry.uniqueId")
    return entry


def _submission_set(objects: etree._Element, ids: _Ids, doc: XdsDocument) -> None:
    owner = SUBMISSION_SET_ID
    package = _rim(objects, "RegistryPackage", id=owner)
    _slot(package, "submissionTime", xds_time(doc.submission_time))
    _name(package, doc.title, doc.language)
    _author(package, ids, SS_AUTHOR, owner, doc.author)
    _classification(package, ids, SS_CONTENT_TYPE_CODE, owner, doc.content_type_code)
    patient = patient_cx(doc.patient_ins, doc.patient_ins_oid)
    _external_id(
        package, ids, SS_UNIQUE_ID, owner, doc.submission_unique_id, "XDSSubmissionSet.uniqueId"
    )
    _external_id(package, ids, SS_SOURCE_ID, owner, doc.source_id, "XDSSubmissionSet.sourceId")
    _external_id(package, ids, SS_PATIENT_ID, owner, patient, "XDSSubmissionSet.patientId")
    _rim(
        objects,
        "Classification",
        classifiedObject=owner,
        classificationNode=SUBMISSION_SET_NODE,
        id=ids.next("cl"),
        objectType=CLASSIFICATION_OBJECT_TYPE,
    )


def _has_member(
    objects: etree._Element, doc: XdsDocument, association_id: str = ASSOCIATION_ID
) -> etree._Element:
    """The submission set's ``HasMember`` association to the document (status Original)."""
    association = _rim(
        objects,
        "Association",
        associationType=HAS_MEMBER,
        sourceObject=SUBMISSION_SET_ID,
        targetObject=doc.entry_uuid,
        id=association_id,
        objectType=ASSOCIATION_OBJECT_TYPE,
    )
    _slot(association, "SubmissionSetStatus", "Original")
    return association


def _signature_entry(
    objects: etree._Element, ids: _Ids, doc: XdsDocument, signature: XdsSignature
) -> None:
    """The DocumentEntry of the submission set's signature, its ``HasMember`` and the
    ``signs`` association from it to the submission set (IHE DSG, the DMP's kit)."""
    owner = signature.entry_uuid
    entry = _rim(
        objects, "ExtrinsicObject", id=owner, mimeType="text/xml", objectType=DOCUMENT_ENTRY_STABLE
    )
    signed_at = xds_time(signature.signed_at)
    patient = patient_cx(doc.patient_ins, doc.patient_ins_oid)
    _slot(entry, "creationTime", signed_at)
    _slot(entry, "hash", hashlib.sha1(signature.content, usedforsecurity=False).hexdigest())
    _slot(entry, "languageCode", "art")  # an artificial language: XML
    _slot(entry, "legalAuthenticator", author_person_xcn(doc.author))
    _slot(entry, "serviceStartTime", signed_at)
    _slot(entry, "serviceStopTime", signed_at)
    _slot(entry, "size", str(len(signature.content)))
    _slot(entry, "sourcePatientId", patient)
    _name(entry, "Source")
    _author(entry, ids, DE_AUTHOR, owner, doc.author)
    _classification(entry, ids, DE_CLASS_CODE, owner, SIGNATURE_CLASS)
    for code in SIGNATURE_CONFIDENTIALITY:
        _classification(entry, ids, DE_CONFIDENTIALITY_CODE, owner, code)
    _classification(entry, ids, DE_EVENT_CODE, owner, SIGNATURE_EVENT)
    _classification(entry, ids, DE_FORMAT_CODE, owner, SIGNATURE_FORMAT)
    _classification(
        entry, ids, DE_HEALTHCARE_FACILITY_TYPE_CODE, owner, doc.healthcare_facility_type
    )
    _classification(entry, ids, DE_PRACTICE_SETTING_CODE, owner, doc.practice_setting)
    _classification(entry, ids, DE_TYPE_CODE, owner, SIGNATURE_TYPE)
    _external_id(entry, ids, DE_PATIENT_ID, owner, patient, "XDSDocumentEntry.patientId")
    _external_id(entry, ids, DE_UNIQUE_ID, owner, signature.unique_id, "XDSDocumentEntry.uniqueId")
    member = _rim(
        objects,
        "Association",
        associationType=HAS_MEMBER,
        sourceObject=SUBMISSION_SET_ID,
        targetObject=owner,
        id=SIGNATURE_MEMBER_ID,
        objectType=ASSOCIATION_OBJECT_TYPE,
    )
    _slot(member, "SubmissionSetStatus", "Original")
    _rim(
        objects,
        "Association",
        associationType=SIGNS,
        sourceObject=owner,
        targetObject=SUBMISSION_SET_ID,
        id=SIGNS_ID,
        objectType=ASSOCIATION_OBJECT_TYPE,
    )


def submit_objects_request(
    doc: XdsDocument, *, uri: str | None = None, signature: XdsSignature | None = None
) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of ``doc`` (``uri``: the XDM ``URI`` slot), with the
    submission set's ``signature`` document when one is given."""
    check(doc)
    ids = _Ids()
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    objects = _rim(request, "RegistryObjectList")
    _submission_set(objects, ids, doc)
    _document_entry(objects, ids, doc, uri)
    _has_member(objects, doc)
    if signature is not None:
        _signature_entry(objects, ids, doc, signature)
    if doc.replaces is not None:
        _rim(
            objects,
            "Association",
            associationType=RPLC,
            sourceObject=doc.entry_uuid,
            targetObject=doc.replaces,
            id=REPLACEMENT_ID,
            objectType=ASSOCIATION_OBJECT_TYPE,
        )
    return request


def submit_objects_request_of_set(
    submission: XdsDocument, docs: Sequence[XdsDocument], uris: Sequence[str]
) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of several documents of one patient (an XDM subset):
    the SubmissionSet from ``submission``'s submission fields, a DocumentEntry per document
    with its ``URI`` slot, and one ``HasMember`` each."""
    if not docs or len(docs) != len(uris):
        raise ValueError("a submission set has at least one document, each with its URI")
    patients = {(doc.patient_ins, doc.patient_ins_oid) for doc in (submission, *docs)}
    if len(patients) > 1:
        raise InvalidXdsDocument("the documents of one submission set name several patients")
    for doc in docs:
        check(doc)
    ids = _Ids()
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    objects = _rim(request, "RegistryObjectList")
    _submission_set(objects, ids, submission)
    for doc, uri in zip(docs, uris, strict=True):
        _document_entry(objects, ids, doc, uri)
    for number, doc in enumerate(docs, start=1):
        _has_member(objects, doc, f"Association{number:02d}")
    return request


# --- ITI-41: SOAP 1.2 envelope in an MTOM/XOP package --------------------------------------


def _addressing(
    envelope: etree._Element, action: str, to: str, extra: Iterable[etree._Element] = ()
) -> None:
    """The WS-Addressing header of a request (Action and To must be understood), preceded by
    the ``extra`` header elements (a ``wsse:Security`` carrying the VIHF)."""
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    header.extend(extra)
    must = {f"{{{SOAP}}}mustUnderstand": "true"}
    etree.SubElement(header, f"{{{WSA}}}Action", must).text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = uuid.uuid4().urn
    reply_to = etree.SubElement(header, f"{{{WSA}}}ReplyTo")
    etree.SubElement(reply_to, f"{{{WSA}}}Address").text = WSA_ANONYMOUS
    etree.SubElement(header, f"{{{WSA}}}To", must).text = to


def _envelope(
    doc: XdsDocument,
    to: str,
    attachments: Sequence[tuple[str, str]],
    header: Iterable[etree._Element],
    signature: XdsSignature | None,
) -> bytes:
    """The SOAP envelope; ``attachments``: (entryUUID, Content-ID) of each attached part."""
    envelope = etree.Element(
        f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "wsa": WSA, "xdsb": XDSB, "xop": XOP}
    )
    _addressing(envelope, ITI_41_ACTION, to, header)
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    provide = etree.SubElement(body, f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest")
    provide.append(submit_objects_request(doc, signature=signature))
    for entry_uuid, cid in attachments:
        document = etree.SubElement(provide, f"{{{XDSB}}}Document", id=entry_uuid)
        etree.SubElement(document, f"{{{XOP}}}Include", href=f"cid:{cid}")
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def _part(boundary: str, headers: list[tuple[str, str]], payload: bytes) -> bytes:
    lines = [f"--{boundary}", *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("ascii") + payload + b"\r\n"


def provide_and_register(
    doc: XdsDocument,
    *,
    to: str,
    header: Iterable[etree._Element] = (),
    signature: XdsSignature | None = None,
) -> tuple[bytes, str]:
    """IHE ITI-41 *Provide and Register Document Set-b* for ``doc``, addressed to the endpoint
    ``to`` (``wsa:To``), with the extra SOAP ``header`` elements (the VIHF) and the submission
    set's ``signature`` document: the HTTP body (a ``multipart/related`` MTOM/XOP package, the
    SOAP 1.2 envelope first, then each document as a binary part it references) and its
    ``Content-Type``.

    Raises :class:`InvalidXdsDocument` when ``doc`` cannot make valid metadata."""
    token = uuid.uuid4().hex
    root_cid = f"root.{token}@enrs"
    parts = [(doc.entry_uuid, f"doc1.{token}@enrs", doc.mime_type, doc.content)]
    if signature is not None:
        parts.append((signature.entry_uuid, f"doc2.{token}@enrs", "text/xml", signature.content))
    attachments = [(entry_uuid, cid) for entry_uuid, cid, _, _ in parts]
    envelope = _envelope(doc, to, attachments, header, signature)
    boundary = f"MIMEBoundary_{token}"
    while any(boundary.encode("ascii") in chunk for chunk in (envelope, *(p[3] for p in parts))):
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"  # pragma: no cover - 2**-122 odds
    soap_type = (
        f'application/xop+xml; charset=UTF-8; type="application/soap+xml"; action="{ITI_41_ACTION}"'
    )
    body = _part(
        boundary,
        [
            ("Content-Type", soap_type),
            ("Content-Transfer-Encoding", "binary"),
            ("Content-ID", f"<{root_cid}>"),
        ],
        envelope,
    )
    for _, cid, mime_type, content in parts:
        body += _part(
            boundary,
            [
                ("Content-Type", mime_type),
                ("Content-Transfer-Encoding", "binary"),
                ("Content-ID", f"<{cid}>"),
            ],
            content,
        )
    body += f"--{boundary}--\r\n".encode("ascii")
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<{root_cid}>"; start-info="application/soap+xml"; action="{ITI_41_ACTION}"'
    )
    return body, content_type


# --- ITI-57: XDS Metadata Update, plain SOAP 1.2 ------------------------------------------


def update_objects_request(update: XdsUpdate) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of an ITI-57 update (ITI TF-2b 3.57.4.1.3): the
    SubmissionSet and either the new version of the DocumentEntry (same ``lid`` and
    uniqueId, a new entryUUID) with the ``HasMember`` association carrying
    ``SubmissionSetStatus`` and ``PreviousVersion``, or an ``UpdateAvailabilityStatus``
    association from the SubmissionSet to the latest version, with ``OriginalStatus`` Approved
    and ``NewStatus``."""
    doc = update.doc
    check(doc)
    if not _ENTRY_UUID_RE.match(update.logical_id) or update.previous_version < 1:
        raise InvalidXdsDocument("an update needs the logicalId and the previous version")
    ids = _Ids()
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    objects = _rim(request, "RegistryObjectList")
    _submission_set(objects, ids, doc)
    if update.new_status is not None:
        association = _rim(
            objects,
            "Association",
            associationType=UPDATE_AVAILABILITY_STATUS,
            sourceObject=SUBMISSION_SET_ID,
            targetObject=doc.entry_uuid,
            id=ASSOCIATION_ID,
            objectType=ASSOCIATION_OBJECT_TYPE,
        )
        _slot(association, "OriginalStatus", STATUS_APPROVED)
        _slot(association, "NewStatus", update.new_status)
        return request
    _document_entry(objects, ids, doc, None).set("lid", update.logical_id)
    association = _has_member(objects, doc)
    _slot(association, "PreviousVersion", str(update.previous_version))
    return request


def update_document_set(
    update: XdsUpdate, *, to: str, header: Iterable[etree._Element] = ()
) -> tuple[bytes, str]:
    """IHE ITI-57 *Update Document Set* for ``update``, addressed to ``to`` (``wsa:To``), with
    the extra SOAP ``header`` elements (the VIHF): the HTTP body (a SOAP 1.2 envelope, no
    attachment) and its ``Content-Type``. The answer is a RegistryResponse, read by
    :func:`parse_registry_response`.

    Raises :class:`InvalidXdsDocument` when the update cannot make valid metadata."""
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "wsa": WSA})
    _addressing(envelope, ITI_57_ACTION, to, header)
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(update_objects_request(update))
    body = bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))
    return body, f'application/soap+xml; charset=UTF-8; action="{ITI_57_ACTION}"'


# --- XDM (ITI-32 media): a ZIP ----------------------------------------------------------------


def _readme(doc: XdsDocument) -> bytes:
    lines = [
        "IHE XDM - Cross-Enterprise Document Media Interchange",
        "",
        f"Created by: ENRS (repository {doc.source_id})",
        f"Organisation: {doc.author.institution_name} (FINESS {doc.author.institution_finess})",
        f"Submission set: {doc.submission_unique_id}, {xds_time(doc.submission_time)} UTC",
        "",
        "Contents:",
        "  INDEX.HTM                      index of this package",
        "  README.TXT                     this file",
        f"  {XDM_SUBSET}/METADATA.XML  XDS metadata (ebRIM SubmitObjectsRequest)",
        f"  {XDM_SUBSET}/{xdm_file_name(doc)}   {doc.title}",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _index(doc: XdsDocument) -> bytes:
    xhtml = "http://www.w3.org/1999/xhtml"
    html = etree.Element(f"{{{xhtml}}}html", nsmap={None: xhtml})
    head = etree.SubElement(html, f"{{{xhtml}}}head")
    etree.SubElement(head, f"{{{xhtml}}}title").text = "IHE XDM"
    body = etree.SubElement(html, f"{{{xhtml}}}body")
    etree.SubElement(body, f"{{{xhtml}}}h1").text = doc.author.institution_name
    items = etree.SubElement(body, f"{{{xhtml}}}ul")
    for href, text in (
        ("README.TXT", "README.TXT"),
        (f"{XDM_SUBSET}/{xdm_file_name(doc)}", doc.title),
        (f"{XDM_SUBSET}/METADATA.XML", "METADATA.XML"),
    ):
        link = etree.SubElement(etree.SubElement(items, f"{{{xhtml}}}li"), f"{{{xhtml}}}a")
        link.set("href", href)
        link.text = text
    return bytes(etree.tostring(html, xml_declaration=True, encoding="UTF-8"))


def xdm_package(doc: XdsDocument) -> bytes:
    """An IHE XDM package (ITI TF-3 §3.32 media, as a ZIP) of ``doc``: ``README.TXT``,
    ``INDEX.HTM``, ``IHE_XDM/SUBSET01/METADATA.XML`` (the same SubmitObjectsRequest as ITI-41,
    with the ``URI`` slot naming the document's file) and ``IHE_XDM/SUBSET01/DOC0001.<EXT>``.

    Entries are dated with the submission time: the same document gives the same bytes."""
    file_name = xdm_file_name(doc)
    metadata = etree.tostring(
        submit_objects_request(doc, uri=file_name), xml_declaration=True, encoding="UTF-8"
    )
    stamp = doc.submission_time.astimezone(UTC).timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (
            ("README.TXT", _readme(doc)),
            ("INDEX.HTM", _index(doc)),
            (f"{XDM_SUBSET}/METADATA.XML", bytes(metadata)),
            (f"{XDM_SUBSET}/{file_name}", doc.content),
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


# --- reading the answer -----------------------------------------------------------------------


def _root_part(body: bytes, content_type: str) -> bytes:
    """The SOAP envelope of an answer: the body itself, or the MTOM package's root part (its
    ``start`` part, else the first)."""
    if not content_type.lower().startswith("multipart/"):
        return body
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise UnreadableResponse("a multipart answer without parts")
    parts = list(message.iter_parts())
    start = message.get_param("start", header="content-type")
    chosen = next(
        (p for p in parts if isinstance(start, str) and p.get("Content-ID") == start),
        parts[0] if parts else None,
    )
    payload = chosen.get_payload(decode=True) if chosen is not None else None
    if not isinstance(payload, bytes):
        raise UnreadableResponse("the multipart answer has no root part")
    return payload


_STATUSES: dict[str, Literal["Success", "PartialSuccess", "Failure"]] = {
    "Success": "Success",
    "PartialSuccess": "PartialSuccess",
    "Failure": "Failure",
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_registry_response(body: bytes, content_type: str) -> RegistryResult:
    """The ``rs:RegistryResponse`` of an ITI-41 answer (a SOAP 1.2 envelope, bare or as the root
    of an MTOM package). Raises :class:`SoapFault` for a SOAP Fault and
    :class:`UnreadableResponse` for anything else."""
    try:
        root = etree.fromstring(_root_part(body, content_type), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnreadableResponse(f"not XML: {exc}") from None
    fault = root.find(f".//{{{SOAP}}}Fault")
    if fault is not None:
        code = fault.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Value", "").strip()
        subcodes = tuple(
            (value.text or "").strip()
            for value in fault.iterfind(f".//{{{SOAP}}}Subcode/{{{SOAP}}}Value")
        )
        reason = " ".join(t.strip() for t in fault.xpath(".//*[local-name()='Text']/text()"))
        raise SoapFault(code.rpartition(":")[2], subcodes, reason)
    response = (
        root
        if root.tag == f"{{{RS}}}RegistryResponse"
        else root.find(f".//{{{RS}}}RegistryResponse")
    )
    if response is None:
        raise UnreadableResponse(f"no RegistryResponse in {etree.QName(root).localname}")
    status = _STATUSES.get(response.get("status", "").rpartition(":")[2])
    if status is None:
        raise UnreadableResponse(f"unknown RegistryResponse status {response.get('status')!r}")
    errors = tuple(
        RegistryError(
            code=error.get("errorCode", ""),
            context=error.get("codeContext", "") or (error.text or "").strip(),
            severity="Warning" if error.get("severity", "").endswith("Warning") else "Error",
            location=error.get("location", ""),
        )
        for error in response.iterfind(f".//{{{RS}}}RegistryError")
    )
    return RegistryResult(status=status, errors=errors)
