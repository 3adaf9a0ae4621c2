"""The operator's messaging indicators for the regional team (French UI, admins only, audited):
messages sent and received per mailbox type and month, the mailboxes open and in use, and
the same figures as CSV (:mod:`enrs.messaging.indicators`)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from enrs.accounts import service as accounts_service
from enrs.kit.errors import BadRequest
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.messaging import indicators
from enrs.messaging.models import MAILBOX_TYPES
from enrs.portal.auth import PortalUser
from enrs.portal.endpoints import _admin_page, _render

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
