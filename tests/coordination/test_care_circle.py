"""The care circle (issue 15): made by a professional caring for the patient, joined by an
invitation accepted or with the patient's consent, left at once; the circle is the care
relationship the document repository asks. Driven over HTTP as a professional's browser and a
facility's software do."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.directory.identifiers import FINESS_SYSTEM
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.coordination.circles import doctor, make_circle, operation
from tests.coordination.conftest import logged_in
from tests.documents.world import (
    CLINIC,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    Region,
    bundle,
    pdf,
)


def _statuses(resource: dict[str, Any]) -> dict[str, str]:
    return {p["member"]["display"]: p["extension"][0]["valueCode"] for p in resource["participant"]}


def _document(region: Region) -> str:
    answer = region.provide(bundle((pdf(), "application/pdf", {"author_rpps": DOCTOR_AT_CHU})))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def test_an_invited_professional_reads_the_record_once_in_the_circle_and_not_after(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient, db: Database
) -> None:
    doc = _document(region)
    # The clinic's doctor has no care relationship: no circle of their own, no document.
    assert make_circle(region, other_doctor).status_code == 403
    assert other_doctor.get(f"/fhir/Binary/{doc}").status_code == 403

    made = make_circle(region, chu_doctor)
    assert made.status_code == 201, made.text
    team = made.json()["id"]
    assert made.headers["ETag"] == 'W/"1"'
    assert made.headers["Location"].endswith(f"/CareTeam/{team}")
    [coordinator] = made.json()["participant"]
    assert coordinator["member"]["identifier"]["value"] == f"8{DOCTOR_AT_CHU}"
    assert coordinator["extension"][0]["valueCode"] == "active"
    assert coordinator["role"] == [{"text": "coordinator"}]

    assert other_doctor.get(f"/fhir/CareTeam/{team}").status_code == 403  # not invited yet
    invited = operation(chu_doctor, team, "invite", member=doctor(DOCTOR_ELSEWHERE), role="IDE")
    assert invited.status_code == 200, invited.text
    assert invited.headers["ETag"] == 'W/"2"'
    assert sorted(_statuses(invited.json()).values()) == ["active", "invited"]
    # Invited is not in: no document yet; the invited sees the circle to accept it.
    assert other_doctor.get(f"/fhir/Binary/{doc}").status_code == 403
    assert other_doctor.get(f"/fhir/CareTeam/{team}").status_code == 200
    again = operation(chu_doctor, team, "invite", member=doctor(DOCTOR_ELSEWHERE), role="IDE")
    assert again.status_code == 409

    accepted = operation(other_doctor, team, "accept")
    assert accepted.status_code == 200, accepted.text
    assert sorted(_statuses(accepted.json()).values()) == ["active", "active"]
    assert operation(other_doctor, team, "accept").status_code == 409
    assert other_doctor.get(f"/fhir/Binary/{doc}").status_code == 200
    found = other_doctor.get(f"/fhir/DocumentReference?patient=Patient/{region.rri}")
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [doc]
    mine = other_doctor.get("/fhir/CareTeam").json()
    assert [e["resource"]["id"] for e in mine["entry"]] == [team]

    # Removed: out at once, the row kept with the end of its period.
    member = next(
        p["id"]
        for p in accepted.json()["participant"]
        if p["member"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    )
    removed = operation(chu_doctor, team, "remove", participant=member)
    assert removed.status_code == 200, removed.text
    gone = next(p for p in removed.json()["participant"] if p["id"] == member)
    assert gone["extension"][0]["valueCode"] == "removed" and "end" in gone["period"]
    assert other_doctor.get(f"/fhir/Binary/{doc}").status_code == 403
    assert other_doctor.get(f"/fhir/CareTeam/{team}").status_code == 403
    assert other_doctor.get("/fhir/CareTeam").json()["total"] == 0

    with db.transaction() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.entity_ref == f"CareTeam/{team}")
        ).all()
    assert len(records) == 9 and {r.patient_ref for r in records} == {f"Patient/{region.rri}"}
    assert {r.outcome for r in records} >= {"0", "4"}  # successes and the refusals


def test_joining_needs_the_patients_consent(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> None:
    team = make_circle(region, chu_doctor).json()["id"]
    refused = operation(other_doctor, team, "join", role="Médecin traitant")
    assert refused.status_code == 403
    assert "consent" in refused.json()["issue"][0]["diagnostics"]
    # Only a member records the patient's word.
    assert (
        operation(other_doctor, team, "consent", actor=doctor(DOCTOR_ELSEWHERE)).status_code == 403
    )
    consent = operation(chu_doctor, team, "consent", actor=doctor(DOCTOR_ELSEWHERE))
    assert consent.status_code == 201, consent.text
    assert consent.json()["resourceType"] == "Consent"
    assert consent.json()["provision"]["actor"][0]["reference"]["identifier"]["value"] == (
        f"8{DOCTOR_ELSEWHERE}"
    )
    joined = operation(other_doctor, team, "join", role="Médecin traitant")
    assert joined.status_code == 200, joined.text
    roles = {
        p["role"][0]["text"]: p["extension"][0]["valueCode"] for p in joined.json()["participant"]
    }
    assert roles == {"coordinator": "active", "Médecin traitant": "active"}
    patient_circles = other_doctor.get(f"/fhir/CareTeam?patient=Patient/{region.rri}").json()
    assert patient_circles["total"] == 1


def test_a_change_on_a_stale_version_is_refused_and_changes_nothing(
    region: Region, chu_doctor: TestClient
) -> None:
    team = make_circle(region, chu_doctor).json()["id"]
    first = operation(
        chu_doctor,
        team,
        "invite",
        {"If-Match": 'W/"1"'},
        member=doctor(DOCTOR_ELSEWHERE),
        role="IDE",
    )
    assert first.status_code == 200, first.text
    carer = operation(
        chu_doctor,
        team,
        "invite",
        {"If-Match": 'W/"1"'},  # read before the first change
        kind="related-person",
        display="Marie Dupont (fille)",
        role="Aidant",
    )
    assert carer.status_code == 412
    assert carer.json()["resourceType"] == "OperationOutcome"
    now = chu_doctor.get(f"/fhir/CareTeam/{team}")
    assert now.headers["ETag"] == 'W/"2"' and len(now.json()["participant"]) == 2
    assert (
        operation(chu_doctor, team, "invite", {"If-Match": "2"}, kind="x", role="r").status_code
        == 400
    )


def test_family_carers_are_members_without_access_and_bad_members_are_refused(
    region: Region, chu_doctor: TestClient, client: TestClient
) -> None:
    team = make_circle(region, chu_doctor).json()["id"]
    carer = operation(
        chu_doctor,
        team,
        "invite",
        kind="related-person",
        display="Marie Dupont (fille)",
        role="Aidant",
    )
    assert carer.status_code == 200, carer.text
    added = next(p for p in carer.json()["participant"] if p["member"]["type"] == "RelatedPerson")
    assert added["extension"][0]["valueCode"] == "active" and "identifier" not in added["member"]

    unknown = operation(chu_doctor, team, "invite", member=doctor("10000099999"), role="IDE")
    assert unknown.status_code == 422 and "RPPS" in unknown.json()["issue"][0]["diagnostics"]
    structure = {"identifier": {"system": FINESS_SYSTEM, "value": "999999999"}}
    assert operation(chu_doctor, team, "invite", member=structure, role="SSIAD").status_code == 422
    clinic = {"identifier": {"system": FINESS_SYSTEM, "value": CLINIC}}
    assert operation(chu_doctor, team, "invite", member=clinic, role="SSR").status_code == 200
    other_system = {"identifier": {"system": "urn:oid:1.2.3", "value": "1"}}
    assert operation(chu_doctor, team, "invite", member=other_system, role="x").status_code == 422

    body = {
        "resourceType": "CareTeam",
        "name": "Parcours",
        "subject": {"reference": f"Patient/{region.rri}"},
        "participant": [{"member": doctor(DOCTOR_ELSEWHERE)}],
    }
    assert chu_doctor.post("/fhir/CareTeam", json=body).status_code == 422
    body = {
        "resourceType": "CareTeam",
        "name": "Parcours",
        "subject": {"reference": "Patient/nope"},
    }
    assert chu_doctor.post("/fhir/CareTeam", json=body).status_code == 422
    assert chu_doctor.get("/fhir/CareTeam/unknown").status_code == 404
    assert client.get(f"/fhir/CareTeam/{team}").status_code == 401  # no token, nothing
    assert chu_doctor.get("/fhir/CareTeam?participant=x").status_code == 400


def test_a_facilitys_software_is_in_the_circle_through_its_structure(
    region: Region, chu_doctor: TestClient, factory: Factory
) -> None:
    doc = _document(region)
    team = make_circle(region, chu_doctor).json()["id"]
    clinic = {"identifier": {"system": FINESS_SYSTEM, "value": CLINIC}}
    assert operation(chu_doctor, team, "invite", member=clinic, role="SSR").status_code == 200
    assert region.client.get(f"/fhir/Binary/{doc}", headers=region.clinic).status_code == 403
    # The clinic's software has no CareTeam scope: it reads, it does not accept.
    # A doctor practising at the clinic accepts for the structure.
    clinic_doctor = logged_in(region, factory, "dr.clinique", DOCTOR_ELSEWHERE)
    assert operation(clinic_doctor, team, "accept").status_code == 200
    assert region.client.get(f"/fhir/Binary/{doc}", headers=region.clinic).status_code == 200
