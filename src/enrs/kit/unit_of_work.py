"""One unit of work of a request or a message: its transaction and its audit entries, under
one rule, the same for HTTP (:class:`enrs.kit.http.TransactionalRoute`) and the protocol
listeners (the MLLP feed of :mod:`enrs.identity.hl7`):

- a unit that **commits** and writes appends its audit entries to the hash chain inside its own
  transaction, just before the commit: the data and their audit records are committed
  together, or neither is (a crash in between loses both, and nothing was acknowledged);
- a unit that **only reads**, or that is **rolled back** (a refusal, an error), has its entries
  appended after its transaction by the process's :class:`~enrs.kit.audit.writer.AuditWriter`
  (group commit); the answer waits until they are committed.

The session is opened lazily, in the unit's mode (``write``: on SQLite the write lock is taken
at BEGIN, see :class:`enrs.kit.db.Database`), and closed by :meth:`close`, whatever happened:
the caller owns the unit from start to end, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

from sqlalchemy.orm import Session

from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, commit
from enrs.kit.errors import ServiceUnavailable


class AuditSink(Protocol):
    """Where entries written after their unit's transaction go (an ``AuditWriter``)."""

    def submit(self, entries: Sequence[AuditEntry]) -> Future[list[int]]: ...


def outcome_for(status: int) -> str:
    """The AuditEvent outcome of an HTTP-like status."""
    if status >= 500:
        return Outcome.SERIOUS_FAILURE
    if status >= 400:
        return Outcome.MINOR_FAILURE
    return Outcome.SUCCESS


def mark_outcome(entries: Sequence[AuditEntry], status: int, message: str | None) -> None:
    """Give the entries still marked successful the outcome of ``status``."""
    if status < 400:
        return
    for entry in entries:
        if entry.outcome == Outcome.SUCCESS:
            entry.outcome = outcome_for(status)
            entry.outcome_desc = entry.outcome_desc or message


class AuditTrailUnavailable(ServiceUnavailable):
    """The audit entries of a unit could not be appended: nothing of the unit is kept."""


class UnitOfWork:
    """A transaction (``write`` or read-only) and the audit entries of what it did."""

    def __init__(self, db: Database, audit: AuditSink, *, write: bool) -> None:
        self.db, self.audit, self.write = db, audit, write
        self.entries: list[AuditEntry] = []
        self._session: Session | None = None
        # Once finished early (:func:`enrs.kit.http.in_unit`): the entries left to write after.
        self.finished: list[AuditEntry] | None = None
        self.closed = False  # after :meth:`close`: a later use of :attr:`session` opens anew

    @property
    def session(self) -> Session:
        """The unit's session, opened at first use."""
        if self._session is None:
            self._session = self.db.session(write=self.write)
        return self._session

    @property
    def idle(self) -> bool:
        """Whether finishing the unit needs no database work (no session opened, and no
        entries to append in a transaction): it can be finished without a thread."""
        return self._session is None and not (self.write and self.entries)

    def set_outcome(self, status: int, message: str | None) -> None:
        """Give the entries still marked successful the outcome of ``status``."""
        mark_outcome(self.entries, status, message)

    def commit(self) -> list[AuditEntry]:
        """Commit (after-commit hooks run then). A writing unit appends its entries first, in
        its transaction; returns the entries left to write after (see :meth:`write_after`):
        those of a read-only unit. Raises :class:`AuditTrailUnavailable` (the transaction is
        then rolled back) when the entries cannot be appended."""
        appended = False
        if self.write and self.entries:
            session = self.session
            try:
                session.flush()
                append_entries(session.connection(), self.entries)
            except Exception as exc:
                session.rollback()
                raise AuditTrailUnavailable("the audit trail cannot be written") from exc
            appended = True
        if self._session is not None:
            commit(self._session)
        pending, self.entries = ([] if appended else self.entries), []
        return pending

    def rollback(self) -> list[AuditEntry]:
        """Roll back; returns the entries to write after."""
        if self._session is not None:
            self._session.rollback()
        pending, self.entries = self.entries, []
        return pending

    def write_after(self, entries: Sequence[AuditEntry]) -> Future[list[int]]:
        """Queue entries of a finished transaction to the audit writer; the future is done
        once they are committed."""
        return self.audit.submit(entries)

    def close(self) -> None:
        self.closed = True
        if self._session is not None:
            self._session.close()
            self._session = None
