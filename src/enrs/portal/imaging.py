"""The identitovigilance cell's view of the imaging archive (French UI): the studies the archive
could not attach to a regional patient, why, and the correction of one (attach it to a
regional patient, correct its accession number; a reason each time, the history kept,
audited). The rules are :mod:`enrs.imaging.correction`'s; the same role as the workbench."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.identity import domains, repository, workbench
from enrs.imaging import correction
from enrs.kit.errors import BadRequest, EnrsError, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal import identity_words as words
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _render
from enrs.portal.identity import CELL

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
PAGE_SIZE = 50
STATUSES = {"unknown": "Patient inconnu", "conflict": "Conflit", "resolved": "Rattaché"}
RRI = "rri"  # the identifier kind "regional identifier" in the form


def _cell(request: Request, user: Principal, interaction: str, action: str) -> None:
    entry = new_entry(request, "rest", interaction, action=action, resource_type="ImagingStudy")
    set_agent(entry, user)
    if not CELL & user.roles:
        raise Forbidden("réservé à la cellule d'identitovigilance")


@router.get("/identitovigilance/imagerie")
def flagged_studies(
    request: Request, user: PortalUser, session: DbSession, statut: str = "", page: int = 1
) -> HTMLResponse:
    """The flagged studies (or those of ``statut``), oldest first, 50 a page, with why."""
    _cell(request, user, "search-type", "E")
    if statut and statut not in STATUSES:
        raise BadRequest(f"statut inconnu : {statut!r}")
    request.state.audit[-1].query = str(request.url.query) or None
    count = correction.studies(session, status=statut or None, flagged=not statut, limit=1).total
    pages = max(1, -(-count // PAGE_SIZE))
    page = min(max(page, 1), pages)
    found = correction.studies(
        session,
        status=statut or None,
        flagged=not statut,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )

    def page_link(n: int) -> str:
        return "/identitovigilance/imagerie?" + urlencode({"statut": statut, "page": n})

    return _render(
        request,
        "imaging_studies.html",
        rows=found.rows,
        total=found.total,
        statuses=STATUSES,
        chosen=statut,
        page=page,
        pages=pages,
        previous=page_link(page - 1) if page > 1 else None,
        next=page_link(page + 1) if page < pages else None,
        day=words.day,
    )


@router.get("/identitovigilance/imagerie/{study_uid}")
def study_page(
    request: Request, study_uid: str, user: PortalUser, session: DbSession, message: str = ""
) -> HTMLResponse:
    """One study: what was received, why it is flagged, its corrections, the form."""
    _cell(request, user, "read", "R")
    row, kept = correction.history(session, study_uid)
    request.state.audit[-1].entity_ref = f"ImagingStudy/{row.study.study_uid}"
    if row.patient is not None:
        request.state.audit[-1].patient_ref = f"Patient/{row.patient.rri}"
    labels = domains.labels(session)
    return _render(
        request,
        "imaging_study.html",
        row=row,
        corrections=list(reversed(kept)),
        rri=lambda pid: _rri(session, pid),
        who=lambda actor: workbench.decider_name(session, actor),
        statuses=STATUSES,
        authorities=sorted(
            ((d.oid, words.facility(labels, d.oid)) for d in repository.domains(session)),
            key=lambda item: item[1].lower(),
        ),
        facility=lambda oid: words.facility(labels, oid),
        rri_kind=RRI,
        stamp=correction.stamp(session, row.study),
        message=message,
        day=words.day,
        csrf=accounts_service.session_csrf(session, user),
    )


def _rri(session: DbSession, patient_id: int | None) -> str:
    from enrs.identity import service as identity_service

    found = identity_service.current_patient(session, patient_id) if patient_id else None
    return found.rri if found is not None else "—"


@router.post("/identitovigilance/imagerie/{study_uid}/correction")
def correct(
    request: Request,
    study_uid: str,
    user: PortalUser,
    session: DbSession,
    motif: Annotated[str, Form()] = "",
    autorite: Annotated[str, Form()] = "",
    identifiant: Annotated[str, Form()] = "",
    accession: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Correct the study: attach it to the patient of ``identifiant`` in ``autorite`` (an
    OID, or ``rri`` for the regional identifier), and/or set its accession number."""
    _cell(request, user, "update", "U")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    identifiant = identifiant.strip()
    if identifiant and not autorite:
        raise BadRequest("choisissez l'autorité de l'identifiant du patient")
    try:
        done = correction.correct(
            session,
            request.app.state.identity_config,
            study_uid,
            reason=motif,
            actor=f"user:{user.subject}",
            patient=(autorite, identifiant) if identifiant and autorite != RRI else None,
            regional_id=identifiant if identifiant and autorite == RRI else None,
            accession=accession.strip() or None,
            expected=version or None,
        )
    except EnrsError as exc:
        exc.message = f"Correction refusée : {exc.message}"
        raise
    entry = request.state.audit[-1]
    entry.entity_ref = f"ImagingStudy/{done.study.study_uid}"
    entry.patient_ref = f"Patient/{done.after.rri}" if done.after else None
    entry.detail = correction.audit_detail(done)
    return RedirectResponse(
        f"/identitovigilance/imagerie/{done.study.study_uid}?message=corrige", 303
    )
