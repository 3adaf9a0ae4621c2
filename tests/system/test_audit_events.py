"""``/fhir/AuditEvent``: ITI-20 record from a facility, bad bodies, and searching the trail by
patient, agent, date and action."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from tests.conftest import Factory

from enrs.kit.audit import verify_chain
from enrs.kit.db import Database

FHIR = "application/fhir+json"


def _event(patient: str = "Patient/42", who: str = "dr.durand") -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": "2026-11-20T08:15:00+01:00",
        "outcome": "0",
        "agent": [
            {
                "who": {
                    "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": who},
                    "display": "Dr Durand",
                },
                "requestor": True,
                "network": {"address": "10.1.2.3", "type": "2"},
            }
        ],
        "source": {"observer": {"display": "DPI CH Basse-Terre"}},
        "entity": [{"what": {"reference": patient}}],
    }


def _auth(factory: Factory, scope: str = "system/AuditEvent.crs") -> dict[str, str]:
    return {"Authorization": f"Bearer {factory.token(scope)}", "Content-Type": FHIR}


def test_record_audit_event_from_a_facility(
    client: TestClient, factory: Factory, db: Database
) -> None:
    headers = _auth(factory)
    created = client.post("/fhir/AuditEvent", content=json.dumps(_event()), headers=headers)
    assert created.status_code == 201, created.text
    event_id = created.json()["id"]
    assert created.headers["location"].endswith(f"/fhir/AuditEvent/{event_id}")
    read = client.get(f"/fhir/AuditEvent/{event_id}", headers=headers).json()
    assert read["source"]["observer"]["display"] == "DPI CH Basse-Terre"
    assert read["entity"][0]["what"]["reference"] == "Patient/42"
    found = client.get("/fhir/AuditEvent?patient=Patient/42", headers=headers).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [event_id]
    by_agent = client.get("/fhir/AuditEvent?agent=dr.durand", headers=headers).json()
    assert by_agent["total"] == 1
    assert verify_chain(db).ok


def test_bad_bodies_get_an_operation_outcome_and_store_nothing(
    client: TestClient, factory: Factory
) -> None:
    headers = _auth(factory)
    cases = [
        (b'{"resourceType": "AuditEvent", "type": ', 400),  # truncated JSON
        (b"\xff\xfe not utf-8", 400),
        (b"[1, 2, 3]", 400),
        (json.dumps({"resourceType": "Patient"}).encode(), 422),
        (json.dumps({**_event(), "recorded": "yesterday"}).encode(), 422),
        (json.dumps({**_event(), "agent": []}).encode(), 422),
        (json.dumps({**_event(), "action": "X"}).encode(), 422),
        (json.dumps({k: v for k, v in _event().items() if k != "source"}).encode(), 422),
    ]
    for body, status in cases:
        response = client.post("/fhir/AuditEvent", content=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["diagnostics"]
    xml = client.post(
        "/fhir/AuditEvent",
        content=b"<AuditEvent/>",
        headers={**headers, "Content-Type": "application/fhir+xml"},
    )
    assert xml.status_code == 415
    stored = client.get("/fhir/AuditEvent?patient=Patient/42", headers=headers).json()
    assert stored["total"] == 0
    assert (
        client.post("/fhir/AuditEvent", content=json.dumps(_event()), headers=headers).status_code
        == 201
    )


def test_creating_needs_the_create_scope(client: TestClient, factory: Factory) -> None:
    headers = _auth(factory, "system/AuditEvent.rs")
    response = client.post("/fhir/AuditEvent", content=json.dumps(_event()), headers=headers)
    assert response.status_code == 403


def test_search_by_date_and_action(client: TestClient, factory: Factory) -> None:
    headers = _auth(factory)
    client.post("/fhir/AuditEvent", content=json.dumps(_event("Patient/7")), headers=headers)
    today = datetime.now(UTC).date()
    recent = client.get(
        f"/fhir/AuditEvent?date=ge{today.isoformat()}&action=R", headers=headers
    ).json()
    assert recent["total"] == 1 and recent["entry"][0]["resource"]["action"] == "R"
    future = (today + timedelta(days=2)).isoformat()
    assert client.get(f"/fhir/AuditEvent?date=ge{future}", headers=headers).json()["total"] == 0
    creates = client.get("/fhir/AuditEvent?action=C", headers=headers).json()
    assert creates["total"] == 1  # the submission itself, audited as a create
    assert creates["entry"][0]["resource"]["subtype"][0]["code"] == "create"
