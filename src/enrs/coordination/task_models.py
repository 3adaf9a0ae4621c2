"""The coordination tasks' table (issue 15): ``coordination_task``, one FHIR ``Task`` shared in
a patient's care circle.

A task belongs to one circle (``team_id``) and its patient; it is assigned to a professional
(``owner_rpps``), a structure (``owner_finess``) or a role of the circle (``owner_role``, the
text of a member's role, e.g. ``IDE``: whoever holds it as an active member); ``requester`` is
who asked for it (the audit trail's key of the reader, and their name). ``due_at`` is FHIR's
``restriction.period.end``; ``version`` rises with each change (``If-Match``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class CoordinationTask(Base):
    """A task of a care circle."""

    __tablename__ = "coordination_task"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # 32 hex digits with at least one letter: never all digits, unlike the identitovigilance
    # cell's tasks that share the /fhir/Task URLs (the dispatch rule of task_endpoints).
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_team.id"), index=True)
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    # requested, accepted, in-progress, on-hold, completed, cancelled
    status: Mapped[str] = mapped_column(String(16), default="requested")
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    owner_kind: Mapped[str] = mapped_column(String(16))  # practitioner, organization, role
    owner_rpps: Mapped[str | None] = mapped_column(String(16), index=True)
    owner_finess: Mapped[str | None] = mapped_column(String(16), index=True)
    owner_role: Mapped[str | None] = mapped_column(String(128))
    owner_display: Mapped[str] = mapped_column(String(256))
    requester_key: Mapped[str] = mapped_column(String(256))
    requester_display: Mapped[str] = mapped_column(String(256))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
