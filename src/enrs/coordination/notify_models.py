"""The care circles' notifications table (issue 15, ANS *Notification d'événements*).

``coordination_notification`` is one notification of one professional (by RPPS) about one
event of the outbox (``event_id``): its kind (:data:`enrs.coordination.notify.KINDS`), the
patient and the care circle it leads to, and what it is about (``focus``: ``Task/…``,
``DocumentReference/…``, ``Communication/…``, none for an admission or a discharge) — ids
only, no clinical content. ``read_at`` is set when the professional marks it read. One row
per (event, professional): the fan-out may run again over an event without doubling it.
The subscriptions of facilities' software are destinations of the outbound queue
(:mod:`enrs.kit.outbound`), not rows of this table.

``coordination_notification_mail`` is a professional's choice to also receive their
notifications by MSSanté mail (:mod:`enrs.coordination.notify_mail`): the address, and since
when (only the notifications written from then on are mailed); no row: no mail.
``coordination_notification.mailed_at`` is set when a notification was handed to the mail
server.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class Notification(Base):
    """One professional's notification of one event."""

    __tablename__ = "coordination_notification"
    __table_args__ = (
        UniqueConstraint("event_id", "rpps"),
        Index("ix_coordination_notification_inbox", "rpps", "read_at", "id"),
        Index("ix_coordination_notification_unmailed", "rpps", "mailed_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    rpps: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    patient_rri: Mapped[str] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(64))  # the circle's resource id
    focus: Mapped[str | None] = mapped_column(String(128))
    facility: Mapped[str | None] = mapped_column(String(16))  # FINESS, for an admission…
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotificationMail(Base):
    """A professional's choice to receive their notifications by MSSanté mail."""

    __tablename__ = "coordination_notification_mail"

    rpps: Mapped[str] = mapped_column(String(16), primary_key=True)
    address: Mapped[str] = mapped_column(String(256))
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
