"""Coordination tasks (issue 15, FHIR ``Task``): what the members of a patient's care circle
ask one another to do.

- **Who**: only the circle's current members (a professional, or one of their structures:
  :func:`enrs.coordination.service.is_member`, the rule of :mod:`.circle`) create, see and
  change its tasks; a member removed from the circle loses them at once.
- **Assigned to** a professional (RPPS) or a structure (FINESS) that is a current member of
  the circle, or to a role of the circle (the text of an active member's role, e.g. ``IDE``):
  then whoever holds that role in the circle has it among their tasks.
- **States**: the FHIR Task subset ``requested``, ``accepted``, ``in-progress``, ``on-hold``,
  ``completed``, ``cancelled``, moving only along :data:`TRANSITIONS`; ``completed`` and
  ``cancelled`` are final.
- **Overdue** (:func:`is_overdue`): its due date passed, and neither completed nor cancelled.
- **Assigned**: a new task, and a task given to another owner, is announced
  (:data:`ASSIGNED`, the task's id, its origin who assigned it) for the owner's notification.
- **Versions**: each change raises the task's version; a change made on another version than
  the task's (``If-Match``) is refused, nothing changed
  (:class:`~enrs.kit.errors.PreconditionFailed`).

Errors: 403 (not a member), 404 (unknown task), 409 (a move its state does not allow), 412
(stale version), 422 (an owner who is not in the circle, bad fields).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.coordination import circle, service
from enrs.coordination.models import CareTeam, Member
from enrs.coordination.task_models import CoordinationTask
from enrs.documents.access import Reader
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable
from enrs.kit.events import emit, set_origin

REQUESTED = "requested"
TRANSITIONS: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({"accepted", "in-progress", "on-hold", "completed", "cancelled"}),
    "accepted": frozenset({"in-progress", "on-hold", "completed", "cancelled"}),
    "in-progress": frozenset({"on-hold", "completed", "cancelled"}),
    "on-hold": frozenset({REQUESTED, "accepted", "in-progress", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}
CLOSED = frozenset({"completed", "cancelled"})
PRIORITIES = ("routine", "urgent", "asap", "stat")
OWNER_KINDS = ("practitioner", "organization", "role")
ASSIGNED = "coordination.task_assigned"  # a task given to an owner (made, or owner changed)


@dataclass(frozen=True)
class Owner:
    """Whom a task is assigned to: ``rpps`` (a professional), ``finess`` (a structure) or
    ``role`` (a role of the circle), per ``kind``."""

    kind: str
    rpps: str | None = None
    finess: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class TaskFields:
    """What a task says, as created or as replaced by an update."""

    title: str
    owner: Owner
    description: str | None = None
    status: str = REQUESTED
    priority: str = "routine"
    due: datetime | None = None


def _new_id() -> str:
    """32 hex digits, at least one of them a letter (never taken for a cell's numeric id)."""
    while True:
        found = uuid.uuid4().hex
        if not found.isdigit():
            return found


def end_of_day(day: date) -> datetime:
    """A task due on a day (a date alone) is due by the end of that day, UTC."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def is_overdue(task: CoordinationTask, now: datetime | None = None) -> bool:
    """The one overdue rule: its due date passed and it is neither completed nor cancelled."""
    return task.due_at is not None and task.due_at < (now or utcnow()) and task.status not in CLOSED


def team_of(session: Session, task: CoordinationTask) -> CareTeam:
    return service.circle_of(session, task.team_id, f"Task/{task.resource_id}")


def task_by_id(session: Session, resource_id: str) -> CoordinationTask:
    found = session.scalar(
        select(CoordinationTask).where(CoordinationTask.resource_id == resource_id)
    )
    if found is None:
        raise NotFound(f"Task/{resource_id} not found")
    return found


def seen(session: Session, task: CoordinationTask, reader: Reader) -> CoordinationTask:
    """The task, when the reader is a current member of its circle (else 403)."""
    service.require_current_member(
        session, team_of(session, task), reader, f"Task/{task.resource_id}"
    )
    return task


def _owner(session: Session, team: CareTeam, owner: Owner) -> tuple[str, str]:
    """``(kind, display)`` of an owner that is a current member of the circle (or a role one
    of them holds), else 422."""
    if owner.kind not in OWNER_KINDS:
        raise Unprocessable(f"a task's owner is one of {', '.join(OWNER_KINDS)}")
    stmt = select(Member).where(
        Member.team_id == team.id,
        Member.kind != "related-person",
        circle.current_clause(utcnow()),
    )
    if owner.kind == "practitioner":
        stmt = stmt.where(Member.kind == "practitioner", Member.rpps == (owner.rpps or ""))
    elif owner.kind == "organization":
        stmt = stmt.where(Member.kind == "organization", Member.finess == (owner.finess or ""))
    else:
        stmt = stmt.where(Member.role == (owner.role or "").strip())
    member = session.scalar(stmt.order_by(Member.id).limit(1))
    if member is None:
        raise Unprocessable(
            f"Task.owner: not a current member (nor a role) of CareTeam/{team.resource_id}"
        )
    return owner.kind, member.role if owner.kind == "role" else member.display


def _checked(fields: TaskFields) -> None:
    title = fields.title.strip()
    if not title or len(title) > 256:
        raise Unprocessable("a task's title (Task.code.text): 1 to 256 characters")
    if fields.status not in TRANSITIONS:
        raise Unprocessable(f"Task.status: one of {', '.join(TRANSITIONS)}")
    if fields.priority not in PRIORITIES:
        raise Unprocessable(f"Task.priority: one of {', '.join(PRIORITIES)}")


def _assign(task: CoordinationTask, owner: Owner, kind: str, display: str) -> None:
    task.owner_kind, task.owner_display = kind, display
    task.owner_rpps = owner.rpps if kind == "practitioner" else None
    task.owner_finess = owner.finess if kind == "organization" else None
    task.owner_role = display if kind == "role" else None


def create(
    session: Session, reader: Reader, team: CareTeam, fields: TaskFields
) -> CoordinationTask:
    """A new task in the circle, asked by one of its current members; ``requested``."""
    service.require_current_member(session, team, reader, "a task")
    _checked(fields)
    if fields.status != REQUESTED:
        raise Unprocessable("a new task is requested (Task.status)")
    kind, display = _owner(session, team, fields.owner)
    now = utcnow()
    task = CoordinationTask(
        resource_id=_new_id(),
        team_id=team.id,
        patient_id=team.patient_id,
        title=fields.title.strip(),
        description=fields.description,
        status=REQUESTED,
        priority=fields.priority,
        requester_key=reader.key,
        requester_display=reader.name,
        due_at=fields.due,
        created_at=now,
        updated_at=now,
        version=1,
    )
    _assign(task, fields.owner, kind, display)
    session.add(task)
    session.flush()
    _announce(session, reader, team, task)
    return task


def _announce(session: Session, reader: Reader, team: CareTeam, task: CoordinationTask) -> None:
    set_origin(session, reader.origin)
    owner = {"rpps": task.owner_rpps, "finess": task.owner_finess, "role": task.owner_role}
    emit(session, ASSIGNED, {"task": task.resource_id, "team": team.resource_id, **owner})


def update(
    session: Session,
    reader: Reader,
    task: CoordinationTask,
    fields: TaskFields,
    expected: int | None = None,
    *,
    own_only: bool = False,
) -> CoordinationTask:
    """A current member of the circle changes the task (its state along
    :data:`TRANSITIONS`, its owner, due date, priority, title, description); a new owner is
    a current member (or role) of the circle, an unchanged one is kept. ``expected``:
    the version the change was made on; another one is refused, nothing changed.
    ``own_only`` (a social worker: :func:`enrs.coordination.auth.changes_any_task`): only a
    task given to the reader (:func:`is_owned`), else 403."""
    team = team_of(session, task)
    service.require_current_member(session, team, reader, f"Task/{task.resource_id}")
    if own_only and not is_owned(session, reader, task):
        raise Forbidden(f"Task/{task.resource_id}: changed only by whom it is given to")
    if expected is not None and expected != task.version:
        raise PreconditionFailed(
            f"Task/{task.resource_id} is at version {task.version}, not {expected}: "
            "read it again before changing it"
        )
    _checked(fields)
    if fields.status != task.status and fields.status not in TRANSITIONS[task.status]:
        raise Conflict(f"Task/{task.resource_id} is {task.status}: it cannot be {fields.status}")
    reassigned = not _same_owner(task, fields.owner)
    if not reassigned:  # kept, even when no longer in the circle
        kind, display = task.owner_kind, task.owner_display
    else:
        kind, display = _owner(session, team, fields.owner)
    before = _snapshot(task)
    task.title, task.description = fields.title.strip(), fields.description
    task.status, task.priority, task.due_at = fields.status, fields.priority, fields.due
    _assign(task, fields.owner, kind, display)
    if _snapshot(task) != before:
        task.version += 1
        task.updated_at = utcnow()
    if reassigned:
        _announce(session, reader, team, task)
    return task


def _same_owner(task: CoordinationTask, owner: Owner) -> bool:
    if owner.kind != task.owner_kind:
        return False
    if owner.kind == "practitioner":
        return owner.rpps == task.owner_rpps
    if owner.kind == "organization":
        return owner.finess == task.owner_finess
    return (owner.role or "").strip() == task.owner_role


def _snapshot(task: CoordinationTask) -> tuple[object, ...]:
    return (
        task.title,
        task.description,
        task.status,
        task.priority,
        task.due_at,
        task.owner_kind,
        task.owner_rpps,
        task.owner_finess,
        task.owner_role,
    )


def _owned_clause(reader: Reader) -> ColumnElement[bool]:
    """The tasks given to the reader, beside a current ``Member`` row of the reader in the
    task's circle: their RPPS, one of their structures, or the role that member holds."""
    owned = [CoordinationTask.owner_role == Member.role]
    if reader.rpps:
        owned.append(CoordinationTask.owner_rpps == reader.rpps)
    if reader.structures:
        owned.append(CoordinationTask.owner_finess.in_(sorted(reader.structures)))
    return or_(*owned)


def _membership(reader: Reader) -> list[ColumnElement[bool]]:
    return [
        Member.team_id == CoordinationTask.team_id,
        circle.current_clause(utcnow()),
        circle.member_clause(reader.rpps, reader.structures),
    ]


def is_owned(session: Session, reader: Reader, task: CoordinationTask) -> bool:
    """Whether the task is given to the reader (the ``owner=me`` rule of :func:`visible_tasks`,
    on one task)."""
    stmt = select(CoordinationTask.id).where(
        CoordinationTask.id == task.id, exists().where(*_membership(reader), _owned_clause(reader))
    )
    return session.scalar(stmt) is not None


def overdue_clause(now: datetime) -> ColumnElement[bool]:
    """:func:`is_overdue` as SQL, for searches and counts (the same rule, kept beside it)."""
    return and_(
        CoordinationTask.due_at.is_not(None),
        CoordinationTask.due_at < now,
        CoordinationTask.status.not_in(sorted(CLOSED)),
    )


# The order tasks are listed in: by due date (none last), then as they were asked.
TASK_ORDER = (
    CoordinationTask.due_at.asc().nulls_last(),
    CoordinationTask.created_at.asc(),
    CoordinationTask.id.asc(),
)


def visible_tasks(
    reader: Reader, *, mine: bool = False, patient_ids: list[int] | None = None
) -> Select[CoordinationTask]:
    """The statement of the tasks of the active circles the reader is a current member of,
    of the patient (merged patients too) when ``patient_ids`` is given; ``mine``: only those
    owned by the reader — their RPPS, one of their structures, or a role they hold in that
    task's circle. One row per task (the membership is an ``EXISTS``), in no order."""
    member = _membership(reader)
    if mine:
        member.append(_owned_clause(reader))
    stmt = (
        select(CoordinationTask)
        .join(CareTeam, CareTeam.id == CoordinationTask.team_id)
        .where(CareTeam.status == circle.ACTIVE, exists().where(*member))
    )
    if patient_ids is not None:
        stmt = stmt.where(CoordinationTask.patient_id.in_(patient_ids))
    return stmt


def tasks_for(
    session: Session,
    reader: Reader,
    *,
    mine: bool = False,
    patient_ids: list[int] | None = None,
) -> list[CoordinationTask]:
    """Every task :func:`visible_tasks` gives, in :data:`TASK_ORDER`."""
    stmt = visible_tasks(reader, mine=mine, patient_ids=patient_ids)
    return list(session.scalars(stmt.order_by(*TASK_ORDER)))


def open_tasks(
    session: Session, reader: Reader, team: CareTeam, limit: int | None
) -> tuple[list[CoordinationTask], int]:
    """The circle's open tasks the reader sees, the first ``limit`` of them in
    :data:`TASK_ORDER` (all when ``None``), and how many there are."""
    stmt = visible_tasks(reader).where(
        CoordinationTask.team_id == team.id, CoordinationTask.status.not_in(sorted(CLOSED))
    )
    found = list(session.scalars(stmt.order_by(*TASK_ORDER).limit(limit)))
    if limit is None or len(found) < limit:
        return found, len(found)
    counted = session.scalar(select(func.count()).select_from(stmt.subquery()))
    return found, counted or 0
