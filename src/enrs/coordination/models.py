"""The coordination service's tables.

``coordination_care_team`` is a patient's care circle (FHIR ``CareTeam``), keyed on the
regional patient; ``coordination_member`` one participant of it: a professional (RPPS), a
structure (FINESS) or a family carer (a name, no access rights), with a role and a period,
``invited`` until they accept, ``active`` while a member, ``removed`` afterwards (the row
stays: who was in the circle, and when, is part of the record). ``coordination_consent`` is
the patient's consent that a named professional or structure joins the circle (FHIR
``Consent``), recorded by a member or the regional team on the patient's word.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class CareTeam(Base):
    """A patient's care circle."""

    __tablename__ = "coordination_care_team"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The regional patient the circle was made for; after a merge it is found through the
    # surviving patient (``identity_service.merged_patient_ids``).
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active, inactive
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Member(Base):
    """One participant of a care circle."""

    __tablename__ = "coordination_member"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_team.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # practitioner, organization, related-person
    rpps: Mapped[str | None] = mapped_column(String(16), index=True)
    finess: Mapped[str | None] = mapped_column(String(16), index=True)
    display: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # invited, active, removed
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    added_by: Mapped[str] = mapped_column(String(256))
    joined_by: Mapped[str | None] = mapped_column(String(16))  # invitation, consent, creation
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CircleConsent(Base):
    """The patient's consent that one professional or structure joins the circle."""

    __tablename__ = "coordination_consent"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_team.id"), index=True)
    rpps: Mapped[str | None] = mapped_column(String(16))
    finess: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active, inactive
    recorded_by: Mapped[str] = mapped_column(String(256))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
