"""HTTP plumbing shared by every router: the transaction-per-request route, the request's audit
entries, authentication and permission dependencies, error rendering, body-size limit.

Every route of the platform uses :class:`TransactionalRoute`: it owns the request's unit of work
(:mod:`enrs.kit.unit_of_work`: one session and the request's audit entries), opens it before
the dependencies run, and finishes it after the endpoint returns and before the response is
sent: committed with its audit entries when the request writes, or rolled back when it raises
and its entries (with the outcome the response carries) appended after.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enrs.kit.admission import Admission
from enrs.kit.audit import AuditEntry
from enrs.kit.errors import EnrsError, Forbidden, PayloadTooLarge, ServiceUnavailable, Unauthorized
from enrs.kit.fhir.outcome import FHIR_JSON, operation_outcome
from enrs.kit.security.principal import Principal
from enrs.kit.security.token_cache import VerifiedTokens
from enrs.kit.unit_of_work import UnitOfWork, mark_outcome

log = logging.getLogger(__name__)

INTERACTION_LETTER = {
    "read": "r",
    "vread": "r",
    "search-type": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}
ACTION = {
    "read": "R",
    "vread": "R",
    "search-type": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
}
SESSION_COOKIE = "enrs_session"

SessionResolver = Callable[[Session, str], Principal | None]


async def get_db(request: Request) -> Session:
    """The request's session, opened, committed and closed by :class:`TransactionalRoute`
    (the route owns the unit of work; this dependency only hands its session out, and opens
    nothing: ``async``, it costs no thread hop)."""
    uow: UnitOfWork | None = getattr(request.state, "uow", None)
    if uow is None:
        raise RuntimeError(f"{request.url.path}: a database session outside a TransactionalRoute")
    return uow.session


DbSession = Annotated[Session, Depends(get_db)]


def _writes_marker() -> None:
    """Declares, in a route's ``dependencies``, that it writes although its method is safe."""


def _reads_marker() -> None:
    """Declares, in a route's ``dependencies``, that it only reads although its method is not
    safe (a search or an operation sent by POST)."""


WRITES = Depends(_writes_marker)
READS_ONLY = Depends(_reads_marker)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def audit_entries(request: Request) -> list[AuditEntry]:
    """The audit entries of the request (of its unit of work)."""
    uow: UnitOfWork | None = getattr(request.state, "uow", None)
    if uow is None:
        raise RuntimeError(f"{request.url.path}: audit entries outside a TransactionalRoute")
    return uow.entries


def new_entry(request: Request, category: str, interaction: str, **fields: Any) -> AuditEntry:
    """Start an audit entry for this request; its outcome is filled in when the request ends."""
    entry = AuditEntry(
        category=category,
        interaction=interaction,
        source_ip=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
        **fields,
    )
    audit_entries(request).append(entry)
    return entry


def set_agent(entry: AuditEntry, principal: Principal) -> None:
    entry.agent_kind = principal.kind
    entry.agent_id = principal.subject
    entry.agent_name = principal.display
    entry.client_id = principal.client_id


def _finish_failed(uow: UnitOfWork, status: int, message: str) -> list[AuditEntry]:
    """Roll back the unit of a request that failed; its entries get the failure."""
    try:
        uow.set_outcome(status, message)
        return uow.rollback()
    finally:
        uow.close()


def _finish(uow: UnitOfWork, status: int) -> list[AuditEntry]:
    """Commit the unit of a request that answered ``status`` (its entries with it when the
    request writes); returns the entries to write after."""
    try:
        uow.set_outcome(status, None)
        return uow.commit()
    finally:
        uow.close()


T = TypeVar("T")
# The threads of :func:`in_unit`: as many as the requests of a worker that may hold a database
# connection at once (the SQLite pool keeps 48), fewer than AnyIO's 40 default because the
# work they run holds the GIL most of the time.
UNIT_THREADS = 16
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _unit_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(UNIT_THREADS, thread_name_prefix="unit")
    return _executor


async def in_unit(request: Request, work: Callable[[], T]) -> T:
    """Run ``work`` (an ``async`` endpoint's database part) in a worker thread, in one hop: a
    read-only unit is also finished there (its read transaction ended, the session closed),
    where a sync endpoint costs two hops through AnyIO (the endpoint, then the finish). Its
    audit entries are still written after, by :class:`TransactionalRoute`, before the answer.
    A unit that writes, or ``work`` that raises, is finished by the route as usual."""
    uow: UnitOfWork | None = getattr(request.state, "uow", None)
    if uow is None:
        raise RuntimeError(f"{request.url.path}: in_unit outside a TransactionalRoute")

    def run() -> T:
        result = work()
        if not uow.write:
            uow.finished = _finish(uow, 200)
        return result

    return await asyncio.get_running_loop().run_in_executor(_unit_executor(), run)


async def _write_after(uow: UnitOfWork, entries: list[AuditEntry]) -> None:
    if not entries:
        return
    try:
        await asyncio.wrap_future(uow.write_after(entries))
    except Exception as exc:
        log.exception("audit trail write failed")
        raise ServiceUnavailable("the audit trail cannot be written") from exc


class TransactionalRoute(APIRoute):
    """One unit of work per request (:class:`~enrs.kit.unit_of_work.UnitOfWork`), opened
    before the dependencies run and finished after the endpoint returns, before the response
    is sent: committed with its audit entries, or rolled back and its entries written after.

    At most :attr:`~enrs.kit.admission.Admission.capacity` requests of a worker hold a unit
    at once (``app.state.admission``): the others wait, holding nothing, for the turn of one
    whose unit is finished (503 with Retry-After after a while), so that every admitted
    request finds a database connection and a thread (see :mod:`enrs.kit.admission`). A route
    that never asks for the session (``/healthz``) takes no turn.

    A request writes when its method is not safe (POST, PUT, PATCH, DELETE) unless the route
    declares :data:`READS_ONLY`; a safe method writes only when the route declares
    :data:`WRITES` (on SQLite a read-only request cannot write at all)."""

    @property
    def writes(self) -> bool:
        markers = {dep.dependency for dep in self.dependencies}
        unsafe = bool((self.methods or set()) - SAFE_METHODS)
        return (unsafe and _reads_marker not in markers) or _writes_marker in markers

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        writes = self.writes

        admitted = _uses_session(self.dependant)

        async def handler(request: Request) -> Response:
            state = request.app.state
            admission: Admission = state.admission
            uow = UnitOfWork(state.db, state.audit_writer, write=writes)
            request.state.uow = uow
            request.state.audit = uow.entries  # the endpoints' view of the same list
            # A turn until the unit is finished (kit/admission.py), for a route whose unit may
            # hold a connection across its hops: one that asks for its session.
            async with admission.turn() if admitted else nullcontext():
                try:
                    response = await original(request)
                    if uow.finished is not None:  # by in_unit, in the endpoint's thread
                        after = uow.finished
                        mark_outcome(after, response.status_code, None)
                    elif uow.idle:  # e.g. /fhir/metadata: nothing to commit, no thread needed
                        after = _finish(uow, response.status_code)
                    else:
                        after = await run_in_threadpool(_finish, uow, response.status_code)
                    failure: Exception | None = None
                except Exception as exc:
                    status, message = _status_of(exc)
                    after = await run_in_threadpool(_finish_failed, uow, status, message)
                    failure = exc
            await _write_after(uow, after)
            if failure is not None:
                raise failure
            return response

        return handler


def _uses_session(dependant: Dependant) -> bool:
    """Whether a route's dependencies, at any depth, include :func:`get_db` (only it hands
    the unit's session out: a route without it opens no connection for its unit but, in a
    writing route, the one hop that appends its audit entries and commits)."""
    return any(dep.call is get_db or _uses_session(dep) for dep in dependant.dependencies)


def _status_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, EnrsError):
        return exc.status, exc.message
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, RequestValidationError):
        return 400, "invalid request"
    if isinstance(exc, OperationalError | PoolTimeout):
        return 503, "database unavailable"
    return 500, type(exc).__name__


# --- authentication and permissions -------------------------------------------------------


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use the Bearer scheme with an access token", error="invalid_request")
    return token.strip()


def _token_principal(request: Request, token: str) -> Principal:
    """The principal of a bearer token: verified once, then from the process's cache until
    the token expires (:class:`~enrs.kit.security.token_cache.VerifiedTokens`)."""
    state = request.app.state
    verified: VerifiedTokens = state.verified_tokens
    principal = verified.get(token)
    if principal is None:
        claims = state.tokens.verify(token)
        from_claims: Callable[[dict[str, Any]], Principal] = state.principal_from_claims
        principal = from_claims(claims)
        verified.put(token, principal, float(claims["exp"]))
    return principal


def authenticate(request: Request, session: Session) -> Principal | None:
    """The caller from a ``Bearer`` access token, else from the portal session cookie."""
    token = _bearer(request)
    if token is not None:
        return _token_principal(request, token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        resolver: SessionResolver = request.app.state.session_resolver
        return resolver(session, cookie)
    return _other_session(request, session)


def _other_session(request: Request, session: Session) -> Principal | None:
    """The caller from another session cookie the app registered (``app.state.
    cookie_resolvers``: cookie name -> resolver), e.g. an imaging access code's session."""
    resolvers: dict[str, SessionResolver] = getattr(request.app.state, "cookie_resolvers", {})
    for name, resolver in resolvers.items():
        cookie = request.cookies.get(name)
        if cookie:
            return resolver(session, cookie)
    return None


async def authenticate_async(request: Request, session: Session) -> Principal | None:
    """:func:`authenticate` from the event loop: a token is checked in place (CPU only, and
    cached); a portal session is looked up in the database from a worker thread."""
    token = _bearer(request)
    if token is not None:
        return _token_principal(request, token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        resolver: SessionResolver = request.app.state.session_resolver
        return await run_in_threadpool(resolver, session, cookie)
    if getattr(request.app.state, "cookie_resolvers", None):
        return await run_in_threadpool(_other_session, request, session)
    return None


def require(
    resource: str,
    interaction: str,
    *,
    roles: frozenset[str] | None = None,
    category: str = "rest",
) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that authenticates, checks the SMART scope (and role for people), and
    starts the request's audit entry. 401 without valid credentials, 403 without permission."""
    letter = INTERACTION_LETTER[interaction]

    async def dependency(request: Request, session: DbSession) -> Principal:
        entry = new_entry(
            request, category, interaction, action=ACTION[interaction], resource_type=resource
        )
        if interaction == "search-type":
            entry.query = str(request.url.query)
        principal = await authenticate_async(request, session)
        if principal is None:
            raise Unauthorized("authentication required", error="invalid_request")
        set_agent(entry, principal)
        request.state.principal = principal
        if not principal.can(resource, letter):
            ctx = principal.contexts[0]
            raise Forbidden(f"scope {ctx}/{resource}.{letter} is required")
        if roles is not None and principal.kind == "user" and not roles & principal.roles:
            raise Forbidden(f"one of the roles {', '.join(sorted(roles))} is required")
        return principal

    return dependency


# --- errors --------------------------------------------------------------------------------


def _is_fhir(request: Request) -> bool:
    return request.url.path == "/fhir" or request.url.path.startswith("/fhir/")


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    issue_code: str,
    title: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """OperationOutcome under /fhir, RFC 9457 problem+json elsewhere (an HTML page for a
    browser, when the portal registered ``app.state.html_error``)."""
    html_error = getattr(request.app.state, "html_error", None)
    if (
        html_error is not None
        and not _is_fhir(request)
        and "text/html" in request.headers.get("accept", "")
    ):
        response: Response = html_error(request, status, message)
        if headers:
            response.headers.update(headers)
        return response
    if _is_fhir(request):
        body = operation_outcome(message, code=issue_code)
        return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)
    problem = {"type": "about:blank", "title": title, "status": status, "detail": message}
    return JSONResponse(
        problem, status_code=status, media_type="application/problem+json", headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_enrs(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EnrsError)
        return error_response(
            request,
            exc.status,
            exc.message,
            issue_code=exc.issue_code,
            title=exc.title,
            headers=exc.headers or None,
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(
            request, 400, f"invalid request: {details}", issue_code="invalid", title="Bad request"
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "not-supported", 401: "login", 403: "forbidden"}
        return error_response(
            request,
            exc.status_code,
            str(exc.detail),
            issue_code=code.get(exc.status_code, "processing"),
            title=str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def on_db_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc)
        return error_response(
            request,
            503,
            "the database is unavailable; retry later",
            issue_code="transient",
            title="Service unavailable",
            headers={"Retry-After": "5"},
        )

    async def on_any(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "internal error", issue_code="exception", title="Internal error"
        )

    app.add_exception_handler(EnrsError, on_enrs)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_db_down)
    app.add_exception_handler(PoolTimeout, on_db_down)
    app.add_exception_handler(DBAPIError, on_db_down)
    app.add_exception_handler(Exception, on_any)


# --- middleware ------------------------------------------------------------------------------


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    # Last: left out on the OpenAPI pages, which load their viewer's scripts from a CDN.
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
]


OWN_POLICY_PREFIX = "/imagerie/visionneuse/"


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID``) and refuses bodies over ``max_body`` bytes."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body
        # Unique, not secret: a per-process random prefix and a counter (no system call).
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{self._id_prefix}{next(self._ids) & 0xFFFFFFFF:08x}"
        scope.setdefault("state", {})["request_id"] = request_id
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            request = Request(scope)
            exc = PayloadTooLarge(f"request body larger than {self.max_body} bytes")
            response = error_response(
                request, 413, exc.message, issue_code=exc.issue_code, title=exc.title
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise PayloadTooLarge(f"request body larger than {self.max_body} bytes")
            return message

        docs = scope.get("path", "") in ("/docs", "/docs/oauth2-redirect", "/redoc")
        # The imaging viewer's page sets its own policy (WebAssembly, blob: workers): kept.
        viewer = scope.get("path", "").startswith(OWN_POLICY_PREFIX)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", request_id.encode()))
                own = viewer and any(n.lower() == b"content-security-policy" for n, _ in headers)
                headers.extend(SECURITY_HEADERS if not (docs or own) else SECURITY_HEADERS[:-1])
            await send(message)

        await self.app(scope, limited_receive, send_with_id)
