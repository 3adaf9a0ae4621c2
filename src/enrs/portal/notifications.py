"""The professional's notifications (French UI, mobile-first): the events of their care
circles (:mod:`enrs.coordination.notify`: admission, discharge, a new document, a task given
to them, a mention in the chat), newest first, each leading to the circle's coordination file
(its members only: a professional removed from the circle is refused there); marked read one
by one or all at once. The number unread is the badge of the navigation (the template global
``unread_notifications``). Every page is audited; a notification holds no clinical content.

A social worker is shown only the coordination's own (a task, a mention:
:func:`enrs.coordination.auth.notification_kinds`).

The professional may also receive them by MSSanté mail, at one of their own mailboxes
(:mod:`enrs.coordination.notify_mail`: an address outside the trust space, or not theirs,
is refused with the reason), and stop it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.coordination import notify, notify_mail
from enrs.coordination.auth import coordinates, notification_kinds
from enrs.kit.audit.trail import Outcome
from enrs.kit.errors import Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _audit, _checked, _zone
from enrs.portal.endpoints import _render, templates
from enrs.settings import Settings

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


def unread_notifications(request: Request) -> int:
    """The badge: the unread notifications of the professional the page is shown to (0
    outside a request's transaction, or for anyone else). An error page is rendered after
    the request's transaction was rolled back and closed: it shows no badge rather than open
    a transaction that nobody would close (on SQLite it would hold the write turn)."""
    user: Principal | None = getattr(request.state, "principal", None)
    uow = getattr(request.state, "uow", None)
    if user is None or uow is None or not coordinates(user) or not user.rpps:
        return 0
    if uow.closed:
        return 0
    return notify.unread_count(uow.session, user.rpps, notification_kinds(user))


templates.env.globals["unread_notifications"] = unread_notifications


def _professional(user: Principal) -> str:
    if user.kind != "user" or not coordinates(user) or not user.rpps:
        raise Forbidden("les notifications sont réservées aux membres des cercles de soins")
    return user.rpps


def _page(
    request: Request,
    user: Principal,
    session: Session,
    rpps: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    return _render(
        request,
        "my_notifications.html",
        status,
        notifications=notify.inbox(session, rpps, kinds=notification_kinds(user)),
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
        mail=notify_mail.mail_choice(session, rpps),
        addresses=notify_mail.own_addresses(session, rpps),
        **context,
    )


@router.get("/notifications")
def my_notifications(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """The professional's notifications, newest first, and their choice of mail."""
    _audit(request, user, "search-type", "CommunicationRequest", None)
    rpps = _professional(user)
    return _page(request, user, session, rpps)


@router.post("/notifications/messagerie")
def mail_choice(
    request: Request,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
    address: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "activer",
) -> Response:
    """Receive the notifications by MSSanté mail at ``address`` (``action`` ``activer``), or
    no more (``arreter``)."""
    _audit(request, user, "update", "Subscription", None)
    rpps = _professional(user)
    _checked(session, user, csrf)
    if action == "arreter":
        notify_mail.stop_mail(session, rpps)
        return RedirectResponse("/notifications", status_code=303)
    settings: Settings = request.app.state.settings
    try:
        notify_mail.choose_mail(session, rpps, address, settings.mail_domain)
    except notify_mail.MailRefused as exc:
        request.state.audit[-1].outcome = Outcome.MINOR_FAILURE
        return _page(request, user, session, rpps, 422, mail_error=exc.message, typed=address)
    return RedirectResponse("/notifications", status_code=303)


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
    notify.mark_read(session, rpps, ids, notification_kinds(user))
    return RedirectResponse("/notifications", status_code=303)
