"""Imaging reports received by the archive (a RIS's Encapsulated PDF or CDA, a Structured
Report) and how the archive's documents (those reports, the KOS manifest of :mod:`.manifest`)
are filed in the document repository, for the DMP feed to send (IHE XDS-I.b; ANS CI-SIS
"DRIM-M").

Intake (:func:`on_filed`, called by :class:`~enrs.imaging.filing.Filing` in the unit of work
of the instance): a report instance (:data:`REPORT_CLASSES`) is read as the repository will
take it (the PDF, the CDA, the SR's content tree rendered as text); one it cannot read is
refused with the instance (:class:`~enrs.imaging.service.DatasetMismatch`, C-STORE 0xA900,
nothing kept). The instance stays in the archive as received, and a ``waiting`` row
(:class:`~enrs.imaging.report_models.StudyDocument`) records the report.

Filing (:func:`file_waiting`, by the round of :mod:`.manifest`): each waiting report of a study
whose patient is resolved, and of which the archive holds an image, is filed for that patient:
type LOINC 18748-4, the PDF as ``application/pdf``, the CDA as ``text/xml`` (its CI-SIS model
gives the format), the SR as ``text/plain``; the Study Instance UID and the accession number
in the referenceIdList, the modalities in the eventCodeList. A report of a study whose patient
is unknown or in conflict stays ``waiting``, with the reason, and is filed once the cell has
resolved the study (:mod:`.correction`): never to a guessed patient. A report of a study the
archive holds no image of (an unknown Study Instance UID) waits likewise, flagged, until an
image comes.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.documents import service as document_service
from enrs.documents.access import Reader
from enrs.documents.cda import CdaDocument, parse_cda
from enrs.documents.correspondence import class_of_type, format_of_media, format_of_model
from enrs.documents.mhd import ProvidedDocument, Submission
from enrs.documents.terminology import Binding, Concept, Terminology
from enrs.documents.xds import ACCESSION, STUDY_INSTANCE_UID
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.imaging.encoding import Malformed, parse
from enrs.imaging.models import Series, Study
from enrs.imaging.report_models import FILED, REPORT, WAITING, StudyDocument
from enrs.imaging.repository import StudyState
from enrs.imaging.service import DatasetMismatch, Filed, Received
from enrs.kit.db import utcnow
from enrs.kit.errors import EnrsError
from enrs.kit.storage.base import BlobStorage

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_CDA = "1.2.840.10008.5.1.4.1.1.104.2"
SR_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    }
)
REPORT_CLASSES = frozenset({ENCAPSULATED_PDF, ENCAPSULATED_CDA} | SR_CLASSES)
REPORT_TYPE = "18748-4"  # JDV_J07: "CR d'imagerie médicale"
FACILITY_TYPE = "SA43"  # JDV_J02: "Secteur non défini"
PRACTICE_SETTING = "AMBULATOIRE"  # JDV_J04
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ARCHIVE_KEY = "system:imaging-archive"
MAX_DEPTH = 16


# --- reading a report instance ------------------------------------------------------------


@dataclass(frozen=True)
class ReportContent:
    """A report as the repository takes it: its bytes, media type, format and title."""

    content: bytes
    media_type: str
    format: Concept
    title: str
    created: datetime | None
    cda: CdaDocument | None = None  # an Encapsulated CDA's header


def _encapsulated(ds: Dataset) -> bytes:
    data = ds.get("EncapsulatedDocument")
    if not isinstance(data, bytes) or not data:
        raise DatasetMismatch("the report has no Encapsulated Document (0042,0011)")
    length = ds.get("EncapsulatedDocumentLength")
    return data[: int(length)] if isinstance(length, int) and length > 0 else data


def _created(ds: Dataset) -> datetime | None:
    day = str(ds.get("ContentDate") or ds.get("StudyDate") or "")
    clock = str(ds.get("ContentTime") or "000000").split(".")[0].ljust(6, "0")
    try:
        return datetime.strptime(day + clock[:6], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _text_of(item: Dataset) -> str:
    kind = str(item.get("ValueType") or "")
    if kind == "TEXT":
        return str(item.get("TextValue") or "")
    if kind == "CODE":
        codes = item.get("ConceptCodeSequence") or []
        return str(codes[0].get("CodeMeaning") or "") if codes else ""
    if kind == "NUM":
        values = item.get("MeasuredValueSequence") or []
        if not values:
            return ""
        units = values[0].get("MeasurementUnitsCodeSequence") or []
        unit = str(units[0].get("CodeValue") or "") if units else ""
        return f"{values[0].get('NumericValue')} {unit}".strip()
    if kind in ("PNAME", "DATE", "TIME", "DATETIME", "UIDREF"):
        keyword = {"PNAME": "PersonName", "UIDREF": "UID"}.get(kind, kind.title())
        return str(item.get(keyword) or "")
    return ""


def _render(item: Dataset, depth: int, lines: list[str]) -> None:
    if depth > MAX_DEPTH:
        raise DatasetMismatch("the SR content tree is nested too deeply")
    names = item.get("ConceptNameCodeSequence") or []
    name = str(names[0].get("CodeMeaning") or "") if names else ""
    if "ValueType" not in item:
        raise DatasetMismatch("an SR content item has no Value Type (0040,A040)")
    if item.ValueType == "CONTAINER":
        if name:
            lines += ["", name] if depth else [name]
    else:
        value = _text_of(item)
        if value:
            lines.append(f"{name} : {value}" if name else value)
    for child in item.get("ContentSequence") or []:
        _render(child, depth + 1, lines)


def render_sr(ds: Dataset) -> str:
    """The SR's content tree as plain text (its title, each container's heading, each
    item's concept name and value); :class:`DatasetMismatch` for a tree that is not one."""
    if ds.get("ValueType") != "CONTAINER" or not ds.get("ConceptNameCodeSequence"):
        raise DatasetMismatch("the SR's root content item is not a titled CONTAINER")
    if not ds.get("ContentSequence"):
        raise DatasetMismatch("the SR has no content (0040,A730)")
    lines: list[str] = []
    _render(ds, 0, lines)
    text = "\n".join(lines).strip()
    if len(lines) < 2 or not text:
        raise DatasetMismatch("the SR's content tree holds no text")
    return text + "\n"


def read_report(sop_class: str, ds: Dataset) -> ReportContent:
    """The report of a report instance of ``sop_class`` (one of :data:`REPORT_CLASSES`);
    :class:`DatasetMismatch` naming what is wrong when it cannot be read."""
    terms = Terminology.load()
    title = str(ds.get("DocumentTitle") or ds.get("StudyDescription") or "imagerie")
    cda: CdaDocument | None = None
    if sop_class == ENCAPSULATED_PDF:
        content = _encapsulated(ds)
        if not content.startswith(b"%PDF-"):
            raise DatasetMismatch("the Encapsulated PDF does not hold a PDF")
        media, target = "application/pdf", format_of_media("application/pdf")
    elif sop_class == ENCAPSULATED_CDA:
        content = _encapsulated(ds).rstrip(b"\x00 ")
        try:
            header = parse_cda(content)
        except EnrsError as exc:  # CdaError: not well-formed, not a ClinicalDocument…
            raise DatasetMismatch(f"the Encapsulated CDA cannot be read: {exc.message}") from None
        target = format_of_model(header.template_ids)
        if target is None and header.body_media_type:  # XDS-SD: the format of its body
            target = format_of_media(header.body_media_type)
        if target is None:
            raise DatasetMismatch("the Encapsulated CDA names no CI-SIS model nor body format")
        media, title, cda = "text/xml", header.title or title, header
    else:
        title = (
            str(ds.ConceptNameCodeSequence[0].get("CodeMeaning") or title)
            if ds.get("ConceptNameCodeSequence")
            else title
        )
        content = render_sr(ds).encode("utf-8")
        media, target = "text/plain", format_of_media("text/plain")
    assert target is not None  # ASS_12 maps PDF and plain text
    concept = terms.check(Binding.FORMAT, target.system, target.code)
    title = f"CR d'imagerie — {title}"[:256]
    return ReportContent(content, media, concept, title, _created(ds), cda)


# --- intake (the C-STORE / STOW-RS unit of work) -------------------------------------------


def on_filed(session: Session, received: Received, filed: Filed) -> None:
    """Record a report instance just filed (flush only), after checking it can be read;
    other instances are left alone."""
    if received.sop_class_uid not in REPORT_CLASSES:
        return
    try:
        ds = parse(received.dataset, received.transfer_syntax)
    except Malformed as exc:  # read_received parsed it already: not expected
        raise DatasetMismatch(str(exc)) from None
    read_report(received.sop_class_uid, ds)
    now = utcnow()
    session.add(
        StudyDocument(
            study_id=filed.study.id,
            kind=REPORT,
            sop_instance_uid=received.sop_instance_uid,
            status=WAITING,
            note=None if filed.patient else why_waiting(filed.study),
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()


def why_waiting(study: Study | StudyState) -> str:
    return (
        f"the study's patient is {study.patient_status}"
        f"{': ' + study.patient_note if study.patient_note else ''}; filed once resolved"
    )[:2000]


# --- filing a document of the archive -------------------------------------------------------


@dataclass(frozen=True)
class ImagingDocument:
    """One document of a study for the repository: a report, or a KOS manifest."""

    unique_id: str  # the instance's SOP Instance UID
    content: bytes
    media_type: str
    format: Concept
    title: str
    created: datetime | None
    modalities: tuple[str, ...] = ()
    replaces: str | None = None  # the DocumentReference id of the version it replaces
    cda: CdaDocument | None = None  # checked by the repository: the CDA names this patient


def archive_reader(finess: str | None) -> Reader:
    """The archive as the filer of its documents (``system``: its own patient resolution,
    no care relationship asked), under the structure of ``ENRS_IMAGING_FINESS``."""
    structures = frozenset({finess}) if finess else frozenset()
    return Reader(ARCHIVE_KEY, "Archive d'imagerie", "system", None, structures)


def _context(study: Study, modalities: tuple[str, ...]) -> dict[str, Any]:
    def kind(code: str) -> dict[str, Any]:
        return {"coding": [{"system": "urn:ietf:rfc:3986", "code": code}]}

    related = [
        {
            "identifier": {
                "type": kind(STUDY_INSTANCE_UID),
                "system": "urn:dicom:uid",
                "value": f"urn:oid:{study.study_uid}",
            }
        }
    ]
    # The accession number's own authority when the modality gave it, else the PatientID's
    # issuer (the facility's domain) stands for it.
    issuer = study.accession_issuer or study.source_issuer or ""
    if study.accession_number and issuer.replace(".", "").isdigit():
        related.append(
            {
                "identifier": {
                    "type": kind(ACCESSION),
                    "system": f"urn:oid:{issuer}",
                    "value": study.accession_number,
                }
            }
        )
    events = [{"coding": [{"system": DCM, "code": m, "display": m}]} for m in modalities]
    return {"related": related, "event": events}


def file_document(
    session: Session,
    storage: BlobStorage,
    config: IdentityConfig,
    study: Study,
    patient: PatientRef,
    doc: ImagingDocument,
    *,
    finess: str | None,
) -> str:
    """File ``doc`` for the study's patient (the DMP feed's queue row with it); its
    DocumentReference id."""
    terms = Terminology.load()
    kind = terms.check(Binding.TYPE, None, REPORT_TYPE)
    target = class_of_type(kind.system, kind.code)
    assert target is not None
    unit = f"urn:uuid:{uuid.uuid4()}"
    resource = {
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc.unique_id}"},
        "description": doc.title,
        "content": [{"attachment": {"contentType": doc.media_type, "title": doc.title}}],
        "context": _context(study, doc.modalities),
    }
    provided = ProvidedDocument(
        full_url=unit,
        resource=resource,
        unique_id=doc.unique_id,
        patient=("rri", patient.rri),
        type=kind,
        category=terms.check(Binding.CLASS, target.system, target.code),
        confidentiality=terms.check(Binding.CONFIDENTIALITY, None, "N"),
        visibility=frozenset(),
        format=doc.format,
        facility_type=terms.check(Binding.FACILITY_TYPE, None, FACILITY_TYPE),
        practice_setting=terms.check(Binding.PRACTICE_SETTING, None, PRACTICE_SETTING),
        content=doc.content,
        content_type=doc.media_type,
        sha1=hashlib.sha1(doc.content, usedforsecurity=False).hexdigest(),
        title=doc.title,
        date=datetime.now(UTC),
        created=doc.created,
        period_start=None,
        period_end=None,
        author_rpps=None,
        author_finess=finess,
        author_reference=None,
        language="fr-FR",
        replaces=doc.replaces,
        cda=doc.cda,
    )
    submission = Submission(
        list_full_url=f"urn:uuid:{uuid.uuid4()}",
        list_resource={"resourceType": "List", "code": {"coding": [{"code": "submissionset"}]}},
        unique_id=f"{config.oid_root}.4.2.{uuid.uuid4().int % 10**20}",
        source_id=f"{config.oid_root}.4",
        patient=("rri", patient.rri),
        documents=[provided],
    )
    reader = archive_reader(finess)
    filed = document_service.file_submission(session, storage, config, reader, submission)
    return filed.documents[unit].resource_id


def modalities_of(session: Session, study: Study) -> tuple[str, ...]:
    """The study's modalities (eventCodeList), reports and manifests aside."""
    found = select(Series.modality).where(Series.study_id == study.id).distinct()
    skip = {"DOC", "SR", "KO", None, ""}
    return tuple(sorted(str(m) for m in session.scalars(found) if m not in skip))


def file_waiting(
    session: Session,
    storage: BlobStorage,
    config: IdentityConfig,
    study: Study,
    patient: PatientRef,
    rows: list[tuple[StudyDocument, str, Dataset]],
    *,
    finess: str | None,
) -> int:
    """File the study's waiting reports (each row with its SOP class and data set) for
    ``patient``; how many (flush only)."""
    modalities = modalities_of(session, study)
    for row, sop_class, ds in rows:
        report = read_report(sop_class, ds)
        doc = ImagingDocument(
            row.sop_instance_uid,
            report.content,
            report.media_type,
            report.format,
            report.title,
            report.created,
            modalities,
            cda=report.cda,
        )
        row.document_id = file_document(
            session, storage, config, study, patient, doc, finess=finess
        )
        row.status, row.note, row.updated_at = FILED, None, utcnow()
    session.flush()
    return len(rows)
