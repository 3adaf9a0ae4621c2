"""The feed to the national DMP, for the regional team (French UI, admins only, audited): how
many documents are sent, waiting, held or refused, the ones that need a look (refused with the
DMP's reason, held without a qualified INS, retried after failures), and a button to try one
again (:func:`enrs.documents.dmp_feed.ask_again`)."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.documents import dmp_feed
from enrs.documents import service as documents_service
from enrs.documents.models import DmpExport, DocumentEntry
from enrs.kit.errors import Forbidden, NotFound
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _admin_page, _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
STATUS_LABELS = {
    "pending": "en attente d'envoi",
    "sent": "envoyé",
    "held": "en attente d'un INS qualifié",
    "skipped": "non envoyé (opposition du patient)",
    "refused": "refusé par le DMP",
}
SHOWN = 200  # rows listed on the page (the counts cover everything)


@router.get("/admin/dmp")
def dmp_page(
    request: Request, user: PortalUser, session: DbSession, message: str = ""
) -> HTMLResponse:
    _admin_page(request, user, "search-type", "DmpExport")
    counts = dict(
        session.execute(
            sa.select(DmpExport.status, sa.func.count()).group_by(DmpExport.status)
        ).all()
    )
    attention = sa.or_(
        DmpExport.status.in_(("refused", "held")),
        sa.and_(DmpExport.status == "pending", DmpExport.attempts > 0),
    )
    rows = session.execute(
        sa.select(DmpExport, DocumentEntry)
        .join(DocumentEntry, DocumentEntry.id == DmpExport.document_id)
        .where(attention)
        .order_by(DmpExport.updated_at.desc())
        .limit(SHOWN)
    ).all()
    rris = {
        entry.patient_id: documents_service.rri_of_patient(session, entry.patient_id)
        for _, entry in rows
    }
    return _render(
        request,
        "dmp_admin.html",
        counts={status: counts.get(status, 0) for status in STATUS_LABELS},
        labels=STATUS_LABELS,
        rows=rows,
        rris=rris,
        notice="Le document sera renvoyé au prochain passage." if message == "relance" else "",
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/admin/dmp/{doc_id}/relancer")
def dmp_retry(
    request: Request,
    doc_id: str,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _admin_page(request, user, "update", "DmpExport")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    entry = session.scalar(sa.select(DocumentEntry).where(DocumentEntry.resource_id == doc_id))
    if entry is None:
        raise NotFound("document inconnu")
    request.state.audit[-1].entity_ref = f"DocumentReference/{doc_id}"[:256]
    dmp_feed.ask_again(session, entry)
    return RedirectResponse("/admin/dmp?message=relance", 303)
