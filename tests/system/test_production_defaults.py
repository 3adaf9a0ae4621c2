"""Safe defaults outside development: the API description behind a login, secrets never shown."""

from __future__ import annotations

import re
import warnings

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.conftest import Factory

from enrs.app import create_app
from enrs.settings import Settings

DOCS = ("/docs", "/redoc", "/openapi.json")
PASSWORD = "Correct-horse-42!"


def _log_in(client: TestClient, username: str) -> None:
    page = client.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    data = {"username": username, "password": PASSWORD, "csrf": match.group(1), "totp_code": ""}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 303


def test_api_description_needs_a_login_outside_development(
    app: FastAPI, client: TestClient, factory: Factory
) -> None:
    assert app.state.settings.dev is False
    for path in DOCS:
        anonymous = client.get(path, headers={"Accept": "application/json"})
        assert anonymous.status_code == 401, path
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        browser = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert browser.status_code == 303, path
        assert browser.headers["location"] == f"/login?next={path}"
        forged = client.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert forged.status_code == 401, path
    bearer = {"Authorization": f"Bearer {factory.token()}"}
    assert client.get("/openapi.json", headers=bearer).json()["info"]["title"] == "ENRS"
    assert client.get("/docs", headers=bearer).status_code == 200
    factory.user("alice")
    _log_in(client, "alice")
    for path in DOCS:
        assert client.get(path).status_code == 200, path
    assert "swagger-ui" in client.get("/docs").text


def test_api_description_is_open_in_development(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"dev": True}))) as client:
        for path in DOCS:
            assert client.get(path).status_code == 200, path
        assert client.get("/openapi.json").json()["info"]["title"] == "ENRS"


def test_paths_two_services_share_are_described_once_for_both(settings: Settings) -> None:
    """/fhir/Task and /fhir/Subscription/{id} are served by the identity server and the care
    circles (dispatched by their query or id): /openapi.json has one operation for each, which
    says so, and no operation id twice (FastAPI warns of a duplicate and keeps one of them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TestClient(create_app(settings.model_copy(update={"dev": True}))) as client:
            schema = client.get("/openapi.json").json()
    assert not [w for w in caught if "Duplicate Operation ID" in str(w.message)]
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    paths = schema["paths"]
    assert "owner=me" in paths["/fhir/Task"]["get"]["description"]
    assert "identitovigilance" in paths["/fhir/Task"]["get"]["description"]
    assert "digits only" in paths["/fhir/Task/{task_id}"]["get"]["description"]
    assert "care circle" in paths["/fhir/Task/{task_id}"]["get"]["description"]
    for method in ("get", "delete"):
        described = paths["/fhir/Subscription/{sub_id}"][method]["description"]
        assert "PMIR" in described and "care circle" in described


@pytest.mark.parametrize("how", [repr, str])
def test_settings_never_show_their_secrets(how: object) -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+psycopg://enrs:db-pass-1234@db.example:5432/enrs",
        oidc_client_secret="oidc-secret-5678",
        s3_secret_access_key="s3-secret-9012",
    )
    assert callable(how)
    shown = how(settings)
    assert "enrs:***@db.example" in shown
    for dump in (shown, str(settings.model_dump()), settings.model_dump_json()):
        assert "oidc-secret-5678" not in dump and "s3-secret-9012" not in dump
    assert "db-pass-1234" not in shown
    assert settings.oidc_client_secret.get_secret_value() == "oidc-secret-5678"
    assert settings.s3_secret_access_key.get_secret_value() == "s3-secret-9012"
    assert settings.database_url.endswith("enrs:db-pass-1234@db.example:5432/enrs")
