"""Accounts: local users (Argon2 passwords, TOTP, lock-out), system clients and their
``client_credentials`` tokens, HL7 v2 (MLLP) senders, the assigning authorities each feeder
may write identities for, portal sessions, and the principal behind a token or cookie.

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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from enrs.accounts import repository
from enrs.accounts.models import Client, MllpSender, User, WebSession
from enrs.directory.identifiers import finess_error
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound
from enrs.kit.security import passwords, totp
from enrs.kit.security.principal import Principal
from enrs.kit.security.scopes import SERVICE_SCOPES, ScopeError, ScopeSet, scopes_for_roles
from enrs.kit.security.tokens import TokenIssuer

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,127}$")
_RPPS = re.compile(r"^\d{11}$")
_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")


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


def set_user_active(session: Session, username: str, active: bool) -> User:
    """Disable a user (no login, no token refresh, their portal sessions end at their next
    request) or enable them again. Raises :class:`NotFound` for an unknown user."""
    user = get_user(session, username)
    user.active = active
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


def active_principal(session: Session, user_id: str) -> Principal | None:
    """The principal of an active account by its id (a standing grant such as an agenda
    feed acts as it), ``None`` when the account is gone or deactivated."""
    user = repository.user_by_id(session, user_id)
    return user_principal(user) if user is not None and user.active else None


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
    authorities: Iterable[str] = (),
    finess: str | None = None,
) -> tuple[Client, str | None]:
    """Register a client; returns it with its secret (shown once, stored hashed).

    Without redirect URIs it is a system client (``client_credentials``, ``system/`` scopes),
    bound to the assigning ``authorities`` (OIDs) whose identities it may write; with them, an
    application acting for a person (authorization code + PKCE, ``user/`` scopes: what it
    writes, the person's roles decide); ``public`` apps (mobile, browser) have no secret.
    ``finess``: the member facility a system client belongs to (it then writes the domains
    that facility owns, :func:`enrs.identity.domains.feeder_grant`)."""
    uris = redirect_uris or []
    bound = _authorities(authorities)
    if (bound or finess) and uris:
        raise BadRequest("only system clients are bound to assigning authorities")
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
    scopes = _parse_scopes(scope)
    context = "user" if uris else "system"
    _check_scopes(scopes, context, "applications acting for people" if uris else "system clients")
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
        finess=_facility(finess),
        active=True,
        created_at=utcnow(),
    )
    session.add(client)
    session.flush()
    repository.add_client_authorities(session, client.id, bound)
    session.flush()
    return client, None if public else secret


def _facility(finess: str | None) -> str | None:
    """``finess`` checked (form and Luhn key), or 400."""
    if finess is None:
        return None
    value = finess.strip()
    if (error := finess_error(value)) is not None:
        raise BadRequest(f"not a FINESS: {error}")
    return value


def _parse_scopes(scope: str) -> ScopeSet:
    try:
        return ScopeSet.parse(scope)
    except ScopeError as exc:
        raise BadRequest(str(exc)) from exc


def _check_scopes(scopes: ScopeSet, context: str, kind: str) -> None:
    if not scopes.scopes and not scopes.other & SERVICE_SCOPES:
        raise BadRequest(
            "a client needs at least one SMART scope (e.g. system/Patient.rs) or a service"
            f" scope ({', '.join(sorted(SERVICE_SCOPES))})"
        )
    bad = [str(s) for s in scopes.scopes if s.context != context]
    if bad:
        raise BadRequest(f"{kind} take {context}/ scopes only, not {' '.join(bad)}")


def _authorities(authorities: Iterable[str]) -> set[str]:
    out = {a.strip() for a in authorities}
    bad = sorted(a for a in out if not _OID.match(a) or len(a) > 64)
    if bad:
        raise BadRequest(f"an assigning authority is an OID (1.2.250...), not {', '.join(bad)}")
    return out


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


def authenticate_client(session: Session, client_id: str, client_secret: str) -> Client | None:
    """The active, confidential system client ``client_id`` when ``client_secret`` is its
    secret (compared in constant time, an unknown client costing the same); else None."""
    client = repository.client_by_client_id(session, client_id)
    expected = client.secret_hash if client else secret_digest(secrets.token_hex(16))
    if (
        client is None
        or not hmac.compare_digest(expected, secret_digest(client_secret))
        or not client.active
        or client.public
        or client.redirect_uri_list
    ):
        return None
    return client


def client_credentials_grant(
    session: Session,
    issuer: TokenIssuer,
    *,
    client_id: str,
    client_secret: str,
    scope: str | None,
) -> TokenGrant:
    """RFC 6749 §4.4: authenticate the client, narrow the scope, sign an access token."""
    client = authenticate_client(session, client_id, client_secret)
    if client is None:
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


# --- feeders: who may write which facility's identities ---------------------------------------

DEFAULT_SENDER_SCOPE = "system/Patient.crus"


@dataclass(frozen=True)
class FeederGrant:
    """What a registered feeder (a system client, an MLLP sender) may do: its SMART
    ``system/`` scopes, and the assigning authorities (OIDs) whose identities it may create,
    update, merge, re-identify, link or unlink."""

    name: str
    scopes: ScopeSet
    authorities: frozenset[str]
    finess: str | None = None  # the member facility it belongs to

    def can(self, resource: str, interaction: str) -> bool:
        return self.scopes.allows(resource, interaction, ("system",))

    def may_write(self, authority: str) -> bool:
        """The rule for every feed, FHIR or HL7 v2: a feeder writes only the identities of
        the assigning authorities the admin registered for it."""
        return authority in self.authorities


@dataclass(frozen=True)
class Registration:
    """A client or MLLP sender as ``enrs clients list`` shows it. ``kind``: ``system`` (a
    system client), ``app`` (acting for people), ``mllp`` (an HL7 v2 sender); ``key``: its
    OAuth ``client_id``, or the sender's MSH-4 OID."""

    kind: str
    key: str
    name: str
    scope: str
    authorities: tuple[str, ...]  # bound to it by name (--authority)
    active: bool
    finess: str | None = None  # the member facility it belongs to (writes its domains)


def client_grant(session: Session, client_id: str) -> FeederGrant | None:
    """The grant of the active system client ``client_id`` (read at each call: a revocation
    or a change of authorities applies to the next request); ``None`` when not active."""
    client = repository.client_by_client_id(session, client_id)
    if client is None or not client.active or client.redirect_uri_list:
        return None
    authorities = frozenset(repository.client_authorities(session, client.id))
    return FeederGrant(client.name, ScopeSet.parse(client.scope), authorities, client.finess)


def create_mllp_sender(
    session: Session,
    *,
    name: str,
    sender_oid: str,
    authorities: Iterable[str] = (),
    scope: str = DEFAULT_SENDER_SCOPE,
    finess: str | None = None,
) -> MllpSender:
    """Register a facility's HL7 v2 sender, known by its MSH-4 as an OID (its universal id,
    or the OID its FINESS maps to). ADT writes need ``system/Patient.cu``, the PIX query
    QBP^Q23 ``system/Patient.s``; it writes only the identities of ``authorities``."""
    oid = sender_oid.strip()
    if not _OID.match(oid) or len(oid) > 64:
        raise BadRequest(f"an MLLP sender is known by its MSH-4 OID, not {sender_oid!r}")
    scopes = _parse_scopes(scope)
    _check_scopes(scopes, "system", "MLLP senders")
    bound = _authorities(authorities)
    if repository.mllp_sender_by_oid(session, oid) is not None:
        raise Conflict(f"the MLLP sender {oid} is already registered")
    sender = MllpSender(
        id=str(uuid.uuid4()),
        sender_oid=oid,
        name=name,
        scope=str(scopes),
        finess=_facility(finess),
        active=True,
        created_at=utcnow(),
    )
    session.add(sender)
    session.flush()
    repository.add_sender_authorities(session, sender.id, bound)
    session.flush()
    return sender


def mllp_sender_grant(session: Session, sender_oid: str) -> FeederGrant | None:
    """The grant of the active MLLP sender whose MSH-4 is ``sender_oid``, else ``None``."""
    sender = repository.mllp_sender_by_oid(session, sender_oid)
    if sender is None or not sender.active:
        return None
    authorities = frozenset(repository.sender_authorities(session, sender.id))
    return FeederGrant(sender.name, ScopeSet.parse(sender.scope), authorities, sender.finess)


def _client_registration(session: Session, client: Client) -> Registration:
    return Registration(
        "app" if client.redirect_uri_list else "system",
        client.client_id,
        client.name,
        client.scope,
        tuple(repository.client_authorities(session, client.id)),
        client.active,
        client.finess,
    )


def _sender_registration(session: Session, sender: MllpSender) -> Registration:
    authorities = tuple(repository.sender_authorities(session, sender.id))
    return Registration(
        "mllp",
        sender.sender_oid,
        sender.name,
        sender.scope,
        authorities,
        sender.active,
        sender.finess,
    )


def registration(session: Session, key: str) -> Registration:
    """The client whose ``client_id`` is ``key``, or the MLLP sender whose MSH-4 OID it is."""
    client = repository.client_by_client_id(session, key)
    if client is not None:
        return _client_registration(session, client)
    sender = repository.mllp_sender_by_oid(session, key)
    if sender is not None:
        return _sender_registration(session, sender)
    raise NotFound(f"no client or MLLP sender {key!r}")


def list_registrations(session: Session) -> list[Registration]:
    """Every client and MLLP sender, with its scopes and authorities."""
    out = [_client_registration(session, c) for c in repository.list_clients(session)]
    out += [_sender_registration(session, s) for s in repository.list_mllp_senders(session)]
    return out


def registrations_of(session: Session, finess: str) -> list[Registration]:
    """The clients and MLLP senders of the member facility ``finess``."""
    out = [_client_registration(session, c) for c in repository.list_clients(session, finess)]
    senders = repository.list_mllp_senders(session, finess)
    return out + [_sender_registration(session, s) for s in senders]


def grant_authorities(session: Session, key: str, authorities: Iterable[str]) -> Registration:
    """Add assigning authorities to a system client or an MLLP sender (those it already has
    are kept)."""
    bound = _authorities(authorities)
    client = repository.client_by_client_id(session, key)
    if client is not None:
        if client.redirect_uri_list:
            raise BadRequest("only system clients are bound to assigning authorities")
        repository.add_client_authorities(session, client.id, bound)
    elif (sender := repository.mllp_sender_by_oid(session, key)) is not None:
        repository.add_sender_authorities(session, sender.id, bound)
    session.flush()
    return registration(session, key)


def attach_facility(session: Session, key: str, finess: str) -> Registration:
    """Make the client ``key`` (a system client's ``client_id``) or MLLP sender (its MSH-4
    OID) a feeder of the member facility ``finess``: it writes the domains that facility
    owns. 400 for a malformed FINESS or an application acting for people; 404 if unknown."""
    value = _facility(finess)
    client = repository.client_by_client_id(session, key)
    if client is not None:
        if client.redirect_uri_list:
            raise BadRequest("only system clients belong to a facility")
        client.finess = value
    elif (sender := repository.mllp_sender_by_oid(session, key)) is not None:
        sender.finess = value
    session.flush()
    return registration(session, key)


def revoke(session: Session, key: str) -> Registration:
    """Deactivate a client (no new token; its writes refused at once) or an MLLP sender (its
    messages refused once the listeners' cache of senders expires)."""
    client = repository.client_by_client_id(session, key)
    sender = repository.mllp_sender_by_oid(session, key) if client is None else None
    if client is not None:
        client.active = False
    elif sender is not None:
        sender.active = False
    session.flush()
    return registration(session, key)


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


def roles_of_professional(session: Session, rpps: str) -> frozenset[str]:
    """The roles of the account of the professional of RPPS number ``rpps`` (none without
    an account)."""
    user = repository.user_by_rpps(session, rpps)
    return user.role_set if user is not None else frozenset()
