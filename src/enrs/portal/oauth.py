"""``GET /oauth/authorize``: the authorization endpoint (RFC 6749 §4.1.1) of the platform's own
authorization server. It lives in the portal because it needs the person's portal session:
without one, the person is sent to the login page and comes back here afterwards."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from enrs.accounts import authorization
from enrs.accounts import repository as accounts_repository
from enrs.accounts import service as accounts_service
from enrs.kit.http import (
    SESSION_COOKIE,
    WRITES,
    DbSession,
    TransactionalRoute,
    new_entry,
    set_agent,
)
from enrs.portal.endpoints import render_error

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


def _back(redirect_uri: str, params: dict[str, str | None]) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    sep = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{sep}{query}", status_code=303)


@router.get("/oauth/authorize", dependencies=[WRITES])
def authorize(request: Request, session: DbSession) -> Response:
    """Issue a code to a registered application for the logged-in person (PKCE required)."""
    entry = new_entry(request, "token", "authorize")
    params = dict(request.query_params)
    issuer = request.app.state.settings.base_url
    try:
        auth_request = authorization.validate_authorize(session, params)
    except authorization.AuthorizeError as exc:
        entry.outcome_desc = f"{exc.error}: {exc.description}"
        if not exc.redirect:
            return render_error(request, 400, f"Demande d'autorisation refusée : {exc.description}")
        return _back(
            params["redirect_uri"],
            {
                "error": exc.error,
                "error_description": exc.description,
                "state": params.get("state"),
                "iss": issuer,
            },
        )
    entry.client_id = auth_request.client.client_id
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = accounts_service.principal_from_session(session, cookie) if cookie else None
    if principal is None:
        entry.outcome_desc = "login required first"
        return RedirectResponse(
            "/login?" + urlencode({"next": str(request.url.path) + "?" + request.url.query}),
            status_code=303,
        )
    set_agent(entry, principal)
    entry.client_id = auth_request.client.client_id
    user = accounts_repository.user_by_id(session, principal.subject)
    assert user is not None
    try:
        code = authorization.issue_code(session, auth_request, user)
    except authorization.AuthorizeError as exc:
        entry.outcome_desc = f"{exc.error}: {exc.description}"
        return _back(
            auth_request.redirect_uri,
            {
                "error": exc.error,
                "error_description": exc.description,
                "state": auth_request.state,
                "iss": issuer,
            },
        )
    entry.entity_ref = authorization.redirect_target(auth_request.redirect_uri)
    return _back(
        auth_request.redirect_uri, {"code": code, "state": auth_request.state, "iss": issuer}
    )
