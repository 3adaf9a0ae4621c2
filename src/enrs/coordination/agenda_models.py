"""The shared agenda's tables (issue 15, FHIR ``Schedule`` / ``Slot`` / ``Appointment``).

- ``coordination_appointment``: one appointment of a patient's care circle (``team_id``), its
  times (UTC), state and version (``If-Match``, and the iCalendar ``SEQUENCE``); ``slot_id``
  the professional's free slot it was booked on, if any.
- ``coordination_appointment_participant``: who takes part besides the patient (the circle's
  patient is always a participant, not stored here): a professional (RPPS) or a structure
  (FINESS) that was a current member of the circle when added, with their answer (FHIR
  ``participationstatus``).
- ``coordination_schedule``: a professional's agenda (one per RPPS); ``coordination_slot``
  its slots, ``free`` until an appointment takes them (``busy``, or ``busy-tentative`` for a
  proposed one).
- ``coordination_agenda_feed``: a professional's secret iCalendar feed: only the SHA-256 of
  its token is kept; ``token_hash`` ``NULL`` once revoked.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class CoordinationAppointment(Base):
    """An appointment of a care circle."""

    __tablename__ = "coordination_appointment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_team.id"), index=True)
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    # proposed, booked, fulfilled, noshow, cancelled
    status: Mapped[str] = mapped_column(String(16), default="proposed")
    title: Mapped[str] = mapped_column(String(256))
    # the patient's answer (FHIR participationstatus), the patient being always a participant
    patient_status: Mapped[str] = mapped_column(String(16), default="needs-action")
    comment: Mapped[str | None] = mapped_column(Text)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    slot_id: Mapped[int | None] = mapped_column(ForeignKey("coordination_slot.id"), index=True)
    created_by_key: Mapped[str] = mapped_column(String(256))
    created_by_display: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class AppointmentParticipant(Base):
    """A professional or a structure taking part in an appointment."""

    __tablename__ = "coordination_appointment_participant"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appointment_id: Mapped[int] = mapped_column(
        # named here: the naming convention's name is over PostgreSQL's 63 characters
        ForeignKey("coordination_appointment.id", name="fk_coordination_appointment_participant"),
        index=True,
    )
    kind: Mapped[str] = mapped_column(String(16))  # practitioner, organization
    rpps: Mapped[str | None] = mapped_column(String(16), index=True)
    finess: Mapped[str | None] = mapped_column(String(16), index=True)
    display: Mapped[str] = mapped_column(String(256))
    # accepted, declined, tentative, needs-action
    status: Mapped[str] = mapped_column(String(16), default="needs-action")


class CoordinationSchedule(Base):
    """A professional's agenda, where they publish their free slots."""

    __tablename__ = "coordination_schedule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    rpps: Mapped[str] = mapped_column(String(16), unique=True)
    display: Mapped[str] = mapped_column(String(256))
    comment: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class CoordinationSlot(Base):
    """A slot of a professional's agenda: free, or taken by an appointment."""

    __tablename__ = "coordination_slot"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("coordination_schedule.id"), index=True)
    # free, busy, busy-tentative, busy-unavailable
    status: Mapped[str] = mapped_column(String(16), default="free")
    start_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class AgendaFeed(Base):
    """A professional's secret iCalendar feed (the SHA-256 of its token)."""

    __tablename__ = "coordination_agenda_feed"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), unique=True)  # the account (its subject)
    rpps: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
