"""The demo data set of ``make run`` has a patient in a care circle, so that a new user can try
the coordination file as the demo doctor or the demo nurse."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from enrs.demo import DEMO_CIRCLE, DEMO_USERS, load_demo
from enrs.settings import Settings
from tests.support.portal import log_in


def test_the_demo_doctor_and_nurse_share_a_care_circle(app: FastAPI, settings: Settings) -> None:
    first, again = load_demo(settings), load_demo(settings)  # idempotent
    assert [x for x in first if x.startswith("Demo patient")] == [
        x for x in again if x.startswith("Demo patient")
    ]
    rri = first[[x.startswith("Demo patient") for x in first].index(True)].split("Patient/")[1]
    rri = rri.split(")")[0]
    for username, _, password, _, _ in DEMO_USERS[2:]:
        browser = TestClient(app)
        log_in(browser, username, password)
        circles = browser.get("/coordination")
        assert circles.status_code == 200 and circles.text.count(DEMO_CIRCLE) == 1
        found = browser.get("/fhir/CareTeam", params={"patient": f"Patient/{rri}"}).json()
        teams = [e["resource"] for e in found.get("entry", [])]
        assert [t["name"] for t in teams] == [DEMO_CIRCLE], found
        team = teams[0]
        roles = sorted(p["role"][0]["text"] for p in team["participant"])
        assert roles == ["IDE", "aidant", "médecin traitant"]
        page = browser.get(f"/coordination/{team['id']}")
        assert page.status_code == 200 and rri in page.text
    outsider = TestClient(app)
    log_in(outsider, "cellule", DEMO_USERS[1][2])
    assert outsider.get(f"/fhir/CareTeam?patient=Patient/{rri}").status_code in (403, 404)
