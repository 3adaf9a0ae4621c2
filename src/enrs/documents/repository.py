"""The document repository's SQL. Every read of documents for a reader applies the rule of
:mod:`enrs.documents.access` (:func:`readable_entries`, :func:`is_visible`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session

from enrs.documents.access import PatientAccess, Reader, own_clause, visible_clause
from enrs.documents.models import DeclaredAccess, DocumentEntry, Opposition, SubmissionSet
from enrs.kit.audit.models import AuditRecord

D = DocumentEntry


def entry_by_resource_id(
    session: Session, resource_id: str, *, for_update: bool = False
) -> DocumentEntry | None:
    stmt = select(D).where(D.resource_id == resource_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def entry_by_unique_id(session: Session, unique_id: str) -> DocumentEntry | None:
    return session.scalar(select(D).where(D.unique_id == unique_id))


def submission_exists(session: Session, unique_id: str) -> bool:
    stmt = select(SubmissionSet.id).where(SubmissionSet.unique_id == unique_id)
    return session.scalar(stmt) is not None


def is_own(session: Session, reader: Reader, entry_id: int) -> bool:
    """Whether the document is the reader's own (rule 1 of :mod:`.access`)."""
    stmt = select(D.id).where(D.id == entry_id, own_clause(reader))
    return session.scalar(stmt) is not None


def is_visible(session: Session, reader: Reader, access: PatientAccess, entry_id: int) -> bool:
    """Whether the reader may read the document (the rule, as every search applies it)."""
    stmt = select(D.id).where(D.id == entry_id, visible_clause(reader, access))
    return session.scalar(stmt) is not None


def readable_entries(reader: Reader, access: PatientAccess) -> Select[Any]:
    """The base statement of a search of one patient's documents by ``reader``."""
    return select(D).where(visible_clause(reader, access))


def readable_submission_sets(reader: Reader, access: PatientAccess) -> Select[Any]:
    """The patient's SubmissionSets that hold at least one document the reader may read."""
    shown = select(D.id).where(
        D.submission_set_id == SubmissionSet.id, visible_clause(reader, access)
    )
    return select(SubmissionSet).where(
        SubmissionSet.patient_id.in_(access.patient_ids), shown.exists()
    )


def entries_of_submission_sets(session: Session, set_ids: list[int]) -> dict[int, list[str]]:
    """The resource ids of each SubmissionSet's documents."""
    found: dict[int, list[str]] = {i: [] for i in set_ids}
    if not set_ids:
        return found
    stmt = select(D.submission_set_id, D.resource_id).where(D.submission_set_id.in_(set_ids))
    for set_id, resource_id in session.execute(stmt.order_by(D.id)):
        found[set_id].append(resource_id)
    return found


def document_still_opposed(session: Session, document_id: int, lifted_id: int) -> bool:
    stmt = select(Opposition.id).where(
        and_(
            Opposition.document_id == document_id,
            Opposition.lifted_at.is_(None),
            Opposition.id != lifted_id,
        )
    )
    return session.scalar(stmt.limit(1)) is not None


def oppositions(session: Session, patient_ids: list[int]) -> list[Opposition]:
    stmt = select(Opposition).where(Opposition.patient_id.in_(patient_ids))
    return list(session.scalars(stmt.order_by(Opposition.id)))


def emergency_accesses(session: Session, *, unreviewed_only: bool) -> list[DeclaredAccess]:
    stmt = select(DeclaredAccess).where(DeclaredAccess.kind == "emergency")
    if unreviewed_only:
        stmt = stmt.where(DeclaredAccess.reviewed_at.is_(None))
    return list(session.scalars(stmt.order_by(DeclaredAccess.id.desc()).limit(500)))


DOCUMENT_RESOURCES = ("DocumentReference", "Binary", "List", "Consent")


def accesses_to(session: Session, patient_refs: list[str], limit: int = 1000) -> list[AuditRecord]:
    """The audit trail's records of the patient's documents (searches, reads, downloads,
    filings, DMP exports), newest first: what the "who accessed my documents" report shows."""
    stmt = (
        select(AuditRecord)
        .where(
            AuditRecord.patient_ref.in_(patient_refs),
            AuditRecord.resource_type.in_(DOCUMENT_RESOURCES),
        )
        .order_by(AuditRecord.seq.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
