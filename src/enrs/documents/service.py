"""The document repository's logic: file a submission (ITI-65, and the HL7 v2 and portal
intakes that are read into the same :class:`~enrs.documents.mhd.Submission`), retrieve a
document's content (ITI-68), the lifecycle (replace, withdraw), the patient's oppositions and
the accesses professionals declare. Services only flush; the request or message commits.

Atomicity with the blob storage: the rows are flushed first, the contents written last; if
a content cannot be written, or the transaction does not commit, the contents already
written are deleted (:func:`enrs.kit.db.after_rollback`): no metadata without its content,
no content without its metadata.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.documents import access, cda, mhd, repository
from enrs.documents.access import PatientAccess, Reader
from enrs.documents.mhd import ProvidedDocument, Submission
from enrs.documents.models import (
    DeclaredAccess,
    DmpExport,
    DocumentEntry,
    Opposition,
    SubmissionSet,
)
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.identity.xref import UnknownDomain, UnknownPatient
from enrs.kit.db import after_rollback, utcnow
from enrs.kit.errors import BadRequest, Conflict, EnrsError, Forbidden, NotFound, Unprocessable
from enrs.kit.events import emit, set_origin
from enrs.kit.storage.base import BlobStorage

FILED = "documents.filed"  # a document filed in a patient's record: its patient and its id


class UnknownDocumentPatient(Unprocessable):
    """The identity server does not know the patient a document names."""

    issue_code = "not-found"


def resolve_patient(session: Session, config: IdentityConfig, named: tuple[str, str]) -> PatientRef:
    """The regional patient ``(oid, value)`` names (``("rri", RRI)`` for ``Patient/{RRI}``),
    through the identity server; 422 when it does not know it."""
    oid, value = named
    try:
        if oid == "rri":
            found = identity_service.patient_by_rri(session, value)
            if found is None:
                raise UnknownPatient(f"no regional patient Patient/{value}")
            return found
        return identity_service.resolve_patient(session, config, oid, value)
    except (UnknownPatient, UnknownDomain, Conflict) as exc:
        raise UnknownDocumentPatient(
            f"the patient {value} of {oid} cannot be resolved: {exc.message}"
        ) from None


def patient_ids(session: Session, patient: PatientRef) -> list[int]:
    """The patient and those merged into it: their documents are the patient's."""
    return identity_service.merged_patient_ids(session, patient.id)


BREAK_GLASS = "BTG"  # BALP purposeOfUse of a record allowed by an emergency access


def read_detail(granted: PatientAccess) -> str | None:
    """The audit detail of a read: an emergency access (*bris de glace*) flags every record
    it allows (the access report and the regional team read the flag)."""
    if not granted.emergency:
        return None
    return json.dumps({"purposeOfUse": BREAK_GLASS, "relationship": granted.relationship})


def declaration_detail(row: DeclaredAccess) -> str:
    """The audit detail of an access declaration (flagged too when it is an emergency)."""
    detail: dict[str, Any] = {"access": row.kind, "reason": row.reason}
    if row.kind == "emergency":
        detail["purposeOfUse"] = BREAK_GLASS
    return json.dumps(detail, ensure_ascii=False)


def access_to(session: Session, reader: Reader, patient: PatientRef) -> PatientAccess:
    return access.patient_access(session, reader, patient_ids(session, patient))


# --- filing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filed:
    """What a submission stored: its SubmissionSet and documents, by Bundle fullUrl."""

    patient: PatientRef
    submission_set: SubmissionSet
    documents: dict[str, DocumentEntry]


def _check_cda_patient(
    session: Session, config: IdentityConfig, header: cda.CdaDocument, patient: PatientRef
) -> None:
    """A CDA whose recordTarget names (by an identifier the identity server knows) another
    patient than the metadata is refused."""
    for ident in header.patient_ids:
        if not ident.extension:
            continue
        try:
            other = identity_service.resolve_patient(session, config, ident.root, ident.extension)
        except (UnknownPatient, UnknownDomain, Conflict):
            continue
        if other.id != patient.id:
            raise Unprocessable(
                f"the CDA's recordTarget id {ident.extension} of {ident.root} is another "
                f"patient ({other.rri}) than the metadata's ({patient.rri})",
                issue_code="invalid",
            )


def _may_file(session: Session, reader: Reader, patient: PatientRef) -> None:
    """A facility's client files documents only for patients its facility has in care (or
    another care relationship); a professional files the documents they author; the
    platform's own services (``system``: the imaging archive's reports and manifests,
    :mod:`enrs.imaging.reports`) file for the patient they resolved."""
    if reader.kind in ("user", "system"):
        return
    if not reader.structures:
        raise Forbidden(f"{reader.key} belongs to no member facility: it cannot file documents")
    if access_to(session, reader, patient).relationship is None:
        raise Forbidden(
            f"{reader.key}'s facility has no care relationship with patient {patient.rri}"
        )


def _replaced(session: Session, reader: Reader, doc: ProvidedDocument, patient: PatientRef) -> int:
    assert doc.replaces is not None
    old = repository.entry_by_resource_id(session, doc.replaces, for_update=True)
    if old is None:
        raise Unprocessable(f"relatesTo: DocumentReference/{doc.replaces} is unknown")
    if old.status != "current":
        raise Conflict(
            f"DocumentReference/{doc.replaces} is {old.status}: only a current one is replaced"
        )
    if old.patient_id not in patient_ids(session, patient):
        raise Unprocessable(f"relatesTo: DocumentReference/{doc.replaces} is another patient's")
    if not repository.is_own(session, reader, old.id):
        raise Forbidden(
            f"DocumentReference/{doc.replaces} is replaced only by its author's structure"
        )
    old.status, old.updated_at, old.version = "superseded", utcnow(), old.version + 1
    return old.id


def file_submission(
    session: Session,
    storage: BlobStorage,
    config: IdentityConfig,
    reader: Reader,
    submission: Submission,
) -> Filed:
    """Store a checked submission (ITI-65): resolve the patient, check the filer may, the
    CDA's patient, the replaced versions; insert the rows; write the contents last; announce
    each document (:data:`FILED`, its origin the filer)."""
    patient = resolve_patient(session, config, submission.patient)
    _may_file(session, reader, patient)
    if repository.submission_exists(session, submission.unique_id):
        raise Conflict(f"the SubmissionSet uniqueId {submission.unique_id} is already registered")
    for doc in submission.documents:
        if doc.cda is not None:
            _check_cda_patient(session, config, doc.cda, patient)
        if repository.entry_by_unique_id(session, doc.unique_id) is not None:
            raise Conflict(f"the document uniqueId {doc.unique_id} is already registered")
    now = utcnow()
    sset = SubmissionSet(
        resource_id=str(uuid.uuid4()),
        unique_id=submission.unique_id,
        source_id=submission.source_id,
        patient_id=patient.id,
        status="current",
        date=now,
        submitter=reader.key,
        submitter_finess=min(reader.structures) if reader.structures else None,
        resource=json.dumps(submission.list_resource, separators=(",", ":")),
        created_at=now,
    )
    session.add(sset)
    session.flush()
    filed: dict[str, DocumentEntry] = {}
    for doc in submission.documents:
        parent = doc.cda.replaces if doc.cda is not None else None
        if parent is not None and doc.replaces is None:
            raise Unprocessable(
                f"the CDA replaces {parent.unique_id} (relatedDocument RPLC); "
                "the metadata name no replaced document"
            )
        replaces = _replaced(session, reader, doc, patient) if doc.replaces else None
        entry = _entry(sset, doc, patient, reader, replaces, now)
        session.add(entry)
        filed[doc.full_url] = entry
    session.flush()
    for entry in filed.values():  # the DMP feed's queue (dmp_feed), in the same transaction
        session.add(
            DmpExport(
                document_id=entry.id,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    _write_contents(session, storage, submission.documents, filed)
    set_origin(session, reader.origin)
    for entry in filed.values():
        emit(session, FILED, {"patient_id": patient.id, "document": entry.resource_id})
    return Filed(patient, sset, filed)


def _entry(
    sset: SubmissionSet,
    doc: ProvidedDocument,
    patient: PatientRef,
    reader: Reader,
    replaces: int | None,
    now: datetime,
) -> DocumentEntry:
    resource_id = str(uuid.uuid4())
    structure = doc.author_finess or (min(reader.structures) if reader.structures else None)
    return DocumentEntry(
        resource_id=resource_id,
        unique_id=doc.unique_id,
        submission_set_id=sset.id,
        patient_id=patient.id,
        source_patient="|".join(doc.patient),
        status="current",
        type_system=doc.type.system,
        type_code=doc.type.code,
        class_system=doc.category.system,
        class_code=doc.category.code,
        facility_type=doc.facility_type.code,
        practice_setting=doc.practice_setting.code,
        format_code=doc.format.code if doc.format else None,
        confidentiality=doc.confidentiality.code,
        visibility=" ".join(sorted(doc.visibility)),
        title=(doc.title or "")[:256] or None,
        date=doc.date,
        created=doc.created,
        period_start=doc.period_start,
        period_end=doc.period_end,
        author_rpps=doc.author_rpps or (reader.rpps if reader.kind == "user" else None),
        author_reference=doc.author_reference,
        structure_finess=structure,
        mime_type=doc.content_type,
        size=len(doc.content),
        sha1=doc.sha1,
        blob_key=f"documents/{now:%Y/%m}/{resource_id}",
        language=doc.language,
        replaces_id=replaces,
        opposed=False,
        submitter=reader.key,
        version=1,
        resource=json.dumps(doc.resource, separators=(",", ":")),
        created_at=now,
        updated_at=now,
    )


def _write_contents(
    session: Session,
    storage: BlobStorage,
    documents: Sequence[ProvidedDocument],
    filed: dict[str, DocumentEntry],
) -> None:
    written: list[str] = []

    def undo() -> None:
        for key in written:
            storage.delete(key)

    after_rollback(session, undo)
    for doc in documents:
        entry = filed[doc.full_url]
        storage.put(entry.blob_key, doc.content, doc.content_type)
        written.append(entry.blob_key)


# --- reading -------------------------------------------------------------------------------


class DocumentCorrupted(EnrsError):
    """The stored content does not have the document's SHA-1: it is never handed out."""

    status = 500
    issue_code = "exception"


def visible_entry(
    session: Session, reader: Reader, resource_id: str
) -> tuple[DocumentEntry, PatientRef, PatientAccess]:
    """The document ``resource_id`` if the reader may read it (:mod:`.access`): 404 when
    unknown, 403 when not readable (the patient's reference is then known to the audit)."""
    entry = repository.entry_by_resource_id(session, resource_id)
    if entry is None:
        raise NotFound(f"DocumentReference/{resource_id} is unknown")
    patient = patient_of(session, entry)
    granted = access_to(session, reader, patient)
    if not repository.is_visible(session, reader, granted, entry.id):
        raise DocumentForbidden(
            patient, f"{reader.key} may not read DocumentReference/{resource_id}"
        )
    return entry, patient, granted


class DocumentForbidden(Forbidden):
    """A document the reader may not read (the patient is named for the audit trail)."""

    def __init__(self, patient: PatientRef, message: str) -> None:
        super().__init__(message)
        self.patient = patient


def is_shared(session: Session, resource_id: str) -> bool:
    """Whether the document is shared with the patient's care relationships (a care circle's
    members read it: :func:`.access.shared_clause`)."""
    stmt = select(DocumentEntry.id).where(
        DocumentEntry.resource_id == resource_id, access.shared_clause()
    )
    return session.scalar(stmt) is not None


def patient_of(session: Session, entry: DocumentEntry) -> PatientRef:
    """The regional patient a document is now filed for (merges followed)."""
    found = identity_service.current_patient(session, entry.patient_id)
    if found is None:
        raise NotFound(f"the patient of DocumentReference/{entry.resource_id} is no longer known")
    return found


def rri_of_patient(session: Session, patient_id: int) -> str | None:
    found = identity_service.current_patient(session, patient_id)
    return found.rri if found is not None else None


def content_of(storage: BlobStorage, entry: DocumentEntry) -> bytes:
    """The document's content, decrypted (the storage authenticates it) and checked against
    the SHA-1 registered when it was filed."""
    data = storage.get(entry.blob_key)
    if hashlib.sha1(data, usedforsecurity=False).hexdigest() != entry.sha1:
        raise DocumentCorrupted(
            f"the content of DocumentReference/{entry.resource_id} does "
            "not match its registered hash"
        )
    return data


# --- lifecycle -------------------------------------------------------------------------------


def withdraw(session: Session, reader: Reader, resource_id: str) -> DocumentEntry:
    """Mark a document ``entered-in-error`` (by its author's structure); kept, not deleted."""
    entry = repository.entry_by_resource_id(session, resource_id, for_update=True)
    if entry is None:
        raise NotFound(f"DocumentReference/{resource_id} is unknown")
    if not repository.is_own(session, reader, entry.id):
        raise Forbidden(
            f"DocumentReference/{resource_id} is withdrawn only by its author's structure"
        )
    if entry.status == "entered-in-error":
        return entry
    entry.status, entry.updated_at, entry.version = "entered-in-error", utcnow(), entry.version + 1
    from enrs.documents import dmp_feed  # here: dmp_feed imports this module

    dmp_feed.queue_update(session, entry, "deprecate")  # deprecated in the DMP if it holds it
    return entry


def correct(
    session: Session,
    reader: Reader,
    resource_id: str,
    changes: dict[str, Any],
    resource: dict[str, Any],
) -> tuple[DocumentEntry, str]:
    """Correct a current document's metadata (its author's structure only; XDS metadata
    update): the columns ``changes`` gives and the stored resource are replaced, the version
    goes up; returns the entry and the resource as it was (for the audit trail)."""
    entry = repository.entry_by_resource_id(session, resource_id, for_update=True)
    if entry is None:
        raise NotFound(f"DocumentReference/{resource_id} is unknown")
    if not repository.is_own(session, reader, entry.id):
        raise Forbidden(
            f"DocumentReference/{resource_id} is corrected only by its author's structure"
        )
    if entry.status != "current":
        raise Conflict(
            f"DocumentReference/{resource_id} is {entry.status}: only a current one is corrected"
        )
    before = entry.resource
    kept = json.loads(before)
    for name, value in changes.items():
        setattr(entry, name, value)
    for element in ("type", "category", "securityLabel", "description", "context"):
        if element in resource:
            kept[element] = resource[element]
    if resource.get("content"):
        kept_content = kept.get("content") or [{}]
        kept_content[0]["format"] = resource["content"][0].get("format")
        kept["content"] = kept_content
    entry.resource = json.dumps(kept, separators=(",", ":"))
    entry.updated_at, entry.version = utcnow(), entry.version + 1
    from enrs.documents import dmp_feed  # here: dmp_feed imports this module

    dmp_feed.queue_update(session, entry, "update")  # a new version in the DMP if it holds it
    return entry, before


# --- the patient's opposition, the declared accesses ----------------------------------------


def record_opposition(
    session: Session,
    patient: PatientRef,
    *,
    actor: str,
    document: DocumentEntry | None,
    reason: str | None,
) -> Opposition:
    """The patient opposes sharing one document (``document``) or all of them."""
    row = Opposition(
        patient_id=patient.id,
        document_id=document.id if document is not None else None,
        reason=reason,
        recorded_by=actor,
        recorded_at=utcnow(),
    )
    session.add(row)
    if document is not None:
        document.opposed = True
    session.flush()
    _queue_masking(session, patient.id, document)
    return row


def _queue_masking(session: Session, patient_id: int, document: DocumentEntry | None) -> None:
    """An opposition recorded or lifted changes what the DMP must mask: ITI-57 for the
    document, or for each of the patient's documents (an opposition to all sharing)."""
    from enrs.documents import dmp_feed  # here: dmp_feed imports this module

    if document is not None:
        entries = [document]
    else:
        ids = identity_service.merged_patient_ids(session, patient_id)
        entries = list(
            session.scalars(
                select(DocumentEntry).where(
                    DocumentEntry.patient_id.in_(ids), DocumentEntry.status == "current"
                )
            )
        )
    dmp_feed.queue_opposition(session, entries)


def lift_opposition(session: Session, opposition_id: int, *, actor: str) -> Opposition:
    row = session.get(Opposition, opposition_id)
    if row is None or row.lifted_at is not None:
        raise NotFound(f"no opposition {opposition_id} in force")
    row.lifted_at, row.lifted_by = utcnow(), actor
    document = None
    if row.document_id is not None:
        document = session.get(DocumentEntry, row.document_id)
        if document is not None:
            document.opposed = repository.document_still_opposed(session, document.id, row.id)
    session.flush()
    if row.document_id is None or document is not None:
        _queue_masking(session, row.patient_id, document)
    return row


def declare_access(
    session: Session, reader: Reader, patient: PatientRef, *, kind: str, reason: str
) -> DeclaredAccess:
    """A professional declares an access to the patient's documents: ``declared`` (with the
    reason: a consultation, a new referral) or ``emergency`` (*bris de glace*: the reason is
    required, the access reported to the regional team)."""
    if reader.kind != "user" or not reader.rpps:
        raise Forbidden("only a professional known by their RPPS declares an access")
    if kind not in ("declared", "emergency"):
        raise BadRequest("kind is declared or emergency")
    reason = reason.strip()
    if len(reason) < 5:
        raise BadRequest("an access is declared with its reason (5 characters at least)")
    now = utcnow()
    validity = access.EMERGENCY_VALIDITY if kind == "emergency" else access.DECLARED_VALIDITY
    row = DeclaredAccess(
        patient_id=patient.id,
        reader=reader.key,
        reader_name=reader.name,
        kind=kind,
        reason=reason[:2000],
        created_at=now,
        expires_at=now + validity,
    )
    session.add(row)
    session.flush()
    return row


def emergency_accesses(session: Session, *, unreviewed_only: bool) -> list[DeclaredAccess]:
    """The emergency accesses, newest first (what the regional team reviews)."""
    return repository.emergency_accesses(session, unreviewed_only=unreviewed_only)


def review_emergency(session: Session, access_id: int, *, actor: str) -> DeclaredAccess:
    row = session.get(DeclaredAccess, access_id)
    if row is None or row.kind != "emergency":
        raise NotFound(f"no emergency access {access_id}")
    row.reviewed_by, row.reviewed_at = actor, utcnow()
    return row


def stored_resource(entry: DocumentEntry | SubmissionSet) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(entry.resource)
    return loaded


@dataclass(frozen=True)
class AccessLine:
    """One line of the patient's "who accessed my documents" report (RGPD right of access)."""

    when: datetime
    who: str
    kind: str  # a person, a facility's software, the DMP feed
    what: str
    document: str | None
    emergency: bool
    allowed: bool


_WHAT = {
    "search-type": "recherche de documents",
    "read": "consultation",
    "create": "dépôt",
    "update": "modification",
    "export": "envoi au DMP",
}


def access_report(session: Session, patient: PatientRef) -> list[AccessLine]:
    """Who searched, read, downloaded or filed the patient's documents, from the audit trail
    (newest first): what a patient is given on request, and what the portal shows."""
    lines = []
    for record in repository.accesses_to(session, [f"Patient/{patient.rri}"]):
        detail = (
            json.loads(record.detail) if record.detail and record.detail.startswith("{") else {}
        )
        what = _WHAT.get(record.interaction, record.interaction)
        if record.resource_type == "Binary":
            what = "téléchargement"
        elif record.resource_type == "Consent":
            what = "accès déclaré" if "access" in detail else "opposition au partage"
        kinds = {"user": "professionnel", "client": "logiciel", "system": "plateforme"}
        lines.append(
            AccessLine(
                when=record.recorded,
                who=record.agent_name or record.agent_id or "?",
                kind=kinds.get(record.agent_kind, record.agent_kind),
                what=what,
                document=record.entity_ref,
                emergency=detail.get("purposeOfUse") == BREAK_GLASS,
                allowed=record.outcome == "0",
            )
        )
    return lines


# --- disclosure to the patient ----------------------------------------------------------------


def _codes_of(label: Any) -> set[str]:
    """The codes of one ``securityLabel`` as stored (a CodeableConcept, or a bare Coding)."""
    if not isinstance(label, dict):
        return set()
    coding = label.get("coding")
    codings: list[Any] = coding if isinstance(coding, list) else [label]
    return {str(c.get("code")) for c in codings if isinstance(c, dict) and c.get("code")}


def visibility_of(resource: dict[str, Any]) -> frozenset[str]:
    """The DMP visibility codes a stored DocumentReference carries."""
    return frozenset(
        code
        for label in resource.get("securityLabel") or []
        for code in _codes_of(label)
        if code in mhd.VISIBILITY_CODES
    )


def disclose(
    session: Session, reader: Reader, resource_id: str, code: str
) -> tuple[DocumentEntry, str]:
    """Make a document visible to the patient (``INVISIBLE_PATIENT``) or to their legal
    representatives (``INVISIBLE_REPRESENTANTS_LEGAUX``), for good: once the announcement is
    made, by the author's structure. A metadata correction (:func:`correct`) that drops the
    code; returns the entry and its metadata as it was."""
    if code not in mhd.ONLY_LIFTED:
        raise Unprocessable(f"{code}: only {', '.join(sorted(mhd.ONLY_LIFTED))} are lifted")
    entry = repository.entry_by_resource_id(session, resource_id, for_update=True)
    if entry is None:
        raise NotFound(f"DocumentReference/{resource_id} is unknown")
    kept = json.loads(entry.resource)
    labels = [x for x in kept.get("securityLabel") or [] if code not in _codes_of(x)]
    remaining = entry.visibility_codes - {code}
    return correct(
        session,
        reader,
        resource_id,
        {"visibility": " ".join(sorted(remaining))},
        {"securityLabel": labels},
    )
