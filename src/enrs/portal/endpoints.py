"""The portal (French web UI): login (local account or external OIDC provider), services page,
account page, audit trail and notification queues for admins. Server-rendered with Jinja2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from enrs.accounts import oidc as oidc_rp
from enrs.accounts import repository as accounts_repository
from enrs.accounts import service as accounts_service
from enrs.accounts.models import OidcLoginState, User
from enrs.coordination.auth import COORDINATORS, coordinates
from enrs.directory import service as directory_service
from enrs.identity import domains as identity_domains
from enrs.kit.audit.search import AUDIT_FILTERS, search_audit
from enrs.kit.db import utcnow
from enrs.kit.errors import EnrsError, Forbidden
from enrs.kit.http import (
    ACTION,
    SESSION_COOKIE,
    WRITES,
    DbSession,
    TransactionalRoute,
    new_entry,
    set_agent,
)
from enrs.kit.outbound.queue import retry_now, statuses
from enrs.kit.security import totp
from enrs.kit.security.principal import Principal
from enrs.portal.auth import CSRF_COOKIE, PortalUser, csrf_matches, new_csrf, set_csrf_cookie
from enrs.settings import Settings

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["coordinates"] = coordinates

# The portal's services: name, what it is for, its page, the roles that may open it (None:
# every user). The services page shows each user only those they may open.
SERVICES: list[tuple[str, str, str, frozenset[str] | None]] = [
    (
        "Identitovigilance",
        "Serveur régional d'identité : doublons, collisions et rapprochements à traiter",
        "/identitovigilance",
        frozenset({"identitovigilance"}),
    ),
    (
        "Traçabilité",
        "Journal d'audit des accès aux données de santé",
        "/admin/audit",
        frozenset({"admin"}),
    ),
    (
        "Notifications",
        "Abonnements des établissements et services : files d'envoi, erreurs, relance",
        "/admin/notifications",
        frozenset({"admin"}),
    ),
    (
        "Accès en urgence",
        "Les bris de glace des professionnels sur les documents des patients, à examiner",
        "/admin/bris-de-glace",
        frozenset({"admin"}),
    ),
    (
        "Dossier patient",
        "Les documents partagés d'un patient : comptes rendus, lettres, résultats ; dépôt",
        "/dossiers",
        frozenset({"professional", "admin"}),
    ),
    (
        "Messagerie",
        "La messagerie sécurisée MSSanté : vos boîtes et celles qui vous sont déléguées",
        "/messagerie",
        frozenset({"professional"}),
    ),
    (
        "Coordination",
        "Les cercles de soins de vos patients : membres, tâches, agenda, discussion",
        "/coordination",
        COORDINATORS,
    ),
    (
        "Annuaire",
        "Professionnels (RPPS, ADELI) et structures (FINESS) de la région",
        "/annuaire",
        None,
    ),
    (
        "Lits disponibles",
        "L'offre de soins des structures (ROR) et leurs lits disponibles près d'une commune",
        "/annuaire/lits",
        None,
    ),
    ("Mon compte", "Vos informations, vos rôles, la double authentification", "/account", None),
]
# Not built yet: named once on the page, not shown as services.
UPCOMING = (
    "le suivi des envois au DMP",
    "les plans de soins, tâches et agendas de la coordination",
    "l'imagerie régionale",
    "la télémédecine",
)


def services_for(roles: frozenset[str]) -> list[tuple[str, str, str]]:
    """The services a user with ``roles`` may open: name, description, link."""
    return [(n, d, href) for n, d, href, allowed in SERVICES if allowed is None or allowed & roles]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("user", getattr(request.state, "principal", None))
    context.setdefault("oidc_label", _settings(request).oidc_display_name)
    context.setdefault("oidc_enabled", bool(_settings(request).oidc_issuer))
    return templates.TemplateResponse(request, name, context, status_code=status)


def render_error(request: Request, status: int, message: str) -> HTMLResponse:
    """The HTML error page shown to browsers outside /fhir."""
    return _render(request, "error.html", status, code=status, message=message)


def _login_page(request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    token = new_csrf()
    response = _render(request, "login.html", status, csrf=token, **context)
    return set_csrf_cookie(request, response, token)


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _open_session(
    request: Request, session: DbSession, user: Any, method: str, next_url: str | None = None
) -> Response:
    settings = _settings(request)
    token, _ = accounts_service.start_session(
        session,
        user,
        method=method,
        source_ip=request.client.host if request.client else None,
        ttl=settings.session_ttl,
    )
    response = RedirectResponse(safe_next(next_url), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl,
        httponly=True,
        samesite="lax",
        secure=settings.base_url.startswith("https"),
    )
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> HTMLResponse:
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    session: DbSession,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    totp_code: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    """Local login; failures are answered (and committed: the lock-out counter), not raised."""
    entry = new_entry(request, "login", "login", agent_kind="user", agent_id=username[:128])
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), csrf):
        entry.outcome_desc = "login form without a valid CSRF token"
        return _login_page(
            request,
            400,
            error="Formulaire expiré, veuillez réessayer.",
            next_url=safe_next(next_url),
        )
    settings = _settings(request)
    result = accounts_service.authenticate_password(
        session,
        username=username,
        password=password,
        totp_code=totp_code or None,
        max_failures=settings.login_max_failures,
        lockout_seconds=settings.login_lockout_seconds,
    )
    if result.user is None:
        entry.outcome_desc = f"login refused: {result.reason}"
        return _login_page(
            request,
            401,
            error=result.message,
            username=username,
            ask_totp=result.reason in ("totp_required", "totp_invalid"),
            next_url=safe_next(next_url),
        )
    set_agent(entry, accounts_service.user_principal(result.user))
    return _open_session(request, session, result.user, "password", next_url)


@router.post("/logout")
def logout(
    request: Request, session: DbSession, user: PortalUser, csrf: Annotated[str, Form()] = ""
) -> Response:
    entry = new_entry(request, "logout", "logout")
    set_agent(entry, user)
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    accounts_service.end_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _oidc_client(request: Request) -> oidc_rp.OidcClient:
    settings = _settings(request)
    if not settings.oidc_issuer:
        raise EnrsError(
            "aucun fournisseur d'identité externe n'est configuré", 404, issue_code="not-supported"
        )
    client: oidc_rp.OidcClient | None = getattr(request.app.state, "oidc_client", None)
    if client is None:
        config = oidc_rp.OidcConfig(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value(),
            redirect_uri=f"{settings.base_url}/auth/oidc/callback",
            scopes=settings.oidc_scopes,
            rpps_claim=settings.oidc_rpps_claim,
        )
        client = oidc_rp.OidcClient(config, httpx.Client(timeout=10))
        request.app.state.oidc_client = client
    return client


@router.get("/auth/oidc/login", dependencies=[WRITES])
def oidc_login(request: Request, session: DbSession, next: str = "") -> Response:
    """Start the authorization code flow with PKCE at the external provider."""
    login_request = _oidc_client(request).start_login()
    accounts_service.purge_expired(session, utcnow())
    session.add(
        OidcLoginState(
            state=login_request.state,
            nonce=login_request.nonce,
            code_verifier=login_request.code_verifier,
            return_to=safe_next(next),
            created_at=utcnow(),
        )
    )
    return RedirectResponse(login_request.url, status_code=303)


@router.get("/auth/oidc/callback", dependencies=[WRITES])
def oidc_callback(request: Request, session: DbSession) -> Response:
    """Finish the external login and map the person to a local account by RPPS."""
    entry = new_entry(request, "login", "login", agent_kind="user")
    params = dict(request.query_params)
    try:
        callback = oidc_rp.parse_callback(params)
        saved = accounts_repository.pop_oidc_state(session, callback.state)
        if saved is None:
            raise oidc_rp.OidcError("unknown or already used login state", reason="bad_state")
        identity = _oidc_client(request).finish_login(
            code=callback.code,
            returned_state=callback.state,
            expected_state=saved.state,
            nonce=saved.nonce,
            code_verifier=saved.code_verifier,
            returned_iss=callback.iss,
        )
    except oidc_rp.OidcError as exc:
        entry.outcome_desc = f"external login failed: {exc.message}"
        return _login_page(request, 401, error=f"Connexion externe refusée : {exc.message}")
    entry.agent_id = identity.subject
    user = accounts_repository.user_by_rpps(session, identity.rpps) if identity.rpps else None
    if user is None and identity.rpps:
        user = _account_from_directory(session, identity.rpps)
    if user is None or not user.active:
        entry.outcome_desc = f"no active account for RPPS {identity.rpps}"
        return _login_page(
            request,
            403,
            error=(f"Aucun compte actif n'est associé au RPPS {identity.rpps or '(absent)'}."),
        )
    set_agent(entry, accounts_service.user_principal(user))
    return _open_session(request, session, user, "oidc", saved.return_to)


def _account_from_directory(session: Session, rpps: str) -> User | None:
    """A first external login of a professional the directory lists (active, with an active
    activity): an account is made for them, without a password, with the roles their
    professions give (:attr:`~enrs.directory.service.Listed.default_roles`)."""
    listed = directory_service.listed_rpps(session, rpps)
    if listed is None:
        return None
    return accounts_service.create_user(
        session,
        username=f"rpps-{rpps}",
        display_name=listed.display_name,
        password=None,
        roles=list(listed.default_roles),
        rpps=rpps,
    )


@router.get("/")
def services_page(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    return _render(
        request,
        "services.html",
        services=services_for(user.roles),
        upcoming=UPCOMING,
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/account")
def account_page(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    account = accounts_repository.user_by_id(session, user.subject)
    return _render(
        request,
        "account.html",
        account=account,
        scopes=str(user.scopes),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/account/totp")
def account_totp(
    request: Request, user: PortalUser, session: DbSession, csrf: Annotated[str, Form()] = ""
) -> HTMLResponse:
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    account = accounts_repository.user_by_id(session, user.subject)
    assert account is not None
    entry = new_entry(request, "security", "totp-enrol")
    set_agent(entry, user)
    secret = accounts_service.enable_totp(session, account)
    return _render(
        request,
        "account.html",
        account=account,
        scopes=str(user.scopes),
        csrf=accounts_service.session_csrf(session, user),
        totp_secret=secret,
        totp_uri=totp.provisioning_uri(secret, account.username),
    )


@router.get("/admin/audit")
def audit_page(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """The audit trail for admins (itself audited as a search of AuditEvent)."""
    entry = new_entry(
        request,
        "rest",
        "search-type",
        action="E",
        resource_type="AuditEvent",
        query=str(request.url.query),
    )
    set_agent(entry, user)
    if "admin" not in user.roles:
        raise Forbidden("réservé aux administrateurs")
    items = [(k, v) for k, v in request.query_params.multi_items() if v]
    page = search_audit(session, items, base_url=_settings(request).fhir_base)
    filters = {name: request.query_params.get(name, "") for name in AUDIT_FILTERS}
    return _render(
        request,
        "audit.html",
        page=page,
        filters=filters,
        csrf=accounts_service.session_csrf(session, user),
    )


def _admin_page(request: Request, user: Principal, interaction: str, resource: str) -> None:
    entry = new_entry(
        request, "admin", interaction, action=ACTION[interaction], resource_type=resource
    )
    set_agent(entry, user)
    if "admin" not in user.roles:
        raise Forbidden("réservé aux administrateurs")


@router.get("/admin/notifications")
def notifications_page(
    request: Request, user: PortalUser, session: DbSession, message: str = ""
) -> HTMLResponse:
    """The notification destinations and their queues, for admins (audited)."""
    _admin_page(request, user, "search-type", "Subscription")
    notices = {"retry": "La file sera réessayée dans la seconde."}
    return _render(
        request,
        "notifications.html",
        destinations=statuses(session),
        labels=identity_domains.labels(session),
        message=notices.get(message, ""),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/admin/notifications/{name}/relancer")
def notifications_retry(
    request: Request,
    name: str,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _admin_page(request, user, "update", "Subscription")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    retry_now(session, name)
    request.state.audit[-1].entity_ref = f"Subscription/{name}"[:256]
    return RedirectResponse("/admin/notifications?message=retry", 303)
