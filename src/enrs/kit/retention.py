"""What the retention jobs of the services share (``enrs documents retention``, ``enrs imaging
retention run``): the cutoff of a period, the audit entry of the system agent that acts, and the
deletion of blobs once the rows that named them are gone.

A retention job runs from the command line (cron or a systemd timer), one transaction per batch;
every deletion or move is written to the audit trail (category ``retention``) in the same
transaction as the rows it changes, and blobs are deleted only after that commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

from enrs.kit.audit.trail import AuditEntry, append_entries
from enrs.kit.db import Database, utcnow
from enrs.kit.storage.base import BlobStorage

log = logging.getLogger(__name__)

CATEGORY = "retention"

# French law's periods for a medical record (Code de la santé publique, R.1112-7), counted from
# the patient's last stay or consultation (``ENRS_*_RETENTION_YEARS``, 20 by default):
MINORS_UNTIL = 28  # a record is kept at least until its holder's 28th birthday
AFTER_DEATH = 10  # a holder who dies less than this after the last stay: years kept from death


def cutoff(*, years: int = 0, days: int = 0, now: datetime | None = None) -> datetime:
    """The instant ``years`` (of 365.25 days) and ``days`` before ``now``."""
    return (now or utcnow()) - timedelta(days=round(365.25 * years) + days)


def midnight(day: date) -> datetime:
    """The start of ``day``, UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def died_soon_after(last: date, died: date) -> bool:
    """The holder died less than :data:`AFTER_DEATH` years after ``last`` (their last stay, exam
    or document): R.1112-7 then keeps the record :data:`AFTER_DEATH` years from the death, "in
    all cases" (a minor's too), and no longer."""
    return last > cutoff(years=AFTER_DEATH, now=midnight(died)).date()


def entry(
    interaction: str,
    action: str,
    *,
    resource_type: str,
    entity_ref: str,
    detail: str,
    patient_ref: str | None = None,
) -> AuditEntry:
    """An audit entry of the retention job (the system agent ``retention``)."""
    return AuditEntry(
        category=CATEGORY,
        interaction=interaction,
        action=action,
        agent_kind="system",
        agent_id="retention",
        agent_name="ENRS retention job",
        patient_ref=patient_ref,
        resource_type=resource_type,
        entity_ref=entity_ref,
        detail=detail,
    )


def remove_blobs(storage: BlobStorage, keys: Iterable[str]) -> int:
    """Delete ``keys`` from ``storage``; return how many could not be deleted (logged)."""
    failed = 0
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            failed += 1
            log.exception("retention: the content %s could not be deleted", key)
    return failed


@dataclass
class Swept:
    orphans: int = 0
    failed: int = 0  # orphans whose deletion failed (logged)


SWEEP_BATCH = 500


def sweep(
    db: Database,
    storage: BlobStorage,
    *,
    prefix: str,
    named: Callable[[Session, list[str]], set[str]],
    resource_type: str,
    reason: str,
    grace: timedelta,
    dry_run: bool = False,
) -> Swept:
    """Remove the blobs under ``prefix`` that no row names (``named``: those of ``keys`` a row
    names) and that are older than ``grace``: what a process killed between writing a blob and
    committing its row leaves (``dry_run``: count them). Each removal audited (``reason``) in
    a transaction committed before the blobs go."""
    result = Swept()
    keys: list[str] = []
    for key in storage.iter_keys(prefix):
        keys.append(key)
        if len(keys) == SWEEP_BATCH:
            _sweep_batch(db, storage, keys, named, resource_type, reason, grace, dry_run, result)
            keys = []
    if keys:
        _sweep_batch(db, storage, keys, named, resource_type, reason, grace, dry_run, result)
    return result


def _sweep_batch(
    db: Database,
    storage: BlobStorage,
    keys: list[str],
    named: Callable[[Session, list[str]], set[str]],
    resource_type: str,
    reason: str,
    grace: timedelta,
    dry_run: bool,
    result: Swept,
) -> None:
    with db.transaction(write=False) as session:
        kept = named(session, keys)
    limit = utcnow() - grace
    orphans = [k for k in keys if k not in kept and storage.head(k).created_at < limit]
    result.orphans += len(orphans)
    if dry_run or not orphans:
        return
    detail = f'{{"reason": "{reason}"}}'
    with db.transaction() as session:
        append_entries(
            session.connection(),
            [
                entry("delete", "D", resource_type=resource_type, entity_ref=k, detail=detail)
                for k in orphans
            ],
        )
    result.failed += remove_blobs(storage, orphans)
