"""OpenID Connect relying party: the protocol values and pure helpers.

The configuration (:class:`OidcConfig`), the error (:class:`OidcError`), the values passed
between the web layer and :class:`enrs.accounts.oidc.OidcClient` (:class:`ProviderMetadata`,
:class:`LoginRequest`, :class:`AuthorizationResponse`, :class:`OidcIdentity`), the reading of the
redirect back from the provider (:func:`parse_callback`, :func:`parse_callback_error`), and the
small functions the client uses for encoding, comparing, key selection and ``at_hash``. Nothing
here does I/O. Import the public names from :mod:`enrs.accounts.oidc`, which re-exports them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from enrs.kit.errors import EnrsError

__all__ = [
    "CLIENT_SECRET_BASIC",
    "CLIENT_SECRET_POST",
    "SIGNING_ALGORITHMS",
    "AuthorizationResponse",
    "LoginRequest",
    "OidcConfig",
    "OidcError",
    "OidcIdentity",
    "ProviderMetadata",
    "TokenEndpointAuthMethod",
    "parse_callback",
    "parse_callback_error",
]

TokenEndpointAuthMethod = Literal["client_secret_basic", "client_secret_post"]
#: OAuth client authentication method names (RFC 7591 §2), not secrets.
CLIENT_SECRET_BASIC: Final = "client_secret_basic"  # noqa: S105
CLIENT_SECRET_POST: Final = "client_secret_post"  # noqa: S105

#: Asymmetric JWS algorithms accepted for ID tokens and signed UserInfo responses (RFC 7518 §3.1,
#: RFC 8037). ``none`` and the HMAC family are refused (RFC 8725 §3.1, §3.2).
SIGNING_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KEY_TYPES: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_HASHES: Final = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_MAX_TEXT: Final = 200
#: Authorization error codes of RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6; others become
#: ``provider_error`` in :attr:`OidcError.reason`.
_CALLBACK_ERRORS: Final = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
    }
)


@dataclass(frozen=True)
class OidcConfig:
    """Our registration with one OpenID Provider.

    ``issuer`` is compared verbatim with the provider's metadata and ID tokens (OIDC Discovery
    §4.3, OIDC Core §3.1.3.7 item 2): write it exactly as the provider does, trailing slash
    included or not. ``scopes`` must contain ``openid`` (OIDC Core §3.1.2.1). ``acr_values`` is
    sent as is when set (PSC expects ``eidas1``).
    """

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: str = "openid profile"
    rpps_claim: str = "SubjectNameID"
    token_endpoint_auth_method: TokenEndpointAuthMethod = CLIENT_SECRET_BASIC
    acr_values: str | None = None

    def __post_init__(self) -> None:
        if "openid" not in self.scopes.split():
            raise ValueError("OidcConfig.scopes must contain 'openid'")
        if self.token_endpoint_auth_method not in (CLIENT_SECRET_BASIC, CLIENT_SECRET_POST):
            raise ValueError(
                "OidcConfig.token_endpoint_auth_method must be client_secret_basic or "
                "client_secret_post"
            )
        for name in ("issuer", "client_id", "client_secret", "redirect_uri"):
            if not getattr(self, name):
                raise ValueError(f"OidcConfig.{name} must not be empty")


class OidcError(EnrsError):
    """A login through the OpenID Provider failed.

    ``reason`` is a short machine-readable code (``access_denied``, ``state_mismatch``,
    ``invalid_grant``, ``invalid_client``, ``nonce_mismatch``, ``token_expired``,
    ``invalid_id_token``, ``issuer_mismatch``, ``discovery_failed``, ...); ``message`` says in
    plain words what failed and is safe to show. ``status`` is 401 when this login attempt is
    refused, 502 when the provider or our registration with it is at fault.
    """

    status = 401
    issue_code = "login"
    title = "OpenID Connect login failed"

    def __init__(self, message: str, *, reason: str, status: int = 401) -> None:
        super().__init__(message, status, issue_code="login" if status == 401 else "exception")
        self.reason = reason


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the provider's discovery document this client uses (OIDC Discovery §3)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class LoginRequest:
    """A started login: send the browser to ``url``; keep the rest server-side until the callback.

    ``state``, ``nonce`` and ``code_verifier`` are single-use secrets bound to this browser
    session (RFC 6749 §10.12, OIDC Core §15.5.2, RFC 7636 §4.1).
    """

    url: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)


@dataclass(frozen=True)
class AuthorizationResponse:
    """A successful authorization response (RFC 6749 §4.1.2; ``iss`` from RFC 9207 §2)."""

    code: str = field(repr=False)
    state: str = field(repr=False)
    iss: str | None = None


@dataclass(frozen=True)
class OidcIdentity:
    """Who logged in.

    ``subject`` is the provider's ``sub`` (stable per provider, OIDC Core §2); ``rpps`` the value
    of :attr:`OidcConfig.rpps_claim`, from the ID token or else from UserInfo; ``claims`` the
    UserInfo claims overlaid with the (signed) ID token claims; ``id_token`` the raw ID token, for
    ``id_token_hint`` at logout (OIDC RP-Initiated Logout 1.0 §2).
    """

    subject: str
    rpps: str | None
    claims: dict[str, Any]
    id_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class _Key:
    """One signing key of the provider's JWKS (RFC 7517 §4), as published."""

    kid: str | None
    alg: str | None
    kty: str
    data: dict[str, Any] = field(repr=False)


def _clean(value: object) -> str:
    """Provider-supplied text made safe for a log line or an error page: printable, short."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value)).strip()
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """Add ``params`` to ``url``, keeping its own query (RFC 6749 §3.1: it MUST be retained)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def parse_callback_error(params: Mapping[str, str]) -> None:
    """Raise :class:`OidcError` if the redirect back from the provider carries an error.

    RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6: ``error`` (``access_denied`` when the person
    cancelled or was refused, ``login_required``, ``server_error``, ...) with an optional
    ``error_description``. The provider's text is sanitised before it goes in the message.
    """
    error = params.get("error")
    if error is None:
        return
    code = _clean(error) or "unknown_error"
    description = _clean(params.get("error_description", ""))
    detail = f" ({description})" if description else ""
    if code == "access_denied":
        raise OidcError(
            f"login was cancelled or refused at the identity provider (access_denied){detail}",
            reason="access_denied",
        )
    # server_error / temporarily_unavailable are the provider's fault (RFC 6749 §4.1.2.1).
    status = 502 if code in ("server_error", "temporarily_unavailable") else 401
    raise OidcError(
        f"the identity provider returned an error: {code}{detail}",
        reason=code if code in _CALLBACK_ERRORS else "provider_error",
        status=status,
    )


def parse_callback(params: Mapping[str, str]) -> AuthorizationResponse:
    """Read the redirect back from the provider (the query of the ``redirect_uri`` request).

    Raises :class:`OidcError` for an error response (see :func:`parse_callback_error`) or when
    ``code`` or ``state`` is missing (RFC 6749 §4.1.2). The state is *not* checked here:
    :meth:`enrs.accounts.oidc.OidcClient.finish_login` does that.
    """
    parse_callback_error(params)
    code = params.get("code")
    state = params.get("state")
    if not code or not state:
        missing = " and ".join(
            name for name, value in (("code", code), ("state", state)) if not value
        )
        raise OidcError(
            f"the callback from the identity provider has no {missing} parameter",
            reason="invalid_callback",
        )
    return AuthorizationResponse(code=code, state=state, iss=params.get("iss"))


def _find_key(keys: tuple[_Key, ...], *, kid: str | None, alg: str) -> _Key | None:
    """The one key that can verify a token with this ``kid`` and ``alg``, if exactly one."""
    kty = _KEY_TYPES.get(alg[:2])
    candidates = [
        key
        for key in keys
        if key.kty == kty
        and (key.alg is None or key.alg == alg)
        and (kid is None or key.kid == kid)
    ]
    return candidates[0] if len(candidates) == 1 else None


def _at_hash(access_token: str, alg: str) -> str | None:
    """OIDC Core §3.1.3.8 / §3.2.2.9: left half of the hash of the access token, base64url.

    ``None`` when the hash for ``alg`` is not defined here (then at_hash is not checked).
    """
    if alg == "EdDSA":
        digest = hashlib.sha512(access_token.encode("utf-8")).digest()  # Ed25519
    else:
        hash_function = _HASHES.get(alg[2:])
        if hash_function is None:
            return None
        digest = hash_function(access_token.encode("utf-8")).digest()
    return _b64url(digest[: len(digest) // 2])
