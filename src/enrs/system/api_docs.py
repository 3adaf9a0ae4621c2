"""The OpenAPI description and its viewers (``/openapi.json``, ``/docs``, ``/redoc``).

Open in development (``ENRS_DEV``); otherwise only for a caller with a portal session or a
valid bearer token: a browser is sent to the login page, anything else gets 401."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse, Response

from enrs.kit.errors import Unauthorized
from enrs.kit.http import DbSession, TransactionalRoute, authenticate
from enrs.settings import Settings

OPENAPI_URL = "/openapi.json"
router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


def _refusal(request: Request, session: DbSession) -> Response | None:
    """None when the caller may read the API description; else the answer to give."""
    settings: Settings = request.app.state.settings
    if settings.dev or authenticate(request, session) is not None:
        return None
    if "text/html" in request.headers.get("accept", ""):
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/login?next={target}", status_code=303)
    raise Unauthorized("authentication required", error="invalid_request")


@router.get(OPENAPI_URL)
def openapi(request: Request, session: DbSession) -> Response:
    return _refusal(request, session) or JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(request: Request, session: DbSession) -> Response:
    title = f"{request.app.title} - API"
    return _refusal(request, session) or get_swagger_ui_html(openapi_url=OPENAPI_URL, title=title)


@router.get("/redoc")
def redoc(request: Request, session: DbSession) -> Response:
    title = f"{request.app.title} - API"
    return _refusal(request, session) or get_redoc_html(openapi_url=OPENAPI_URL, title=title)
