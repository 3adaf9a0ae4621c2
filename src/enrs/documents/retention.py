"""The retention job: the only path by which a document is physically deleted, row and content,
each deletion written to the audit trail in the same transaction as the rows' (category
``retention``); the content is removed once that transaction has committed.

A patient's record goes as a whole, as French law counts it for a medical record (Code de la
santé publique, R.1112-7; :mod:`enrs.kit.retention`): the documents of a regional patient, with
those of the patients merged into it, are deleted when

- the latest of their dates is older than the retention period (``ENRS_DOCUMENT_RETENTION_YEARS``,
  20 years by default: the period the article sets after the last stay or consultation), and
  the patient's identities all give a birth date over :data:`~enrs.kit.retention.MINORS_UNTIL`
  years ago (a record is kept until its holder's 28th birthday; none given: it may be a
  minor's, kept);
- or, whatever their age, when the patient died (the latest day of death their active
  identities give) less than :data:`~enrs.kit.retention.AFTER_DEATH` years after the latest
  document, and that day is over :data:`~enrs.kit.retention.AFTER_DEATH` years ago.

An old document of a patient with a recent one is kept. The job decides and deletes one batch
of patients per transaction, deleting the rows it read: a document filed meanwhile stays, for
the next run to judge.

The sweep (:func:`sweep`) removes contents that no document row names: left by a process that
died between writing a submission's contents and committing its rows (an error rolls back and
deletes them at once: ``kit.db.after_rollback``), or by a content deletion that failed. Only
contents older than a grace period (an hour by default: far longer than a filing transaction)
are touched, so a filing in progress never loses its content; each removal is audited.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from enrs.documents import service
from enrs.documents.models import DmpExport, DocumentEntry, Opposition, SubmissionSet
from enrs.identity import service as identity_service
from enrs.kit import retention as kit_retention
from enrs.kit.audit.trail import AuditEntry, append_entries
from enrs.kit.db import Database, after_commit, utcnow
from enrs.kit.storage.base import BlobStorage

log = logging.getLogger(__name__)
BATCH = 100  # patients judged per transaction
CHUNK = 500  # ids per IN list (bound parameters per statement)


@dataclass
class Purged:
    documents: int = 0
    contents_left: int = 0  # contents whose deletion failed (logged; the rows are gone)


def cutoff(years: int, now: datetime | None = None) -> datetime:
    return kit_retention.cutoff(years=years, now=now)


def purge(db: Database, storage: BlobStorage, *, years: int, dry_run: bool = False) -> Purged:
    """Delete the documents of the patients whose record has reached the end of its retention
    period (``dry_run``: count them), judged by batches of candidates (:func:`_expired`)."""
    now = utcnow()
    with db.transaction(write=False) as session:
        candidates = _candidates(session, cutoff(years, now), now)
    result = Purged()
    judged: set[int] = set()  # (two candidates can be one record: merged patients)
    for at in range(0, len(candidates), BATCH):
        with db.transaction(write=not dry_run) as session:
            batch = candidates[at : at + BATCH]
            rule_of = {
                patient: rule
                for ids, rule in _expired(session, batch, judged, years, now)
                for patient in ids
            }
            rows = _documents(session, list(rule_of))
            reasons = {r.id: rule_of[r.patient_id] for r in rows}
            if dry_run:
                result.documents += len(rows)
            elif rows:
                _delete(session, storage, rows, reasons, result)
    return result


def _documents(session: Session, patient_ids: list[int]) -> list[DocumentEntry]:
    """The documents of ``patient_ids``, as they are now (deleted as read: one filed after
    this read is not)."""
    found: list[DocumentEntry] = []
    for at in range(0, len(patient_ids), CHUNK):
        of = DocumentEntry.patient_id.in_(patient_ids[at : at + CHUNK])
        found += session.scalars(select(DocumentEntry).where(of).order_by(DocumentEntry.id))
    return found


def _candidates(session: Session, limit: datetime, now: datetime) -> list[int]:
    """The patients who may have reached the end: a document older than ``limit``, or a
    death over :data:`~enrs.kit.retention.AFTER_DEATH` years ago."""
    old = select(DocumentEntry.patient_id).where(DocumentEntry.date < limit).distinct()
    died_before = kit_retention.cutoff(years=kit_retention.AFTER_DEATH, now=now).date()
    return sorted(
        set(session.scalars(old)) | set(identity_service.deaths_before(session, died_before))
    )


def _expired(
    session: Session, candidates: list[int], judged: set[int], years: int, now: datetime
) -> list[tuple[list[int], str]]:
    """The records of ``candidates`` not ``judged`` yet (added to it) past their period: for
    each, the patient ids whose documents go (:func:`enrs.identity.service.records_of`: the
    patient the candidate ends in, and those merged into it) and the rule that applies. A
    few statements for the whole batch."""
    limit = cutoff(years, now)
    born_after = kit_retention.cutoff(years=kit_retention.MINORS_UNTIL, now=now).date()
    died_before = kit_retention.cutoff(years=kit_retention.AFTER_DEATH, now=now).date()
    records = {
        end: ids
        for end, ids in identity_service.records_of(session, candidates).items()
        if end not in judged
    }
    judged.update(records)
    members = [patient for ids in records.values() for patient in ids]
    last_stmt = (
        select(DocumentEntry.patient_id, func.max(DocumentEntry.date))
        .where(DocumentEntry.patient_id.in_(members))
        .group_by(DocumentEntry.patient_id)
    )
    last_of: dict[int, datetime] = dict(session.execute(last_stmt).all())
    births: dict[int, list[date | None]] = {}
    deaths: dict[int, date] = {}
    for patient, birth, death in identity_service.life_dates(session, members):
        births.setdefault(patient, []).append(birth)
        if death is not None:
            deaths[patient] = max(death, deaths.get(patient, death))
    out: list[tuple[list[int], str]] = []
    for ids in records.values():
        last = max((last_of[i] for i in ids if i in last_of), default=None)
        if last is None:
            continue
        born = [b for i in ids for b in births.get(i, [])]
        died = max((deaths[i] for i in ids if i in deaths), default=None)
        if (
            died is not None
            and died < died_before
            and kit_retention.died_soon_after(last.date(), died)
        ):
            out.append((ids, f"{kit_retention.AFTER_DEATH} years after the death"))
        elif last < limit and born and all(b is not None and b <= born_after for b in born):
            out.append((ids, f"{years} years after the last document"))
    return out


def _delete(
    session: Session,
    storage: BlobStorage,
    rows: list[DocumentEntry],
    reasons: dict[int, str],
    result: Purged,
) -> None:
    """Delete ``rows`` (with their exports, oppositions and empty submission sets), each
    audited; their contents once the transaction has committed."""
    ids = [r.id for r in rows]
    rris = {p: service.rri_of_patient(session, p) for p in {r.patient_id for r in rows}}
    entries = [_audit(r, rris[r.patient_id], reasons[r.id]) for r in rows]
    for at in range(0, len(ids), CHUNK):
        chunk = ids[at : at + CHUNK]
        session.execute(delete(DmpExport).where(DmpExport.document_id.in_(chunk)))
        session.execute(delete(Opposition).where(Opposition.document_id.in_(chunk)))
        session.execute(
            update(DocumentEntry)
            .where(DocumentEntry.replaces_id.in_(chunk))
            .values(replaces_id=None)
        )
    for at in range(0, len(ids), CHUNK):
        session.execute(delete(DocumentEntry).where(DocumentEntry.id.in_(ids[at : at + CHUNK])))
    sets = sorted({r.submission_set_id for r in rows})
    for at in range(0, len(sets), CHUNK):
        chunk = sets[at : at + CHUNK]
        left = select(DocumentEntry.submission_set_id).where(
            DocumentEntry.submission_set_id.in_(chunk)
        )
        empty = set(chunk) - set(session.scalars(left))
        if empty:
            session.execute(delete(SubmissionSet).where(SubmissionSet.id.in_(empty)))
    session.flush()
    append_entries(session.connection(), entries)
    keys = [r.blob_key for r in rows]
    after_commit(session, lambda: _remove(storage, keys, result))
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


def _remove(storage: BlobStorage, keys: list[str], result: Purged) -> None:
    result.contents_left += kit_retention.remove_blobs(storage, keys)


def _audit(entry: DocumentEntry, rri: str | None, reason: str) -> AuditEntry:
    detail = {"uniqueId": entry.unique_id, "date": entry.date.isoformat(), "rule": reason}
    return kit_retention.entry(
        "delete",
        "D",
        patient_ref=f"Patient/{rri}" if rri else None,
        resource_type="DocumentReference",
        entity_ref=f"DocumentReference/{entry.resource_id}",
        detail=json.dumps(detail),
    )
