"""The care plan on a circle's coordination file (French UI, mobile-first): the open plans with
their goals and activities (a task's state is the task's), and the pathway picker
(*Appliquer un parcours*) that applies one of the region's pathways from a start date — the
same :func:`enrs.coordination.plans.apply` as ``PlanDefinition/$apply``. For the circle's
current members; every page and form is audited with the patient."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.coordination import plan_endpoints, plans, service, tasks
from enrs.coordination.agenda_models import CoordinationAppointment
from enrs.coordination.auth import manages_circle
from enrs.coordination.models import CareTeam
from enrs.coordination.plan_models import CarePlan, PlanActivity, PlanGoal
from enrs.coordination.task_models import CoordinationTask
from enrs.documents.access import Reader, reader_of
from enrs.kit.errors import BadRequest, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.portal.agenda_changes import STATUS_LABELS
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.documents import _audit

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

PLAN_STATUS = {"draft": "brouillon", "active": "actif", "on-hold": "suspendu"}
GOAL_STATUS = {
    "in-progress": "en cours",
    "improving": "en amélioration",
    "worsening": "en dégradation",
    "no-change": "stable",
    "achieved": "atteint",
    "sustaining": "maintenu",
    "not-achieved": "non atteint",
    "no-progress": "sans progrès",
    "not-attainable": "non atteignable",
}
ACTIVITY_STATUS = {
    "not-started": "à faire",
    "scheduled": "planifié",
    "in-progress": "en cours",
    "on-hold": "suspendu",
    "completed": "fait",
    "cancelled": "annulé",
    "stopped": "arrêté",
    "unknown": "inconnu",
}
TASK_STATUS = {
    "requested": "demandée",
    "accepted": "acceptée",
    "in-progress": "en cours",
    "on-hold": "suspendue",
    "completed": "faite",
    "cancelled": "annulée",
}
KIND = {"task": "Tâche", "appointment": "Rendez-vous", "session": "Séance d'éducation"}


@dataclass(frozen=True)
class ActivityLine:
    kind: str
    description: str
    role: str | None
    start: date | None
    end: date | None
    status: str
    late: bool
    appointment: str | None = None  # the state of the appointment a pathway proposed


@dataclass(frozen=True)
class PlanView:
    plan: CarePlan
    status: str
    goals: list[tuple[PlanGoal, str]]
    activities: list[ActivityLine]


@dataclass(frozen=True)
class PathwayChoice:
    id: str
    title: str
    missing: list[str]


def _line(
    activity: PlanActivity,
    task: CoordinationTask | None,
    appointment: CoordinationAppointment | None = None,
) -> ActivityLine:
    """One activity as the page lists it: a task's title, owner, due date and state are the
    task's; an appointment's state is that of the one its pathway proposed."""
    if task is not None:
        return ActivityLine(
            kind=KIND["task"],
            description=task.title,
            role=task.owner_display,
            start=None,
            # Due by the end of a day (UTC midnight after it): that day.
            end=(task.due_at - timedelta(microseconds=1)).date() if task.due_at else None,
            status=TASK_STATUS.get(task.status, task.status),
            late=tasks.is_overdue(task),
        )
    return ActivityLine(
        kind=KIND[activity.kind],
        description=activity.description,
        role=activity.performer_role,
        start=activity.scheduled_start,
        end=activity.scheduled_end,
        status=ACTIVITY_STATUS.get(activity.status, activity.status),
        late=False,
        appointment=(
            STATUS_LABELS.get(appointment.status, appointment.status) if appointment else None
        ),
    )


def _view(session: Session, plan: CarePlan) -> PlanView:
    activities = plans.activities_of(session, plan)
    by_id = plans.tasks_of(session, activities)
    made = plans.appointments_of(session, activities)
    lines = [
        _line(
            a,
            by_id.get(a.task_id) if a.task_id else None,
            made.get(a.appointment_id) if a.appointment_id else None,
        )
        for a in activities
    ]
    goals = [
        (g, GOAL_STATUS.get(g.achievement_status or "", g.lifecycle_status))
        for g in plans.goals_of(session, plan)
    ]
    return PlanView(plan, PLAN_STATUS.get(plan.status, plan.status), goals, lines)


@dataclass(frozen=True)
class PlanSection:
    plans: list[PlanView]
    pathways: list[PathwayChoice]
    today: str


def plan_section(request: Request, session: Session, reader: Reader, team: CareTeam) -> PlanSection:
    """What ``coordination_file_plan.html`` shows: the circle's open plans, the pathways to
    apply (with the roles the circle lacks for their tasks), today's date."""
    pathways = plan_endpoints.pathways_of(request).values()
    return PlanSection(
        plans=[_view(session, p) for p in plans.open_plans(session, reader, team)],
        pathways=[
            PathwayChoice(p.id, p.title, plans.missing_roles(session, team, p)) for p in pathways
        ],
        today=plan_endpoints.today(request).isoformat(),
    )


def may_apply(user: Principal) -> bool:
    """Who applies a pathway (its plan, tasks and appointments): a health professional of the
    circle (:func:`enrs.coordination.auth.manages_circle`) whose scopes make all three."""
    scopes = user.can("CarePlan", "c") and user.can("Task", "c") and user.can("Appointment", "c")
    return scopes and manages_circle(user)


@router.post("/coordination/{team_id}/parcours")
def apply_pathway(
    request: Request,
    team_id: str,
    user: PortalUser,
    session: DbSession,
    parcours: Annotated[str, Form()] = "",
    debut: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """A member applies a pathway to the circle's patient from a start date (today without
    one): the plan, its tasks and scheduled activities, as ``PlanDefinition/$apply``."""
    team = service.team_by_id(session, team_id)
    patient = service.patient_of(session, team)
    _audit(request, user, "create", "CarePlan", patient)
    entry = request.state.audit[-1]
    entry.entity_ref, entry.detail = f"CareTeam/{team.resource_id}", f"PlanDefinition/{parcours}"
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    if not may_apply(user):
        raise Forbidden("seul un professionnel du cercle applique un parcours")
    pathway = plan_endpoints.pathway_by_id(request, parcours)
    today = plan_endpoints.today(request)
    try:
        start = date.fromisoformat(debut) if debut else today
    except ValueError as exc:
        raise BadRequest("date de début invalide (jj/mm/aaaa)") from exc
    zone = plan_endpoints.zone(request)
    plan = plans.apply(session, reader_of(session, user), team, pathway, start, today, zone)
    entry.entity_ref = f"CarePlan/{plan.resource_id}"
    return RedirectResponse(
        f"/coordination/{quote(team.resource_id)}?message=parcours#plan", status_code=303
    )
