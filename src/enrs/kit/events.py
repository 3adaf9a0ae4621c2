"""Internal events, kept in an outbox table written in the same transaction as the change they
announce: nothing is announced that was rolled back, and nothing committed is lost.

A consumer (another service, another process) reads them in ``id`` order from the last id it
read, and must never skip a committed event. On PostgreSQL ids come from a sequence when a row
is inserted, and transactions commit in another order: a reader could see event 11 committed
while event 10 is still in flight, move past 10, and never see it. So :func:`emit` only keeps
the event in the session; the events of a transaction are inserted when it commits
(``before_commit``), after :func:`enrs.kit.db.lock_commit_order`: every transaction that
announces something takes its ids and commits in turn, and ``id`` order is commit order. (The
turn is short: the inserts and the commit. Writes that are audited already commit in turn on
the audit chain's head, taken before it.) On PostgreSQL the transaction also NOTIFYs
:data:`CHANNEL`, so that a live reader (:mod:`enrs.kit.live`) wakes at once; the events are
always read from the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Integer, String, Text, event, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from enrs.kit.db import Base, UTCDateTime, lock_commit_order, notify_at_commit, utcnow

CHANNEL = "enrs_events"  # PostgreSQL NOTIFY channel: "the outbox has new events"
_PENDING = "enrs.events.pending"
_ORIGIN = "enrs.events.origin"


class EventRecord(Base):
    __tablename__ = "event_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(NamedTuple):
    id: int
    name: str
    payload: dict[str, Any]


def set_origin(session: Session, origin: str | None) -> None:
    """Say who causes the events the session emits from now on (e.g. the facility whose
    message is being handled): they carry it as ``origin``, so that a notification does not
    go back to the one that made the change."""
    session.info[_ORIGIN] = origin


def emit(session: Session, name: str, payload: dict[str, Any]) -> None:
    """Announce ``name`` (``identity.linked``, ``identity.merged``…) if the caller's
    transaction commits; events keep the order they were emitted in."""
    origin = session.info.get(_ORIGIN)
    if origin is not None:
        payload = {**payload, "origin": origin}
    row = {"name": name, "payload": dict(payload), "created_at": utcnow()}
    session.info.setdefault(_PENDING, []).append(row)


Enricher = Callable[[Session, list[dict[str, Any]]], None]
_ENRICHERS: dict[str, Enricher] = {}


def enrich_at_commit(prefix: str, enricher: Enricher) -> None:
    """Have ``enricher(session, rows)`` complete the payloads of the events named
    ``prefix…`` of each transaction when it commits (``rows``: their ``name`` and ``payload``,
    a dict it may add to), e.g. with the state the transaction leaves: a consumer then reads
    each event with the state of its commit, whatever happened after. Registered by a
    service at import, once per prefix."""
    _ENRICHERS[prefix] = enricher


@event.listens_for(Session, "before_commit")
def _insert_pending(session: Session) -> None:
    session.info.pop(_ORIGIN, None)
    rows: list[dict[str, Any]] | None = session.info.pop(_PENDING, None)
    if rows:
        for prefix, enricher in _ENRICHERS.items():
            mine = [r for r in rows if r["name"].startswith(prefix)]
            if mine:
                enricher(session, mine)
        for row in rows:
            row["payload"] = json.dumps(row["payload"], default=str)
        conn = session.connection()
        lock_commit_order(conn)
        conn.execute(insert(EventRecord), rows)
        notify_at_commit(conn, CHANNEL)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_ORIGIN, None)


def read_events(
    session: Session, *, after: int = 0, names: tuple[str, ...] = (), limit: int = 500
) -> list[Event]:
    """Committed events with an id above ``after``, oldest first: the next page for a
    consumer, which keeps the last one's ``id``."""
    e = EventRecord
    stmt = select(e.id, e.name, e.payload).where(e.id > after).order_by(e.id).limit(limit)
    if names:
        stmt = stmt.where(e.name.in_(names))
    return [
        Event(ident, name, json.loads(payload)) for ident, name, payload in session.execute(stmt)
    ]
