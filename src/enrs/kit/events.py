"""Internal events, kept in an outbox table written in the same transaction as the change they
announce: a consumer (another service, another process) reads them in order by id, so nothing
is announced that was rolled back and nothing committed is lost."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class EventRecord(Base):
    __tablename__ = "event_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def emit(session: Session, name: str, payload: dict[str, Any]) -> None:
    """Record an event in the caller's transaction (``identity.linked``, ``identity.merged``…)."""
    session.add(
        EventRecord(name=name, payload=json.dumps(payload, default=str), created_at=utcnow())
    )


def read_events(
    session: Session, *, after: int = 0, names: tuple[str, ...] = (), limit: int = 500
) -> list[tuple[int, str, dict[str, Any]]]:
    """Events with an id above ``after``, oldest first: ``(id, name, payload)``."""
    stmt = select(EventRecord).where(EventRecord.id > after).order_by(EventRecord.id).limit(limit)
    if names:
        stmt = stmt.where(EventRecord.name.in_(names))
    return [(e.id, e.name, json.loads(e.payload)) for e in session.scalars(stmt)]
