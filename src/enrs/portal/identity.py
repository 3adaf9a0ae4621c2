"""The identitovigilance workbench (French UI): the cell's queue of potential duplicates and
collisions, two identities side by side with their differing traits highlighted, and the
decisions (each with a reason, audited, undoable)."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.identity import domains, repository, workbench
from enrs.identity.models import SourceIdentity
from enrs.kit.errors import BadRequest, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal import identity_words as words
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
    ("authority", "Établissement"),
    ("ipp", "IPP"),
    ("birth_name", "Nom de naissance"),
    ("used_name", "Nom utilisé"),
    ("given_names", "Prénoms de naissance"),
    ("birth_date", "Date de naissance"),
    ("sex", "Sexe"),
    ("birth_place", "Lieu de naissance"),
    ("death_date", "Date de décès"),
    ("address_line", "Adresse"),
    ("postal_code", "Code postal"),
    ("city", "Commune"),
    ("telecom", "Téléphone, courriel"),
    ("ins", "INS"),
    ("status", "Statut"),
    ("attributes", "Attributs"),
]


def _cell(request: Request, user: Principal, interaction: str, action: str) -> None:
    entry = new_entry(request, "rest", interaction, action=action, resource_type="Patient")
    set_agent(entry, user)
    if not CELL & user.roles:
        raise Forbidden("réservé à la cellule d'identitovigilance")


def _shown(field: str, value: Any, labels: dict[str, str]) -> str:
    """A trait as the cell reads it (facility name, JJ/MM/AAAA, words for codes)."""
    if value is None or value == "":
        return ""
    if field == "authority":
        return words.facility(labels, value)
    if field in ("birth_date", "death_date"):
        return words.day(value)
    if field == "sex":
        return words.SEXES.get(str(value), str(value))
    if field == "status":
        return words.STATUSES.get(str(value), str(value))
    if field == "attributes":
        return ", ".join(words.ATTRIBUTES.get(a, a) for a in str(value).split())
    if field == "telecom":
        return ", ".join(str(t.get("value", "")) for t in json.loads(str(value)))
    return str(value)


def _rows(
    a: SourceIdentity, b: SourceIdentity | None, labels: dict[str, str]
) -> list[dict[str, Any]]:
    rows = []
    for field, label in TRAITS:
        left = getattr(a, field)
        right = getattr(b, field) if b is not None else None
        rows.append(
            {
                "label": label,
                "left": _shown(field, left, labels),
                "right": _shown(field, right, labels),
                "differs": b is not None and (left or "") != (right or ""),
            }
        )
    return rows


PAGE_SIZE = 50


def _day_param(raw: str, what: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{what} : date invalide ({raw!r}), attendu AAAA-MM-JJ") from None


@router.get("/identitovigilance")
def queue(
    request: Request,
    user: PortalUser,
    session: DbSession,
    type: str = "",
    etablissement: str = "",
    du: str = "",
    au: str = "",
    page: int = 1,
) -> HTMLResponse:
    """The open tasks, best scores first, 50 a page; filtered by kind (``type``), facility of
    the received identity (``etablissement``, an OID) and creation day (``du``, ``au``)."""
    _cell(request, user, "search-type", "E")
    if type and type not in KINDS:
        raise BadRequest(f"type de tâche inconnu : {type!r}")
    filters = workbench.QueueFilter(
        kind=type or None,
        authority=etablissement or None,
        since=_day_param(du, "du"),
        until=_day_param(au, "au"),
    )
    request.state.audit[-1].query = str(request.url.query) or None
    total = workbench.count_open(session, filters)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), pages)
    tasks = workbench.open_tasks(session, filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    views = [workbench.view(session, t.id) for t in tasks]
    labels = domains.labels(session)
    chosen = {"type": type, "etablissement": etablissement, "du": du, "au": au}
    kept = {k: v for k, v in chosen.items() if v}

    def page_link(n: int) -> str:
        return "/identitovigilance?" + urlencode({**kept, "page": n})

    return _render(
        request,
        "identity_queue.html",
        views=views,
        kinds=KINDS,
        total=total,
        all_open=workbench.count_open(session),
        facilities=sorted(
            ((d.oid, words.facility(labels, d.oid)) for d in repository.domains(session)),
            key=lambda item: item[1].lower(),
        ),
        chosen=chosen,
        page=page,
        pages=pages,
        previous=page_link(page - 1) if page > 1 else None,
        next=page_link(page + 1) if page < pages else None,
        facility=lambda oid: words.facility(labels, oid),
        probability=lambda w: words.percent(request.app.state.matcher.model.probability(w)),
        day=words.day,
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
    task = current.task
    labels = domains.labels(session)
    model = request.app.state.matcher.model
    return _render(
        request,
        "identity_task.html",
        view=current,
        kinds=KINDS,
        rows=_rows(current.source, current.other, labels),
        probability=words.percent(model.probability(task.score))
        if task.score is not None
        else None,
        evidence=words.evidence(model, task.levels),
        decided=words.DECISIONS_DONE.get(task.decision or "", task.decision),
        decided_by=workbench.decider_name(session, task.decided_by),
        day=words.day,
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
