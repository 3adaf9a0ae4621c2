"""OpenID Connect relying party: login of people through an external provider.

In production the provider is Pro Santé Connect (PSC), the French national OpenID Provider for
health professionals; the professional's RPPS number comes in a claim (``SubjectNameID`` by
default). This module is the protocol half of that login, with no web framework and no database:
the web layer keeps :class:`LoginRequest` values in the user's session between
:meth:`OidcClient.start_login` and :meth:`OidcClient.finish_login`, and maps the returned
:class:`OidcIdentity` to an account.

Flow (OpenID Connect Core 1.0 §3.1, "Authentication using the Authorization Code Flow"):

1. :meth:`OidcClient.discover` reads the provider metadata (OpenID Connect Discovery 1.0 §4) and
   checks that it names the configured issuer (§4.3).
2. :meth:`OidcClient.start_login` builds the authorization request (RFC 6749 §4.1.1, OIDC Core
   §3.1.2.1) with ``state`` (RFC 6749 §10.12, CSRF), ``nonce`` (OIDC Core §3.1.2.1, replay) and a
   PKCE S256 challenge (RFC 7636 §4.1–4.3).
3. The provider redirects back with ``code`` and ``state`` (RFC 6749 §4.1.2) or with ``error``
   (§4.1.2.1): :func:`parse_callback` / :func:`parse_callback_error` read that redirect.
4. :meth:`OidcClient.finish_login` checks ``state``, redeems the code at the token endpoint with
   the client secret (RFC 6749 §2.3.1 and §4.1.3, OIDC Core §9) and the PKCE verifier (RFC 7636
   §4.5), validates the ID token (OIDC Core §3.1.3.7), optionally ``at_hash`` (§3.1.3.8), then
   calls the UserInfo endpoint (OIDC Core §5.3) when the provider has one.

Every failure raises :class:`OidcError`, with ``status`` 401 when the login attempt itself is
refused or not trustworthy, 502 when the provider (or our registration with it) misbehaves.

The configuration, the error, the value types and the callback parsing live in
:mod:`enrs.accounts.oidc_protocol`; this module re-exports them, so import them from here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
import jwt

# "X as X": public module names kept importable from here, as before the split (not in __all__).
from enrs.accounts.oidc_protocol import CLIENT_SECRET_BASIC as CLIENT_SECRET_BASIC
from enrs.accounts.oidc_protocol import CLIENT_SECRET_POST as CLIENT_SECRET_POST
from enrs.accounts.oidc_protocol import SIGNING_ALGORITHMS as SIGNING_ALGORITHMS
from enrs.accounts.oidc_protocol import (
    AuthorizationResponse,
    LoginRequest,
    OidcConfig,
    OidcError,
    OidcIdentity,
    ProviderMetadata,
    _at_hash,
    _b64url,
    _clean,
    _find_key,
    _Key,
    _same,
    _with_query,
    parse_callback,
    parse_callback_error,
)
from enrs.accounts.oidc_protocol import TokenEndpointAuthMethod as TokenEndpointAuthMethod

__all__ = [
    "AuthorizationResponse",
    "LoginRequest",
    "OidcClient",
    "OidcConfig",
    "OidcError",
    "OidcIdentity",
    "ProviderMetadata",
    "parse_callback",
    "parse_callback_error",
]

_DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


class OidcClient:
    """Relying party for one provider (OIDC Core §3.1), over a caller-owned ``httpx.Client``.

    The client caches the discovery document and the provider's JWKS; it is safe to share
    between threads (caches are replaced whole, a race only costs an extra fetch). ``clock``
    (seconds since the epoch) and ``leeway`` (seconds allowed for clock skew on ``exp``, ``iat``
    and ``nbf``) are there for tests and badly synchronised hosts. Requests never follow
    redirects.
    """

    def __init__(
        self,
        config: OidcConfig,
        http: httpx.Client,
        *,
        clock: Callable[[], float] = time.time,
        leeway: int = 60,
    ) -> None:
        self.config = config
        self._http = http
        self._clock = clock
        self._leeway = leeway
        self._metadata: ProviderMetadata | None = None
        self._keys: tuple[_Key, ...] | None = None

    # -- discovery -------------------------------------------------------------------------

    def discover(self, *, refresh: bool = False) -> ProviderMetadata:
        """Fetch (once, unless ``refresh``) and check the provider metadata.

        OIDC Discovery §4: ``GET {issuer}/.well-known/openid-configuration``; §4.3: the
        ``issuer`` in the document MUST be identical to the one we expect.
        """
        if self._metadata is not None and not refresh:
            return self._metadata
        issuer = self.config.issuer
        url = issuer.rstrip("/") + _DISCOVERY_PATH
        doc = self._get_json(url, what="discovery document", reason="discovery_failed")
        if doc.get("issuer") != issuer:
            raise OidcError(
                f"the provider metadata at {url} names issuer {_clean(doc.get('issuer'))!r}, "
                f"expected {issuer!r}",
                reason="issuer_mismatch",
                status=502,
            )

        def endpoint(name: str) -> str:
            value = doc.get(name)
            if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http"):
                raise OidcError(
                    f"the provider metadata has no valid {name}",
                    reason="discovery_failed",
                    status=502,
                )
            if issuer.startswith("https:") and not value.startswith("https:"):
                raise OidcError(
                    f"the provider metadata gives a non-https {name}",
                    reason="discovery_failed",
                    status=502,
                )
            return value

        def optional_endpoint(name: str) -> str | None:
            return None if doc.get(name) is None else endpoint(name)

        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcError(
                "the provider does not support PKCE S256 (RFC 7636)",
                reason="discovery_failed",
                status=502,
            )
        metadata = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=endpoint("authorization_endpoint"),
            token_endpoint=endpoint("token_endpoint"),
            jwks_uri=endpoint("jwks_uri"),
            userinfo_endpoint=optional_endpoint("userinfo_endpoint"),
            end_session_endpoint=optional_endpoint("end_session_endpoint"),
            raw=doc,
        )
        self._metadata = metadata
        return metadata

    # -- step 1: authorization request -----------------------------------------------------

    def start_login(self, *, extra_params: Mapping[str, str] | None = None) -> LoginRequest:
        """Build the authorization request URL (RFC 6749 §4.1.1, OIDC Core §3.1.2.1).

        Fresh ``state`` and ``nonce`` (256 bits each) and a PKCE ``code_verifier`` of 86
        characters from the unreserved set (RFC 7636 §4.1) with its S256 ``code_challenge``
        (§4.2). ``extra_params`` adds optional parameters such as ``login_hint`` or ``prompt``;
        it cannot override the ones set here.
        """
        metadata = self.discover()
        config = self.config
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        code_verifier = secrets.token_urlsafe(64)
        challenge = _b64url(hashlib.sha256(code_verifier.encode("ascii")).digest())
        params = {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": config.redirect_uri,
            "scope": config.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if config.acr_values:
            params["acr_values"] = config.acr_values
        for name, value in (extra_params or {}).items():
            if name in params:
                raise ValueError(f"start_login: {name} is set by the client and cannot be changed")
            params[name] = value
        url = _with_query(metadata.authorization_endpoint, params)
        return LoginRequest(url=url, state=state, nonce=nonce, code_verifier=code_verifier)

    # -- step 2: callback ------------------------------------------------------------------

    def finish_login(
        self,
        *,
        code: str,
        returned_state: str,
        expected_state: str,
        nonce: str,
        code_verifier: str,
        returned_iss: str | None = None,
    ) -> OidcIdentity:
        """Complete the login from the callback parameters and the stored :class:`LoginRequest`.

        In order: ``state`` compared in constant time (RFC 6749 §10.12); ``iss`` from the
        callback, when given, equal to the issuer (RFC 9207 §2.4, mix-up defence); the code
        redeemed at the token endpoint (RFC 6749 §4.1.3, §5.1) with the PKCE verifier (RFC 7636
        §4.5); the ID token validated (OIDC Core §3.1.3.7) including ``nonce``; UserInfo
        fetched when the provider has the endpoint, its ``sub`` equal to the ID token's (OIDC
        Core §5.3.2).
        """
        if not expected_state or not _same(returned_state, expected_state):
            raise OidcError(
                "the state returned by the identity provider does not match this login "
                "(expired, replayed or forged callback)",
                reason="state_mismatch",
            )
        if returned_iss is not None and returned_iss != self.config.issuer:
            raise OidcError(
                f"the callback comes from issuer {_clean(returned_iss)!r}, "
                f"expected {self.config.issuer!r}",
                reason="issuer_mismatch",
            )
        if not code:
            raise OidcError("the callback has no authorization code", reason="invalid_callback")
        if not nonce:
            raise OidcError("no nonce was stored for this login", reason="nonce_mismatch")
        metadata = self.discover()
        tokens = self._redeem_code(metadata, code=code, code_verifier=code_verifier)
        id_token = tokens["id_token"]
        access_token = tokens["access_token"]
        id_claims = self._verify_id_token(id_token, nonce=nonce, access_token=access_token)
        userinfo: dict[str, Any] = {}
        if metadata.userinfo_endpoint is not None:
            userinfo = self._fetch_userinfo(metadata.userinfo_endpoint, access_token)
            if userinfo.get("sub") != id_claims["sub"]:
                raise OidcError(
                    "the UserInfo response is about another subject than the ID token",
                    reason="userinfo_failed",
                    status=502,
                )
        claims = {**userinfo, **id_claims}
        return OidcIdentity(
            subject=id_claims["sub"],
            rpps=self._rpps(claims),
            claims=claims,
            id_token=id_token,
        )

    # -- token endpoint --------------------------------------------------------------------

    def _redeem_code(
        self, metadata: ProviderMetadata, *, code: str, code_verifier: str
    ) -> dict[str, str]:
        config = self.config
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": config.redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Accept": "application/json"}
        if config.token_endpoint_auth_method == CLIENT_SECRET_BASIC:
            # RFC 6749 §2.3.1: id and secret are form-encoded before the Basic encoding.
            pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            data["client_id"] = config.client_id
            data["client_secret"] = config.client_secret
        try:
            response = self._http.post(
                metadata.token_endpoint, data=data, headers=headers, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise OidcError(
                f"could not reach the identity provider's token endpoint: {_clean(exc)}",
                reason="provider_unreachable",
                status=502,
            ) from exc
        body = self._json_object(response, what="token response", reason="token_request_failed")
        if response.status_code != 200:
            raise self._token_error(response.status_code, body)
        for name in ("access_token", "id_token", "token_type"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise OidcError(
                    f"the token response has no {name}",
                    reason="token_request_failed",
                    status=502,
                )
        if body["token_type"].lower() != "bearer":
            raise OidcError(
                f"the token response has token_type {_clean(body['token_type'])!r}, "
                "expected Bearer",
                reason="token_request_failed",
                status=502,
            )
        return {name: body[name] for name in ("access_token", "id_token")}

    @staticmethod
    def _token_error(status_code: int, body: Mapping[str, Any]) -> OidcError:
        """Map an RFC 6749 §5.2 error response to an :class:`OidcError`."""
        error = _clean(body.get("error", "")) or f"HTTP {status_code}"
        description = _clean(body.get("error_description", ""))
        detail = f": {description}" if description else ""
        if error == "invalid_grant":
            return OidcError(
                "the identity provider refused the authorization code (invalid_grant"
                f"{detail}); it may be expired, already used, or not issued to this client, "
                "redirect URI or PKCE verifier",
                reason="invalid_grant",
            )
        if error in ("invalid_client", "unauthorized_client"):
            return OidcError(
                f"the identity provider refused our client credentials ({error}{detail}); "
                "check the client id, the client secret and the authentication method",
                reason=error,
                status=502,
            )
        return OidcError(
            f"the identity provider's token endpoint answered {error}{detail}",
            reason="token_request_failed",
            status=502,
        )

    # -- ID token and signed responses ------------------------------------------------------

    def _verify_id_token(self, id_token: str, *, nonce: str, access_token: str) -> dict[str, Any]:
        """OIDC Core §3.1.3.7: signature, iss, aud/azp, exp, iat, nonce; §3.1.3.8: at_hash."""
        config = self.config
        claims, alg = self._verify_jwt(
            id_token,
            what="ID token",
            reason="invalid_id_token",
            require=["iss", "sub", "aud", "exp", "iat"],
        )
        if claims["iss"] != config.issuer:
            raise OidcError(
                f"the ID token was issued by {_clean(claims['iss'])!r}, expected {config.issuer!r}",
                reason="invalid_id_token",
                status=502,
            )
        aud = claims["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
        if config.client_id not in audiences:
            raise OidcError(
                f"the ID token is not for this client (its aud does not contain "
                f"{config.client_id!r})",
                reason="invalid_id_token",
                status=502,
            )
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != config.client_id:
            # OIDC Core §3.1.3.7 items 4 and 5.
            raise OidcError(
                "the ID token has several audiences and its azp is not this client",
                reason="invalid_id_token",
                status=502,
            )
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise OidcError(
                "the ID token sub is not a non-empty string", reason="invalid_id_token", status=502
            )
        self._check_times(claims)
        token_nonce = claims.get("nonce")
        if not isinstance(token_nonce, str) or not _same(token_nonce, nonce):
            # OIDC Core §3.1.3.7 item 11, §15.5.2.
            raise OidcError(
                "the ID token nonce does not match this login (replayed or injected response)",
                reason="nonce_mismatch",
            )
        at_hash = claims.get("at_hash")
        expected = _at_hash(access_token, alg)
        if (
            at_hash is not None
            and expected is not None
            and (not isinstance(at_hash, str) or not _same(at_hash, expected))
        ):
            raise OidcError(
                "the ID token at_hash does not match the access token",
                reason="invalid_id_token",
                status=502,
            )
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        """``exp`` in the future, ``iat`` and ``nbf`` not in the future, within the leeway."""
        now = self._clock()
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None and name == "nbf":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OidcError(
                    f"the ID token {name} is not a number", reason="invalid_id_token", status=502
                )
        if now > claims["exp"] + self._leeway:
            raise OidcError(
                f"the ID token expired {int(now - claims['exp'])} s ago "
                "(check the server clock if this repeats)",
                reason="token_expired",
            )
        for name in ("iat", "nbf"):
            if name in claims and claims[name] > now + self._leeway:
                raise OidcError(
                    f"the ID token {name} is {int(claims[name] - now)} s in the future "
                    "(check the server clock)",
                    reason="token_not_yet_valid",
                    status=502,
                )

    def _verify_jwt(
        self, token: str, *, what: str, reason: str, require: list[str]
    ) -> tuple[dict[str, Any], str]:
        """Check a JWS signature against the provider's JWKS; return (claims, alg).

        Only the signature and the presence of ``require`` are checked here; the caller checks
        the claims. The JWKS is fetched on first use and fetched again, once, when no cached key
        matches the token (key rotation, OIDC Core §10.1.1).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise OidcError(
                f"the {what} is not a signed JWT: {_clean(exc)}", reason=reason, status=502
            ) from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in SIGNING_ALGORITHMS:
            raise OidcError(
                f"the {what} is signed with alg {_clean(alg)!r}, which is not accepted",
                reason=reason,
                status=502,
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError(f"the {what} kid is not a string", reason=reason, status=502)
        fresh = False
        keys = self._keys
        if keys is None:
            keys, fresh = self._fetch_jwks(), True
        key = _find_key(keys, kid=kid, alg=alg)
        if key is None and not fresh:
            keys = self._fetch_jwks()
            key = _find_key(keys, kid=kid, alg=alg)
        if key is None:
            raise OidcError(
                f"no single key of the provider's JWKS matches the {what} "
                f"(kid {_clean(kid)!r}, alg {alg})",
                reason=reason,
                status=502,
            )
        try:
            jwk = jwt.PyJWK(key.data, algorithm=alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=jwk,
                algorithms=[alg],
                options={
                    "require": require,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise OidcError(
                f"the {what} signature does not verify with the provider's key",
                reason=reason,
                status=502,
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise OidcError(
                f"the {what} has no {exc.claim} claim", reason=reason, status=502
            ) from exc
        except jwt.PyJWTError as exc:
            raise OidcError(
                f"the {what} is invalid: {_clean(exc)}", reason=reason, status=502
            ) from exc
        return claims, alg

    def _fetch_jwks(self) -> tuple[_Key, ...]:
        """Fetch the provider's signing keys (OIDC Discovery §3 ``jwks_uri``, RFC 7517 §5)."""
        metadata = self.discover()
        doc = self._get_json(metadata.jwks_uri, what="JWKS", reason="jwks_failed")
        try:
            jwt.PyJWKSet.from_dict(doc)  # at least one key PyJWT can use
        except jwt.PyJWTError as exc:
            raise OidcError(
                f"the provider's JWKS is unusable: {_clean(exc)}", reason="jwks_failed", status=502
            ) from exc
        keys = tuple(
            _Key(
                kid=item["kid"] if isinstance(item.get("kid"), str) else None,
                alg=item["alg"] if isinstance(item.get("alg"), str) else None,
                kty=str(item.get("kty")),
                data=item,
            )
            for item in doc["keys"]
            if isinstance(item, dict) and item.get("use", "sig") == "sig"
        )
        self._keys = keys
        return keys

    # -- UserInfo --------------------------------------------------------------------------

    def _fetch_userinfo(self, url: str, access_token: str) -> dict[str, Any]:
        """OIDC Core §5.3: GET with the access token (RFC 6750 §2.1); JSON or a signed JWT."""
        try:
            response = self._http.get(
                url,
                headers={
                    "Authorization": f"Bearer {access_token}",
                    "Accept": "application/json, application/jwt",
                },
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            raise OidcError(
                f"could not reach the identity provider's UserInfo endpoint: {_clean(exc)}",
                reason="provider_unreachable",
                status=502,
            ) from exc
        if response.status_code != 200:
            raise OidcError(
                f"the UserInfo endpoint answered HTTP {response.status_code} "
                f"{_clean(response.headers.get('WWW-Authenticate', ''))}".rstrip(),
                reason="userinfo_failed",
                status=502,
            )
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/jwt":
            # §5.3.2: a signed response SHOULD carry iss and aud; check them when present.
            claims, _ = self._verify_jwt(
                response.text.strip(),
                what="UserInfo response",
                reason="userinfo_failed",
                require=[],
            )
            aud = claims.get("aud")
            if claims.get("iss", self.config.issuer) != self.config.issuer or (
                aud is not None
                and self.config.client_id not in (aud if isinstance(aud, list) else [aud])
            ):
                raise OidcError(
                    "the signed UserInfo response is not from this issuer or not for this client",
                    reason="userinfo_failed",
                    status=502,
                )
            return claims
        return self._json_object(response, what="UserInfo response", reason="userinfo_failed")

    def _rpps(self, claims: Mapping[str, Any]) -> str | None:
        name = self.config.rpps_claim
        value = claims.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise OidcError(f"the {name} claim is not a string", reason="invalid_claims", status=502)

    # -- HTTP helpers ----------------------------------------------------------------------

    def _get_json(self, url: str, *, what: str, reason: str) -> dict[str, Any]:
        try:
            response = self._http.get(
                url, headers={"Accept": "application/json"}, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise OidcError(
                f"could not fetch the identity provider's {what} from {url}: {_clean(exc)}",
                reason=reason,
                status=502,
            ) from exc
        if response.status_code != 200:
            raise OidcError(
                f"the identity provider's {what} at {url} answered HTTP {response.status_code}",
                reason=reason,
                status=502,
            )
        return self._json_object(response, what=what, reason=reason)

    @staticmethod
    def _json_object(response: httpx.Response, *, what: str, reason: str) -> dict[str, Any]:
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise OidcError(
                f"the identity provider's {what} is not JSON (HTTP {response.status_code})",
                reason=reason,
                status=502,
            ) from exc
        if not isinstance(body, dict):
            raise OidcError(
                f"the identity provider's {what} is not a JSON object",
                reason=reason,
                status=502,
            )
        return body
