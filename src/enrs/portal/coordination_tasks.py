"""The coordination tasks in the portal (French UI, mobile-first), over the rules of
:mod:`enrs.coordination.tasks`:

- ``GET /taches`` — "Mes tâches": the professional's open tasks across their circles (the
  ``owner=me`` rule: theirs, their structures', a role they hold in the task's circle),
  overdue ones first and flagged *en retard*, then by due date, each linked to its
  coordination file;
- ``POST /coordination/{team}/taches`` — a new task (title, owner: a member or a role of the
  circle, due date), by a current member;
- ``POST /coordination/{team}/taches/{task}`` — a task moved along its allowed transitions
  (accept, start, complete, cancel), on the version the page showed: a task changed in
  between is refused (412, "La tâche a été modifiée entre-temps"), never overwritten.

Forms carry the session's CSRF token; only a current member of the circle who coordinates
(:func:`enrs.coordination.auth.coordinates`: a health professional or a social worker)
changes its tasks, a social worker only those given to them
(:func:`enrs.coordination.auth.changes_any_task`; 403 otherwise). Every page and change is
audited with the patient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from typing import Annotated
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.coordination import service, tasks
from enrs.coordination.auth import changes_any_task, coordinates
from enrs.coordination.models import CareTeam
from enrs.coordination.task_models import CoordinationTask
from enrs.coordination.tasks import Owner, TaskFields
from enrs.documents.access import Reader, reader_of
from enrs.identity.service import PatientRef
from enrs.kit.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _audit, _checked, _zone
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

# The moves a page offers (form value -> the FHIR status, the button's label), each shown only
# when tasks.TRANSITIONS allows it from the task's state.
ACTIONS: dict[str, tuple[str, str]] = {
    "accept": ("accepted", "Accepter"),
    "start": ("in-progress", "Commencer"),
    "complete": ("completed", "Terminer"),
    "cancel": ("cancelled", "Annuler"),
}
STATUS_FR = {
    "requested": "demandée",
    "accepted": "acceptée",
    "in-progress": "en cours",
    "on-hold": "en attente",
    "completed": "terminée",
    "cancelled": "annulée",
}
STALE = (
    "La tâche a été modifiée entre-temps : rien n'a été changé. Rechargez la page pour voir "
    "son état actuel, puis recommencez si besoin."
)


def actions_of(task: CoordinationTask) -> list[tuple[str, str]]:
    """``(form value, label)`` of the moves the task's state allows."""
    allowed = tasks.TRANSITIONS[task.status]
    return [(key, label) for key, (status, label) in ACTIONS.items() if status in allowed]


Moves = Callable[[CoordinationTask], list[tuple[str, str]]]


def moves_for(session: Session, user: Principal, reader: Reader) -> Moves:
    """The moves a coordination file offers on each task: none on a task the person may not
    change (a social worker's, not given to them)."""
    if changes_any_task(user):
        return actions_of

    def own(task: CoordinationTask) -> list[tuple[str, str]]:
        return actions_of(task) if tasks.is_owned(session, reader, task) else []

    return own


@dataclass(frozen=True)
class Shown:
    """A task as "Mes tâches" lists it."""

    task: CoordinationTask
    team: CareTeam
    rri: str
    late: bool


def _groups(shown: list[Shown], zone: ZoneInfo) -> list[tuple[str, list[Shown]]]:
    """Overdue first, then one group per due day (soonest first), then those without one."""
    late = [s for s in shown if s.late]
    by_day: dict[date, list[Shown]] = {}
    undated = []
    for item in shown:
        if item.late:
            continue
        if item.task.due_at is None:
            undated.append(item)
        else:
            by_day.setdefault(item.task.due_at.astimezone(zone).date(), []).append(item)
    groups = [("En retard", late)] if late else []
    groups += [(f"Pour le {day.strftime('%d/%m/%Y')}", by_day[day]) for day in sorted(by_day)]
    if undated:
        groups.append(("Sans échéance", undated))
    return groups


def _audit_patients(request: Request, user: Principal, patients: list[str]) -> None:
    """The list's audit record names its first patient; each other one gets its own."""
    if patients:
        request.state.audit[-1].patient_ref = f"Patient/{patients[0]}"
    for rri in patients[1:]:
        entry = new_entry(request, "rest", "search-type", action="E", resource_type="Task")
        set_agent(entry, user)
        entry.patient_ref = f"Patient/{rri}"


@router.get("/taches")
def my_tasks(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """The professional's open tasks across their circles."""
    _audit(request, user, "search-type", "Task", None)
    request.state.audit[-1].query = "owner=me"
    reader = reader_of(session, user)
    teams: dict[int, tuple[CareTeam, str]] = {}
    shown = []
    for task in tasks.tasks_for(session, reader, mine=True):
        if task.status in tasks.CLOSED:
            continue
        if task.team_id not in teams:
            team = tasks.team_of(session, task)
            teams[task.team_id] = (team, service.patient_of(session, team).rri)
        team, rri = teams[task.team_id]
        shown.append(Shown(task, team, rri, tasks.is_overdue(task)))
    _audit_patients(request, user, sorted({s.rri for s in shown}))
    zone = _zone(request)
    return _render(
        request,
        "coordination_tasks.html",
        groups=_groups(shown, zone),
        count=len(shown),
        status_fr=STATUS_FR,
        actions_of=actions_of,
        tz=zone,
        csrf=accounts_service.session_csrf(session, user),
    )


def _member_team(
    request: Request, session: Session, user: Principal, team_id: str, interaction: str
) -> tuple[CareTeam, PatientRef, Reader]:
    """The circle, for a professional who is one of its current members (else 403)."""
    team = service.team_by_id(session, team_id)
    patient = service.patient_of(session, team)
    _audit(request, user, interaction, "Task", patient)
    if not coordinates(user):
        raise Forbidden("les tâches sont réservées aux membres des cercles de soins")
    reader = reader_of(session, user)
    if not service.is_member(session, team, reader):
        raise Forbidden("ce cercle de soins est réservé à ses membres")
    return team, patient, reader


def _owner(raw: str) -> Owner:
    kind, _, value = raw.partition(":")
    value = value.strip()
    if value and kind == "rpps":
        return Owner("practitioner", rpps=value)
    if value and kind == "finess":
        return Owner("organization", finess=value)
    if value and kind == "role":
        return Owner("role", role=value)
    raise Unprocessable("choisissez à qui confier la tâche : un membre ou un rôle du cercle")


def _due(request: Request, raw: str) -> datetime | None:
    """The end of the chosen day, in the region's time zone."""
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise Unprocessable(f"échéance {raw!r} : une date AAAA-MM-JJ") from None
    return datetime.combine(day, time(23, 59, 59), tzinfo=_zone(request))


def _back(team: CareTeam, retour: str) -> str:
    """Where a form returns to: "Mes tâches", or the circle's file (no other place)."""
    if retour == "taches":
        return "/taches"
    return f"/coordination/{quote(team.resource_id)}#taches"


@router.post("/coordination/{team_id}/taches")
def create_task(
    request: Request,
    team_id: str,
    user: PortalUser,
    session: DbSession,
    titre: Annotated[str, Form()] = "",
    responsable: Annotated[str, Form()] = "",
    echeance: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """A member asks for a task in the circle."""
    team, _, reader = _member_team(request, session, user, team_id, "create")
    _checked(session, user, csrf)
    title = titre.strip()
    if not title or len(title) > 256:
        raise Unprocessable("le titre de la tâche : 1 à 256 caractères")
    fields = TaskFields(title=title, owner=_owner(responsable), due=_due(request, echeance))
    try:
        task = tasks.create(session, reader, team, fields)
    except Forbidden:
        raise Forbidden("ce cercle de soins n'est plus actif") from None
    except Unprocessable:
        raise Unprocessable(
            "la personne ou le rôle choisi n'est pas (ou plus) dans le cercle"
        ) from None
    request.state.audit[-1].entity_ref = f"Task/{task.resource_id}"
    return RedirectResponse(_back(team, ""), status_code=303)


@router.post("/coordination/{team_id}/taches/{task_id}")
def move_task(
    request: Request,
    team_id: str,
    task_id: str,
    user: PortalUser,
    session: DbSession,
    action: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    retour: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """A member moves a task along its transitions, on the version their page showed."""
    team, _, reader = _member_team(request, session, user, team_id, "update")
    request.state.audit[-1].entity_ref = f"Task/{task_id}"[:256]
    _checked(session, user, csrf)
    task = tasks.task_by_id(session, task_id)
    if task.team_id != team.id:
        raise NotFound("cette tâche n'est pas dans ce cercle de soins")
    if action not in ACTIONS:
        raise Unprocessable("action inconnue : accepter, commencer, terminer ou annuler")
    if not version.isdigit():
        raise Unprocessable("version de la tâche manquante : rechargez la page")
    status = ACTIONS[action][0]
    owner = Owner(task.owner_kind, task.owner_rpps, task.owner_finess, task.owner_role)
    fields = TaskFields(
        title=task.title,
        owner=owner,
        description=task.description,
        status=task.status,
        priority=task.priority,
        due=task.due_at,
    )
    own_only = not changes_any_task(user)
    if own_only and not tasks.is_owned(session, reader, task):
        raise Forbidden("vous ne changez que les tâches qui vous sont confiées")
    try:
        changed = replace(fields, status=status)
        tasks.update(session, reader, task, changed, int(version), own_only=own_only)
    except PreconditionFailed:
        raise PreconditionFailed(STALE) from None
    except Conflict:
        was = STATUS_FR.get(task.status, task.status)
        raise Conflict(f"cette tâche est {was} : elle ne peut plus être ainsi changée") from None
    except Forbidden:
        raise Forbidden("ce cercle de soins n'est plus actif") from None
    return RedirectResponse(_back(team, retour), status_code=303)
