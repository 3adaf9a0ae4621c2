"""Helpers of the coordination tests: a care circle made and changed over HTTP as a
professional's browser does."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from enrs.directory.identifiers import RPPS_SYSTEM
from tests.documents.world import FHIR_JSON, Region


def make_circle(region: Region, browser: TestClient, name: str = "Suivi greffe rénale") -> Any:
    body = {
        "resourceType": "CareTeam",
        "name": name,
        "subject": {"reference": f"Patient/{region.rri}"},
    }
    return browser.post("/fhir/CareTeam", json=body, headers={"Content-Type": FHIR_JSON})


def params(**values: Any) -> dict[str, Any]:
    parameter = []
    for name, value in values.items():
        key = "valueReference" if isinstance(value, dict) else "valueString"
        parameter.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": parameter}


def operation(
    browser: TestClient, team: str, name: str, headers: dict[str, str] | None = None, **values: Any
) -> Any:
    return browser.post(
        f"/fhir/CareTeam/{team}/${name}",
        json=params(**values),
        headers={"Content-Type": FHIR_JSON, **(headers or {})},
    )


def doctor(rpps: str) -> dict[str, Any]:
    return {"identifier": {"system": RPPS_SYSTEM, "value": f"8{rpps}"}}
