"""The OpenID Connect relying party against a real provider (panva/oidc-provider under Node).

Nothing is mocked: every test talks HTTP to ``tests/oidc_provider/provider.mjs``, logs in through
its HTML pages with httpx, and checks what :mod:`enrs.accounts.oidc` accepts and refuses.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support.oidc_provider import (
    LoginFailed,
    ProviderAccount,
    ProviderHandle,
    cancel_login_with_http,
    login_with_http,
    run_oidc_provider,
)

from enrs.accounts.oidc import (
    LoginRequest,
    OidcClient,
    OidcConfig,
    OidcError,
    OidcIdentity,
    parse_callback,
    parse_callback_error,
)
from enrs.accounts.oidc_protocol import _at_hash

CLIENT_ID = "enrs-portal"
# Characters that must be form-encoded inside HTTP Basic (RFC 6749 §2.3.1).
CLIENT_SECRET = "s3cr:et/ with+%&=chars"
REDIRECT_URI = "http://127.0.0.1:8000/auth/psc/callback"
DOCTOR = ProviderAccount(
    id="dr.martin",
    password="correct horse battery staple",
    rpps="810002345678",
    given_name="Claire",
    family_name="Martin",
)
NURSE = ProviderAccount(id="ide.durand", password="pw-durand", rpps="810009876543")
ACCOUNTS = [DOCTOR, NURSE]


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _config(handle: ProviderHandle, **overrides: Any) -> OidcConfig:
    values: dict[str, Any] = {
        "issuer": handle.issuer,
        "client_id": handle.client_id,
        "client_secret": handle.client_secret,
        "redirect_uri": REDIRECT_URI,
    }
    values.update(overrides)
    return OidcConfig(**values)


def _login(
    oidc: OidcClient, handle: ProviderHandle, account: ProviderAccount = DOCTOR
) -> tuple[LoginRequest, dict[str, str]]:
    """Start a login and log in at the provider; return the request and the callback params."""
    request = oidc.start_login()
    callback = login_with_http(handle, request.url, account.id, account.password)
    assert callback.startswith(REDIRECT_URI + "?")
    return request, _query(callback)


def _finish(oidc: OidcClient, request: LoginRequest, params: dict[str, str]) -> OidcIdentity:
    response = parse_callback(params)
    return oidc.finish_login(
        code=response.code,
        returned_state=response.state,
        expected_state=request.state,
        nonce=request.nonce,
        code_verifier=request.code_verifier,
        returned_iss=response.iss,
    )


def _finish_with(
    oidc: OidcClient, request: LoginRequest, params: dict[str, str], **changes: str
) -> OidcIdentity:
    """``finish_login`` with this login's callback and stored values, some of them ``changes``."""
    arguments = {
        "code": params["code"],
        "returned_state": params["state"],
        "expected_state": request.state,
        "nonce": request.nonce,
        "code_verifier": request.code_verifier,
        **changes,
    }
    return oidc.finish_login(**arguments)


@contextmanager
def _refused(reason: str, *, status: int | None = None, says: str | None = None) -> Iterator[None]:
    """The block must raise :class:`OidcError` with this ``reason``, ``status`` and ``says`` in
    its message (the last two when given)."""
    with pytest.raises(OidcError) as caught:
        yield
    assert caught.value.reason == reason
    if status is not None:
        assert caught.value.status == status
    if says is not None:
        assert says in caught.value.message


def _run_provider(**options: Any) -> AbstractContextManager[ProviderHandle]:
    """The test provider with our client and the test accounts, plus ``options``."""
    return run_oidc_provider(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[REDIRECT_URI],
        accounts=ACCOUNTS,
        **options,
    )


def _rsa_signing_jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderHandle]:
    with _run_provider() as handle:
        yield handle


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture
def oidc(provider: ProviderHandle, http: httpx.Client) -> OidcClient:
    return OidcClient(_config(provider), http)


# -- the flow that works ----------------------------------------------------------------------


def test_full_login_returns_the_rpps_from_the_rpps_claim(
    provider: ProviderHandle, oidc: OidcClient
) -> None:
    request, params = _login(oidc, provider)

    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == request.state
    assert params["iss"] == provider.issuer
    identity = _finish(oidc, request, params)

    assert identity.subject == "dr.martin"
    assert identity.rpps == "810002345678"
    assert identity.claims["SubjectNameID"] == "810002345678"
    assert identity.claims["given_name"] == "Claire"
    assert identity.claims["family_name"] == "Martin"
    assert identity.claims["iss"] == provider.issuer
    assert identity.claims["aud"] == CLIENT_ID
    assert identity.id_token.count(".") == 2
    unverified = jwt.decode(identity.id_token, options={"verify_signature": False})
    assert unverified["SubjectNameID"] == "810002345678"
    # Profile claims come from UserInfo (the provider keeps them out of the ID token).
    assert "given_name" not in unverified


def test_authorization_request_uses_pkce_s256_state_and_nonce(
    provider: ProviderHandle, oidc: OidcClient
) -> None:
    first = oidc.start_login()
    second = oidc.start_login()
    query = _query(first.url)

    assert first.url.startswith(provider.base_url + "/auth?")
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["scope"] == "openid profile"
    assert query["state"] == first.state
    assert query["nonce"] == first.nonce
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(first.code_verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(first.code_verifier) <= 128
    assert "code_verifier" not in query
    assert {first.state, first.nonce, first.code_verifier}.isdisjoint(
        {second.state, second.nonce, second.code_verifier}
    )


def test_each_account_gets_its_own_identity(provider: ProviderHandle, oidc: OidcClient) -> None:
    request, params = _login(oidc, provider, NURSE)
    identity = _finish(oidc, request, params)

    assert identity.subject == "ide.durand"
    assert identity.rpps == "810009876543"


def test_client_secret_post(http: httpx.Client) -> None:
    with _run_provider(token_endpoint_auth_method="client_secret_post") as handle:
        oidc = OidcClient(_config(handle, token_endpoint_auth_method="client_secret_post"), http)
        request, params = _login(oidc, handle)
        assert _finish(oidc, request, params).rpps == DOCTOR.rpps


def test_rpps_from_the_id_token_when_there_is_no_userinfo(http: httpx.Client) -> None:
    with _run_provider(id_token_claims=True, userinfo=False) as handle:
        oidc = OidcClient(_config(handle), http)
        assert oidc.discover().userinfo_endpoint is None
        request, params = _login(oidc, handle)
        identity = _finish(oidc, request, params)

    assert identity.rpps == DOCTOR.rpps
    assert identity.claims["given_name"] == "Claire"


def test_rpps_from_userinfo_when_not_in_the_id_token(http: httpx.Client) -> None:
    with _run_provider(rpps_in_id_token=False) as handle:
        oidc = OidcClient(_config(handle), http)
        request, params = _login(oidc, handle)
        identity = _finish(oidc, request, params)

    assert identity.rpps == DOCTOR.rpps
    unverified = jwt.decode(identity.id_token, options={"verify_signature": False})
    assert "SubjectNameID" not in unverified


def test_login_with_a_consent_page(http: httpx.Client) -> None:
    with _run_provider(consent="form") as handle:
        oidc = OidcClient(_config(handle), http)
        request, params = _login(oidc, handle)
        assert _finish(oidc, request, params).rpps == DOCTOR.rpps

        refused = oidc.start_login()
        callback = login_with_http(handle, refused.url, DOCTOR.id, DOCTOR.password, consent=False)
        with _refused("access_denied"):
            parse_callback(_query(callback))


def test_jwks_is_fetched_again_when_the_provider_rotates_its_key(http: httpx.Client) -> None:
    # Same port, so the same issuer; every start of the provider makes a new key (new kid).
    with _run_provider() as first:
        oidc = OidcClient(_config(first), http)
        request, params = _login(oidc, first)
        _finish(oidc, request, params)
        port = first.port
    with _run_provider(port=port) as second:
        assert second.issuer == oidc.config.issuer
        request, params = _login(oidc, second)
        assert _finish(oidc, request, params).rpps == DOCTOR.rpps


# -- what must fail -----------------------------------------------------------------------------


def test_wrong_state_is_refused(provider: ProviderHandle, oidc: OidcClient) -> None:
    request, params = _login(oidc, provider)
    other = oidc.start_login()

    with _refused("state_mismatch", status=401, says="state"):
        _finish_with(oidc, request, params, expected_state=other.state)


def test_empty_expected_state_is_refused(provider: ProviderHandle, oidc: OidcClient) -> None:
    request, params = _login(oidc, provider)

    with _refused("state_mismatch"):
        _finish_with(oidc, request, params, returned_state="", expected_state="")


def test_replayed_code_is_refused(provider: ProviderHandle, oidc: OidcClient) -> None:
    request, params = _login(oidc, provider)
    assert _finish(oidc, request, params).rpps == DOCTOR.rpps

    with _refused("invalid_grant", status=401, says="already used"):
        _finish(oidc, request, params)


def test_wrong_code_verifier_is_refused(provider: ProviderHandle, oidc: OidcClient) -> None:
    request, params = _login(oidc, provider)
    other = oidc.start_login()

    with _refused("invalid_grant"):
        _finish_with(oidc, request, params, code_verifier=other.code_verifier)


def test_wrong_client_secret_is_refused(
    provider: ProviderHandle, oidc: OidcClient, http: httpx.Client
) -> None:
    request, params = _login(oidc, provider)
    wrong = OidcClient(_config(provider, client_secret="not-the-secret"), http)

    with _refused("invalid_client", status=502, says="client secret"):
        _finish(wrong, request, params)


def test_nonce_mismatch_is_refused(provider: ProviderHandle, oidc: OidcClient) -> None:
    request, params = _login(oidc, provider)
    other = oidc.start_login()

    with _refused("nonce_mismatch", status=401, says="nonce"):
        _finish_with(oidc, request, params, nonce=other.nonce)


def test_expired_id_token_is_refused(provider: ProviderHandle, http: httpx.Client) -> None:
    # The provider signs ID tokens valid for one hour; our clock is two hours ahead.
    late = OidcClient(_config(provider), http, clock=lambda: time.time() + 7200)
    request, params = _login(late, provider)

    with _refused("token_expired", says="expired"):
        _finish(late, request, params)


def test_id_token_from_the_future_is_refused(provider: ProviderHandle, http: httpx.Client) -> None:
    early = OidcClient(_config(provider), http, clock=lambda: time.time() - 600)
    request, params = _login(early, provider)

    with _refused("token_not_yet_valid"):
        _finish(early, request, params)


def test_id_token_with_a_bad_signature_is_refused(http: httpx.Client) -> None:
    # The provider comes back on the same port with another key under the same kid: the cached
    # key does not verify the new tokens (and an unchanged kid is no reason to refetch).
    with _run_provider(signing_keys=[_rsa_signing_jwk("key-1")]) as first:
        oidc = OidcClient(_config(first), http)
        request, params = _login(oidc, first)
        _finish(oidc, request, params)
        port = first.port
    with _run_provider(port=port, signing_keys=[_rsa_signing_jwk("key-1")]) as second:
        request, params = _login(oidc, second)
        with _refused("invalid_id_token", status=502, says="signature"):
            _finish(oidc, request, params)


def test_access_denied_callback(provider: ProviderHandle, oidc: OidcClient) -> None:
    request = oidc.start_login()
    callback = cancel_login_with_http(provider, request.url)
    params = _query(callback)

    assert callback.startswith(REDIRECT_URI + "?")
    assert params["error"] == "access_denied"
    assert params["state"] == request.state
    with _refused("access_denied", status=401, says="cancelled or refused"):
        parse_callback_error(params)
    with pytest.raises(OidcError):
        parse_callback(params)


def test_callback_error_text_is_sanitised() -> None:
    with pytest.raises(OidcError) as caught:
        parse_callback_error({"error": "server_error", "error_description": "boom\r\n" + "x" * 500})
    assert caught.value.status == 502
    assert "\n" not in caught.value.message
    assert len(caught.value.message) < 300
    parse_callback_error({"code": "abc", "state": "xyz"})  # no error: no exception


def test_callback_without_code_is_refused() -> None:
    with _refused("invalid_callback", says="code"):
        parse_callback({"state": "xyz"})


def test_callback_from_another_issuer_is_refused(
    provider: ProviderHandle, oidc: OidcClient
) -> None:
    request, params = _login(oidc, provider)

    with _refused("issuer_mismatch"):
        _finish(oidc, request, {**params, "iss": "https://attacker.example"})


@pytest.mark.parametrize(
    "configured", ["{base}/", "http://localhost:{port}"], ids=["trailing-slash", "other-host"]
)
def test_wrong_issuer_at_discovery(
    provider: ProviderHandle, http: httpx.Client, configured: str
) -> None:
    issuer = configured.format(base=provider.base_url, port=provider.port)
    oidc = OidcClient(_config(provider, issuer=issuer), http)

    with _refused("issuer_mismatch", status=502, says=provider.issuer):
        oidc.start_login()


def test_provider_that_names_another_issuer(http: httpx.Client) -> None:
    with _run_provider(issuer="https://auth.esante.gouv.fr/auth/realms/esante-wallet") as handle:
        oidc = OidcClient(_config(handle, issuer=handle.base_url), http)
        with _refused("issuer_mismatch"):
            oidc.discover()


def test_unreachable_provider(http: httpx.Client) -> None:
    with _run_provider() as handle:
        pass
    oidc = OidcClient(_config(handle), http)  # the provider has stopped

    with _refused("discovery_failed", status=502):
        oidc.discover()


def test_wrong_password_is_refused_by_the_provider(
    provider: ProviderHandle, oidc: OidcClient
) -> None:
    request = oidc.start_login()

    with pytest.raises(LoginFailed):
        login_with_http(provider, request.url, DOCTOR.id, "wrong password")


def test_at_hash_matches_the_oidc_core_example() -> None:
    # OIDC Core Appendix A.3 (at_hash is optional in the code flow and this provider omits it).
    assert (
        _at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256") == "77QmUPtjPfzWtF2AnpK9RQ"
    )


def test_config_requires_the_openid_scope() -> None:
    with pytest.raises(ValueError, match="openid"):
        OidcConfig(
            issuer="https://idp.example",
            client_id="c",
            client_secret="s",
            redirect_uri=REDIRECT_URI,
            scopes="profile",
        )
