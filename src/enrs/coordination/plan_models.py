"""The care plans' tables (issue 15): ``coordination_care_plan``, a patient's care plan shared
in one care circle (FHIR ``CarePlan``), its goals (``coordination_plan_goal``, FHIR ``Goal``
contained in the plan) and its activities (``coordination_plan_activity``).

An activity is either planned in the plan itself (``kind`` ``task``, ``appointment`` or
``session``: an education session; a description, a scheduled window of days, the role of
the circle that performs it, its state) or a coordination task made for it (``task_id``,
FHIR ``activity.reference``: the task holds its state, owner and due date). ``template`` is
the pathway (``PlanDefinition``) a plan was applied from; ``version`` rises with each change
(``If-Match``).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class CarePlan(Base):
    """A patient's care plan in a care circle."""

    __tablename__ = "coordination_care_plan"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_team.id"), index=True)
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # draft, active, on-hold, completed, revoked
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    # The PlanDefinition's canonical URL and version, when applied from a pathway.
    template: Mapped[str | None] = mapped_column(String(256))
    author_key: Mapped[str] = mapped_column(String(256))
    author_display: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class PlanGoal(Base):
    """One goal of a care plan."""

    __tablename__ = "coordination_plan_goal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64))  # the contained Goal's id
    plan_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_plan.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    lifecycle_status: Mapped[str] = mapped_column(String(24))
    achievement_status: Mapped[str | None] = mapped_column(String(24))
    due_date: Mapped[date | None] = mapped_column(Date)


class PlanActivity(Base):
    """One activity of a care plan: planned in the plan, or a coordination task."""

    __tablename__ = "coordination_plan_activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64))  # the activity element's id
    plan_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_plan.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # task, appointment, session
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24))  # FHIR CarePlanActivityStatus
    performer_role: Mapped[str | None] = mapped_column(String(128))
    scheduled_start: Mapped[date | None] = mapped_column(Date)
    scheduled_end: Mapped[date | None] = mapped_column(Date)
    # The contained goals it serves: their ids, space-separated.
    goal_ids: Mapped[str] = mapped_column(String(512), default="")
    task_id: Mapped[int | None] = mapped_column(ForeignKey("coordination_task.id"), index=True)
    # The circle's appointment an applied pathway proposed for this activity.
    appointment_id: Mapped[int | None] = mapped_column(
        ForeignKey("coordination_appointment.id"), index=True
    )
