"""The FHIR base and the HTTP edges: metadata, negotiation, errors, body limits, health."""

from __future__ import annotations

from fastapi.testclient import TestClient
from tests.conftest import Factory


def test_metadata_lists_what_is_implemented(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    cap = response.json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert set(resources) == {
        "AuditEvent",
        "Patient",
        "Subscription",
        "Task",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "HealthcareService",
        "Location",
        "Endpoint",
        "DocumentReference",
        "List",
        "Binary",
        "CareTeam",
        "Communication",
        "Questionnaire",
        "QuestionnaireResponse",
        "Appointment",
        "Schedule",
        "Slot",
        "CarePlan",
        "PlanDefinition",
    }
    documents = {i["code"] for i in resources["DocumentReference"]["interaction"]}
    assert documents == {"read", "search-type", "update"}
    assert "patient.identifier" in {
        p["name"] for p in resources["DocumentReference"]["searchParam"]
    }
    directory = {i["code"] for i in resources["Practitioner"]["interaction"]}
    assert directory == {"create", "update", "read", "search-type"}
    assert "mailbox-mss" in {p["name"] for p in resources["Practitioner"]["searchParam"]}
    care_team = resources["CareTeam"]
    assert {o["name"] for o in care_team["operation"]} == {
        "invite",
        "accept",
        "join",
        "remove",
        "consent",
    }
    assert {o["name"] for o in resources["PlanDefinition"]["operation"]} == {"apply"}
    subscription = {i["code"] for i in resources["Subscription"]["interaction"]}
    assert subscription == {"create", "read", "search-type", "delete"}
    assert "CommunicationRequest?category=" in resources["Subscription"]["documentation"]
    assert "French rules" in resources["Patient"]["documentation"]
    task_ops = {o["name"] for o in resources["Task"]["operation"]}
    assert task_ops == {"decide", "undo"}
    assert {p["name"] for p in resources["Task"]["searchParam"]} >= {"status", "code", "facility"}
    interactions = {i["code"] for i in resources["AuditEvent"]["interaction"]}
    assert interactions == {"create", "read", "search-type"}
    params = {p["name"] for p in resources["AuditEvent"]["searchParam"]}
    assert {"date", "agent", "patient", "action"} <= params


def test_metadata_with_a_bad_token_is_refused(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"


def test_xml_is_not_acceptable(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert response.json()["issue"][0]["code"] == "not-supported"
    assert client.get("/fhir/metadata?_format=xml").status_code == 406
    assert client.get("/fhir/metadata?_format=json").status_code == 200


def test_unknown_fhir_path_is_an_operation_outcome(client: TestClient) -> None:
    response = client.get("/fhir/Nothing/1")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_errors_outside_fhir_are_problem_json(client: TestClient) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_oversized_body_is_refused_and_server_keeps_serving(
    client: TestClient, factory: Factory
) -> None:
    token = factory.token()
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response = client.post(
        "/oauth/token",
        content=b"x" * (limit + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json()["status"] == 413
    fhir = client.post(
        "/fhir/AuditEvent",
        content=b"{" * (limit + 10),
        headers={"content-type": "application/fhir+json"},
    )
    assert fhir.status_code == 413 and fhir.json()["resourceType"] == "OperationOutcome"
    ok = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


def test_search_with_bad_parameters(client: TestClient, factory: Factory) -> None:
    token = factory.token()
    headers = {"Authorization": f"Bearer {token}"}
    bad = client.get("/fhir/AuditEvent?date=yesterday", headers=headers)
    assert bad.status_code == 400 and "date" in bad.json()["issue"][0]["diagnostics"]
    lenient = client.get("/fhir/AuditEvent?colour=blue", headers=headers)
    assert lenient.status_code == 200 and "colour" not in lenient.json()["link"][0]["url"]
    strict = client.get(
        "/fhir/AuditEvent?colour=blue", headers={**headers, "Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


def test_audit_event_search_and_paging(client: TestClient, factory: Factory) -> None:
    token = factory.token()
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(4):
        client.get("/fhir/AuditEvent?_count=1", headers=headers)
    page = client.get("/fhir/AuditEvent?_count=2&action=E", headers=headers).json()
    assert page["type"] == "searchset" and len(page["entry"]) == 2
    assert page["total"] >= 5
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert "next" in links and links["next"].startswith("http://testserver/fhir/AuditEvent?")
    nxt = client.get(links["next"].removeprefix("http://testserver"), headers=headers).json()
    assert nxt["entry"][0]["resource"]["id"] != page["entry"][0]["resource"]["id"]
    event = page["entry"][0]["resource"]
    assert event["resourceType"] == "AuditEvent" and event["agent"][0]["requestor"] is True
    read = client.get(f"/fhir/AuditEvent/{event['id']}", headers=headers)
    assert read.status_code == 200 and read.json()["id"] == event["id"]
    assert client.get("/fhir/AuditEvent/999999", headers=headers).status_code == 404


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": "ok",
        "storage": "ok",
    }
    # /docs and /openapi.json: tests/system/test_production_defaults.py


def test_security_headers(client: TestClient) -> None:
    page = client.get("/login")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert len(page.headers["x-request-id"]) == 16
