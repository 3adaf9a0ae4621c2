"""Who reads a patient's documents (issue 13): the care relationship (author, author's
structure, a structure with the patient in care, a declared access, bris de glace), the
patient's oppositions, the DMP's confidentiality codes, and the lifecycle (replace,
withdraw); every denial and every emergency read in the audit trail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.documents.terminology import Binding
from enrs.identity import service as identity_service
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.documents.world import (
    CHU,
    CHU_OID,
    CLINIC,
    CLINIC_OID,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    Region,
    bundle,
    coding,
    make_region,
    pdf,
)
from tests.support.identities import person
from tests.support.portal import log_in


@pytest.fixture
def region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    return make_region(app, client, db, tmp_path)


def _file(region: Region, **options: Any) -> str:
    answer = region.provide(bundle((pdf(), "application/pdf", options)))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def _seen(region: Region, headers: dict[str, str] | None = None, query: str = "") -> list[str]:
    answer = region.client.get(
        f"/fhir/DocumentReference?patient=Patient/{region.rri}{query}", headers=headers or {}
    )
    assert answer.status_code == 200, answer.text
    return [
        e["resource"]["id"]
        for e in answer.json().get("entry", [])
        if e["search"]["mode"] == "match"
    ]


def _retrieve(region: Region, doc_id: str, headers: dict[str, str] | None = None) -> int:
    return region.client.get(f"/fhir/Binary/{doc_id}", headers=headers or {}).status_code


def _feed_at_clinic(region: Region) -> None:
    """The clinic admits the patient: its ADT feed gives it the patient in care."""
    with region.db.transaction() as session:
        identity_service.feed(
            session,
            region.app.state.matcher,
            person(CLINIC_OID, "C-77"),
            actor="test",
            config=region.app.state.identity_config,
        )


def test_a_structure_reads_once_it_has_the_patient_in_care(region: Region) -> None:
    doc = _file(region)
    assert _seen(region, region.clinic) == []
    assert _retrieve(region, doc, region.clinic) == 403
    with region.db.transaction(write=False) as session:
        denied = session.scalars(
            select(AuditRecord.outcome).where(
                AuditRecord.resource_type == "Binary",
                AuditRecord.patient_ref == f"Patient/{region.rri}",
            )
        ).all()
    assert denied and denied[-1] != "0"  # the refusal is audited, with the patient
    _feed_at_clinic(region)
    assert _seen(region, region.clinic) == [doc]
    assert _retrieve(region, doc, region.clinic) == 200


def test_a_facility_files_only_for_its_patients(region: Region) -> None:
    answer = region.provide(bundle((pdf(), "application/pdf", {})), headers=region.clinic)
    assert answer.status_code == 403
    _feed_at_clinic(region)
    answer = region.provide(bundle((pdf(), "application/pdf", {})), headers=region.clinic)
    assert answer.status_code == 200, answer.text


def test_professionals_by_structure_authorship_and_declared_access(
    region: Region, factory: Factory
) -> None:
    doc = _file(region, author_rpps=DOCTOR_AT_CHU, author_finess=CHU)
    factory.user("dr.chu", rpps=DOCTOR_AT_CHU)
    factory.user("dr.clinique", rpps=DOCTOR_ELSEWHERE)
    factory.user("admin", roles=("admin",))
    chu_client = TestClient(region.app)
    log_in(chu_client, "dr.chu")
    other = TestClient(region.app)
    log_in(other, "dr.clinique")

    seen = chu_client.get(f"/fhir/DocumentReference?patient=Patient/{region.rri}")
    assert [e["resource"]["id"] for e in seen.json()["entry"]] == [doc]
    assert other.get(f"/fhir/Binary/{doc}").status_code == 403
    assert other.get(f"/fhir/DocumentReference?patient=Patient/{region.rri}").json()["total"] == 0

    short = other.post(
        "/api/documents/access",
        json={"patient": f"Patient/{region.rri}", "kind": "declared", "reason": "?"},
    )
    assert short.status_code == 400
    declared = other.post(
        "/api/documents/access",
        json={
            "patient": f"Patient/{region.rri}",
            "kind": "declared",
            "reason": "Consultation de suivi",
        },
    )
    assert declared.status_code == 201, declared.text
    assert other.get(f"/fhir/Binary/{doc}").status_code == 200


def test_bris_de_glace_is_flagged_and_reported(region: Region, factory: Factory) -> None:
    doc = _file(region)
    factory.user("dr.clinique", rpps=DOCTOR_ELSEWHERE)
    factory.user("regional", roles=("admin",))
    other = TestClient(region.app)
    log_in(other, "dr.clinique")
    assert other.get(f"/fhir/Binary/{doc}").status_code == 403
    broke = other.post(
        "/api/documents/access",
        json={
            "patient": f"Patient/{region.rri}",
            "kind": "emergency",
            "reason": "Urgence vitale, patient inconscient",
        },
    )
    assert broke.status_code == 201, broke.text
    assert other.get(f"/fhir/Binary/{doc}").status_code == 200
    with region.db.transaction(write=False) as session:
        details = session.scalars(
            select(AuditRecord.detail).where(
                AuditRecord.resource_type == "Binary", AuditRecord.outcome == "0"
            )
        ).all()
    assert any(d and json.loads(d).get("purposeOfUse") == "BTG" for d in details)

    team = TestClient(region.app)
    log_in(team, "regional")
    report = team.get("/api/admin/documents/emergency-accesses")
    assert report.status_code == 200, report.text
    [item] = report.json()
    assert (
        item["reason"].startswith("Urgence vitale") and item["patient"] == f"Patient/{region.rri}"
    )
    assert other.get("/api/admin/documents/emergency-accesses").status_code == 403
    reviewed = team.post(f"/api/admin/documents/emergency-accesses/{item['id']}/reviewed")
    assert reviewed.status_code == 200
    assert team.get("/api/admin/documents/emergency-accesses").json() == []

    report = team.get(f"/api/admin/documents/access-report?patient=Patient/{region.rri}").json()
    mine = [line for line in report if line["who"] == "Dr.Clinique"]
    assert [(x["what"], x["emergency"], x["allowed"]) for x in mine] == [
        ("téléchargement", True, True),
        ("accès déclaré", True, True),
        ("téléchargement", False, False),
    ]
    assert (
        other.get(f"/api/admin/documents/access-report?patient=Patient/{region.rri}").status_code
        == 403
    )


def test_oppositions(region: Region, factory: Factory) -> None:
    first, second = _file(region), _file(region)
    _feed_at_clinic(region)
    assert sorted(_seen(region, region.clinic)) == sorted([first, second])
    factory.user("regional", roles=("admin",))
    team = TestClient(region.app)
    log_in(team, "regional")

    one = team.post(
        "/api/documents/oppositions",
        json={
            "patient": f"Patient/{region.rri}",
            "document": first,
            "reason": "demande du patient",
        },
    )
    assert one.status_code == 201, one.text
    assert _seen(region, region.clinic) == [second]
    assert sorted(_seen(region, region.chu)) == sorted([first, second])  # the author's structure

    everything = team.post("/api/documents/oppositions", json={"patient": f"Patient/{region.rri}"})
    assert everything.status_code == 201
    assert _seen(region, region.clinic) == []
    assert _retrieve(region, second, region.clinic) == 403
    lifted = team.delete(f"/api/documents/oppositions/{everything.json()['id']}")
    assert lifted.status_code == 200
    assert _seen(region, region.clinic) == [second]


def test_confidentiality_masked_to_professionals(region: Region) -> None:
    masked = _file(region, visibility=("MASQUE_PS",))
    restricted = _file(region, security=("V",))
    normal = _file(region)
    _feed_at_clinic(region)
    assert _seen(region, region.clinic) == [normal]
    assert _retrieve(region, masked, region.clinic) == 403
    assert _retrieve(region, restricted, region.clinic) == 403
    assert sorted(_seen(region, region.chu)) == sorted([masked, restricted, normal])
    assert _seen(region, region.chu, "&security-label=MASQUE_PS") == [masked]


def test_replace_and_withdraw(region: Region) -> None:
    first = _file(region)
    second = _file(region, replaces=first)
    _feed_at_clinic(region)
    assert _seen(region, region.chu, "&status=current") == [second]
    assert _seen(region, region.chu, "&status=superseded") == [first]
    again = region.provide(bundle((pdf(), "application/pdf", {"replaces": first})))
    assert again.status_code == 409  # a superseded version is not replaced twice
    assert (
        region.provide(
            bundle((pdf(), "application/pdf", {"replaces": second})), headers=region.clinic
        ).status_code
        == 403
    )  # only the author's structure replaces

    resource = region.client.get(f"/fhir/DocumentReference/{second}", headers=region.chu).json()
    withdrawn = {**resource, "status": "entered-in-error"}
    headers = {**region.clinic, "Content-Type": "application/fhir+json"}
    denied = region.client.put(f"/fhir/DocumentReference/{second}", json=withdrawn, headers=headers)
    assert denied.status_code == 403
    headers = {**region.chu, "Content-Type": "application/fhir+json"}
    done = region.client.put(f"/fhir/DocumentReference/{second}", json=withdrawn, headers=headers)
    assert done.status_code == 200 and done.json()["status"] == "entered-in-error"
    assert _seen(region, region.clinic, "&status=entered-in-error") == []
    assert _seen(region, region.chu, "&status=entered-in-error") == [second]
    assert _retrieve(region, second, region.chu) == 200  # kept, not deleted
    assert CLINIC


def test_documents_follow_the_surviving_patient_after_a_merge(region: Region) -> None:
    """The CHU filed documents for two IPPs, then merged the second into the first (ADT^A40):
    the documents of both are found through the surviving patient, by its RRI or its IPP,
    and the retired RRI leads to the survivor too."""
    from enrs.identity import updates

    first = _file(region)
    with region.db.transaction() as session:
        other = identity_service.feed(
            session,
            region.app.state.matcher,
            person(CHU_OID, "800002", birth_name="MARTIN", given_names=["Paul"], sex="M"),
            actor="test",
            config=region.app.state.identity_config,
        )
    assert other.rri != region.rri
    patient = {"identifier": {"system": f"urn:oid:{CHU_OID}", "value": "800002"}}
    answer = region.provide(bundle((pdf("second"), "application/pdf", {}), patient=patient))
    assert answer.status_code == 200, answer.text
    second = answer.json()["entry"][1]["response"]["location"].split("/")[1]
    assert _seen(region, region.chu) == [first]
    with region.db.transaction() as session:
        updates.merge_sources(
            session, authority=CHU_OID, surviving_ipp="800001", merged_ipp="800002", actor="test"
        )
    assert sorted(_seen(region, region.chu)) == sorted([first, second])
    by_old = region.client.get(
        f"/fhir/DocumentReference?patient=Patient/{other.rri}", headers=region.chu
    ).json()
    assert sorted(e["resource"]["id"] for e in by_old["entry"]) == sorted([first, second])
    assert {e["resource"]["subject"]["reference"] for e in by_old["entry"]} == {
        f"Patient/{region.rri}"
    }


def test_a_correction_of_the_metadata(region: Region) -> None:
    doc = _file(region)
    resource = region.client.get(f"/fhir/DocumentReference/{doc}", headers=region.chu).json()
    corrected = {**resource, "type": {"coding": [coding(Binding.TYPE, "11488-4")]}}
    headers = {**region.chu, "Content-Type": "application/fhir+json"}
    done = region.client.put(f"/fhir/DocumentReference/{doc}", json=corrected, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["meta"]["versionId"] == "2"
    assert _seen(region, region.chu, "&type=http://loinc.org|11488-4") == [doc]
    bad = {**resource, "type": {"coding": [{"system": "http://loinc.org", "code": "99999-9"}]}}
    refused = region.client.put(f"/fhir/DocumentReference/{doc}", json=bad, headers=headers)
    assert refused.status_code == 422
    _feed_at_clinic(region)
    clinic = {**region.clinic, "Content-Type": "application/fhir+json"}
    assert (
        region.client.put(
            f"/fhir/DocumentReference/{doc}", json=corrected, headers=clinic
        ).status_code
        == 403
    )


def test_the_patients_invisibility_is_only_ever_lifted(region: Region) -> None:
    """The DMP's visibility rules: never both masked to professionals and invisible to the
    patient; a document made visible to the patient stays visible."""
    both = bundle((pdf(), "application/pdf", {"visibility": ("MASQUE_PS", "INVISIBLE_PATIENT")}))
    refused = region.provide(both)
    assert refused.status_code == 422
    assert "MASQUE_PS and INVISIBLE_PATIENT" in refused.text
    assert _seen(region, region.chu) == []

    doc = _file(region, visibility=("INVISIBLE_PATIENT",))
    assert _seen(region, region.chu, "&security-label=INVISIBLE_PATIENT") == [doc]
    resource = region.client.get(f"/fhir/DocumentReference/{doc}", headers=region.chu).json()
    labels = resource["securityLabel"]
    disclosed = {**resource, "securityLabel": [x for x in labels if "INVISIBLE" not in str(x)]}
    headers = {**region.chu, "Content-Type": "application/fhir+json"}
    done = region.client.put(f"/fhir/DocumentReference/{doc}", json=disclosed, headers=headers)
    assert done.status_code == 200, done.text
    assert _seen(region, region.chu, "&security-label=INVISIBLE_PATIENT") == []

    hidden_again = region.client.put(
        f"/fhir/DocumentReference/{doc}", json=resource, headers=headers
    )
    assert hidden_again.status_code == 422
    assert "INVISIBLE_PATIENT cannot be added" in hidden_again.text
    now = region.client.get(f"/fhir/DocumentReference/{doc}", headers=region.chu).json()
    assert now["meta"]["versionId"] == "2" and "INVISIBLE" not in str(now["securityLabel"])
    masked = {**disclosed, "securityLabel": [*disclosed["securityLabel"], {"code": "MASQUE_PS"}]}
    assert (
        region.client.put(
            f"/fhir/DocumentReference/{doc}", json=masked, headers=headers
        ).status_code
        == 200
    )  # masking to professionals goes both ways
    assert _seen(region, region.chu, "&security-label=MASQUE_PS") == [doc]
