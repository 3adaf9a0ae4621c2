"""Readers of the event outbox that keep their own cursor, beside the fan-out: a service
that turns events into rows of its own (a professional's notifications, say) rather than into
messages for a destination.

A :class:`Consumer` has a cursor (a row of ``outbound_cursor``, named after it) and reads the
events after it, in ``id`` order, up to the last committed one (every event up to it has
committed: :mod:`enrs.kit.events`), so that it never skips one; what it writes and the
cursor's move are one transaction: an event is consumed once, or not at all. The dispatcher of
``enrs serve`` runs the consumers it is given after each fan-out
(:class:`~enrs.kit.outbound.dispatcher.Dispatcher`).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from enrs.kit.db import Database
from enrs.kit.events import Event, read_events
from enrs.kit.outbound.models import OutboundCursor
from enrs.kit.outbound.queue import last_event_id


class Consumer(Protocol):
    """``cursor``: the name of its cursor (at most 32 characters); ``names``: the events it
    reads; :meth:`consume` writes what it makes of a page of them, in the caller's
    transaction."""

    cursor: str
    names: tuple[str, ...]

    def consume(self, session: Session, events: list[Event]) -> None: ...


def position(session: Session, name: str) -> int:
    """The last event the consumer ``name`` has consumed (0 before its first)."""
    cursor = session.get(OutboundCursor, name)
    return cursor.last_event_id if cursor is not None else 0


def is_behind(session: Session, consumer: Consumer) -> bool:
    """Whether events were committed after the consumer's cursor."""
    return last_event_id(session) > position(session, consumer.cursor)


def consume(db: Database, consumer: Consumer, *, limit: int = 500) -> bool:
    """Consume the next page (at most ``limit`` events) and move the cursor past it, in one
    writing transaction (the cursor row locked: two processes never consume one page
    twice). Whether more pages wait."""
    with db.transaction(write=True) as session:
        cursor = session.get(OutboundCursor, consumer.cursor, with_for_update=True)
        if cursor is None:
            cursor = OutboundCursor(name=consumer.cursor, last_event_id=0)
            session.add(cursor)
            session.flush()
        top = last_event_id(session)  # every event up to it has committed
        page = read_events(session, after=cursor.last_event_id, names=consumer.names, limit=limit)
        events = [e for e in page if e.id <= top]
        more = len(page) == limit and len(events) == limit
        if events:
            consumer.consume(session, events)
        cursor.last_event_id = max(cursor.last_event_id, events[-1].id if more else top)
        session.flush()
    return more
