"""Care plans (issue 15, FHIR ``CarePlan``) of a patient's care circle, and pathways applied
to make them (FHIR ``PlanDefinition`` ``$apply``).

- **Who**: only the circle's current members (:func:`enrs.coordination.service.is_member`,
  the rule of :mod:`.circle`) create, see and change its plans; a removed member loses them
  at once.
- **A plan** has a title, a period (days), goals (description, due date, lifecycle and
  achievement status) and activities: planned in the plan (``task``, ``appointment`` or
  ``session`` — an education session —, a description, a scheduled window of days, the role
  of the circle that performs it, its state) or a coordination task of the same circle
  (:mod:`.tasks`: the task holds its state, owner and due date).
- **States**: ``draft``, ``active``, ``on-hold``, ``completed``, ``revoked``, moving only
  along :data:`TRANSITIONS`; a new plan is ``draft`` or ``active``; a ``completed`` or
  ``revoked`` plan is a record and does not change any more.
- **Versions**: each change raises the plan's version; a change made on another version
  (``If-Match``) is refused, nothing changed (:class:`~enrs.kit.errors.PreconditionFailed`).
- **Applying a pathway** (:func:`apply`): the plan (``active``), its goals and activities,
  and a coordination task for each task action, assigned to the action's role of the circle,
  due at the end of its window; appointments and education sessions are ``scheduled``
  activities and ``proposed`` appointments of the circle's agenda with the members holding
  their role (:func:`schedule_appointment`). All in the caller's transaction:
  a refusal leaves nothing behind.

Errors: 403 (not a member), 404 (unknown plan), 409 (a move its state does not allow, a
pathway already under way in the circle), 412 (stale version), 422 (bad fields, a task of
another circle, a pathway role nobody holds in the circle, a start date out of range).
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import Select, delete, exists, select
from sqlalchemy.orm import Session

from enrs.coordination import agenda, circle, service, tasks
from enrs.coordination.agenda_models import CoordinationAppointment
from enrs.coordination.models import CareTeam, Member
from enrs.coordination.plan_models import CarePlan, PlanActivity, PlanGoal
from enrs.coordination.task_models import CoordinationTask
from enrs.documents.access import Reader
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, NotFound, PreconditionFailed, Unprocessable

TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"active", "revoked"}),
    "active": frozenset({"on-hold", "completed", "revoked"}),
    "on-hold": frozenset({"active", "completed", "revoked"}),
    "completed": frozenset(),
    "revoked": frozenset(),
}
CLOSED = frozenset({"completed", "revoked"})
NEW = frozenset({"draft", "active"})
# FHIR R4 Goal.lifecycleStatus (entered-in-error left out: a goal is removed by an update).
GOAL_LIFECYCLE = (
    "proposed",
    "planned",
    "accepted",
    "active",
    "on-hold",
    "completed",
    "cancelled",
    "rejected",
)
# FHIR R4 goal-achievement codes.
GOAL_ACHIEVEMENT = (
    "in-progress",
    "improving",
    "worsening",
    "no-change",
    "achieved",
    "sustaining",
    "not-achieved",
    "no-progress",
    "not-attainable",
)
# FHIR R4 CarePlanActivityStatus (entered-in-error left out likewise).
ACTIVITY_STATUSES = (
    "not-started",
    "scheduled",
    "in-progress",
    "on-hold",
    "completed",
    "cancelled",
    "stopped",
    "unknown",
)
KINDS = ("task", "appointment", "session")
OFFSET_UNITS = ("d", "wk", "mo")
# How far from today a pathway may be started (a late entry in a pathway, or a planned one).
START_RANGE = timedelta(days=366)


@dataclass(frozen=True)
class GoalFields:
    """A goal of a plan; ``id`` its id in the plan (the contained ``Goal``'s)."""

    id: str
    description: str
    lifecycle: str = "active"
    achievement: str | None = None
    due: date | None = None


@dataclass(frozen=True)
class ActivityFields:
    """An activity of a plan: planned (``kind``, ``description``, ``status``, ``role``, a
    window ``start``–``end``, the ``goals`` it serves), or a coordination task (``task``: its
    resource id; the rest is the task's)."""

    kind: str
    description: str
    status: str = "not-started"
    role: str | None = None
    start: date | None = None
    end: date | None = None
    goals: tuple[str, ...] = ()
    id: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class PlanFields:
    """What a plan says, as created or as replaced by an update."""

    title: str
    status: str
    description: str | None = None
    start: date | None = None
    end: date | None = None
    goals: tuple[GoalFields, ...] = ()
    activities: tuple[ActivityFields, ...] = ()


# --- pathways (PlanDefinition), read from their JSON by plan_fhir.load_pathways -----------


@dataclass(frozen=True)
class Offset:
    """A time after a pathway's start: ``value`` days (``d``), weeks (``wk``) or calendar
    months (``mo``)."""

    value: int
    unit: str

    def after(self, start: date) -> date:
        if self.unit == "d":
            return start + timedelta(days=self.value)
        if self.unit == "wk":
            return start + timedelta(weeks=self.value)
        year, month = divmod(start.month - 1 + self.value, 12)
        year += start.year
        last = calendar.monthrange(year, month + 1)[1]
        return date(year, month + 1, min(start.day, last))


@dataclass(frozen=True)
class PathwayGoal:
    id: str
    description: str
    due: Offset | None


@dataclass(frozen=True)
class PathwayAction:
    """One action of a pathway: done in the window ``start``–``end`` after the pathway's
    start, by whoever holds ``role`` in the circle."""

    id: str
    title: str
    kind: str
    role: str
    start: Offset
    end: Offset
    goals: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class Pathway:
    """A pathway template; ``resource`` the PlanDefinition as served."""

    id: str
    url: str
    version: str
    title: str
    status: str
    goals: tuple[PathwayGoal, ...]
    actions: tuple[PathwayAction, ...]
    resource: dict[str, Any] = field(compare=False, repr=False)

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}"

    def task_roles(self) -> list[str]:
        return sorted({a.role for a in self.actions if a.kind == "task"})


# --- reading --------------------------------------------------------------------------------


def _new_id() -> str:
    return uuid.uuid4().hex


def plan_by_id(session: Session, resource_id: str) -> CarePlan:
    found = session.scalar(select(CarePlan).where(CarePlan.resource_id == resource_id))
    if found is None:
        raise NotFound(f"CarePlan/{resource_id} not found")
    return found


def team_of(session: Session, plan: CarePlan) -> CareTeam:
    return service.circle_of(session, plan.team_id, f"CarePlan/{plan.resource_id}")


def goals_of(session: Session, plan: CarePlan) -> list[PlanGoal]:
    stmt = select(PlanGoal).where(PlanGoal.plan_id == plan.id).order_by(PlanGoal.position)
    return list(session.scalars(stmt))


def activities_of(session: Session, plan: CarePlan) -> list[PlanActivity]:
    stmt = (
        select(PlanActivity).where(PlanActivity.plan_id == plan.id).order_by(PlanActivity.position)
    )
    return list(session.scalars(stmt))


def tasks_of(session: Session, activities: Sequence[PlanActivity]) -> dict[int, CoordinationTask]:
    """The coordination tasks of these activities, by their row id."""
    ids = [a.task_id for a in activities if a.task_id is not None]
    if not ids:
        return {}
    found = session.scalars(select(CoordinationTask).where(CoordinationTask.id.in_(ids)))
    return {t.id: t for t in found}


def appointments_of(
    session: Session, activities: Sequence[PlanActivity]
) -> dict[int, CoordinationAppointment]:
    """The appointments an applied pathway proposed for these activities, by their row id."""
    ids = [a.appointment_id for a in activities if a.appointment_id is not None]
    if not ids:
        return {}
    stmt = select(CoordinationAppointment).where(CoordinationAppointment.id.in_(ids))
    return {a.id: a for a in session.scalars(stmt)}


def seen(session: Session, plan: CarePlan, reader: Reader) -> CarePlan:
    """The plan, when the reader is a current member of its circle (else 403)."""
    service.require_current_member(
        session, team_of(session, plan), reader, f"CarePlan/{plan.resource_id}"
    )
    return plan


def plans_stmt(reader: Reader, patient_ids: list[int]) -> Select[CarePlan]:
    """The statement of the plans of the patient (merged patients too) in the active circles
    the reader is a current member of, in no order."""
    member = exists().where(
        Member.team_id == CarePlan.team_id,
        circle.current_clause(utcnow()),
        circle.member_clause(reader.rpps, reader.structures),
    )
    return (
        select(CarePlan)
        .join(CareTeam, CareTeam.id == CarePlan.team_id)
        .where(CarePlan.patient_id.in_(patient_ids), CareTeam.status == circle.ACTIVE, member)
    )


def plans_for(session: Session, reader: Reader, patient_ids: list[int]) -> list[CarePlan]:
    """:func:`plans_stmt`'s plans, newest first."""
    stmt = plans_stmt(reader, patient_ids)
    return list(session.scalars(stmt.order_by(CarePlan.created_at.desc(), CarePlan.id.desc())))


def open_plans(session: Session, reader: Reader, team: CareTeam) -> list[CarePlan]:
    """The circle's plans not completed nor revoked (for its members), oldest first."""
    service.require_current_member(session, team, reader, "the care plans")
    stmt = (
        select(CarePlan)
        .where(CarePlan.team_id == team.id, CarePlan.status.not_in(sorted(CLOSED)))
        .order_by(CarePlan.created_at, CarePlan.id)
    )
    return list(session.scalars(stmt))


# --- writing --------------------------------------------------------------------------------


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit:
        raise Unprocessable(f"{what}: 1 to {limit} characters")
    return value


def _checked(fields: PlanFields) -> None:
    _text(fields.title, "CarePlan.title", 256)
    if fields.status not in TRANSITIONS:
        raise Unprocessable(f"CarePlan.status: one of {', '.join(TRANSITIONS)}")
    if fields.start and fields.end and fields.end < fields.start:
        raise Unprocessable("CarePlan.period: its end is before its start")
    ids = [g.id for g in fields.goals]
    if len(set(ids)) != len(ids):
        raise Unprocessable("CarePlan goals: each one has its own id")
    for goal in fields.goals:
        _text(goal.description, "Goal.description.text", 2000)
        if goal.lifecycle not in GOAL_LIFECYCLE:
            raise Unprocessable(f"Goal.lifecycleStatus: one of {', '.join(GOAL_LIFECYCLE)}")
        if goal.achievement is not None and goal.achievement not in GOAL_ACHIEVEMENT:
            raise Unprocessable(f"Goal.achievementStatus: one of {', '.join(GOAL_ACHIEVEMENT)}")
    activity_ids = [a.id for a in fields.activities if a.id is not None]
    if len(set(activity_ids)) != len(activity_ids):
        raise Unprocessable("CarePlan.activity: each one has its own id")
    for activity in fields.activities:
        if activity.task is not None:
            continue
        if activity.kind not in KINDS:
            raise Unprocessable(f"an activity is one of {', '.join(KINDS)}")
        _text(activity.description, "CarePlan.activity.detail.description", 2000)
        if activity.status not in ACTIVITY_STATUSES:
            raise Unprocessable(
                f"CarePlan.activity.detail.status: one of {', '.join(ACTIVITY_STATUSES)}"
            )
        if activity.role is not None:
            _text(activity.role, "an activity's performer role", 128)
        if activity.start and activity.end and activity.end < activity.start:
            raise Unprocessable("CarePlan.activity.detail.scheduledPeriod: end before start")
        unknown = set(activity.goals) - set(ids)
        if unknown:
            raise Unprocessable(f"CarePlan.activity.detail.goal: no goal {sorted(unknown)[0]}")


def _task_in(session: Session, team: CareTeam, resource_id: str) -> CoordinationTask:
    try:
        task = tasks.task_by_id(session, resource_id)
    except NotFound as exc:
        raise Unprocessable(f"CarePlan.activity.reference: no Task/{resource_id}") from exc
    if task.team_id != team.id:
        raise Unprocessable(
            f"CarePlan.activity.reference: Task/{resource_id} is not of CareTeam/{team.resource_id}"
        )
    return task


def _write_children(session: Session, plan: CarePlan, team: CareTeam, fields: PlanFields) -> None:
    """The plan's goals and activities, as the fields say (the previous ones replaced; an
    activity kept under its id keeps the appointment a pathway proposed for it)."""
    linked = select(PlanActivity.resource_id, PlanActivity.appointment_id).where(
        PlanActivity.plan_id == plan.id, PlanActivity.appointment_id.is_not(None)
    )
    kept = {row.resource_id: row.appointment_id for row in session.execute(linked)}
    session.execute(delete(PlanGoal).where(PlanGoal.plan_id == plan.id))
    session.execute(delete(PlanActivity).where(PlanActivity.plan_id == plan.id))
    for position, goal in enumerate(fields.goals):
        session.add(
            PlanGoal(
                resource_id=goal.id,
                plan_id=plan.id,
                position=position,
                description=goal.description.strip(),
                lifecycle_status=goal.lifecycle,
                achievement_status=goal.achievement,
                due_date=goal.due,
            )
        )
    for position, activity in enumerate(fields.activities):
        row = _add_activity(session, plan, team, activity, position)
        if row.kind != "task":
            row.appointment_id = kept.get(row.resource_id)
    session.flush()


def _add_activity(
    session: Session, plan: CarePlan, team: CareTeam, activity: ActivityFields, position: int
) -> PlanActivity:
    row = PlanActivity(
        resource_id=activity.id or _new_id()[:16],
        plan_id=plan.id,
        position=position,
        kind=activity.kind,
        description=activity.description.strip(),
        status=activity.status,
        performer_role=activity.role.strip() if activity.role else None,
        scheduled_start=activity.start,
        scheduled_end=activity.end,
        goal_ids=" ".join(activity.goals),
    )
    if activity.task is not None:
        task = _task_in(session, team, activity.task)
        row.kind, row.description, row.task_id = "task", task.title, task.id
        row.status, row.performer_role, row.goal_ids = "unknown", None, ""
    session.add(row)
    session.flush()
    return row


def create(
    session: Session,
    reader: Reader,
    team: CareTeam,
    fields: PlanFields,
    template: str | None = None,
) -> CarePlan:
    """A new plan of the circle, by one of its current members; ``draft`` or ``active``."""
    service.require_current_member(session, team, reader, "a care plan")
    _checked(fields)
    if fields.status not in NEW:
        raise Unprocessable("a new care plan is draft or active (CarePlan.status)")
    now = utcnow()
    plan = CarePlan(
        resource_id=_new_id(),
        team_id=team.id,
        patient_id=team.patient_id,
        title=fields.title.strip(),
        description=fields.description,
        status=fields.status,
        period_start=fields.start,
        period_end=fields.end,
        template=template,
        author_key=reader.key,
        author_display=reader.name,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(plan)
    session.flush()
    _write_children(session, plan, team, fields)
    return plan


def _snapshot(session: Session, plan: CarePlan) -> tuple[object, ...]:
    goals = tuple(
        (g.resource_id, g.description, g.lifecycle_status, g.achievement_status, g.due_date)
        for g in goals_of(session, plan)
    )
    activities = tuple(
        (
            a.resource_id,
            a.kind,
            a.description,
            a.status,
            a.performer_role,
            a.scheduled_start,
            a.scheduled_end,
            a.goal_ids,
            a.task_id,
        )
        for a in activities_of(session, plan)
    )
    head = (plan.title, plan.description, plan.status, plan.period_start, plan.period_end)
    return (head, goals, activities)


def update(
    session: Session,
    reader: Reader,
    plan: CarePlan,
    fields: PlanFields,
    expected: int | None = None,
) -> CarePlan:
    """A current member of the circle replaces the plan (title, description, period, state
    along :data:`TRANSITIONS`, goals, activities). ``expected``: the version the change was
    made on; another one is refused, nothing changed. A completed or revoked plan does not
    change (409)."""
    team = team_of(session, plan)
    service.require_current_member(session, team, reader, f"CarePlan/{plan.resource_id}")
    if expected is not None and expected != plan.version:
        raise PreconditionFailed(
            f"CarePlan/{plan.resource_id} is at version {plan.version}, not {expected}: "
            "read it again before changing it"
        )
    _checked(fields)
    if plan.status in CLOSED:
        raise Conflict(f"CarePlan/{plan.resource_id} is {plan.status}: it does not change")
    if fields.status != plan.status and fields.status not in TRANSITIONS[plan.status]:
        raise Conflict(
            f"CarePlan/{plan.resource_id} is {plan.status}: it cannot be {fields.status}"
        )
    before = _snapshot(session, plan)
    plan.title, plan.description, plan.status = (
        fields.title.strip(),
        fields.description,
        fields.status,
    )
    plan.period_start, plan.period_end = fields.start, fields.end
    _write_children(session, plan, team, fields)
    if _snapshot(session, plan) != before:
        plan.version += 1
        plan.updated_at = utcnow()
    return plan


# --- applying a pathway ---------------------------------------------------------------------


def missing_roles(session: Session, team: CareTeam, pathway: Pathway) -> list[str]:
    """The roles of the pathway's task actions that no current member of the circle holds
    (a task goes to a role of the circle: :mod:`.tasks`)."""
    stmt = select(Member.role).where(
        Member.team_id == team.id,
        Member.kind != "related-person",
        circle.current_clause(utcnow()),
    )
    held = set(session.scalars(stmt))
    return [role for role in pathway.task_roles() if role not in held]


def role_holders(session: Session, team: CareTeam, role: str | None) -> list[Member]:
    """The circle's current professionals and structures holding ``role`` (its text)."""
    if not role:
        return []
    stmt = select(Member).where(
        Member.team_id == team.id,
        Member.kind.in_(("practitioner", "organization")),
        Member.role == role,
        circle.current_clause(utcnow()),
    )
    return list(session.scalars(stmt.order_by(Member.id)))


def schedule_appointment(
    session: Session,
    reader: Reader,
    plan: CarePlan,
    team: CareTeam,
    activity: ActivityFields,
    position: int,
    zone: tzinfo = UTC,
) -> PlanActivity:
    """An appointment or education session of an applied pathway: the plan's activity
    (``scheduled``, with its window of days) and, when members of the circle hold its role,
    a ``proposed`` appointment of the circle's agenda (:func:`enrs.coordination.agenda.
    create_appointment`) with them, on the window's first day at 09:00 (``zone``) for 30
    minutes, its comment giving the window: the members fix the real time by updating it.
    Nobody holding the role: the activity only, the appointment made by hand later. The
    activity names its appointment (``outcomeReference``), which points back to the plan
    (``supportingInformation``)."""
    row = _add_activity(session, plan, team, activity, position)
    holders = role_holders(session, team, activity.role)
    if not holders or activity.start is None:
        return row
    begins = datetime.combine(activity.start, time(9), tzinfo=zone)
    last = activity.end or activity.start
    row.appointment_id = agenda.create_appointment(
        session,
        reader,
        team,
        agenda.AppointmentFields(
            title=activity.description,
            start=begins,
            end=begins + timedelta(minutes=30),
            participants=tuple(
                agenda.Participant(kind=m.kind, rpps=m.rpps, finess=m.finess) for m in holders
            ),
            comment=(
                f"Parcours « {plan.title} » : à fixer entre le "
                f"{activity.start.strftime('%d/%m/%Y')} et le {last.strftime('%d/%m/%Y')}"
            ),
        ),
    ).id
    session.flush()
    return row


def _checked_start(start: date, today: date) -> None:
    if abs(start - today) > START_RANGE:
        raise Unprocessable(
            f"the pathway's start ({start.isoformat()}): within a year of today "
            f"({today.isoformat()})"
        )


def apply(
    session: Session,
    reader: Reader,
    team: CareTeam,
    pathway: Pathway,
    start: date,
    today: date,
    zone: tzinfo = UTC,
) -> CarePlan:
    """``PlanDefinition/$apply``: the pathway made the circle's plan (``active``) from
    ``start``: its goals (due after their delay), its activities, a coordination task for
    each task action (assigned to its role, due at the end of its window), the appointments
    and sessions scheduled (:func:`schedule_appointment`). 403 not a member, 409 the pathway
    already under way in the circle, 422 a start more than a year from ``today`` or a task
    role nobody holds in the circle."""
    service.require_current_member(session, team, reader, "a care plan")
    if pathway.status == "retired":
        raise Unprocessable(f"PlanDefinition/{pathway.id} is retired")
    _checked_start(start, today)
    missing = missing_roles(session, team, pathway)
    if missing:
        raise Unprocessable(
            f"PlanDefinition/{pathway.id} gives tasks to roles nobody holds in CareTeam/"
            f"{team.resource_id}: {', '.join(missing)} (invite them first)"
        )
    under_way = select(CarePlan.id).where(
        CarePlan.team_id == team.id,
        CarePlan.template == pathway.canonical,
        CarePlan.status.not_in(sorted(CLOSED)),
    )
    if session.scalar(under_way.limit(1)) is not None:
        raise Conflict(f"PlanDefinition/{pathway.id} is already under way in this care circle")
    goals = tuple(
        GoalFields(
            id=g.id,
            description=g.description,
            lifecycle="active",
            achievement="in-progress",
            due=g.due.after(start) if g.due else None,
        )
        for g in pathway.goals
    )
    ends = [a.end.after(start) for a in pathway.actions] + [g.due for g in goals if g.due]
    fields = PlanFields(
        title=pathway.title,
        status="active",
        description=f"Parcours appliqué à partir du {start.strftime('%d/%m/%Y')}.",
        start=start,
        end=max(ends, default=None),
        goals=goals,
    )
    plan = create(session, reader, team, fields, template=pathway.canonical)
    for position, action in enumerate(pathway.actions):
        window = ActivityFields(
            kind=action.kind,
            description=action.title,
            status="scheduled",
            role=action.role,
            start=action.start.after(start),
            end=action.end.after(start),
            goals=action.goals,
            id=action.id,
        )
        if action.kind == "task":
            _apply_task(session, reader, plan, team, pathway, action, position, window.end)
        else:
            schedule_appointment(session, reader, plan, team, window, position, zone)
    return plan


def _apply_task(
    session: Session,
    reader: Reader,
    plan: CarePlan,
    team: CareTeam,
    pathway: Pathway,
    action: PathwayAction,
    position: int,
    due: date | None,
) -> None:
    """A coordination task for a task action, assigned to its role, due by the end of its
    window; the plan's activity refers to it."""
    described = f"{action.description}\n" if action.description else ""
    task = tasks.create(
        session,
        reader,
        team,
        tasks.TaskFields(
            title=action.title,
            owner=tasks.Owner("role", role=action.role),
            description=f"{described}Plan de soins : {pathway.title}",
            due=tasks.end_of_day(due) if due else None,
        ),
    )
    _add_activity(
        session,
        plan,
        team,
        ActivityFields(kind="task", description=action.title, id=action.id, task=task.resource_id),
        position,
    )
