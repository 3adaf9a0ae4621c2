"""The messaging operator's pages for the regional team (French UI, admins only, audited):
the mailboxes (list, creation bound to the directory, suspension, delegation) and the
indicators — messages sent and received per mailbox type and month, the mailboxes open and in
use, the same figures as CSV (:mod:`enrs.messaging.indicators`)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.kit.errors import BadRequest, EnrsError, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.messaging import indicators, service
from enrs.messaging.models import MAILBOX_TYPES
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _admin_page, _render
from enrs.settings import Settings

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
TYPE_LABELS = {
    "PER": "personnelles (PER)",
    "ORG": "organisationnelles (ORG)",
    "APP": "applicatives (APP)",
    "CAB": "de cabinet (CAB)",
}
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def _months(since: str, until: str) -> tuple[str | None, str | None]:
    for value in (since, until):
        if value and not _MONTH.fullmatch(value):
            raise BadRequest(f"mois {value!r} : au format AAAA-MM")
    return since or None, until or None


@router.get("/admin/messagerie/indicateurs")
def indicators_page(
    request: Request, user: PortalUser, session: DbSession, since: str = "", until: str = ""
) -> HTMLResponse:
    _admin_page(request, user, "search-type", "MailIndicators")
    first, last = _months(since, until)
    rows = indicators.report(session, first, last)
    return _render(
        request,
        "mail_indicators.html",
        rows=rows,
        open=indicators.open_mailboxes(session),
        types=MAILBOX_TYPES,
        labels=TYPE_LABELS,
        since=since,
        until=until,
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/admin/messagerie/indicateurs.csv")
def indicators_csv(
    request: Request, user: PortalUser, session: DbSession, since: str = "", until: str = ""
) -> Response:
    _admin_page(request, user, "search-type", "MailIndicators")
    first, last = _months(since, until)
    body = indicators.to_csv(indicators.report(session, first, last))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="indicateurs-mssante.csv"'},
    )


STATUS_LABELS = {
    "active": "active",
    "suspended": "suspendue",
    "inactive": "inactive (hors annuaire)",
}
NOTICES = {
    "created": "Boîte aux lettres créée.",
    "suspended": "Boîte aux lettres suspendue : plus de connexion ni de nouveau message, le"
    " courrier reçu est conservé.",
    "active": "Boîte aux lettres réactivée.",
    "delegated": "Délégation enregistrée.",
}


def _domain(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.mail_domain.lower()


def _mailboxes_page(
    request: Request, user: PortalUser, session: DbSession, *, status: int = 200, **context: object
) -> HTMLResponse:
    boxes = service.mailboxes(session)
    return _render(
        request,
        "mail_mailboxes.html",
        status,
        boxes=boxes,
        delegations=service.delegations_by_mailbox(session),
        types=MAILBOX_TYPES,
        labels=TYPE_LABELS,
        statuses=STATUS_LABELS,
        domain=_domain(request),
        csrf=accounts_service.session_csrf(session, user),
        **context,
    )


@router.get("/admin/messagerie")
def mailboxes_page(
    request: Request,
    user: PortalUser,
    session: DbSession,
    message: str = "",
    type: str = "PER",
    rpps: str = "",
    finess: str = "",
) -> HTMLResponse:
    """The operator's mailboxes, and the form to create one (pre-filled from a directory
    card: ``?type=PER&rpps=…``)."""
    _admin_page(request, user, "search-type", "MailBox")
    form = {"type": type if type in MAILBOX_TYPES else "PER", "rpps": rpps, "finess": finess}
    return _mailboxes_page(request, user, session, notice=NOTICES.get(message, ""), form=form)


def _checked_csrf(session: DbSession, user: PortalUser, csrf: str) -> None:
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")


@router.post("/admin/messagerie/bal")
def mailbox_create(
    request: Request,
    user: PortalUser,
    session: DbSession,
    address: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "",
    rpps: Annotated[str, Form()] = "",
    finess: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    liste_rouge: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Create a mailbox bound to the directory (the service's rules; a refusal is shown on
    the page with the form as filled)."""
    _admin_page(request, user, "create", "MailBox")
    _checked_csrf(session, user, csrf)
    new = service.NewMailbox(
        address=address,
        kind=kind,
        rpps=rpps.strip() or None,
        finess=finess.strip() or None,
        description=description.strip(),
        liste_rouge=bool(liste_rouge),
    )
    try:
        with session.begin_nested():
            box = service.add_mailbox(session, new, domain=_domain(request))
    except EnrsError as exc:
        request.state.audit[-1].outcome_desc = str(exc)[:256]
        form = {"type": kind, "rpps": rpps, "finess": finess, "address": address,
                "description": description}  # fmt: skip
        return _mailboxes_page(request, user, session, status=exc.status, error=str(exc), form=form)
    request.state.audit[-1].entity_ref = f"MailBox/{box.address}"[:256]
    return RedirectResponse("/admin/messagerie?message=created", 303)


@router.post("/admin/messagerie/bal/{address}/statut")
def mailbox_status(
    request: Request,
    address: str,
    user: PortalUser,
    session: DbSession,
    status: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _admin_page(request, user, "update", "MailBox")
    _checked_csrf(session, user, csrf)
    request.state.audit[-1].entity_ref = f"MailBox/{address}"[:256]
    try:
        with session.begin_nested():
            service.set_status(session, address, status)
    except EnrsError as exc:
        request.state.audit[-1].outcome_desc = str(exc)[:256]
        return _mailboxes_page(request, user, session, status=exc.status, error=str(exc))
    return RedirectResponse(f"/admin/messagerie?message={quote(status)}", 303)


@router.post("/admin/messagerie/bal/{address}/delegation")
def mailbox_delegation(
    request: Request,
    address: str,
    user: PortalUser,
    session: DbSession,
    delegate: Annotated[str, Form()] = "",
    may_send: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _admin_page(request, user, "update", "MailBox")
    _checked_csrf(session, user, csrf)
    request.state.audit[-1].entity_ref = f"MailBox/{address}"[:256]
    try:
        with session.begin_nested():
            service.delegate(session, address, delegate, may_send=bool(may_send))
    except EnrsError as exc:
        request.state.audit[-1].outcome_desc = str(exc)[:256]
        return _mailboxes_page(request, user, session, status=exc.status, error=str(exc))
    return RedirectResponse("/admin/messagerie?message=delegated", 303)
