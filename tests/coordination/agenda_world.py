"""Helpers of the agenda tests: appointments, schedules and slots sent over HTTP as a
professional's browser does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.coordination.circles import doctor
from tests.documents.world import FHIR_JSON, Region

CARE_TEAM = "https://enrs.fr/fhir/StructureDefinition/appointment-care-team"


def at(days: float, hour: int = 9) -> datetime:
    """A UTC instant ``days`` from today at ``hour`` o'clock."""
    today = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days)


def appointment(
    region: Region,
    team: str,
    title: str,
    start: datetime,
    *,
    minutes: int = 30,
    with_rpps: tuple[str, ...] = (),
    status: str = "booked",
    **elements: Any,
) -> dict[str, Any]:
    people: list[dict[str, Any]] = [
        {"actor": {"reference": f"Patient/{region.rri}"}, "status": "accepted"}
    ]
    people += [{"actor": doctor(r), "status": "needs-action"} for r in with_rpps]
    return {
        "resourceType": "Appointment",
        "extension": [{"url": CARE_TEAM, "valueReference": {"reference": f"CareTeam/{team}"}}],
        "status": status,
        "description": title,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
        "participant": people,
        **elements,
    }


def post(client: TestClient, kind: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(f"/fhir/{kind}", json=body, headers={"Content-Type": FHIR_JSON, **headers})


def put(
    client: TestClient, kind: str, resource: dict[str, Any], if_match: str | None = None
) -> Any:
    headers = {"Content-Type": FHIR_JSON, **({"If-Match": if_match} if if_match else {})}
    return client.put(f"/fhir/{kind}/{resource['id']}", json=resource, headers=headers)


def titles(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [e["resource"]["description"] for e in answer.json()["entry"]]
