"""The evaluation forms in the portal (French UI, mobile-first): a grid (EPICES, Katz ADL)
rendered from its definition as an HTML form, filled in from a circle's coordination file and
recorded by :func:`enrs.coordination.forms.create` — the API's rule, validated and scored the
same way; what is refused is shown again, each error in French next to its question, and
nothing is stored. :func:`evaluations` is what the coordination file lists: the patient's
evaluations with their score and date. Every page is audited with the patient."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.coordination import forms, service
from enrs.coordination.models import CareTeam
from enrs.documents.access import Reader, reader_of
from enrs.identity.service import PatientRef
from enrs.kit.errors import Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _audit, _checked
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


@dataclass(frozen=True)
class Evaluation:
    """One line of the coordination file's evaluations."""

    title: str
    score: str | None
    meaning: str | None
    authored: datetime
    author: str
    status: str


def french_number(value: Decimal) -> str:
    """``53,84``, ``5,5``, ``6``: a score as French writes it."""
    return f"{value:.2f}".rstrip("0").rstrip(".").replace(".", ",")


def evaluations(session: Session, reader: Reader, patient: PatientRef) -> list[Evaluation]:
    """The patient's evaluations, newest first (the reader is a member of its circle)."""
    found = []
    for response in forms.responses_for(session, reader, patient):
        grid = forms.definition(response.questionnaire)
        total = forms.response_score(response)
        found.append(
            Evaluation(
                title=grid.title,
                score=None if total is None else french_number(total),
                meaning=grid.meaning(total),
                authored=response.authored_at,
                author=response.author_display,
                status=response.status,
            )
        )
    return found


def grids() -> list[forms.Definition]:
    return list(forms.definitions().values())


def _opened(
    request: Request, session: Session, user: Principal, team_id: str, interaction: str
) -> tuple[CareTeam, PatientRef, Reader]:
    """The circle, its patient and the reader (a current member allowed to record
    evaluations, else 403); the request audited with the patient."""
    team = service.team_by_id(session, team_id)
    patient = service.patient_of(session, team)
    _audit(request, user, interaction, "QuestionnaireResponse", patient)
    if not user.can("QuestionnaireResponse", "c"):
        raise Forbidden("les évaluations sont réservées aux membres des cercles de soins")
    reader = reader_of(session, user)
    if not service.is_member(session, team, reader):
        raise Forbidden("ce cercle de soins est réservé à ses membres")
    return team, patient, reader


def _page(
    request: Request,
    session: Session,
    user: Principal,
    team: CareTeam,
    patient: PatientRef,
    grid: forms.Definition,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return _render(
        request,
        "coordination_form.html",
        status,
        team=team,
        patient=patient,
        grid=grid,
        values=values or {},
        errors=errors or {},
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/coordination/{team_id}/evaluations/{questionnaire_id}")
def form_page(
    request: Request, team_id: str, questionnaire_id: str, user: PortalUser, session: DbSession
) -> HTMLResponse:
    """The grid to fill in for the circle's patient."""
    team, patient, _ = _opened(request, session, user, team_id, "read")
    grid = forms.definition(questionnaire_id)
    request.state.audit[-1].entity_ref = f"Questionnaire/{grid.id}"
    return _page(request, session, user, team, patient, grid)


def _given(grid: forms.Definition, fields: dict[str, str]) -> forms.Given:
    """What the form sent, as the API's ``item`` list (an empty field is unanswered)."""
    given: list[tuple[Any, list[dict[str, Any]]]] = []
    for item in grid.items:
        raw = fields.get(item.link_id, "").strip()
        if item.read_only or not raw:
            continue
        value: Any = raw
        if item.type == "choice":
            value = {"code": raw}
        elif item.type == "boolean" and raw in ("true", "false"):
            value = raw == "true"
        elif item.type == "integer" and raw.lstrip("-").isdigit():
            value = int(raw)
        elif item.type == "decimal":
            try:
                value = Decimal(raw.replace(",", "."))
            except ArithmeticError:
                value = raw
        given.append((item.link_id, [{forms.VALUE_OF[item.type][0]: value}]))
    return given


async def _form_fields(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


FormFields = Annotated[dict[str, str], Depends(_form_fields)]


@router.post("/coordination/{team_id}/evaluations/{questionnaire_id}")
def record(
    request: Request,
    team_id: str,
    questionnaire_id: str,
    user: PortalUser,
    session: DbSession,
    fields: FormFields,
) -> Response:
    """The grid filled in, recorded for the circle's patient; shown again with the errors
    next to their questions when refused."""
    team, patient, reader = _opened(request, session, user, team_id, "create")
    _checked(session, user, fields.get("csrf", ""))
    grid = forms.definition(questionnaire_id)
    try:
        response = forms.create(session, reader, patient, grid, _given(grid, fields))
    except forms.FormInvalid as refused:
        errors = {p.link_id or "": p.french for p in refused.problems}
        request.state.audit[-1].detail = refused.message[:1000]
        return _page(
            request, session, user, team, patient, grid, values=fields, errors=errors, status=422
        )
    request.state.audit[-1].entity_ref = f"QuestionnaireResponse/{response.resource_id}"
    return RedirectResponse(f"/coordination/{quote(team.resource_id)}#evaluations", 303)
