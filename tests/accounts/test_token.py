"""OAuth 2 client_credentials against the real HTTP stack, and the checks every request makes."""

from __future__ import annotations

import base64
import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.conftest import Factory

from enrs.app import create_app
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.settings import Settings


def _audit_rows(db: Database) -> list[AuditRecord]:
    with db.sessionmaker() as session:
        return list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def test_client_credentials_token_is_a_signed_jwt_verifiable_with_jwks(
    client: TestClient, factory: Factory
) -> None:
    client_id, secret = factory.system_client("system/AuditEvent.rs system/Patient.rs")
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"system/AuditEvent.rs", "system/Patient.rs"}
    jwks = client.get("/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        body["access_token"], jwt.PyJWK(key).key, algorithms=["ES256"], audience="http://testserver"
    )
    assert claims["sub"] == client_id and claims["iss"] == "http://testserver"
    discovery = client.get("/.well-known/openid-configuration").json()
    assert discovery["token_endpoint"] == "http://testserver/oauth/token"
    assert discovery["jwks_uri"] == "http://testserver/.well-known/jwks.json"


def test_client_secret_post_and_narrowed_scope(client: TestClient, factory: Factory) -> None:
    client_id, secret = factory.system_client("system/AuditEvent.rs system/Patient.rs")
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "system/Patient.r",
        },
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "system/Patient.r"


def test_token_errors_follow_rfc6749_and_are_audited(
    client: TestClient, factory: Factory, db: Database
) -> None:
    client_id, secret = factory.system_client("system/Patient.rs")
    wrong = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "nope")
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    too_wide = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.cruds"},
        auth=(client_id, secret),
    )
    assert too_wide.status_code == 400 and too_wide.json()["error"] == "invalid_scope"
    grant = client.post("/oauth/token", data={"grant_type": "password"}, auth=(client_id, secret))
    assert grant.json()["error"] == "unsupported_grant_type"
    rows = _audit_rows(db)
    assert [r.outcome for r in rows] == ["4", "4", "4"]
    assert all(r.category == "token" and r.client_id == client_id for r in rows)
    assert "invalid_client" in (rows[0].outcome_desc or "")


def test_no_token_forged_token_unknown_key_expired_token_are_refused(
    client: TestClient, factory: Factory, db: Database, app: object
) -> None:
    token = factory.token("system/AuditEvent.rs")
    assert client.get("/fhir/AuditEvent").status_code == 401
    # Tampered payload: signature no longer verifies.
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "system/*.cruds"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = client.get(
        "/fhir/AuditEvent", headers={"Authorization": f"Bearer {head}.{forged_payload}.{sig}"}
    )
    assert forged.status_code == 401
    assert forged.headers["content-type"].startswith("application/fhir+json")
    assert "signature" in forged.json()["issue"][0]["diagnostics"]
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]
    # A token signed by a key the platform never had.
    stranger = ec.generate_private_key(ec.SECP256R1())
    alien = jwt.encode(
        {**claims, "exp": int(time.time()) + 60},
        stranger,
        algorithm="ES256",
        headers={"kid": "not-ours"},
    )
    unknown = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {alien}"})
    assert unknown.status_code == 401
    assert "unknown key" in unknown.json()["issue"][0]["diagnostics"]
    # An expired token signed by our own key.
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    key = tokens.keys.current
    expired = jwt.encode(
        {**claims, "scope": "system/AuditEvent.rs", "iat": 1, "nbf": 1, "exp": 2},
        key.private_key,
        algorithm="ES256",
        headers={"kid": key.kid},
    )
    old = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {expired}"})
    assert old.status_code == 401 and "expired" in old.json()["issue"][0]["diagnostics"]
    garbage = client.get("/fhir/AuditEvent", headers={"Authorization": "Bearer garbage"})
    assert garbage.status_code == 401
    basic = client.get("/fhir/AuditEvent", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert basic.status_code == 401
    rows = [r for r in _audit_rows(db) if r.resource_type == "AuditEvent"]
    assert len(rows) == 6 and all(r.outcome == "4" for r in rows)
    # The valid token still works, nothing else changed.
    ok = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


def test_missing_scope_is_forbidden_and_audited(
    client: TestClient, factory: Factory, db: Database
) -> None:
    token = factory.token("system/Patient.rs")
    response = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert "system/AuditEvent.s" in response.json()["issue"][0]["diagnostics"]
    with db.sessionmaker() as session:
        last = session.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first()
        assert last is not None and last.outcome == "4" and last.agent_kind == "client"
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 2


def test_signing_key_rotation_keeps_old_tokens_valid(client: TestClient, factory: Factory) -> None:
    token = factory.token("system/AuditEvent.rs")
    tokens = client.app.state.tokens  # type: ignore[attr-defined]
    old_kid = tokens.keys.current.kid
    tokens.keys.rotate()
    assert tokens.keys.current.kid != old_kid
    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert old_kid in kids and tokens.keys.current.kid in kids
    assert (
        client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    new = factory.token("system/AuditEvent.rs")
    assert jwt.get_unverified_header(new)["kid"] == tokens.keys.current.kid


def test_rs256_signing_when_configured(settings: Settings) -> None:
    rsa_settings = settings.model_copy(update={"signing_alg": "RS256"})
    with TestClient(create_app(rsa_settings)) as rsa_client:
        factory = Factory(rsa_client.app.state.db, rsa_client)  # type: ignore[attr-defined]
        token = factory.token("system/AuditEvent.rs")
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        jwks = rsa_client.get("/.well-known/jwks.json").json()["keys"]
        assert [k["kty"] for k in jwks] == ["RSA"]
        ok = rsa_client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
