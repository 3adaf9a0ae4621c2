"""Tables of the outbound queue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow

PENDING, SENT, REJECTED = "pending", "sent", "rejected"


class OutboundDestination(Base):
    """A receiver of notifications: an MLLP listener (``host:port``) or an HTTP endpoint
    (a URL, with the headers to send), and what it subscribed to (``selector``: JSON read by
    the service's renderer). It receives the events committed after ``start_event_id``."""

    __tablename__ = "outbound_destination"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    transport: Mapped[str] = mapped_column(String(8))  # mllp | http
    endpoint: Mapped[str] = mapped_column(String(512))
    headers: Mapped[str | None] = mapped_column(Text)  # JSON object (HTTP)
    selector: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    start_event_id: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboundMessage(Base):
    """One notification for one destination; ``status`` pending → sent or rejected (the
    receiver answered that it refuses it). Sent in ``id`` order per destination."""

    __tablename__ = "outbound_message"
    __table_args__ = (Index("ix_outbound_message_queue", "destination_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("outbound_destination.id"))
    event_id: Mapped[int] = mapped_column(Integer)
    control_id: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(String(256))
    patient_ref: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboundCursor(Base):
    """The last event of the outbox that the fan-out has rendered (one row, ``name`` fanout)."""

    __tablename__ = "outbound_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
