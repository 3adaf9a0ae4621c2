"""The fan-out of committed events into per-destination messages, and their delivery."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound
from enrs.kit.events import Event, EventRecord, read_events
from enrs.kit.outbound.models import (
    PENDING,
    REJECTED,
    SENT,
    OutboundCursor,
    OutboundDestination,
    OutboundMessage,
)
from enrs.kit.outbound.transports import Transport, TransportError

FANOUT = "fanout"


@dataclass(frozen=True)
class Destination:
    id: int
    name: str
    transport: str
    endpoint: str
    headers: dict[str, str]
    selector: dict[str, Any]
    start_event_id: int

    @classmethod
    def of(cls, row: OutboundDestination) -> Destination:
        return cls(
            row.id,
            row.name,
            row.transport,
            row.endpoint,
            json.loads(row.headers or "{}"),
            json.loads(row.selector or "{}"),
            row.start_event_id,
        )


@dataclass(frozen=True)
class Outgoing:
    """A message to queue: ``summary`` (``ADT^A40 Patient/…``, its first word names the
    interaction in the audit trail), the patient it is about, the bytes to send."""

    summary: str
    body: str
    content_type: str
    patient_ref: str | None = None


class Renderer(Protocol):
    """What a service sends for its events. :meth:`prepare` reads, once per event, what
    every destination's message needs (``None``: nothing to send for it); :meth:`render`
    makes one destination's messages, whose control ids start with ``control_prefix``."""

    names: tuple[str, ...]

    def prepare(self, session: Session, event: Event) -> Any | None: ...

    def render(
        self, prepared: Any, destination: Destination, control_prefix: str
    ) -> list[Outgoing]: ...


def destinations(session: Session, *, active_only: bool = True) -> list[Destination]:
    stmt = select(OutboundDestination).order_by(OutboundDestination.id)
    if active_only:
        stmt = stmt.where(OutboundDestination.active.is_(True))
    return [Destination.of(row) for row in session.scalars(stmt)]


def last_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(EventRecord.id))) or 0)


def fan_out_position(session: Session) -> int:
    cursor = session.get(OutboundCursor, FANOUT)
    return cursor.last_event_id if cursor is not None else 0


@dataclass
class Rendered:
    """The messages of the events after ``after`` up to ``upto``, to be queued together."""

    after: int
    upto: int
    rows: list[dict[str, Any]]
    queued: dict[int, int]  # messages per destination id


def render_events(session: Session, renderer: Renderer, *, limit: int = 500) -> Rendered:
    """Render the events committed after the cursor (at most ``limit``) for every active
    destination that subscribed before them. Only reads: rendering takes no write lock."""
    after = fan_out_position(session)
    # Every event up to ``top`` has committed (events commit in id order: kit.events).
    top = last_event_id(session)
    page = read_events(session, after=after, names=renderer.names, limit=limit)
    events = [e for e in page if e.id <= top]
    more = len(page) == limit and len(events) == limit
    rendered = Rendered(after, events[-1].id if more else top, [], {})
    dests = destinations(session)
    now = utcnow()
    for event in events:
        eligible = [d for d in dests if event.id > d.start_event_id]
        prepared = renderer.prepare(session, event) if eligible else None
        if prepared is None:
            continue
        for dest in eligible:
            prefix = f"{event.id}.{dest.id}"
            for n, out in enumerate(renderer.render(prepared, dest, prefix), start=1):
                rendered.rows.append(_row(dest.id, event.id, f"{prefix}.{n}", out, now))
                rendered.queued[dest.id] = rendered.queued.get(dest.id, 0) + 1
    return rendered


def queue_rendered(session: Session, rendered: Rendered) -> bool:
    """Queue ``rendered`` and move the cursor past it, in the caller's writing transaction,
    if the cursor is still where the rendering started (else nothing: it was queued
    already). Whether it was queued."""
    cursor = session.get(OutboundCursor, FANOUT, with_for_update=True)
    if cursor is None:
        cursor = OutboundCursor(name=FANOUT, last_event_id=0)
        session.add(cursor)
    if cursor.last_event_id != rendered.after:
        return False
    if rendered.rows:
        session.execute(insert(OutboundMessage), rendered.rows)
    cursor.last_event_id = max(cursor.last_event_id, rendered.upto)
    session.flush()
    return True


def fan_out(db: Database, renderer: Renderer, *, limit: int = 500) -> dict[int, int]:
    """Render what is new (a read-only transaction), then queue it and move the cursor (a
    short writing one). Returns the messages queued per destination id."""
    with db.transaction(write=False) as session:
        rendered = render_events(session, renderer, limit=limit)
    if rendered.upto <= rendered.after:
        return {}
    with db.transaction(write=True) as session:
        return rendered.queued if queue_rendered(session, rendered) else {}


def _row(dest_id: int, event_id: int, control: str, out: Outgoing, now: datetime) -> dict[str, Any]:
    return {
        "destination_id": dest_id,
        "event_id": event_id,
        "control_id": control,
        "summary": out.summary[:256],
        "patient_ref": out.patient_ref,
        "content_type": out.content_type,
        "body": out.body,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


@dataclass(frozen=True)
class Backoff:
    """Seconds before the next try after ``attempts`` failed ones: ``first`` doubled each time,
    at most ``most``."""

    first: float = 1.0
    most: float = 10.0

    def delay(self, attempts: int) -> float:
        return float(min(self.most, self.first * 2 ** max(0, attempts - 1)))


@dataclass
class Delivery:
    """What one call of :func:`deliver` did."""

    sent: int = 0
    rejected: int = 0
    failed: str | None = None  # the transport error that stopped it
    retry_in: float | None = None  # seconds until the head may be tried (None: queue empty)
    more: bool = False  # a full batch went: call again at once
    ids: list[int] = field(default_factory=list)


def deliver(
    db: Database,
    dest: Destination,
    transport: Transport,
    *,
    batch: int = 100,
    backoff: Backoff = Backoff(),
    record: Recorder | None = None,
) -> Delivery:
    """Send the head of ``dest``'s queue in order, at most ``batch`` messages, stopping at
    the first transport failure; then record the outcomes, and audit each message delivered
    or refused, in one transaction (``record``: a writer that may commit several
    destinations' outcomes in one transaction; by default one of its own). Nothing is held
    locked while sending."""
    m = OutboundMessage
    with db.transaction(write=False) as session:
        head = list(
            session.execute(
                select(m.id, m.control_id, m.summary, m.patient_ref, m.content_type, m.body)
                .where(m.destination_id == dest.id, m.status == PENDING)
                .order_by(m.id)
                .limit(batch)
            )
        )
        due = session.scalar(select(m.next_attempt_at).where(m.id == head[0][0])) if head else None
    result = Delivery()
    if not head or due is None:
        return result
    wait = (due - utcnow()).total_seconds()
    if wait > 0:
        result.retry_in = wait
        return result
    outcomes: list[tuple[Any, str | None]] = []
    for row in head:
        try:
            refused = transport.send(row.body, row.control_id, row.content_type)
        except TransportError as exc:
            result.failed = str(exc)[:2000]
            break
        outcomes.append((row, refused))
    (record or own_transaction(db))(partial(_record, dest, outcomes, head, result, backoff))
    result.more = result.failed is None and len(head) == batch
    return result


Work = Callable[[Session], list[AuditEntry]]
Recorder = Callable[[Work], None]


def own_transaction(db: Database) -> Recorder:
    """A :data:`Recorder` committing each outcome in a transaction of its own, its audit
    entries appended last."""

    def record(work: Work) -> None:
        with db.transaction(write=True) as session:
            append_entries(session.connection(), work(session))

    return record


def _record(
    dest: Destination,
    outcomes: list[tuple[Any, str | None]],
    head: Sequence[Any],
    result: Delivery,
    backoff: Backoff,
    session: Session,
) -> list[AuditEntry]:
    """Write the outcomes of one delivery in ``session``; return their audit entries."""
    m = OutboundMessage
    now = utcnow()
    entries = []
    delivered = [row.id for row, refused in outcomes if refused is None]
    if delivered:
        session.execute(
            update(m)
            .where(m.id.in_(delivered))
            .values(status=SENT, attempts=m.attempts + 1, sent_at=now, last_error=None)
        )
    for row, refused in outcomes:
        if refused is not None:
            session.execute(
                update(m)
                .where(m.id == row.id)
                .values(status=REJECTED, attempts=m.attempts + 1, sent_at=now, last_error=refused)
            )
        entries.append(_audit(dest, row, refused))
        result.ids.append(row.id)
        if refused is None:
            result.sent += 1
        else:
            result.rejected += 1
    if result.failed is not None:
        failing = head[len(outcomes)]
        attempts = 1 + int(session.scalar(select(m.attempts).where(m.id == failing.id)) or 0)
        delay = backoff.delay(attempts)
        session.execute(  # unless it was dropped meanwhile (no longer pending)
            update(m)
            .where(m.id == failing.id, m.status == PENDING)
            .values(
                attempts=attempts,
                last_error=result.failed,
                next_attempt_at=now + timedelta(seconds=delay),
            )
        )
        result.retry_in = delay
    return entries


def _audit(dest: Destination, row: Any, refused: str | None) -> AuditEntry:
    return AuditEntry(
        category="notification",
        interaction=row.summary.split(" ", 1)[0][:32],
        action="E",
        outcome=Outcome.SUCCESS if refused is None else Outcome.SERIOUS_FAILURE,
        outcome_desc=refused[:1000] if refused else None,
        agent_kind="system",
        agent_id=dest.name[:128],
        agent_name=f"{dest.transport} {dest.endpoint}"[:256],
        patient_ref=row.patient_ref,
        resource_type="Patient" if row.patient_ref else None,
        entity_ref=f"OutboundMessage/{row.id}",
        request_id=row.control_id[:64],
        detail=row.summary,
    )


# -- administration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationStatus:
    """A destination and its queue, as the admin reads it."""

    name: str
    transport: str
    endpoint: str
    selector: dict[str, Any]
    active: bool
    pending: int
    sent: int
    rejected: int
    head_attempts: int
    head_error: str | None
    next_attempt_at: datetime | None
    last_sent_at: datetime | None
    last_rejection: str | None


def check_endpoint(transport: str, endpoint: str) -> str:
    """``endpoint`` if it suits ``transport`` (``mllp``: HOST:PORT; ``http``: an http(s) URL),
    else :class:`BadRequest`."""
    value = endpoint.strip()
    if transport == "mllp":
        host, _, port = value.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return value
        raise BadRequest(f"an MLLP destination is HOST:PORT, not {endpoint!r}")
    if transport == "http":
        if value.startswith(("http://", "https://")) and len(value) > 8:
            return value
        raise BadRequest(f"an HTTP destination is an http:// or https:// URL, not {endpoint!r}")
    raise BadRequest(f"unknown transport {transport!r} (mllp or http)")


def add_destination(
    session: Session,
    *,
    name: str,
    transport: str,
    endpoint: str,
    selector: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Destination:
    """A new destination; it receives the events committed from now on. 409 if the name is
    taken (a removed destination keeps its name and its queue)."""
    label = name.strip()
    if not label or len(label) > 64:
        raise BadRequest("a destination's name has 1 to 64 characters")
    existing = session.scalar(select(OutboundDestination).where(OutboundDestination.name == label))
    if existing is not None:
        raise Conflict(f"there is already a destination {label!r}")
    row = OutboundDestination(
        name=label,
        transport=transport,
        endpoint=check_endpoint(transport, endpoint),
        headers=json.dumps(headers) if headers else None,
        selector=json.dumps(selector),
        active=True,
        start_event_id=last_event_id(session),
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return Destination.of(row)


def _named(session: Session, name: str) -> OutboundDestination:
    row = session.scalar(select(OutboundDestination).where(OutboundDestination.name == name))
    if row is None:
        raise NotFound(f"no destination {name!r}")
    return row


def set_active(session: Session, name: str, active: bool) -> None:
    """Stop (or restart) sending to a destination; its queue is kept, and while it is stopped
    no new event is queued for it."""
    row = _named(session, name)
    if row.active != active and active:
        row.start_event_id = last_event_id(session)
    row.active = active
    session.flush()


def retry_now(session: Session, name: str) -> int:
    """Make the head of a destination's queue due now (skip the back-off); returns the
    number of messages waiting."""
    row = _named(session, name)
    m = OutboundMessage
    waiting = select(func.count()).where(m.destination_id == row.id, m.status == PENDING)
    session.execute(
        update(m)
        .where(m.destination_id == row.id, m.status == PENDING)
        .values(next_attempt_at=utcnow())
    )
    return int(session.scalar(waiting) or 0)


def statuses(session: Session) -> list[DestinationStatus]:
    m = OutboundMessage
    counts: dict[tuple[int, str], int] = {
        (d, s): n
        for d, s, n in session.execute(
            select(m.destination_id, m.status, func.count()).group_by(m.destination_id, m.status)
        )
    }
    found = []
    for row in session.scalars(select(OutboundDestination).order_by(OutboundDestination.name)):
        head = session.execute(
            select(m.attempts, m.last_error, m.next_attempt_at)
            .where(m.destination_id == row.id, m.status == PENDING)
            .order_by(m.id)
            .limit(1)
        ).first()
        last_sent = session.scalar(
            select(func.max(m.sent_at)).where(m.destination_id == row.id, m.status == SENT)
        )
        rejection = session.scalar(
            select(m.last_error)
            .where(m.destination_id == row.id, m.status == REJECTED)
            .order_by(m.id.desc())
            .limit(1)
        )
        found.append(
            DestinationStatus(
                row.name,
                row.transport,
                row.endpoint,
                json.loads(row.selector or "{}"),
                row.active,
                counts.get((row.id, PENDING), 0),
                counts.get((row.id, SENT), 0),
                counts.get((row.id, REJECTED), 0),
                head[0] if head else 0,
                head[1] if head else None,
                head[2] if head else None,
                last_sent,
                rejection,
            )
        )
    return found
