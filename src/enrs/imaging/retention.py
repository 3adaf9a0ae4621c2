"""The imaging archive's retention job (``enrs imaging retention run``): storage tiers, then the
only physical deletion of a study.

**Cold tier** (:func:`move_cold`). The instances of a study older than
``ENRS_IMAGING_COLD_AFTER_DAYS`` (the study's date, else the day it was received; 0 disables the
step) move to the blob storage's cold tier (:meth:`BlobStorage.copy_to_cold`: a second folder,
or a cheaper S3 storage class). For each instance: copy, verify (the cold copy is read back and
decrypted: its size and SHA-256 must match those sealed when it was stored), delete the warm copy;
then the study's rows are switched to ``cold`` with one audit entry for the study, in one
transaction. Readers only know ``blob_key`` and the storage serves it from either tier, so the
warm copy is deleted *before* the index switch: a crash at any point leaves a whole, readable
copy, and the next run, finding the row still ``warm``, verifies the cold copy again (the copy is
idempotent), finds no warm copy left and switches the row. Nothing is left behind to sweep.

**Deletion** (:func:`purge`). A study is deleted, rows (with its corrections, access codes and
reading requests; their reports stay in the document repository) and blobs, only when the legal
retention period (``ENRS_IMAGING_RETENTION_YEARS``; 0, the default, disables the step) has
passed since the patient's *last* exam in the archive: French law (Code de la santé publique,
R.1112-7) keeps a medical record held by a health establishment 20 years after the last stay or
consultation. A study without a regional patient counts from its own date. Each deletion is
audited (the study, its patient, its instance count) in the transaction that deletes the rows;
blobs are deleted once it has committed. The same article keeps a record until its holder's 28th
birthday when that comes later: no study is deleted while one of the patient's studies gives a
birth date less than :data:`MINORS_UNTIL` years ago, or none (it may be a minor's). And when the
patient died less than 10 years after their last exam, "in all cases" the record is kept 10 years
from the death: the studies of a regional patient whose identities give a day of death (HL7 v2
PID-29, FHIR ``deceasedDateTime``: ``identity_source.death_date``; the latest when they differ) go
10 years after it, before their 20 years, a minor's too. A death without its day keeps the 20 years.

Run it from cron or a systemd timer, like ``enrs documents retention``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from enrs.identity import service as identity_service
from enrs.imaging.models import Instance, Series, Study, StudyCorrection
from enrs.imaging.reading_models import Reading, ReadingRequest
from enrs.imaging.share_models import Share, ShareSession
from enrs.kit import retention as kit_retention
from enrs.kit.audit.trail import AuditEntry, append_entries
from enrs.kit.db import Database, after_commit
from enrs.kit.errors import EnrsError
from enrs.kit.storage import COLD, WARM, BlobStorage

log = logging.getLogger(__name__)
BATCH = 100  # studies per query
MINORS_UNTIL = kit_retention.MINORS_UNTIL
AFTER_DEATH = kit_retention.AFTER_DEATH


@dataclass
class Moved:
    """What :func:`move_cold` did (or, dry, would do)."""

    studies: int = 0
    instances: int = 0
    bytes: int = 0  # of the data sets as received
    failed: list[str] = field(default_factory=list)  # blob keys left warm (see the log)


@dataclass
class Purged:
    """What :func:`purge` did (or, dry, would do)."""

    studies: int = 0
    instances: int = 0
    contents_left: int = 0  # blobs whose deletion failed (logged; the rows are gone)


def _older(study: type[Study], limit: datetime) -> ColumnElement[bool]:
    """The study's exam (its date, else the day it was received) is before ``limit``."""
    return or_(
        study.study_date < limit.date(),
        and_(study.study_date.is_(None), study.created_at < limit),
    )


def move_cold(db: Database, storage: BlobStorage, *, days: int, dry_run: bool = False) -> Moved:
    """Move the instances of the studies older than ``days`` to the cold tier (``dry_run``:
    count them). Resumable and idempotent; an instance that fails stays warm and is retried by
    the next run."""
    result = Moved()
    limit = kit_retention.cutoff(days=days)
    after = 0
    while True:
        with db.transaction(write=False) as session:
            batch = list(
                session.execute(
                    select(Study.id, Study.study_uid, Study.patient_id)
                    .where(Study.id > after, _older(Study, limit), _has_tier(WARM))
                    .order_by(Study.id)
                    .limit(BATCH)
                )
            )
            work = [(study, _instances(session, study.id, WARM)) for study in batch]
        if not batch:
            return result
        after = batch[-1].id
        for study, instances in work:
            if dry_run:
                result.studies += 1
                result.instances += len(instances)
                result.bytes += sum(size for _, _, size in instances)
                continue
            _move_study(db, storage, study, instances, result)


def _has_tier(tier: str) -> ColumnElement[bool]:
    return exists(
        select(Instance.id)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == Study.id, Instance.storage_tier == tier)
    )


def _instances(session: Session, study_id: int, tier: str | None) -> list[tuple[int, str, int]]:
    query = (
        select(Instance.id, Instance.blob_key, Instance.size)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study_id)
        .order_by(Instance.id)
    )
    if tier is not None:
        query = query.where(Instance.storage_tier == tier)
    return [(row.id, row.blob_key, row.size) for row in session.execute(query)]


def _move_study(
    db: Database,
    storage: BlobStorage,
    study: tuple[int, str, int | None],
    instances: list[tuple[int, str, int]],
    result: Moved,
) -> None:
    """Copy, verify and release each instance, then switch and audit the study's rows."""
    _, study_uid, patient_id = study
    moved: list[int] = []
    size = 0
    for instance_id, key, instance_size in instances:
        try:
            storage.copy_to_cold(key)
            storage.release_warm(key)
        except EnrsError as exc:
            log.warning("retention: %s of study %s stays warm: %s", key, study_uid, exc.message)
            result.failed.append(key)
            continue
        moved.append(instance_id)
        size += instance_size
    if not moved:
        return
    with db.transaction() as session:
        session.execute(
            update(Instance)
            .where(Instance.id.in_(moved), Instance.storage_tier == WARM)
            .values(storage_tier=COLD)
        )
        left = len(instances) - len(moved)
        detail = {"study_uid": study_uid, "tier": COLD, "instances": len(moved), "left": left}
        entry = _entry(session, "update", "U", study_uid, patient_id, detail)
        session.flush()
        append_entries(session.connection(), [entry])
    result.studies += 1
    result.instances += len(moved)
    result.bytes += size


def purge(db: Database, storage: BlobStorage, *, years: int, dry_run: bool = False) -> Purged:
    """Delete the studies whose patient's last exam is older than ``years``, and those of the
    patients whose period after their death has passed (:func:`_deceased_past`); ``dry_run``:
    count them. Rows and blobs, each study audited."""
    result = Purged()
    limit = kit_retention.cutoff(years=years)
    after = 0
    while True:
        with db.transaction(write=not dry_run) as session:
            batch = list(
                session.execute(
                    select(Study.id, Study.study_uid, Study.patient_id)
                    .where(Study.id > after, _past_retention(limit))
                    .order_by(Study.id)
                    .limit(BATCH)
                )
            )
            if not batch:
                break
            after = batch[-1].id
            _delete(session, storage, batch, result, dry_run=dry_run)
    with db.transaction(write=False) as session:
        deceased = _deceased_past(session)
    for at in range(0, len(deceased), BATCH):
        with db.transaction(write=not dry_run) as session:
            batch = list(
                session.execute(
                    select(Study.id, Study.study_uid, Study.patient_id)
                    .where(
                        Study.patient_id.in_(deceased[at : at + BATCH]),
                        ~_past_retention(limit),  # (counted above when dry)
                    )
                    .order_by(Study.id)
                )
            )
            _delete(session, storage, batch, result, dry_run=dry_run)
    return result


def _delete(
    session: Session, storage: BlobStorage, batch: list[Any], result: Purged, *, dry_run: bool
) -> None:
    """Delete the studies of ``batch`` (id, study_uid, patient_id rows), rows then blobs once
    committed, each audited; ``dry_run``: count them."""
    keys: list[str] = []
    entries: list[AuditEntry] = []
    for study in batch:
        instances = _instances(session, study.id, None)
        keys += [key for _, key, _ in instances]
        result.studies += 1
        result.instances += len(instances)
        detail = {"study_uid": study.study_uid, "instances": len(instances)}
        entries.append(_entry(session, "delete", "D", study.study_uid, study.patient_id, detail))
    if dry_run or not batch:
        return
    ids = [study.id for study in batch]
    series = select(Series.id).where(Series.study_id.in_(ids))
    session.execute(delete(Instance).where(Instance.series_id.in_(series)))
    session.execute(delete(Series).where(Series.study_id.in_(ids)))
    session.execute(delete(StudyCorrection).where(StudyCorrection.study_id.in_(ids)))
    shares = select(Share.id).where(Share.study_id.in_(ids))
    session.execute(delete(ShareSession).where(ShareSession.share_id.in_(shares)))
    session.execute(delete(Share).where(Share.study_id.in_(ids)))
    requests = select(ReadingRequest.id).where(ReadingRequest.study_id.in_(ids))
    session.execute(delete(Reading).where(Reading.request_id.in_(requests)))
    session.execute(delete(ReadingRequest).where(ReadingRequest.study_id.in_(ids)))
    session.execute(delete(Study).where(Study.id.in_(ids)))
    session.flush()
    append_entries(session.connection(), entries)
    after_commit(session, lambda keys=keys: _remove(storage, keys, result))  # type: ignore[misc]


def _deceased_past(session: Session, now: datetime | None = None) -> list[int]:
    """The regional patients whose record has reached the end of its period after a death
    (R.1112-7: a holder who dies less than :data:`AFTER_DEATH` years after their last exam has
    it kept :data:`AFTER_DEATH` years from the death, in all cases, a minor's too): a day of
    death (the latest one their active identities give) over :data:`AFTER_DEATH` years ago,
    less than :data:`AFTER_DEATH` years after the last of their studies' exams."""
    died_before = kit_retention.cutoff(years=AFTER_DEATH, now=now).date()
    deaths = identity_service.deaths_before(session, died_before)
    found: list[int] = []
    ids = sorted(deaths)
    for at in range(0, len(ids), BATCH):
        last: dict[int, date] = {}
        exams = session.execute(
            select(Study.patient_id, Study.study_date, Study.created_at).where(
                Study.patient_id.in_(ids[at : at + BATCH])
            )
        )
        for patient, day, received in exams:
            exam = day or received.date()
            if patient is not None:
                last[patient] = max(exam, last.get(patient, exam))
        for patient, exam in last.items():
            died = deaths[patient]
            if kit_retention.died_soon_after(exam, died):
                found.append(patient)
    return sorted(found)


def _young(study: type[Study], born_after: date) -> ColumnElement[bool]:
    """The study's patient, as it gives them, is not :data:`MINORS_UNTIL` yet (or it gives no
    birth date)."""
    return or_(study.patient_birth_date.is_(None), study.patient_birth_date > born_after)


def _past_retention(limit: datetime) -> ColumnElement[bool]:
    """The study is older than ``limit``, and so is every other study of its patient; and
    neither it nor another of its patient's says the patient is under :data:`MINORS_UNTIL`."""
    born_after = kit_retention.cutoff(years=MINORS_UNTIL).date()
    other = aliased(Study)
    recent = exists(
        select(other.id).where(
            other.patient_id == Study.patient_id,
            or_(~_older(other, limit), _young(other, born_after)),
        )
    )
    return and_(
        _older(Study, limit),
        ~_young(Study, born_after),
        or_(Study.patient_id.is_(None), ~recent),
    )


def _remove(storage: BlobStorage, keys: list[str], result: Purged) -> None:
    result.contents_left += kit_retention.remove_blobs(storage, keys)


def _entry(
    session: Session,
    interaction: str,
    action: str,
    study_uid: str,
    patient_id: int | None,
    detail: dict[str, object],
) -> AuditEntry:
    patient = None if patient_id is None else identity_service.current_patient(session, patient_id)
    return kit_retention.entry(
        interaction,
        action,
        patient_ref=f"Patient/{patient.rri}" if patient is not None else None,
        resource_type="ImagingStudy",
        entity_ref=f"ImagingStudy/{study_uid}",
        detail=json.dumps(detail, separators=(",", ":")),
    )


def tiers(db: Database) -> dict[str, int]:
    """How many instances each tier holds."""
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(Instance.storage_tier, func.count()).group_by(Instance.storage_tier)
        )
        return {tier: int(count) for tier, count in rows}


PREFIX = "imaging/"  # the instances' blobs (:func:`enrs.imaging.service.blob_key`)


def sweep(
    db: Database, storage: BlobStorage, *, grace: timedelta, dry_run: bool = False
) -> kit_retention.Swept:
    """Remove the blobs under ``imaging/`` that no instance row names and that are older than
    ``grace`` (``dry_run``: count them): a C-STORE or STOW-RS writes an instance's blob before
    its index row, and deletes it when the filing fails, so only a process killed between the
    two leaves one. Each removal audited."""
    return kit_retention.sweep(
        db,
        storage,
        prefix=PREFIX,
        named=_named,
        resource_type="Binary",
        reason="blob without an instance row",
        grace=grace,
        dry_run=dry_run,
    )


def _named(session: Session, keys: list[str]) -> set[str]:
    return set(session.scalars(select(Instance.blob_key).where(Instance.blob_key.in_(keys))))
