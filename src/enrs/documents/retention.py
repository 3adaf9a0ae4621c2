"""The retention job: the only path by which a document is physically deleted. A document
whose date is older than the retention period (``ENRS_DOCUMENT_RETENTION_YEARS``, 20 years by
default: the longest period French law sets for a medical record kept by a health
establishment) is deleted, row and content, each deletion written to the audit trail in the
same transaction as the rows' (category ``retention``); the content is removed once that
transaction has committed.

The sweep (:func:`sweep`) removes contents that no document row names: left by a process that
died between writing a submission's contents and committing its rows (an error rolls back and
deletes them at once: ``kit.db.after_rollback``), or by a content deletion that failed. Only
contents older than a grace period (an hour by default: far longer than a filing transaction)
are touched, so a filing in progress never loses its content; each removal is audited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from enrs.documents import service
from enrs.documents.models import DmpExport, DocumentEntry, Opposition, SubmissionSet
from enrs.kit import retention as kit_retention
from enrs.kit.audit.trail import AuditEntry, append_entries
from enrs.kit.db import Database, after_commit
from enrs.kit.storage.base import BlobStorage

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class Purged:
    documents: int = 0
    contents_left: int = 0  # contents whose deletion failed (logged; the rows are gone)


def cutoff(years: int, now: datetime | None = None) -> datetime:
    return kit_retention.cutoff(years=years, now=now)


def purge(db: Database, storage: BlobStorage, *, years: int, dry_run: bool = False) -> Purged:
    """Delete the documents dated before the retention cutoff (``dry_run``: count them)."""
    limit = cutoff(years)
    result = Purged()
    while True:
        with db.transaction(write=not dry_run) as session:
            rows = list(
                session.scalars(
                    select(DocumentEntry)
                    .where(DocumentEntry.date < limit)
                    .order_by(DocumentEntry.id)
                    .limit(BATCH)
                )
            )
            if dry_run:
                return Purged(len(rows) if len(rows) < BATCH else _count(db, limit))
            if not rows:
                return result
            ids = [r.id for r in rows]
            entries = [_audit(r, service.rri_of_patient(session, r.patient_id)) for r in rows]
            session.execute(delete(DmpExport).where(DmpExport.document_id.in_(ids)))
            session.execute(delete(Opposition).where(Opposition.document_id.in_(ids)))
            session.execute(
                update(DocumentEntry)
                .where(DocumentEntry.replaces_id.in_(ids))
                .values(replaces_id=None)
            )
            sets = {r.submission_set_id for r in rows}
            session.execute(delete(DocumentEntry).where(DocumentEntry.id.in_(ids)))
            left = select(DocumentEntry.submission_set_id).where(
                DocumentEntry.submission_set_id.in_(sets)
            )
            empty = sets - set(session.scalars(left))
            if empty:
                session.execute(delete(SubmissionSet).where(SubmissionSet.id.in_(empty)))
            session.flush()
            append_entries(session.connection(), entries)
            keys = [r.blob_key for r in rows]
            after_commit(session, lambda keys=keys: _remove(storage, keys, result))  # type: ignore[misc]
            result.documents += len(rows)


PREFIX = "documents/"
GRACE = timedelta(hours=1)
Swept = kit_retention.Swept


def sweep(
    db: Database, storage: BlobStorage, *, grace: timedelta = GRACE, dry_run: bool = False
) -> Swept:
    """Remove the contents under ``documents/`` that no document row names and that are older
    than ``grace`` (``dry_run``: count them)."""
    return kit_retention.sweep(
        db,
        storage,
        prefix=PREFIX,
        named=_named,
        resource_type="Binary",
        reason="content without a document row",
        grace=grace,
        dry_run=dry_run,
    )


def _named(session: Session, keys: list[str]) -> set[str]:
    found = select(DocumentEntry.blob_key).where(DocumentEntry.blob_key.in_(keys))
    return set(session.scalars(found))


def _count(db: Database, limit: datetime) -> int:

    with db.transaction(write=False) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(DocumentEntry).where(DocumentEntry.date < limit)
            )
            or 0
        )


def _remove(storage: BlobStorage, keys: list[str], result: Purged) -> None:
    result.contents_left += kit_retention.remove_blobs(storage, keys)


def _audit(entry: DocumentEntry, rri: str | None) -> AuditEntry:
    return kit_retention.entry(
        "delete",
        "D",
        patient_ref=f"Patient/{rri}" if rri else None,
        resource_type="DocumentReference",
        entity_ref=f"DocumentReference/{entry.resource_id}",
        detail=f'{{"uniqueId": "{entry.unique_id}", "date": "{entry.date.isoformat()}"}}',
    )
