"""OAuth 2 authorization server endpoints: token (client_credentials), JWKS, discovery.

RFC 6749 §4.4 and §5, RFC 8414 / OpenID Connect Discovery, SMART App Launch 2 well-known.
Token errors are RFC 6749 JSON (``error``, ``error_description``), not problem+json.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from enrs.accounts import authorization, service
from enrs.kit.errors import Forbidden, Unauthorized
from enrs.kit.http import DbSession, TransactionalRoute, authenticate, new_entry, set_agent
from enrs.kit.security.scopes import ROLES
from enrs.settings import Settings

router = APIRouter(route_class=TransactionalRoute, tags=["oauth"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (unquote(user), unquote(password)) if sep else None


def _error(status: int, error: str, description: str) -> JSONResponse:
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="enrs"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


@router.post("/oauth/token", summary="OAuth 2 token endpoint (client_credentials)")
def token(
    request: Request,
    session: DbSession,
    grant_type: Annotated[str | None, Form()] = None,
    scope: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    code: Annotated[str | None, Form()] = None,
    redirect_uri: Annotated[str | None, Form()] = None,
    code_verifier: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """``client_credentials`` for systems, ``authorization_code`` (with PKCE) for applications
    acting for a person."""
    entry = new_entry(request, "token", "token", action="E")
    basic = _basic_credentials(request)
    if basic is not None:
        client_id, client_secret = basic
    entry.agent_kind, entry.agent_id, entry.client_id = "client", client_id, client_id
    if not grant_type:
        return _error(400, "invalid_request", "grant_type is required")
    if grant_type == "authorization_code":
        if not client_id:
            return _error(401, "invalid_client", "client_id required")
        if not code or not redirect_uri or not code_verifier:
            return _error(400, "invalid_request", "code, redirect_uri and code_verifier required")
        grant = authorization.authorization_code_grant(
            session,
            request.app.state.tokens,
            client_id=client_id,
            client_secret=client_secret,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
        )
        if grant.user is not None:
            entry.agent_kind, entry.agent_id = "user", grant.user.id
            entry.agent_name = grant.user.display_name
    elif grant_type == "client_credentials":
        if not client_id or not client_secret:
            return _error(401, "invalid_client", "client authentication required")
        grant = service.client_credentials_grant(
            session,
            request.app.state.tokens,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
        )
    else:
        return _error(400, "unsupported_grant_type", f"grant_type {grant_type!r} not supported")
    if grant.client is not None and grant.user is None:
        entry.agent_name = grant.client.name
    if grant.error:
        entry.outcome_desc = f"{grant.error}: {grant.error_description}"
        return _error(
            401 if grant.error == "invalid_client" else 400, grant.error, grant.error_description
        )
    body = {
        "access_token": grant.access_token,
        "token_type": "Bearer",
        "expires_in": grant.expires_in,
        "scope": grant.scope,
    }
    if grant.id_token:
        body["id_token"] = grant.id_token
    return JSONResponse(body, headers=NO_STORE)


@router.post("/oauth/introspect", summary="OAuth 2 token introspection (RFC 7662)")
def introspect(
    request: Request,
    session: DbSession,
    token: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """For the platform's own resource servers (the mail servers): whether ``token`` is a
    valid access token and whose; the caller is a client holding the ``introspect`` scope.
    Anything not valid is ``{"active": false}``, with no reason (RFC 7662 §2.2)."""
    from enrs.messaging import oauth as mail_oauth

    entry = new_entry(request, "token", "introspect", action="E")
    basic = _basic_credentials(request)
    if basic is not None:
        client_id, client_secret = basic
    entry.agent_kind, entry.agent_id, entry.client_id = "client", client_id, client_id
    if not client_id or not client_secret:
        return _error(401, "invalid_client", "client authentication required")
    if not mail_oauth.may_introspect(session, client_id, client_secret):
        return _error(401, "invalid_client", "unknown client, bad secret or no introspect scope")
    if not token:
        return JSONResponse({"active": False}, headers=NO_STORE)
    try:
        claims = request.app.state.tokens.verify(token)
    except Unauthorized as exc:
        entry.outcome_desc = f"inactive token: {exc}"[:256]
        return JSONResponse({"active": False}, headers=NO_STORE)
    answer = mail_oauth.introspection(session, claims)
    if answer.get("username"):
        entry.detail = f"mailbox {answer['username']}"
    return JSONResponse(answer, headers=NO_STORE)


@router.get("/oauth/userinfo", summary="OpenID Connect UserInfo")
def userinfo(request: Request, session: DbSession) -> JSONResponse:
    """OIDC Core §5.3: the person behind a user access token that holds ``openid``."""
    entry = new_entry(request, "token", "userinfo")
    principal = authenticate(request, session)
    if principal is None:
        raise Unauthorized("access token required", error="invalid_request")
    set_agent(entry, principal)
    if principal.kind != "user" or "openid" not in principal.scopes.other:
        raise Forbidden("a user access token with the openid scope is required")
    claims: dict[str, Any] = {"sub": principal.subject, "name": principal.display}
    if principal.rpps:
        claims["rpps"] = principal.rpps
    return JSONResponse(claims)


@router.get("/.well-known/jwks.json", summary="Public keys that sign access tokens")
def jwks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.tokens.keys.jwks())


def _metadata(settings: Settings) -> dict[str, Any]:
    base = settings.base_url
    return {
        "issuer": base,
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "authorization_endpoint": f"{base}/oauth/authorize",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "scopes_supported": sorted({s for v in ROLES.values() for s in v.split()}),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [settings.signing_alg],
        "token_endpoint_auth_signing_alg_values_supported": [settings.signing_alg],
        "service_documentation": f"{base}/docs",
    }


@router.get("/.well-known/openid-configuration", summary="Authorization server metadata")
def openid_configuration(request: Request) -> JSONResponse:
    return JSONResponse(_metadata(request.app.state.settings))


@router.get("/.well-known/oauth-authorization-server", include_in_schema=False)
def oauth_metadata(request: Request) -> JSONResponse:
    return JSONResponse(_metadata(request.app.state.settings))


@router.get("/fhir/.well-known/smart-configuration", summary="SMART App Launch configuration")
def smart_configuration(request: Request) -> JSONResponse:
    meta = _metadata(request.app.state.settings)
    meta["capabilities"] = [
        "client-confidential-symmetric",
        "client-public",
        "permission-v2",
        "launch-standalone",
        "sso-openid-connect",
        "permission-user",
    ]
    return JSONResponse(meta)
