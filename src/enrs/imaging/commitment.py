"""Storage Commitment reports (N-EVENT-REPORT, PS3.4 J.3.3) that could not be delivered on their
request's association: kept in ``imaging_commitment_report`` and sent on a new association to
the requester's registered host and port (the archive proposing the SCP role of Storage
Commitment), retried with back-off until delivered or given up.

- :func:`keep`: the report recorded, due at once (the listener's :class:`Sender` woken);
  :func:`rearm`: a failed one made due again (``enrs imaging commitments --retry ID``);
- :class:`Sender`: the thread of the DICOM listener that sends the due reports; the reports
  are in the database, so those of a stopped or restarted archive are sent by the next one.
  A report is claimed before it is sent (its next attempt moved past the association's
  timeout in one conditional UPDATE): two processes never send it at the same time;
- :class:`Policy`: ``retries`` further attempts after the first
  (``ENRS_IMAGING_COMMITMENT_RETRIES``), the first wait ``interval`` seconds
  (``ENRS_IMAGING_COMMITMENT_INTERVAL``), doubled each time, at most an hour; past the
  retries the report is ``failed`` (``enrs imaging commitments``).

Each attempt is audited (``N-EVENT-REPORT``: success, minor failure when it will be retried,
serious failure when given up), in the transaction that records its outcome.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from enrs.imaging import service
from enrs.imaging.models import CommitmentReport
from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, utcnow
from enrs.kit.errors import Conflict, NotFound

log = logging.getLogger(__name__)

PENDING, SENT, FAILED = "pending", "sent", "failed"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance
CLAIM = timedelta(minutes=5)  # longer than an attempt: association and DIMSE timeouts
LONGEST = 3600.0


@dataclass(frozen=True)
class Policy:
    """``retries`` attempts after the first on a new association, ``interval`` seconds before
    the first of them, doubled after each failure (at most ``longest``, or ``interval``)."""

    retries: int = 8
    interval: float = 30.0
    longest: float = LONGEST

    def delay(self, attempts: int) -> float:
        most = max(self.longest, self.interval)
        return float(min(most, self.interval * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Kept:
    """A kept report, as listed (``enrs imaging commitments``)."""

    id: int
    aet: str
    transaction_uid: str
    event_type: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def keep(session: Session, aet: str, event_type: int, report: Dataset) -> int:
    """Record ``report`` for ``aet``, due now; its id."""
    row = CommitmentReport(
        aet=aet,
        transaction_uid=str(report.get("TransactionUID", ""))[:64],
        event_type=event_type,
        report=report.to_json(),
        status=PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row.id


def listing(session: Session, statuses: tuple[str, ...] = (PENDING, FAILED)) -> list[Kept]:
    r = CommitmentReport
    rows = session.scalars(select(r).where(r.status.in_(statuses)).order_by(r.id))
    return [Kept(**{f: getattr(x, f) for f in Kept.__dataclass_fields__}) for x in rows]


def rearm(session: Session, report_id: int) -> Kept:
    """Make a failed (or waiting) report due now, its attempts counted from zero again (the
    requester repaired): :class:`NotFound` if there is no such report, :class:`Conflict` if it
    was delivered."""
    row = session.get(CommitmentReport, report_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no Storage Commitment report {report_id}")
    if row.status == SENT:
        raise Conflict(f"Storage Commitment report {report_id} was delivered")
    row.status, row.attempts, row.next_attempt_at = PENDING, 0, utcnow()
    session.flush()
    return Kept(**{f: getattr(row, f) for f in Kept.__dataclass_fields__})


def _claim(db: Database) -> CommitmentReport | None:
    """The oldest due report, its next attempt moved ``CLAIM`` ahead (``None``: none due, or
    another process claimed it first)."""
    r = CommitmentReport
    now = utcnow()
    with db.transaction(write=True) as session:
        row = session.scalars(
            select(r).where(r.status == PENDING, r.next_attempt_at <= now).order_by(r.id).limit(1)
        ).first()
        if row is None:
            return None
        claimed = session.execute(
            update(r)
            .where(r.id == row.id, r.status == PENDING, r.next_attempt_at <= now)
            .values(next_attempt_at=now + CLAIM)
        )
        session.expunge(row)
    return row if claimed.rowcount == 1 else None  # type: ignore[attr-defined]


def _next_due(db: Database) -> datetime | None:
    r = CommitmentReport
    with db.transaction(write=False) as session:
        found = session.scalar(
            select(r.next_attempt_at)
            .where(r.status == PENDING)
            .order_by(r.next_attempt_at)
            .limit(1)
        )
    return found


def send(
    ae: AE, address: tuple[str, int], aet: str, event_type: int, report: Dataset
) -> str | None:
    """One N-EVENT-REPORT on a new association to ``address`` (called ``aet``), the archive
    proposing the SCP role: ``None`` when the requester answered success, else why not."""
    context = build_context(StorageCommitmentPushModel)
    context.scu_role, context.scp_role = False, True
    assoc = ae.associate(
        address[0], address[1], ae_title=aet, contexts=[context],
        ext_neg=[build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)],
    )  # fmt: skip
    if not assoc.is_established:
        return f"no association with {aet} at {address[0]}:{address[1]}"
    try:
        answer, _ = assoc.send_n_event_report(
            report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE
        )
    except Exception as exc:
        return f"association lost: {exc}"
    finally:
        if assoc.is_established:
            assoc.release()
    status = answer.get("Status") if answer else None
    if status is None:
        return "no answer to the N-EVENT-REPORT"
    return None if status == 0 else f"N-EVENT-REPORT answered 0x{int(status):04X}"


def attempt(db: Database, ae: AE, policy: Policy) -> bool:
    """Send the oldest due report, once, and record the outcome: whether one was due."""
    row = _claim(db)
    if row is None:
        return False
    with db.transaction(write=False) as session:
        peer = service.peer(session, row.aet)
    if peer is None:
        error: str | None = f"AE {row.aet} is not registered"
    else:
        try:
            report = Dataset.from_json(row.report)
            error = send(ae, (peer.host, peer.port), row.aet, row.event_type, report)
        except Exception as exc:  # an unreadable report or a failing pynetdicom
            log.exception("storage commitment report %s not sent", row.id)
            error = f"{exc.__class__.__name__}: {exc}"
    _settle(db, row, error, policy)
    return True


def _settle(db: Database, row: CommitmentReport, error: str | None, policy: Policy) -> None:
    r = CommitmentReport
    now = utcnow()
    attempts = row.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "last_error": error}
    if error is None:
        values.update(status=SENT, sent_at=now)
        outcome = Outcome.SUCCESS
    elif attempts > policy.retries:
        values.update(status=FAILED)
        outcome = Outcome.SERIOUS_FAILURE
        log.error("storage commitment report %s to %s given up: %s", row.id, row.aet, error)
    else:
        values.update(next_attempt_at=now + timedelta(seconds=policy.delay(attempts)))
        outcome = Outcome.MINOR_FAILURE
        log.warning("storage commitment report %s to %s: %s", row.id, row.aet, error)
    detail = {"transaction_uid": row.transaction_uid, "event_type": row.event_type,
              "attempt": attempts, "status": values.get("status", PENDING)}  # fmt: skip
    entry = AuditEntry(
        category="dicom",
        interaction="N-EVENT-REPORT",
        action="E",
        outcome=outcome,
        outcome_desc=error[:1000] if error else None,
        agent_kind="system",
        agent_id=row.aet[:128],
        resource_type="ImagingStudy",
        entity_ref=f"CommitmentReport/{row.id}",
        detail=json.dumps(detail, separators=(",", ":")),
    )
    with db.transaction(write=True) as session:
        session.execute(update(r).where(r.id == row.id).values(**values))
        append_entries(session.connection(), [entry])


class Sender:
    """The thread that sends the due reports until :meth:`stop`; :meth:`wake` when one is kept."""

    def __init__(self, db: Database, ae: AE, policy: Policy, *, idle: float = 5.0) -> None:
        self.db, self.ae, self.policy, self.idle = db, ae, policy, idle
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dicom-commitments", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self._guarded(self._round)
            if wait > 0:
                self._wake.wait(wait)

    def _guarded(self, step: Callable[[], float]) -> float:
        try:
            return step()
        except Exception:  # the database away: try again later, the thread keeps running
            log.exception("storage commitment reports: round failed")
            return self.idle

    def _round(self) -> float:
        """Send what is due; the seconds until the next report is due (at most ``idle``)."""
        while not self._stop.is_set() and attempt(self.db, self.ae, self.policy):
            pass
        due = _next_due(self.db)
        if due is None:
            return self.idle
        return max(0.0, min(self.idle, (due - utcnow()).total_seconds()))
