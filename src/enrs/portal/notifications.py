"""The professional's notifications (French UI, mobile-first): the events of their care
circles (:mod:`enrs.coordination.notify`: admission, discharge, a new document, a task given
to them, a mention in the chat), newest first, each leading to the circle's coordination file
(its members only: a professional removed from the circle is refused there); marked read one
by one or all at once. The number unread is the badge of the navigation (the template global
``unread_notifications``). Every page is audited; a notification holds no clinical content."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from enrs.accounts import service as accounts_service
from enrs.coordination import notify
from enrs.kit.errors import Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _audit, _checked, _zone
from enrs.portal.endpoints import _render, templates

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


def unread_notifications(request: Request) -> int:
    """The badge: the unread notifications of the professional the page is shown to (0
    outside a request's transaction, or for anyone else). An error page is rendered after
    the request's transaction was rolled back and closed: it shows no badge rather than open
    a transaction that nobody would close (on SQLite it would hold the write turn)."""
    user: Principal | None = getattr(request.state, "principal", None)
    uow = getattr(request.state, "uow", None)
    if user is None or uow is None or "professional" not in user.roles or not user.rpps:
        return 0
    if uow.closed:
        return 0
    return notify.unread_count(uow.session, user.rpps)


templates.env.globals["unread_notifications"] = unread_notifications


def _professional(user: Principal) -> str:
    if "professional" not in user.roles or not user.rpps:
        raise Forbidden("les notifications sont réservées aux professionnels de santé")
    return user.rpps


@router.get("/notifications")
def my_notifications(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """The professional's notifications, newest first."""
    _audit(request, user, "search-type", "CommunicationRequest", None)
    rpps = _professional(user)
    return _render(
        request,
        "my_notifications.html",
        notifications=notify.inbox(session, rpps),
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/notifications/lu")
def mark_read(
    request: Request,
    user: PortalUser,
    session: DbSession,
    id: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Mark one notification (``id``) or all of them read."""
    _audit(request, user, "update", "CommunicationRequest", None)
    rpps = _professional(user)
    _checked(session, user, csrf)
    ids = [int(id)] if id.isdigit() else None
    notify.mark_read(session, rpps, ids)
    return RedirectResponse("/notifications", status_code=303)
