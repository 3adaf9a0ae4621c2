"""``create_app(settings)``: the HTTP application with its routers, middleware and lifespan,
and the list of protocol listeners ``enrs serve`` starts."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from enrs import __version__, mllp_routes
from enrs.accounts import endpoints as accounts_endpoints
from enrs.accounts import service as accounts_service
from enrs.coordination import agenda_endpoints as coordination_agenda
from enrs.coordination import chat_endpoints as coordination_chat
from enrs.coordination import endpoints as coordination_endpoints
from enrs.coordination import form_endpoints as coordination_forms
from enrs.coordination import plan_endpoints as coordination_plans
from enrs.coordination import plan_fhir as coordination_plan_fhir
from enrs.coordination import subscription_endpoints as coordination_subscriptions
from enrs.coordination import task_endpoints as coordination_tasks
from enrs.coordination.live import ChatFeed
from enrs.directory import endpoints as directory_endpoints
from enrs.directory import offer_endpoints
from enrs.directory import registration_endpoints as directory_registration
from enrs.documents import access_endpoints as document_access
from enrs.documents import dmp_feed as document_dmp_feed
from enrs.documents import endpoints as document_endpoints
from enrs.identity import endpoints as identity_endpoints
from enrs.identity import hl7 as identity_hl7
from enrs.identity import subscription_endpoints as identity_subscription_endpoints
from enrs.identity import subscriptions as identity_subscriptions
from enrs.identity import task_endpoints as identity_tasks
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import matcher_for
from enrs.imaging import dicom as imaging_dicom
from enrs.imaging import manifest as imaging_manifest
from enrs.imaging import share as imaging_share
from enrs.imaging import viewer as imaging_viewer
from enrs.imaging import web as imaging_web
from enrs.kit.admission import Admission
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.http import RequestContextMiddleware, install_error_handlers
from enrs.kit.listeners import Listener
from enrs.kit.live import EventWaker
from enrs.kit.security.keys import KeyRing
from enrs.kit.security.token_cache import VerifiedTokens
from enrs.kit.security.tokens import TokenIssuer
from enrs.kit.storage import open_storage
from enrs.messaging import servers as mail_servers
from enrs.portal import agenda as portal_agenda
from enrs.portal import agenda_changes as portal_agenda_changes
from enrs.portal import coordination as portal_coordination
from enrs.portal import coordination_forms as portal_coordination_forms
from enrs.portal import coordination_plans as portal_coordination_plans
from enrs.portal import coordination_tasks as portal_coordination_tasks
from enrs.portal import directory as portal_directory
from enrs.portal import directory_registration as portal_directory_registration
from enrs.portal import dmp_admin as portal_dmp_admin
from enrs.portal import documents as portal_documents
from enrs.portal import endpoints as portal_endpoints
from enrs.portal import identity as portal_identity
from enrs.portal import imaging as portal_imaging
from enrs.portal import imaging_admin as portal_imaging_admin
from enrs.portal import imaging_patient as portal_imaging_patient
from enrs.portal import mail_admin as portal_mail_admin
from enrs.portal import messaging as portal_messaging
from enrs.portal import notifications as portal_notifications
from enrs.portal import oauth as portal_oauth
from enrs.portal import offer as portal_offer
from enrs.portal import reading as portal_reading
from enrs.portal.auth import LoginRequired, on_login_required
from enrs.settings import Settings
from enrs.system import api_docs, audit_endpoints, fhir_endpoints, notification_endpoints
from enrs.system import endpoints as system_endpoints

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the HTTP application for ``settings`` (nothing global, nothing at import)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    keys = KeyRing(settings.keys_path / "signing", settings.signing_alg)
    tokens = TokenIssuer(keys, settings.base_url, settings.access_token_ttl)
    storage = open_storage(settings)

    audit_writer = AuditWriter(db)
    event_waker = EventWaker(db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        db.start_checkpoints()
        await run_in_threadpool(keys.load)
        yield
        await run_in_threadpool(event_waker.close)
        await run_in_threadpool(audit_writer.close)
        db.dispose()

    app = FastAPI(
        title="ENRS",
        version=__version__,
        summary="Espace Numérique Régional de Santé",
        lifespan=lifespan,
        docs_url=None,  # served by system.api_docs: open in development, behind a login otherwise
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.admission = Admission.for_database(db)
    app.state.audit_writer = audit_writer
    app.state.event_waker = event_waker
    app.state.chat_feed = ChatFeed(db, event_waker)
    app.state.tokens = tokens
    app.state.verified_tokens = VerifiedTokens()
    app.state.storage = storage
    app.state.principal_from_claims = accounts_service.principal_from_claims
    app.state.session_resolver = accounts_service.principal_from_session
    app.state.cookie_resolvers = {imaging_share.COOKIE: imaging_share.principal_from_cookie}
    app.state.html_error = portal_endpoints.render_error
    app.state.matcher = matcher_for(settings.identity_model)
    app.state.identity_config = identity_config = IdentityConfig.from_settings(settings)
    app.state.capabilities = capabilities = CapabilityRegistry()
    audit_endpoints.register_capabilities(capabilities)
    identity_endpoints.register_capabilities(capabilities, identity_config)
    identity_tasks.register_capabilities(capabilities)
    coordination_tasks.register_capabilities(capabilities)  # the same Task, after the cell's
    identity_subscription_endpoints.register_capabilities(capabilities)
    coordination_subscriptions.register_capabilities(capabilities)  # the same Subscription
    directory_endpoints.register_capabilities(capabilities)
    directory_registration.register_capabilities(capabilities)
    document_endpoints.register_capabilities(capabilities)
    coordination_endpoints.register_capabilities(capabilities)
    coordination_chat.register_capabilities(capabilities)
    coordination_forms.register_capabilities(capabilities)
    coordination_agenda.register_capabilities(capabilities)
    coordination_plans.register_capabilities(capabilities)
    app.state.pathways = coordination_plan_fhir.load_pathways()  # a malformed one stops here
    install_error_handlers(app)
    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_middleware(RequestContextMiddleware, max_body=settings.max_body_bytes)
    app.include_router(system_endpoints.router)
    app.include_router(api_docs.router)
    app.include_router(accounts_endpoints.router)
    app.include_router(fhir_endpoints.router)
    app.include_router(audit_endpoints.router)
    app.include_router(notification_endpoints.router)
    app.include_router(identity_endpoints.router)
    # Before the cell's /fhir/Task routes: it takes the requests of its dispatch rule only.
    app.include_router(coordination_tasks.router)
    app.include_router(identity_tasks.router)
    # Before the identity feed's /fhir/Subscription routes: POST, search and non-digit ids.
    app.include_router(coordination_subscriptions.router)
    app.include_router(identity_subscription_endpoints.router)
    app.include_router(directory_endpoints.router)
    app.include_router(offer_endpoints.router)
    app.include_router(directory_registration.router)
    app.include_router(document_endpoints.router)
    app.include_router(document_endpoints.content_router)
    app.include_router(document_access.router)
    app.include_router(imaging_web.router)
    app.include_router(imaging_share.router)
    app.include_router(imaging_viewer.router)
    app.include_router(coordination_endpoints.router)
    app.include_router(coordination_chat.router)
    app.include_router(coordination_forms.router)
    app.include_router(coordination_agenda.router)
    app.include_router(coordination_agenda.feed_router)
    app.include_router(coordination_plans.router)
    app.include_router(portal_endpoints.router)
    app.include_router(portal_oauth.router)
    app.include_router(portal_identity.router)
    app.include_router(portal_imaging.router)
    app.include_router(imaging_share.portal_router)
    app.include_router(portal_imaging_patient.router)
    app.include_router(portal_directory.router)
    app.include_router(portal_offer.router)
    app.include_router(portal_directory_registration.router)
    app.include_router(portal_documents.router)
    app.include_router(portal_mail_admin.router)
    app.include_router(portal_dmp_admin.router)
    app.include_router(portal_imaging_admin.router)
    app.include_router(portal_messaging.router)
    app.include_router(portal_coordination.router)
    app.include_router(portal_coordination_forms.router)
    app.include_router(portal_agenda.router)
    app.include_router(portal_agenda_changes.router)
    app.include_router(portal_coordination_plans.router)
    app.include_router(portal_notifications.router)
    app.include_router(portal_coordination_tasks.router)
    app.include_router(portal_reading.router)
    static = Path(__file__).parent / "portal" / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings from the environment / ``.env``."""
    return create_app(Settings())


def _run_http(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper())
    # This listener runs in a spawned child whose stdin is not a usable descriptor; uvicorn
    # would hand it on to its worker processes, which then fail to reopen it.
    sys.stdin = None
    uvicorn.run(
        "enrs.app:create_app_from_env",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        workers=settings.http_workers,
        log_level=settings.log_level,
        proxy_headers=False,
        # Open chat streams would hold a shutdown forever: closed after this many seconds
        # (the browsers reconnect from their last event, nothing is lost).
        timeout_graceful_shutdown=5,
    )


def _describe_http(s: Settings) -> str:
    return f"{s.base_url} ({s.http_workers} worker(s), {s.http_host}:{s.http_port})"


def listeners(settings: Settings) -> list[Listener]:
    """Every listener of the platform: HTTP, the identity feed over MLLP, the imaging
    archive's DICOM, the DMP feed, the notifications, the mail servers."""
    found = [Listener("http", _describe_http, _run_http)]
    if settings.mllp_port:
        run = partial(identity_hl7.run, routes=mllp_routes.platform_routes)
        found.append(Listener("mllp", identity_hl7.describe, run))
    if settings.dicom_port:
        found.append(imaging_dicom.LISTENER)
        found.append(imaging_manifest.LISTENER)  # the archive's reports and KOS manifests
    if settings.dmp_url:
        found.append(document_dmp_feed.LISTENER)
    if settings.notifications:
        found.append(identity_subscriptions.LISTENER)
    mail, why_not = mail_servers.enabled(settings)
    if mail:
        found.append(mail_servers.LISTENER)
    elif settings.mail_servers != "off":
        log.warning(
            "mail servers not started (%s): no MSSanté mail nor webmail until they run; "
            "install Postfix and Dovecot (apt-get install postfix dovecot-imapd "
            "dovecot-lmtpd) and start as root, or set ENRS_MAIL_SERVERS=off",
            why_not,
        )
    return found
