"""The Storage Commitment reports of the imaging archive that could not be delivered on their
request's association, for the regional team (French UI, admins only, audited): those waiting
for their next attempt and those given up after the retries, with the last error, and a button
to try one again once the modality is repaired (:func:`enrs.imaging.commitment.rearm`, as
``enrs imaging commitments --retry ID``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.imaging import commitment
from enrs.kit.errors import Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.documents import _zone
from enrs.portal.endpoints import _admin_page, _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
STATUS_LABELS = {commitment.PENDING: "en attente d'un nouvel essai", commitment.FAILED: "abandonné"}
EVENT_LABELS = {1: "tout est conservé", 2: "des instances manquent"}


@router.get("/admin/imagerie/engagements")
def commitments_page(
    request: Request, user: PortalUser, session: DbSession, message: str = ""
) -> HTMLResponse:
    _admin_page(request, user, "search-type", "StorageCommitment")
    return _render(
        request,
        "imaging_commitments.html",
        rows=commitment.listing(session),
        labels=STATUS_LABELS,
        events=EVENT_LABELS,
        tz=_zone(request),
        notice="Le compte rendu sera renvoyé dans quelques secondes."
        if message == "relance"
        else "",
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/admin/imagerie/engagements/{report_id}/relancer")
def commitment_retry(
    request: Request,
    report_id: int,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _admin_page(request, user, "update", "StorageCommitment")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    request.state.audit[-1].entity_ref = f"StorageCommitment/{report_id}"
    commitment.rearm(session, report_id)
    return RedirectResponse("/admin/imagerie/engagements?message=relance", 303)
