"""The authorization code flow of the platform's own authorization server (RFC 6749 §4.1 with
PKCE S256, RFC 7636; OpenID Connect Core §3.1 ID tokens), for applications acting for a person
logged in to the portal: a SMART app, a mobile app for professionals in the field.

Only clients registered by an administrator with redirect URIs may use it; consent is implicit
for them (they are first-party). Granted scopes are the requested ``user/`` scopes that both the
client's registration and the person's roles allow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from enrs.accounts import repository
from enrs.accounts.models import AuthorizationCode, Client, User
from enrs.accounts.service import TokenGrant, secret_digest
from enrs.kit.db import utcnow
from enrs.kit.security.scopes import OIDC_SCOPES, ScopeError, ScopeSet, scopes_for_roles
from enrs.kit.security.tokens import TokenIssuer

CODE_TTL = timedelta(minutes=2)


class AuthorizeError(Exception):
    """An authorization request refused. ``redirect`` is False when the client or redirect URI
    cannot be trusted: the error is then shown to the person, never sent to that URI."""

    def __init__(self, error: str, description: str, *, redirect: bool = True) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect = redirect


@dataclass(frozen=True)
class AuthorizeRequest:
    client: Client
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def validate_authorize(session: Session, params: dict[str, str]) -> AuthorizeRequest:
    """Check an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)."""
    client = repository.client_by_client_id(session, params.get("client_id", ""))
    if client is None or not client.active or not client.redirect_uri_list:
        raise AuthorizeError("unauthorized_client", "unknown client", redirect=False)
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uri_list:
        raise AuthorizeError("invalid_request", "redirect_uri not registered", redirect=False)
    if params.get("response_type") != "code":
        raise AuthorizeError("unsupported_response_type", "only response_type=code")
    challenge = params.get("code_challenge", "")
    if params.get("code_challenge_method") != "S256" or not 43 <= len(challenge) <= 128:
        raise AuthorizeError("invalid_request", "PKCE with code_challenge_method=S256 required")
    try:
        ScopeSet.parse(params.get("scope", ""))
    except ScopeError as exc:
        raise AuthorizeError("invalid_scope", str(exc)) from exc
    return AuthorizeRequest(
        client=client,
        redirect_uri=redirect_uri,
        scope=params.get("scope", ""),
        state=params.get("state"),
        code_challenge=challenge,
        nonce=params.get("nonce"),
    )


def granted_scope(request: AuthorizeRequest, user: User) -> ScopeSet:
    """The requested scopes that the client registration and the person's roles both allow."""
    asked = ScopeSet.parse(request.scope)
    registered = ScopeSet.parse(request.client.scope)
    roles = scopes_for_roles(user.role_set)
    kept = frozenset(
        s
        for s in asked.scopes
        if s.context == "user"
        and any(r.covers(s) for r in registered.scopes)
        and any(r.covers(s) for r in roles.scopes)
    )
    other = asked.other & (registered.other | OIDC_SCOPES)
    if not kept and "openid" not in other:
        raise AuthorizeError("invalid_scope", "none of the requested scopes can be granted")
    return ScopeSet(kept, frozenset(other))


def issue_code(session: Session, request: AuthorizeRequest, user: User) -> str:
    scope = granted_scope(request, user)
    code = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        AuthorizationCode(
            id=_digest(code),
            client_id=request.client.client_id,
            user_id=user.id,
            redirect_uri=request.redirect_uri,
            scope=str(scope),
            code_challenge=request.code_challenge,
            nonce=request.nonce,
            auth_time=user.last_login_at or now,
            expires_at=now + CODE_TTL,
        )
    )
    session.flush()
    return code


def redirect_target(redirect_uri: str) -> str:
    """The origin the person is sent back to, for the audit trail."""
    parts = urlsplit(redirect_uri)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _pkce_ok(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return 43 <= len(verifier) <= 128 and hmac.compare_digest(computed, challenge)


def authorization_code_grant(
    session: Session,
    issuer: TokenIssuer,
    *,
    client_id: str,
    client_secret: str | None,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> TokenGrant:
    """RFC 6749 §4.1.3: redeem a code once; returns an access token and, with ``openid``, an
    ID token. A second use of the same code fails (``invalid_grant``)."""
    client = repository.client_by_client_id(session, client_id)
    if client is None or not client.active:
        return TokenGrant(error="invalid_client", error_description="unknown client")
    if not client.public and not (
        client_secret and hmac.compare_digest(client.secret_hash, secret_digest(client_secret))
    ):
        return TokenGrant(error="invalid_client", error_description="bad client secret")
    stored = session.get(AuthorizationCode, _digest(code))
    now = utcnow()
    if (
        stored is None
        or stored.client_id != client.client_id
        or stored.used_at is not None
        or stored.expires_at <= now
        or stored.redirect_uri != redirect_uri
        or not _pkce_ok(code_verifier, stored.code_challenge)
    ):
        if stored is not None and stored.used_at is None:
            stored.used_at = now  # a failed attempt burns the code
        session.flush()
        return TokenGrant(
            error="invalid_grant",
            error_description="code unknown, expired, already used, or PKCE/redirect mismatch",
            client=client,
        )
    stored.used_at = now
    user = repository.user_by_id(session, stored.user_id)
    if user is None or not user.active:
        return TokenGrant(error="invalid_grant", error_description="account disabled")
    claims: dict[str, Any] = {
        "enrs_kind": "user",
        "roles": sorted(user.role_set),
        "name": user.display_name,
    }
    if user.rpps:
        claims["rpps"] = user.rpps
    token, ttl = issuer.issue(
        subject=user.id, client_id=client.client_id, scope=stored.scope, **claims
    )
    id_token = None
    if "openid" in stored.scope.split():
        id_token = issuer.id_token(
            subject=user.id,
            audience=client.client_id,
            nonce=stored.nonce,
            auth_time=int(stored.auth_time.timestamp()),
            name=user.display_name,
            preferred_username=user.username,
            **({"rpps": user.rpps} if user.rpps else {}),
        )
    session.flush()
    return TokenGrant(
        access_token=token,
        expires_in=ttl,
        scope=stored.scope,
        client=client,
        id_token=id_token,
        user=user,
    )
