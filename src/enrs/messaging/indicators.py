"""The operator's indicators: messages sent and received per mailbox type and per month,
and the mailboxes in use.

Counting happens at the SMTP door. The policy service sees each recipient Postfix accepts
(``RCPT``) and then the end of the message (``END-OF-MESSAGE``, once the content is accepted
into the queue); :class:`Tally` keeps the accepted recipients of each message in progress
(Postfix's ``instance`` attribute names it) and, at its end, counts one message *sent* for the
sending mailbox when it is the operator's and one *received* for each recipient mailbox of the
operator. A message refused at ``DATA`` is counted nowhere. The counts are written by a
:class:`Recorder` thread: Postfix's answer never waits for them.
"""

from __future__ import annotations

import csv
import io
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.kit.db import Database, utcnow
from enrs.messaging.models import MAILBOX_TYPES, Mailbox, PatientContact, Traffic

MAX_PENDING = 10_000  # messages in progress remembered; older ones (aborted) are forgotten
log = logging.getLogger(__name__)


def month_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


@dataclass
class _Message:
    sender: str = ""
    recipients: set[str] = field(default_factory=set)


class Tally:
    """The recipients accepted for each message in progress, until its end."""

    def __init__(self) -> None:
        self._pending: OrderedDict[str, _Message] = OrderedDict()
        self._lock = threading.Lock()

    def accepted(self, instance: str, sender: str, recipient: str) -> None:
        if not instance:
            return
        with self._lock:
            message = self._pending.setdefault(instance, _Message())
            self._pending.move_to_end(instance)
            message.sender = sender.strip().lower()
            message.recipients.add(recipient.strip().lower())
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def ended(self, instance: str) -> tuple[str, set[str]] | None:
        """The sender and accepted recipients of the message ``instance``, forgotten."""
        with self._lock:
            message = self._pending.pop(instance, None)
        return None if message is None else (message.sender, message.recipients)


def record(session: Session, sender: str, recipients: Iterable[str], when: datetime) -> None:
    """Count one message from ``sender`` to ``recipients`` (addresses; those that are not
    mailboxes of the operator are not counted)."""
    addresses = {sender, *recipients} - {""}
    boxes = {
        box.address: box.id
        for box in session.scalars(sa.select(Mailbox).where(Mailbox.address.in_(addresses)))
    }
    month = month_of(when)
    changes: dict[int, list[int]] = {}
    if sender in boxes:
        changes.setdefault(boxes[sender], [0, 0])[0] += 1
    for recipient in set(recipients):
        if recipient in boxes:
            changes.setdefault(boxes[recipient], [0, 0])[1] += 1
    for mailbox_id, (sent, received) in sorted(changes.items()):
        row = session.get(Traffic, (month, mailbox_id))
        if row is None:
            session.add(Traffic(month=month, mailbox_id=mailbox_id, sent=sent, received=received))
        else:
            row.sent += sent
            row.received += received
    session.flush()


PATIENT_DOMAIN = "patient.mssante.fr"  # Mon espace santé: the patients' addresses


def remember_patients(
    session: Session, sender: str, recipients: Iterable[str], when: datetime
) -> None:
    """The patients (``…@patient.mssante.fr``) a mailbox of the operator wrote to: they may
    answer it from now on (:func:`enrs.messaging.policy.decide`)."""
    patients = {r for r in recipients if r.rpartition("@")[2] == PATIENT_DOMAIN}
    if not patients:
        return
    box = session.scalar(sa.select(Mailbox).where(Mailbox.address == sender))
    if box is None:
        return
    for patient in sorted(patients):
        if session.get(PatientContact, (box.id, patient)) is None:
            session.add(PatientContact(mailbox_id=box.id, patient=patient, first_at=when))
    session.flush()


def may_answer(session: Session, patient: str, mailbox: str) -> bool:
    """Whether the patient ``patient`` may write to ``mailbox``: it wrote to them first."""
    stmt = (
        sa.select(PatientContact.patient)
        .join(Mailbox, Mailbox.id == PatientContact.mailbox_id)
        .where(Mailbox.address == mailbox, PatientContact.patient == patient)
    )
    return session.scalar(stmt.limit(1)) is not None


class Recorder:
    """Writes the counts from a thread of its own, so that Postfix's answer at the end of a
    message never waits for the database (a portal request holding SQLite's write lock while
    it submits a message would otherwise wait for itself). A count that cannot be written is
    tried again for a while, then logged and dropped: the mail itself is never held."""

    ATTEMPTS = 30

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.Queue[tuple[str, set[str], datetime] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mail-indicators", daemon=True)
        self._thread.start()

    def add(self, sender: str, recipients: set[str], when: datetime) -> None:
        self._queue.put((sender, recipients, when))

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            for attempt in range(self.ATTEMPTS):
                try:
                    with self.db.transaction() as session:
                        record(session, *item)
                        remember_patients(session, *item)
                    break
                except Exception:
                    if attempt == self.ATTEMPTS - 1:
                        log.exception("indicators: a message from %s was not counted", item[0])
                    time.sleep(1.0)


@dataclass(frozen=True)
class Row:
    month: str
    kind: str
    sent: int
    received: int
    mailboxes_used: int  # mailboxes of this type that sent or received in the month


def report(session: Session, since: str | None = None, until: str | None = None) -> list[Row]:
    """Per month and mailbox type, the messages sent and received and the mailboxes used;
    months ``since`` .. ``until`` (``YYYY-MM``, both included) when given."""
    stmt = (
        sa.select(
            Traffic.month,
            Mailbox.kind,
            sa.func.sum(Traffic.sent),
            sa.func.sum(Traffic.received),
            sa.func.count(Traffic.mailbox_id),
        )
        .join(Mailbox, Mailbox.id == Traffic.mailbox_id)
        .group_by(Traffic.month, Mailbox.kind)
        .order_by(Traffic.month, Mailbox.kind)
    )
    if since:
        stmt = stmt.where(Traffic.month >= since)
    if until:
        stmt = stmt.where(Traffic.month <= until)
    return [Row(m, k, int(s or 0), int(r or 0), int(n)) for m, k, s, r, n in session.execute(stmt)]


def open_mailboxes(session: Session) -> dict[str, int]:
    """Mailboxes open now (``active``), per type; every type named, zero included."""
    counts = dict.fromkeys(MAILBOX_TYPES, 0)
    stmt = (
        sa.select(Mailbox.kind, sa.func.count())
        .where(Mailbox.status == "active")
        .group_by(Mailbox.kind)
    )
    for kind, count in session.execute(stmt):
        counts[kind] = int(count)
    return counts


CSV_HEADER = ("mois", "type_bal", "messages_envoyes", "messages_recus", "bal_utilisees")


def to_csv(rows: Sequence[Row]) -> str:
    """``rows`` as CSV (``;``-separated, as French spreadsheets expect)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow((row.month, row.kind, row.sent, row.received, row.mailboxes_used))
    return out.getvalue()


def now_month() -> str:
    return month_of(utcnow())
