"""Accounts: local users (Argon2 passwords, TOTP, lock-out), system clients and their
``client_credentials`` tokens, portal sessions, and the principal behind a token or cookie.

Services only flush; the caller's transaction commits. Failed logins are returned, not raised,
so the caller commits the failure counter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from enrs.accounts import repository
from enrs.accounts.models import Client, User, WebSession
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound
from enrs.kit.security import passwords, totp
from enrs.kit.security.principal import Principal
from enrs.kit.security.scopes import ScopeError, ScopeSet, scopes_for_roles
from enrs.kit.security.tokens import TokenIssuer

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,127}$")
_RPPS = re.compile(r"^\d{11}$")


# --- users -----------------------------------------------------------------------------------


def create_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    password: str | None,
    roles: list[str],
    rpps: str | None = None,
    email: str | None = None,
    with_totp: bool = False,
    enforce_policy: bool = True,
) -> User:
    """Create a local account. ``password`` may be None for accounts that only log in through
    the external provider (matched by RPPS)."""
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise BadRequest("user names are 2-128 lower-case letters, digits, '.', '_', '@', '-'")
    try:
        scopes_for_roles(roles)
    except ScopeError as exc:
        raise BadRequest(str(exc)) from exc
    if rpps is not None and not _RPPS.match(rpps):
        raise BadRequest("an RPPS number has 11 digits")
    if password is not None and enforce_policy:
        try:
            passwords.check_password_policy(password)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
    if repository.user_by_username(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    if rpps is not None and repository.user_by_rpps(session, rpps) is not None:
        raise Conflict(f"a user with RPPS {rpps} already exists")
    user = User(
        id=str(uuid.uuid4()),
        username=username,
        display_name=display_name,
        email=email,
        rpps=rpps,
        password_hash=passwords.hash_password(password) if password else None,
        roles=" ".join(sorted(set(roles))),
        totp_secret=totp.new_secret() if with_totp else None,
        failed_logins=0,
        active=True,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, username: str) -> User:
    user = repository.user_by_username(session, username.strip().lower())
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def unlock_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    return user


def enable_totp(session: Session, user: User) -> str:
    user.totp_secret = totp.new_secret()
    session.flush()
    return user.totp_secret


@dataclass(frozen=True)
class LoginResult:
    """``user`` is set on success; otherwise ``reason`` is one of: invalid, locked, inactive,
    totp_required, totp_invalid."""

    user: User | None
    reason: str | None = None
    message: str = ""


def authenticate_password(
    session: Session,
    *,
    username: str,
    password: str,
    totp_code: str | None,
    max_failures: int,
    lockout_seconds: int,
) -> LoginResult:
    """Check a password (and TOTP when enrolled). Counts failures and locks the account after
    ``max_failures`` in a row; a locked account refuses even the right password."""
    now = utcnow()
    user = repository.user_by_username(session, username.strip().lower())
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if user is None:
        return LoginResult(None, "invalid", "identifiant ou mot de passe incorrect")
    if not user.active:
        return LoginResult(None, "inactive", "compte désactivé")
    if user.locked_until is not None and user.locked_until > now:
        return LoginResult(
            None, "locked", "compte verrouillé après trop d'échecs; réessayez plus tard"
        )
    if ok and user.totp_secret:
        if not totp_code:
            return LoginResult(None, "totp_required", "code à usage unique requis")
        ok = totp.verify(user.totp_secret, totp_code)
        reason = "totp_invalid"
    else:
        reason = "invalid"
    if not ok:
        user.failed_logins += 1
        if user.failed_logins >= max_failures:
            user.locked_until = now + timedelta(seconds=lockout_seconds)
            user.failed_logins = 0
            session.flush()
            return LoginResult(None, "locked", "compte verrouillé après trop d'échecs")
        session.flush()
        message = (
            "code à usage unique incorrect"
            if reason == "totp_invalid"
            else ("identifiant ou mot de passe incorrect")
        )
        return LoginResult(None, reason, message)
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    session.flush()
    return LoginResult(user)


def user_principal(user: User, *, session_id: str | None = None) -> Principal:
    return Principal(
        kind="user",
        subject=user.id,
        display=user.display_name,
        scopes=scopes_for_roles(user.role_set),
        roles=user.role_set,
        rpps=user.rpps,
        session_id=session_id,
    )


# --- portal sessions -------------------------------------------------------------------------


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: Session, user: User, *, method: str, source_ip: str | None, ttl: int
) -> tuple[str, WebSession]:
    """Open a portal session; returns the cookie value (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    web = WebSession(
        id=_session_id(token),
        user_id=user.id,
        auth_method=method,
        csrf_token=secrets.token_urlsafe(24),
        source_ip=source_ip,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    session.add(web)
    session.flush()
    return token, web


def principal_from_session(session: Session, cookie: str) -> Principal | None:
    found = repository.live_session(session, _session_id(cookie), utcnow())
    if found is None:
        return None
    web, user = found
    return user_principal(user, session_id=web.id)


def session_csrf(session: Session, principal: Principal) -> str | None:
    if principal.session_id is None:
        return None
    web = repository.web_session(session, principal.session_id)
    return web.csrf_token if web else None


def end_session(session: Session, cookie: str) -> None:
    web = repository.web_session(session, _session_id(cookie))
    if web is not None and web.revoked_at is None:
        web.revoked_at = utcnow()
        session.flush()


# --- system clients and tokens ---------------------------------------------------------------


def secret_digest(secret: str) -> str:
    # Client secrets are 256 random bits: a fast keyed digest is enough (no dictionary attack).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_client(
    session: Session,
    *,
    name: str,
    scope: str,
    redirect_uris: list[str] | None = None,
    public: bool = False,
) -> tuple[Client, str | None]:
    """Register a client; returns it with its secret (shown once, stored hashed).

    Without redirect URIs it is a system client (``client_credentials``, ``system/`` scopes);
    with them, an application acting for a person (authorization code + PKCE, ``user/``
    scopes); ``public`` apps (mobile, browser) have no secret."""
    uris = redirect_uris or []
    for uri in uris:
        parts = urlsplit(uri)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if (
            parts.scheme not in ("https", "http")
            or (parts.scheme == "http" and not local)
            or parts.fragment
            or not parts.netloc
        ):
            raise BadRequest(f"redirect URI {uri!r} must be https (http only on localhost)")
    if public and not uris:
        raise BadRequest("a public client needs redirect URIs (it uses the code flow)")
    try:
        scopes = ScopeSet.parse(scope)
    except ScopeError as exc:
        raise BadRequest(str(exc)) from exc
    if not scopes.scopes:
        raise BadRequest("a client needs at least one SMART scope, e.g. system/Patient.rs")
    context = "user" if uris else "system"
    bad = [str(s) for s in scopes.scopes if s.context != context]
    if bad:
        kind = "applications acting for people" if uris else "system clients"
        raise BadRequest(f"{kind} take {context}/ scopes only, not {' '.join(bad)}")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40] or "client"
    secret = secrets.token_urlsafe(32)
    client = Client(
        id=str(uuid.uuid4()),
        client_id=f"{slug}-{secrets.token_hex(4)}",
        name=name,
        secret_hash=secret_digest(secret) if not public else "",
        scope=str(scopes),
        redirect_uris=" ".join(uris),
        public=public,
        active=True,
        created_at=utcnow(),
    )
    session.add(client)
    session.flush()
    return client, None if public else secret


@dataclass(frozen=True)
class TokenGrant:
    """The result of a token request: a token, or an RFC 6749 §5.2 error."""

    access_token: str | None = None
    expires_in: int = 0
    scope: str = ""
    error: str | None = None
    error_description: str = ""
    client: Client | None = None
    id_token: str | None = None
    user: User | None = None


def client_credentials_grant(
    session: Session,
    issuer: TokenIssuer,
    *,
    client_id: str,
    client_secret: str,
    scope: str | None,
) -> TokenGrant:
    """RFC 6749 §4.4: authenticate the client, narrow the scope, sign an access token."""
    client = repository.client_by_client_id(session, client_id)
    expected = client.secret_hash if client else secret_digest(secrets.token_hex(16))
    if (
        client is None
        or not hmac.compare_digest(expected, secret_digest(client_secret))
        or not client.active
        or client.public
        or client.redirect_uri_list
    ):
        return TokenGrant(error="invalid_client", error_description="unknown client or bad secret")
    granted = ScopeSet.parse(client.scope)
    if scope:
        try:
            asked = ScopeSet.parse(scope)
        except ScopeError as exc:
            return TokenGrant(error="invalid_scope", error_description=str(exc), client=client)
        if not granted.covers(asked):
            return TokenGrant(
                error="invalid_scope",
                error_description=f"scope beyond what the client was granted ({granted})",
                client=client,
            )
        granted = asked
    token, ttl = issuer.issue(
        subject=client.client_id,
        client_id=client.client_id,
        scope=str(granted),
        enrs_kind="client",
        name=client.name,
    )
    return TokenGrant(access_token=token, expires_in=ttl, scope=str(granted), client=client)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The principal of a verified access token."""
    kind = claims.get("enrs_kind", "client")
    roles = frozenset(claims.get("roles", []))
    return Principal(
        kind="user" if kind == "user" else "client",
        subject=str(claims["sub"]),
        display=str(claims.get("name", claims["sub"])),
        scopes=ScopeSet.parse(str(claims.get("scope", ""))),
        roles=roles,
        client_id=claims.get("client_id"),
        rpps=claims.get("rpps"),
    )


def purge_expired(session: Session, now: datetime) -> None:
    repository.purge_oidc_states(session, now - timedelta(minutes=15))
