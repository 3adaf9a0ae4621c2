"""The identitovigilance cell's decisions on its queue of potential duplicates and collisions.

Decisions: ``LINK`` (the identity joins the other regional patient), ``MERGE`` (every identity
of both patients under one), ``KEEP_APART`` (not the same person: no change, and the pair is not
proposed again), ``UNLINK`` (a collision confirmed: the identity leaves for a new regional
patient), ``CONFIRM`` (a collision dismissed). Each takes a reason, records what it changed in
the task, and can be undone. Nothing is deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.accounts import repository as accounts_repository
from enrs.identity import repository
from enrs.identity.models import IdentityTask, RegionalPatient, SourceIdentity
from enrs.identity.service import link_source, new_patient, retire_if_empty
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound
from enrs.kit.events import emit

DECISIONS = {
    "DUPLICATE": ("LINK", "MERGE", "KEEP_APART"),
    "COLLISION": ("UNLINK", "CONFIRM"),
}


@dataclass(frozen=True)
class TaskView:
    task: IdentityTask
    source: SourceIdentity
    source_rri: str
    other: SourceIdentity | None
    other_rri: str
    same_facility: bool = False
    """The other patient holds another identity of the received identity's facility: two
    IPPs of one facility, which the facility merges itself (A40)."""


def decider_name(session: Session, actor: str | None) -> str | None:
    """Who decided a task, as the cell knows them: a user's display name, else the actor as
    recorded (``client:…``); ``None`` for an undecided task."""
    if not actor:
        return None
    kind, _, subject = actor.partition(":")
    user = accounts_repository.user_by_id(session, subject) if kind == "user" else None
    return user.display_name if user is not None else actor


def of_facility(authority: str) -> ColumnElement[bool]:
    """The tasks whose received identity is of the assigning authority ``authority``."""
    sources = select(SourceIdentity.id).where(SourceIdentity.authority == authority)
    return IdentityTask.source_id.in_(sources)


@dataclass(frozen=True)
class QueueFilter:
    """Which open tasks the cell looks at: of a kind, whose received identity is of a
    facility (assigning authority), created between two days (inclusive, UTC)."""

    kind: str | None = None
    authority: str | None = None
    since: date | None = None
    until: date | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = [IdentityTask.status == "OPEN"]
        if self.kind:
            out.append(IdentityTask.kind == self.kind)
        if self.authority:
            out.append(of_facility(self.authority))
        if self.since:
            out.append(IdentityTask.created_at >= _midnight(self.since))
        if self.until:
            out.append(IdentityTask.created_at < _midnight(self.until + timedelta(days=1)))
        return out


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def open_tasks(
    session: Session, filters: QueueFilter | None = None, *, limit: int = 100, offset: int = 0
) -> list[IdentityTask]:
    """The open tasks (``filters``), best scores first."""
    stmt = (
        select(IdentityTask)
        .where(*(filters or QueueFilter()).clauses())
        .order_by(IdentityTask.score.desc().nulls_last(), IdentityTask.id)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))


def count_open(session: Session, filters: QueueFilter | None = None) -> int:
    stmt = select(func.count()).select_from(IdentityTask)
    return int(session.scalar(stmt.where(*(filters or QueueFilter()).clauses())) or 0)


def view(session: Session, task_id: int) -> TaskView:
    task = session.get(IdentityTask, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    source = session.get(SourceIdentity, task.source_id)
    assert source is not None
    other = session.get(SourceIdentity, task.other_source_id) if task.other_source_id else None
    if other is None:
        others = repository.sources_of_patient(session, task.other_patient_id)
        other = next((o for o in others if o.id != source.id), None)
    same = repository.holds_authority(session, task.other_patient_id, source.authority, source.id)
    return TaskView(
        task,
        source,
        _rri(session, source.patient_id),
        other,
        _rri(session, task.other_patient_id),
        same_facility=same,
    )


def _rri(session: Session, patient_id: int) -> str:
    patient = session.get(RegionalPatient, patient_id)
    return patient.rri if patient else "?"


def _move(
    session: Session,
    source: SourceIdentity,
    patient_id: int,
    *,
    actor: str,
    reason: str,
    effects: list[dict[str, Any]],
    announce: bool = True,
) -> None:
    effects.append({"source_id": source.id, "from": source.patient_id, "to": patient_id})
    link_source(
        session, source, patient_id, "MANUAL", actor=actor, reason=reason, announce=announce
    )


def _retire_if_empty(
    session: Session, patient_id: int, into: int, effects: list[dict[str, Any]]
) -> None:
    if retire_if_empty(session, patient_id, into=into):
        effects.append({"retired": patient_id, "into": into})


def decide(session: Session, task_id: int, decision: str, *, reason: str, actor: str) -> TaskView:
    """Apply the cell's decision on an open task; raises BadRequest / Conflict / NotFound."""
    current = view(session, task_id)
    task, source = current.task, current.source
    if task.status != "OPEN":
        raise Conflict(f"task {task_id} was already decided ({task.decision})")
    if decision not in DECISIONS[task.kind]:
        raise BadRequest(f"{decision} is not a decision for a {task.kind} task")
    if not reason.strip():
        raise BadRequest("a reason is required")
    effects: list[dict[str, Any]] = []
    if decision == "LINK":
        former = source.patient_id
        _move(session, source, task.other_patient_id, actor=actor, reason=reason, effects=effects)
        _retire_if_empty(session, former, task.other_patient_id, effects)
    elif decision == "MERGE":
        former = source.patient_id
        for sibling in repository.sources_of_patient(session, former):
            _move(
                session, sibling, task.other_patient_id, actor=actor, reason=reason, effects=effects
            )
        _retire_if_empty(session, former, task.other_patient_id, effects)
    elif decision == "UNLINK":
        fresh = new_patient(session)
        _move(
            session, source, fresh.id, actor=actor, reason=reason, effects=effects, announce=False
        )
        emit(
            session,
            "identity.unlinked",
            {
                "source_id": source.id,
                "from_patient_id": task.other_patient_id,
                "to_patient_id": fresh.id,
            },
        )
    task.status, task.decision, task.decided_by = "DONE", decision, actor
    task.reason, task.decided_at, task.effects = reason, utcnow(), json.dumps(effects)
    session.flush()
    return view(session, task_id)


def undo(session: Session, task_id: int, *, reason: str, actor: str) -> TaskView:
    """Reverse a decision: identities go back to their former regional patients, retired
    patients come back; the task is open again. Refused if an identity moved since."""
    task = session.get(IdentityTask, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if task.status != "DONE":
        raise Conflict(f"task {task_id} has no decision to undo")
    effects: list[dict[str, Any]] = json.loads(task.effects or "[]")
    for effect in effects:
        if "source_id" in effect:
            source = session.get(SourceIdentity, effect["source_id"])
            if source is None or source.patient_id != effect["to"]:
                raise Conflict("an identity of this decision has moved since; undo by hand")
    for effect in reversed(effects):
        if "retired" in effect:
            patient = session.get(RegionalPatient, effect["retired"])
            if patient is not None:
                patient.active, patient.merged_into_id = True, None
                emit(session, "identity.unmerged", {"patient_id": patient.id})
    for effect in reversed(effects):
        if "source_id" in effect:
            source = session.get(SourceIdentity, effect["source_id"])
            assert source is not None
            link_source(
                session,
                source,
                effect["from"],
                "MANUAL",
                actor=actor,
                reason=f"undo of task {task_id}: {reason}",
            )
    task.status, task.decision, task.decided_by = "OPEN", None, None
    task.reason = f"undone by {actor}: {reason} (was: {task.reason})"
    task.decided_at, task.effects = None, None
    session.flush()
    return view(session, task_id)
