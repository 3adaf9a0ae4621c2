"""Permissions of portal pages: a logged-in person (session cookie), redirected to the login
page otherwise; CSRF tokens for forms."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.kit.http import SESSION_COOKIE, DbSession, set_agent
from enrs.kit.security.principal import Principal

CSRF_COOKIE = "enrs_csrf"


class LoginRequired(Exception):
    """Raised by portal pages without a session; rendered as a redirect to /login."""


async def on_login_required(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/login", status_code=303)


def portal_user(request: Request, session: DbSession) -> Principal:
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = accounts_service.principal_from_session(session, cookie) if cookie else None
    if principal is None:
        raise LoginRequired()
    request.state.principal = principal
    for entry in getattr(request.state, "audit", []):
        set_agent(entry, principal)
    return principal


PortalUser = Annotated[Principal, Depends(portal_user)]


R = TypeVar("R", bound=Response)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_csrf_cookie(request: Request, response: R, token: str) -> R:
    """Give the browser the form's CSRF token as a cookie (double submit): httpOnly,
    SameSite=Strict, Secure when the platform is served over HTTPS."""
    response.set_cookie(
        CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.app.state.settings.base_url.startswith("https"),
    )
    return response


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
