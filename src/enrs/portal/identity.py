"""The identitovigilance workbench (French UI): the cell's queue of potential duplicates and
collisions, two identities side by side with their differing traits highlighted, and the
decisions (each with a reason, audited, undoable)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.identity import workbench
from enrs.identity.models import SourceIdentity
from enrs.kit.errors import Forbidden
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
CELL = frozenset({"identitovigilance"})
KINDS = {"DUPLICATE": "Doublon potentiel", "COLLISION": "Collision potentielle"}
DECISION_LABELS = {
    "LINK": "Rattacher l'identité à l'autre patient",
    "MERGE": "Fusionner les deux patients",
    "KEEP_APART": "Garder séparés (personnes différentes)",
    "UNLINK": "Détacher l'identité (collision avérée)",
    "CONFIRM": "Confirmer le rattachement actuel",
}
TRAITS = [
    ("authority", "Établissement (OID)"),
    ("ipp", "IPP"),
    ("birth_name", "Nom de naissance"),
    ("used_name", "Nom utilisé"),
    ("given_names", "Prénoms de naissance"),
    ("birth_date", "Date de naissance"),
    ("sex", "Sexe"),
    ("birth_place", "Lieu de naissance"),
    ("address_line", "Adresse"),
    ("postal_code", "Code postal"),
    ("city", "Commune"),
    ("ins", "INS"),
    ("status", "Statut"),
    ("attributes", "Attributs"),
]


def _cell(request: Request, user: Principal, interaction: str, action: str) -> None:
    entry = new_entry(request, "rest", interaction, action=action, resource_type="Patient")
    set_agent(entry, user)
    if not CELL & user.roles:
        raise Forbidden("réservé à la cellule d'identitovigilance")


def _rows(a: SourceIdentity, b: SourceIdentity | None) -> list[dict[str, Any]]:
    rows = []
    for field, label in TRAITS:
        left = getattr(a, field)
        right = getattr(b, field) if b is not None else None
        rows.append(
            {
                "label": label,
                "left": left or "",
                "right": right or "",
                "differs": b is not None and (left or "") != (right or ""),
            }
        )
    return rows


@router.get("/identitovigilance")
def queue(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    _cell(request, user, "search-type", "E")
    views = [workbench.view(session, t.id) for t in workbench.open_tasks(session)]
    return _render(
        request,
        "identity_queue.html",
        views=views,
        kinds=KINDS,
        total=workbench.count_open(session),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/identitovigilance/taches/{task_id}")
def task_page(
    request: Request, task_id: int, user: PortalUser, session: DbSession, message: str = ""
) -> HTMLResponse:
    _cell(request, user, "read", "R")
    current = workbench.view(session, task_id)
    request.state.audit[-1].patient_ref = f"Patient/{current.source_rri}"
    request.state.audit[-1].entity_ref = f"Patient/{current.other_rri}"
    levels = current.task.levels
    return _render(
        request,
        "identity_task.html",
        view=current,
        kinds=KINDS,
        rows=_rows(current.source, current.other),
        levels=levels,
        decisions=[(d, DECISION_LABELS[d]) for d in workbench.DECISIONS[current.task.kind]],
        message=message,
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/identitovigilance/taches/{task_id}/decision")
def decide(
    request: Request,
    task_id: int,
    user: PortalUser,
    session: DbSession,
    decision: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _cell(request, user, "update", "U")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    current = workbench.decide(
        session, task_id, decision, reason=reason, actor=f"user:{user.subject}"
    )
    request.state.audit[-1].patient_ref = f"Patient/{current.source_rri}"
    request.state.audit[-1].entity_ref = f"Patient/{current.other_rri}"
    request.state.audit[-1].query = f"decision={decision}; reason={reason}"
    return RedirectResponse(f"/identitovigilance/taches/{task_id}?message=decision", 303)


@router.post("/identitovigilance/taches/{task_id}/annuler")
def undo(
    request: Request,
    task_id: int,
    user: PortalUser,
    session: DbSession,
    reason: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _cell(request, user, "update", "U")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    current = workbench.undo(
        session, task_id, reason=reason or "annulation", actor=f"user:{user.subject}"
    )
    request.state.audit[-1].patient_ref = f"Patient/{current.source_rri}"
    request.state.audit[-1].query = f"undo; reason={reason}"
    return RedirectResponse(f"/identitovigilance/taches/{task_id}?message=undone", 303)
