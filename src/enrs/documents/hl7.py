"""Documents by HL7 v2.5 over the platform's MLLP listener: MDM^T02 (original document
notification and content), MDM^T10 (replace notification and content: a T02 whose TXA-13 names
the replaced version), MDM^T11 (cancel notification: the document TXA-12 names withdrawn, as
``entered-in-error``, by its author's structure) and ORU^R01 (a report as an observation
result), acknowledged like
every message (AA filed; AE refused with ERR naming the segment and field; AR for what the
sender should resend: the store or the database unavailable, ERR-3 207).

What the repository reads (CI-SIS "transmission de documents en HL7 v2"):
- PID-3: the patient, by an identifier of a domain the sender may write (the listener checks
  it, as for ADT) or by its INS, resolved through the identity server;
- the document: the first OBX of type ED, OBX-5 = source ^ type of data ^ subtype (``PDF``,
  ``XML``, ``TEXT``, ``JPEG``, ``PNG``, ``TIFF``) ^ encoding (``Base64``) ^ data;
- the metadata: from the CDA header when the document is a CDA R2 (type, confidentiality,
  dates, author, facility type, practice setting; class code by the CI-SIS correspondence
  ASS_X04 from the type, format code by ASS_A11 from the CDA model or ASS_12 from the body's
  media type); for another document, the type from OBX-3 (LOINC), the author from TXA-5
  (MDM) or OBR-32 (ORU), the time from TXA-4 / OBR-7, the confidentiality ``N``, and the
  facility type and practice setting from OBX segments ``FACILITY_TYPE`` and
  ``PRACTICE_SETTING`` (CE, OBX-5 code ^ display ^ system);
- the DMP's visibility flags: OBX CE ``MASQUE_PS``, ``INVISIBLE_PATIENT``,
  ``INVISIBLE_REPRESENTANTS_LEGAUX`` (JDV_J08) with OBX-5.1 ``Y``;
- the document's uniqueId: TXA-12.1 (MDM), else the CDA's id, else OBR-3.1; TXA-13.1 (MDM, an
  update of a previous document) names the uniqueId of the version it replaces.

Each message is filed as one SubmissionSet (uniqueId: the sender's OID and MSH-10) through
:func:`enrs.documents.service.file_submission`, with the same checks as ITI-65.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.documents import cda, correspondence, mhd, repository, service
from enrs.documents.access import Reader
from enrs.documents.mhd import InvalidSubmission, ProvidedDocument, Submission
from enrs.documents.terminology import Binding, Concept, Terminology
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import Matcher
from enrs.identity.pam import Handled, Route, Sender, Touched, Work
from enrs.kit.errors import EnrsError, Forbidden
from enrs.kit.hl7v2 import Message, Segment, V2Error
from enrs.kit.storage import open_storage
from enrs.kit.storage.base import BlobStorage
from enrs.settings import Settings

SUBTYPES = {
    "PDF": "application/pdf",
    "XML": "text/xml",
    "CDA": "text/xml",
    "HL7-CDA": "text/xml",
    "TEXT": "text/plain",
    "PLAIN": "text/plain",
    "RTF": "text/rtf",
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "TIFF": "image/tiff",
}
LOINC_SYSTEMS = frozenset({"LN", "LOINC", "2.16.840.1.113883.6.1"})


def routes(settings: Settings) -> dict[tuple[str, str], Route]:
    """The listener's routes for documents, with this process's blob storage."""
    storage = open_storage(settings)
    prepare = partial(_prepare, storage, settings.max_document_bytes, ZoneInfo(settings.timezone))
    cancel = partial(_prepare_cancel, settings.max_document_bytes)
    return {
        ("MDM", "T02"): Route(prepare, True, "DocumentReference"),
        ("MDM", "T10"): Route(partial(_needs_parent, prepare), True, "DocumentReference"),
        ("MDM", "T11"): Route(cancel, True, "DocumentReference"),
        ("ORU", "R01"): Route(prepare, True, "DocumentReference"),
    }


def _error(code: int, text: str, where: str) -> V2Error:
    return V2Error(code, text, ack="AE", location=where)


def _ed(msg: Message) -> tuple[int, Segment]:
    obxs = [s for s in msg.segments if s.name == "OBX"]
    for index, obx in enumerate(obxs, start=1):
        if obx.get(2).upper() == "ED":
            return index, obx
    raise V2Error(100, "no OBX of type ED carries the document", ack="AE", location="OBX")


def _content(index: int, obx: Segment, max_bytes: int) -> tuple[bytes, str]:
    where = f"OBX^{index}^5"
    subtype, encoding = obx.get(5, 3).upper(), obx.get(5, 4).upper()
    media = SUBTYPES.get(subtype) or (subtype.lower() if "/" in subtype else None)
    if media not in mhd.ACCEPTED_TYPES:
        raise _error(102, f"OBX-5.3: document subtype {subtype!r} is not accepted", f"{where}^1^3")
    if encoding not in ("BASE64", "B64"):
        raise _error(102, f"OBX-5.4: encoding {encoding!r}: Base64 is expected", f"{where}^1^4")
    raw = obx.get(5, 5)
    if len(raw) * 3 // 4 > max_bytes + 3:
        raise _error(102, f"OBX-5.5: a document is at most {max_bytes} bytes", f"{where}^1^5")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise _error(102, "OBX-5.5: the document is not valid base64", f"{where}^1^5") from None
    if not data:
        raise _error(101, "OBX-5.5: the document is empty", f"{where}^1^5")
    try:
        mhd.sniff(data, media, "OBX-5.5")
    except InvalidSubmission as exc:
        raise _error(102, exc.message, f"{where}^1^5") from None
    return data, media


def _flags(msg: Message) -> frozenset[str]:
    return frozenset(
        s.get(3).upper()
        for s in msg.segments
        if s.name == "OBX"
        and s.get(3).upper() in mhd.VISIBILITY_CODES
        and s.get(5).upper() in ("Y", "O", "TRUE")
    )


def _obx_coded(msg: Message, code: str) -> tuple[str, str] | None:
    """(system, code) of an OBX CE metadata segment ``code`` (OBX-5: code ^ display ^ system)."""
    for seg in msg.segments:
        if seg.name == "OBX" and seg.get(3).upper() == code:
            return seg.get(5, 3), seg.get(5, 1)
    return None


def _ts(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return cda.parse_ts(value)
    except ValueError:
        return None


def _check(
    terms: Terminology, binding: Binding, system: str | None, code: str, where: str
) -> Concept:
    try:
        return terms.check(binding, system or None, code)
    except EnrsError as exc:
        raise _error(103, exc.message, where) from None


def _class(terms: Terminology, kind: Concept, where: str) -> Concept:
    """The XDS classCode the CI-SIS gives a document type (ASS_X04)."""
    target = correspondence.class_of_type(kind.system, kind.code)
    if target is None:
        raise _error(103, f"type {kind.code}: no class code in ASS_X04", where)
    return _check(terms, Binding.CLASS, target.system, target.code, where)


def _format(
    terms: Terminology, target: correspondence.Target | None, what: str, where: str
) -> Concept:
    if target is None:
        raise _error(103, f"no format code for {what} (ASS_A11, ASS_12)", where)
    return _check(terms, Binding.FORMAT, target.system, target.code, where)


def _rpps(xcn_id: str) -> str | None:
    value = xcn_id.strip()
    if len(value) == 12 and value.startswith("8"):
        value = value[1:]
    return value if value.isdigit() and len(value) == 11 else None


def meta_from_cda(
    terms: Terminology, header: cda.CdaDocument, media: str, flags: frozenset[str]
) -> dict[str, Any]:
    """A CDA document's repository metadata from its header (type, class, format, facility
    type, practice setting… checked against the terminology; V2Error 101 when missing). Also
    used for the CDA documents of MSSanté applicative mailboxes."""
    where = "OBX^1^5"
    kind = _check(
        terms, Binding.TYPE, f"urn:oid:{header.type_code.system_oid}", header.type_code.code, where
    )
    category = _class(terms, kind, where)
    if header.body_kind == "nonXMLBody":
        target = correspondence.format_of_media(header.body_media_type or "")
    else:
        target = correspondence.format_of_model(header.template_ids)
    fmt = _format(terms, target, "this CDA's model or body", where)
    if header.facility_type is None or header.practice_setting is None:
        raise _error(101, "the CDA header has no facility type or practice setting", where)
    author = header.authors[0] if header.authors else None
    return {
        "type": kind,
        "category": category,
        "format": fmt,
        "confidentiality": _check(
            terms,
            Binding.CONFIDENTIALITY,
            f"urn:oid:{header.confidentiality.system_oid}",
            header.confidentiality.code,
            where,
        ),
        "facility_type": _check(
            terms,
            Binding.FACILITY_TYPE,
            f"urn:oid:{header.facility_type.system_oid}",
            header.facility_type.code,
            where,
        ),
        "practice_setting": _check(
            terms,
            Binding.PRACTICE_SETTING,
            f"urn:oid:{header.practice_setting.system_oid}",
            header.practice_setting.code,
            where,
        ),
        "title": header.title,
        "created": header.effective_time,
        "period_start": header.service_start,
        "period_end": header.service_stop,
        "author_rpps": author.rpps if author is not None else None,
        "unique_id": header.document_id.unique_id,
        "visibility": flags,
        "language": header.language,
    }


def meta_from_xds(
    terms: Terminology,
    *,
    type_code: tuple[str, str] | None,
    format_code: tuple[str, str] | None,
    confidentiality: Sequence[tuple[str, str]],
    facility_type: tuple[str, str] | None,
    practice_setting: tuple[str, str] | None,
    media: str,
    author_xcn: str,
    created: datetime | None,
    title: str | None,
    language: str | None,
) -> dict[str, Any]:
    """The repository metadata of a document that is not a CDA from its XDS metadata (an
    IHE_XDM's DocumentEntry): codes as ``(code, code system OID)``, checked against the
    terminology as for a CDA (V2Error 101 when one is missing, 103 when unknown); the class
    from the type (ASS_X04); the format as given, else by the media type (ASS_12); the
    DMP's visibility codes among the confidentiality codes."""
    where = "METADATA.XML"

    def coded(binding: Binding, value: tuple[str, str] | None, what: str) -> Concept:
        if value is None or not value[0]:
            raise _error(101, f"the DocumentEntry has no {what}", where)
        return _check(terms, binding, f"urn:oid:{value[1]}", value[0], where)

    kind = coded(Binding.TYPE, type_code, "typeCode")
    if format_code is not None and format_code[0]:
        fmt = coded(Binding.FORMAT, format_code, "formatCode")
    else:
        fmt = _format(terms, correspondence.format_of_media(media), f"{media} documents", where)
    flags = frozenset(code for code, _ in confidentiality if code in mhd.VISIBILITY_CODES)
    levels = [item for item in confidentiality if item[0] not in mhd.VISIBILITY_CODES]
    return {
        "type": kind,
        "category": _class(terms, kind, where),
        "format": fmt,
        "confidentiality": coded(
            Binding.CONFIDENTIALITY, levels[0] if levels else None, "confidentialityCode"
        ),
        "facility_type": coded(Binding.FACILITY_TYPE, facility_type, "healthcareFacilityTypeCode"),
        "practice_setting": coded(
            Binding.PRACTICE_SETTING, practice_setting, "practiceSettingCode"
        ),
        "title": title or None,
        "created": created,
        "period_start": None,
        "period_end": None,
        "author_rpps": _rpps(author_xcn.split("^", 1)[0]),
        "unique_id": None,
        "visibility": flags,
        "language": language or None,
    }


def _from_segments(
    terms: Terminology, msg: Message, index: int, obx: Segment, flags: frozenset[str]
) -> dict[str, Any]:
    system = obx.get(3, 3).upper()
    if system not in LOINC_SYSTEMS:
        raise _error(
            103, f"OBX-3.3: the document type must be LOINC, not {system!r}", f"OBX^{index}^3"
        )
    kind = _check(terms, Binding.TYPE, "http://loinc.org", obx.get(3, 1), f"OBX^{index}^3")
    category = _class(terms, kind, f"OBX^{index}^3")
    places = {}
    for code, binding in (
        ("FACILITY_TYPE", Binding.FACILITY_TYPE),
        ("PRACTICE_SETTING", Binding.PRACTICE_SETTING),
    ):
        coded = _obx_coded(msg, code)
        if coded is None:
            raise _error(101, f"an OBX {code} is required for a document that is not a CDA", "OBX")
        places[code] = _check(terms, binding, coded[0], coded[1], "OBX")
    txa, obr = msg.segment("TXA"), msg.segment("OBR")
    author = txa.get(5, 1) if txa is not None else obr.get(32, 1) if obr is not None else ""
    created = _ts(txa.get(4)) if txa is not None else _ts(obr.get(7)) if obr is not None else None
    return {
        "type": kind,
        "category": category,
        "format": None,
        "confidentiality": _check(terms, Binding.CONFIDENTIALITY, None, "N", "OBX"),
        "facility_type": places["FACILITY_TYPE"],
        "practice_setting": places["PRACTICE_SETTING"],
        "title": obx.get(3, 2) or None,
        "created": created,
        "period_start": None,
        "period_end": None,
        "author_rpps": _rpps(author),
        "unique_id": None,
        "visibility": flags,
        "language": None,
    }


def _unique_ids(msg: Message, meta: dict[str, Any]) -> tuple[str, str | None]:
    """The document's uniqueId and the uniqueId of the version it replaces (MDM TXA-13)."""
    txa, obr = msg.segment("TXA"), msg.segment("OBR")
    unique = (txa.get(12, 1) if txa is not None else "") or meta["unique_id"]
    if not unique and obr is not None:
        unique = obr.get(3, 1) and f"{obr.get(3, 3) or obr.get(3, 2)}^{obr.get(3, 1)}".lstrip("^")
    if not unique:
        raise _error(
            101, "the document's unique id (TXA-12, the CDA's id or OBR-3) is required", "TXA^1^12"
        )
    parent = txa.get(13, 1) if txa is not None else ""
    return unique, parent or None


def _document(msg: Message, max_bytes: int) -> tuple[ProvidedDocument, str | None]:
    terms = Terminology.load()
    index, obx = _ed(msg)
    data, media = _content(index, obx, max_bytes)
    flags = _flags(msg)
    try:
        mhd.check_visibility(flags, "OBX")
    except InvalidSubmission as exc:
        raise _error(103, exc.message, "OBX") from None
    header = None
    if media in mhd.CDA_TYPES:
        header = cda.parse_cda(data, max_bytes=max_bytes)
        meta = meta_from_cda(terms, header, media, flags)
    else:
        meta = _from_segments(terms, msg, index, obx, flags)
        target = correspondence.format_of_media(media)
        meta["format"] = _format(terms, target, f"{media} documents", f"OBX^{index}^5")
    unique, parent = _unique_ids(msg, meta)
    now = datetime.now(UTC)
    document = ProvidedDocument(
        full_url=f"urn:hl7v2:{msg.control_id}:1",
        resource=document_resource(meta, unique, media),
        unique_id=unique,
        patient=("", ""),  # set by the transaction, from PID-3
        type=meta["type"],
        category=meta["category"],
        confidentiality=meta["confidentiality"],
        visibility=meta["visibility"],
        format=meta["format"],
        facility_type=meta["facility_type"],
        practice_setting=meta["practice_setting"],
        content=data,
        content_type=media,
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        title=meta["title"],
        date=now,
        created=meta["created"],
        period_start=meta["period_start"],
        period_end=meta["period_end"],
        author_rpps=meta["author_rpps"],
        author_finess=None,
        author_reference=None,
        language=meta["language"],
        replaces=None,
        cda=header,
    )
    return document, parent


def document_resource(meta: dict[str, Any], unique: str, media: str) -> dict[str, Any]:
    """The DocumentReference the repository gives for a document filed by HL7 v2."""

    def coding(concept: Concept | None) -> dict[str, Any] | None:
        if concept is None:
            return None
        return {
            "coding": [{"system": concept.system, "code": concept.code, "display": concept.display}]
        }

    labels = [coding(meta["confidentiality"])["coding"][0]]  # type: ignore[index]
    labels += [{"code": code} for code in sorted(meta["visibility"])]
    resource: dict[str, Any] = {
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique}"},
        "type": coding(meta["type"]),
        "category": [coding(meta["category"])],
        "description": meta["title"],
        "securityLabel": [{"coding": [label]} for label in labels],
        "content": [
            {
                "attachment": {"contentType": media, "title": meta["title"]},
                "format": coding(meta["format"])["coding"][0] if meta["format"] else None,  # type: ignore[index]
            }
        ],
        "context": {
            "facilityType": coding(meta["facility_type"]),
            "practiceSetting": coding(meta["practice_setting"]),
        },
    }
    if meta["created"] is not None:
        resource["content"][0]["attachment"]["creation"] = meta["created"].isoformat()
    return resource


def _needs_parent(
    prepare: Any,
    config: IdentityConfig,
    matcher: Matcher,
    msg: Message,
    sender: Sender,
) -> Work:
    """MDM^T10 (document replace notification and content): a T02 whose TXA-13 names the
    replaced version."""
    txa = msg.segment("TXA")
    if txa is None or not txa.get(13, 1):
        raise _error(101, "MDM^T10 needs TXA-13: the uniqueId of the replaced document", "TXA^1^13")
    work: Work = prepare(config, matcher, msg, sender)
    return work


def _prepare_cancel(
    _max_bytes: int,
    config: IdentityConfig,
    _matcher: Matcher,
    msg: Message,
    sender: Sender,
) -> Work:
    """MDM^T11 (document cancel notification): the document TXA-12 names, of the patient
    PID-3 names, is withdrawn (``entered-in-error``) by its author's structure."""
    pid, txa = msg.segment("PID"), msg.segment("TXA")
    if pid is None or txa is None:
        raise V2Error(100, "MDM^T11 needs a PID and a TXA segment", location="PID")
    unique = txa.get(12, 1)
    if not unique:
        raise _error(101, "TXA-12: the uniqueId of the cancelled document is required", "TXA^1^12")
    keys = identity_service.pid_patient_keys(config, pid)
    if not keys:
        raise _error(101, "PID-3: no identifier names the patient", "PID^1^3")
    return Work(partial(_cancel, config, sender, unique, keys))


def _cancel(
    config: IdentityConfig,
    sender: Sender,
    unique: str,
    keys: list[tuple[str, str]],
    session: Session,
) -> Handled:
    entry = repository.entry_by_unique_id(session, unique)
    patients = []
    for key in keys:
        try:
            patients.append(service.resolve_patient(session, config, key))
        except service.UnknownDocumentPatient:
            continue
    ids = {i for patient in patients for i in service.patient_ids(session, patient)}
    if entry is None or entry.patient_id not in ids:
        raise _error(204, f"TXA-12: the patient has no document {unique}", "TXA^1^12")
    grant = accounts_service.mllp_sender_grant(session, sender.facility_oid or "")
    structures = frozenset({grant.finess}) if grant is not None and grant.finess else frozenset()
    reader = Reader(f"client:hl7:{sender.facility_oid}", sender.actor, "client", None, structures)
    try:
        service.withdraw(session, reader, entry.resource_id)
    except Forbidden as exc:
        raise _error(204, exc.message, "TXA^1^12") from None
    rri = next(p.rri for p in patients if entry.patient_id in service.patient_ids(session, p))
    touched = Touched(rri, f"DocumentReference/{entry.resource_id}", "U")
    return Handled("AA", touched=[touched], resource_type="DocumentReference")


def _prepare(
    storage: BlobStorage,
    max_bytes: int,
    zone: tzinfo,
    config: IdentityConfig,
    _matcher: Matcher,
    msg: Message,
    sender: Sender,
) -> Work:
    """Read and check the message (AE before any transaction); its transaction files it."""
    pid = msg.segment("PID")
    if pid is None:
        raise V2Error(100, f"{msg.message_type}^{msg.event} needs a PID segment", location="PID")
    document, parent = _document(msg, max_bytes)
    for name in ("created", "period_start", "period_end"):  # times written without offset
        moment = getattr(document, name)
        if moment is not None and moment.tzinfo is None:
            setattr(document, name, moment.replace(tzinfo=zone))
    keys = identity_service.pid_patient_keys(config, pid)
    if not keys:
        raise _error(101, "PID-3: no identifier names the patient", "PID^1^3")
    return Work(partial(_file, storage, config, msg, sender, document, parent, keys))


def _file(
    storage: BlobStorage,
    config: IdentityConfig,
    msg: Message,
    sender: Sender,
    document: ProvidedDocument,
    parent: str | None,
    keys: list[tuple[str, str]],
    session: Session,
) -> Handled:
    patient = None
    for key in keys:
        try:
            patient = service.resolve_patient(session, config, key)
            break
        except service.UnknownDocumentPatient:
            continue
    if patient is None:
        raise _error(
            204, "PID-3: the identity server knows no patient by these identifiers", "PID^1^3"
        )
    document.patient = ("rri", patient.rri)
    if parent is not None:
        old = repository.entry_by_unique_id(session, parent)
        if old is None:
            raise _error(204, f"TXA-13: no document {parent} to replace", "TXA^1^13")
        document.replaces = old.resource_id
    if document.cda is not None:
        carried = {(i.root, i.extension) for i in document.cda.patient_ids}
        if not carried & set(keys):
            raise _error(
                102, "the CDA's recordTarget does not carry the patient's PID-3 identifiers", "OBX"
            )
        mhd.check_cda_header(document, document.cda, "OBX")
    grant = accounts_service.mllp_sender_grant(session, sender.facility_oid or "")
    structures = frozenset({grant.finess}) if grant is not None and grant.finess else frozenset()
    reader = Reader(f"client:hl7:{sender.facility_oid}", sender.actor, "client", None, structures)
    submission = Submission(
        list_full_url=f"urn:hl7v2:{msg.control_id}",
        list_resource={"resourceType": "List", "code": {"coding": [{"code": "submissionset"}]}},
        unique_id=f"{sender.facility_oid}.{msg.control_id}"[:128],
        source_id=sender.facility_oid,
        patient=("rri", patient.rri),
        documents=[document],
    )
    try:
        filed = service.file_submission(session, storage, config, reader, submission)
    except InvalidSubmission as exc:
        raise _error(102, exc.message, "OBX") from None
    entry = filed.documents[document.full_url]
    touched = Touched(patient.rri, f"DocumentReference/{entry.resource_id}", "C")
    return Handled("AA", touched=[touched], resource_type="DocumentReference")
