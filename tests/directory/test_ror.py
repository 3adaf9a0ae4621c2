"""The ROR over FHIR: structures (imported from a FINESS file with their positions) describe
their offers and count their beds through the API, as their software would; a consumer finds
"available beds of this kind within N km", nearest first. Who may write is the structure
(its facility's clients), a professional practising there, or an admin; nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from tests.conftest import Factory
from tests.directory.test_import import finess, position, run, structure

from enrs.accounts import service as accounts_service
from enrs.directory import offer
from enrs.directory.models import Capacity, CareService, CareUnit
from enrs.kit.db import Database

CHU, CLINIC, FAR = finess(1), finess(2), finess(3)
READ = "system/HealthcareService.rs system/Location.rs system/Organization.rs"
WRITE = "system/HealthcareService.cru system/Location.cru"
FHIR_JSON = "application/fhir+json"
USINV = ("356", "Soins intensifs spécialisés neurologie vasculaire (USINV)")


@pytest.fixture
def structures(db: Database, tmp_path: Path) -> None:
    """The CHU at Fort-de-France, a clinic about 10 km away, a hospital in Guadeloupe."""
    path = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    path.write_bytes(
        (
            "finess;etalab;95;2024-01-18\n"
            + structure(CHU)
            + structure(CLINIC, rs="CLINIQUE DU LAMENTIN", ligneacheminement="97232 LE LAMENTIN")
            + structure(FAR, rs="CHU DE GUADELOUPE", departement="9A",
                        ligneacheminement="97110 POINTE A PITRE")
            + position(CHU, 708963.33, 1617190.19, "UTM_N20")
            + position(CLINIC, 716963.0, 1623190.0, "UTM_N20")
            + position(FAR, 655000.0, 1794000.0, "UTM_N20")
        ).encode("cp1252")
    )  # fmt: skip
    assert run(db, path).error is None


def facility_token(client: TestClient, db: Database, of: str, scope: str = WRITE) -> str:
    """A token of a system client of the member facility ``of``."""
    with db.transaction() as session:
        made, secret = accounts_service.create_client(
            session, name=f"DPI {of}", scope=scope, finess=of
        )
    answer = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(made.client_id, secret)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def capacity(
    status: str, count: int, gender: str = "03", temporality: str = "01"
) -> dict[str, Any]:
    def concept(system: str, code: str) -> dict[str, Any]:
        return {"coding": [{"system": system, "code": code}]}

    return {
        "url": "https://interop.esante.gouv.fr/ig/fhir/ror/StructureDefinition/"
        "ror-location-supported-capacity",
        "extension": [
            {"url": "capacityType", "valueCodeableConcept": concept(offer.NATURE, "01")},
            {"url": "capacityStatus", "valueCodeableConcept": concept(offer.STATUS, status)},
            {"url": "temporalityCapacity",
             "valueCodeableConcept": concept(offer.TEMPORALITY, temporality)},
            {"url": "genderCapacityAvailable",
             "valueCodeableConcept": concept(offer.GENDER, gender)},
            {"url": "nbCapacity", "valueInteger": count},
        ],
    }  # fmt: skip


def unit_body(of: str, name: str, *capacities: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Location",
        "name": name,
        "status": "active",
        "managingOrganization": {"reference": f"Organization/{of}"},
        "extension": list(capacities),
    }


def service_body(of: str, unit_id: str, activity: tuple[str, str] = USINV) -> dict[str, Any]:
    return {
        "resourceType": "HealthcareService",
        "name": f"Hospitalisation complète {activity[1]}",
        "providedBy": {"reference": f"Organization/{of}"},
        "type": [{"coding": [{"system": offer.FIELD, "code": "01"}]}],
        "specialty": [{"coding": [{"system": offer.ACTIVITY, "code": activity[0],
                                   "display": activity[1]}]}],
        "characteristic": [{"coding": [{"system": offer.CARE_MODE, "code": "28"}]}],
        "location": [{"reference": f"Location/{unit_id}"}],
        "extension": [{
            "url": "https://interop.esante.gouv.fr/ig/fhir/ror/StructureDefinition/"
            "ror-healthcareservice-patient-type",
            "extension": [{"url": "ageRange", "valueRange": {"low": {"value": 18}}}],
        }],
    }  # fmt: skip


def send(client: TestClient, token: str, method: str, url: str, body: dict[str, Any]) -> Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    return client.request(method, url, json=body, headers=headers)


def get(client: TestClient, token: str, url: str, **params: str) -> dict[str, Any]:
    answer = client.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def counted(db: Database) -> tuple[int, int, int]:
    with db.transaction(write=False) as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(m)) or 0
            for m in (CareUnit, Capacity, CareService)
        )


def offer_of(client: TestClient, token: str, of: str, name: str, *caps: dict[str, Any]) -> str:
    """A unit of ``of`` with ``caps`` and its USINV offer; the offer's id."""
    made = send(client, token, "POST", "/fhir/Location", unit_body(of, name, *caps))
    assert made.status_code == 201, made.text
    service = send(client, token, "POST", "/fhir/HealthcareService",
                   service_body(of, made.json()["id"]))  # fmt: skip
    assert service.status_code == 201, service.text
    return str(service.json()["id"])


def test_a_structure_describes_its_offer_and_counts_its_beds(
    client: TestClient, db: Database, factory: Factory, structures: None
) -> None:
    chu = facility_token(client, db, CHU)
    made = send(client, chu, "POST", "/fhir/Location",
                unit_body(CHU, "USINV", capacity("01", 12), capacity("02", 2, "01")))  # fmt: skip
    assert made.status_code == 201, made.text
    unit = made.json()
    assert made.headers["Location"].endswith(f"/Location/{unit['id']}")
    assert unit["managingOrganization"]["reference"] == f"Organization/{CHU}"
    assert 14.5 < unit["position"]["latitude"] < 14.7  # the CHU's, from the FINESS file
    counts = {
        (e["extension"][1]["valueCodeableConcept"]["coding"][0]["code"],
         e["extension"][4]["valueCodeableConcept"]["coding"][0]["code"]):
        e["extension"][3]["valueInteger"]
        for e in unit["extension"]
    }  # fmt: skip
    assert counts == {("01", "03"): 12, ("02", "01"): 2}
    service = send(client, chu, "POST", "/fhir/HealthcareService", service_body(CHU, unit["id"]))
    assert service.status_code == 201, service.text
    reader = factory.token(READ)
    read = get(client, reader, f"/fhir/HealthcareService/{service.json()['id']}")
    assert read["specialty"][0]["coding"][0]["code"] == "356"
    assert read["characteristic"][0]["coding"][0]["display"] == "Hospitalisation complète (HC)"
    assert read["location"] == [{"reference": f"Location/{unit['id']}"}]
    # A new count replaces the unit's capacities; the time of the count is the server's.
    again = send(client, chu, "PUT", f"/fhir/Location/{unit['id']}",
                 unit_body(CHU, "USINV", capacity("01", 12), capacity("02", 0)))  # fmt: skip
    assert again.status_code == 200, again.text
    assert [e["extension"][3]["valueInteger"] for e in again.json()["extension"]] == [12, 0]
    assert counted(db) == (1, 2, 1)


def test_only_the_structure_writes_its_offer(
    client: TestClient, db: Database, factory: Factory, structures: None
) -> None:
    chu, clinic = facility_token(client, db, CHU), facility_token(client, db, CLINIC)
    made = send(client, chu, "POST", "/fhir/Location", unit_body(CHU, "Réa", capacity("02", 1)))
    unit_id = made.json()["id"]
    before = counted(db)
    # Another facility's client: neither a new unit for the CHU nor a change of its unit.
    for method, url in (("POST", "/fhir/Location"), ("PUT", f"/fhir/Location/{unit_id}")):
        refused = send(client, clinic, method, url, unit_body(CHU, "Réa", capacity("02", 9)))
        assert refused.status_code == 403, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
    refused = send(client, clinic, "POST", "/fhir/HealthcareService", service_body(CHU, unit_id))
    assert refused.status_code == 403
    # A client of no facility, one without the write scope, no token at all.
    nobody = factory.token(WRITE)
    assert send(client, nobody, "POST", "/fhir/Location", unit_body(CHU, "X")).status_code == 403
    reader = facility_token(client, db, CHU, READ)
    assert send(client, reader, "POST", "/fhir/Location", unit_body(CHU, "X")).status_code == 403
    assert client.post("/fhir/Location", json=unit_body(CHU, "X")).status_code == 401
    assert counted(db) == before


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"extension": [capacity("09", 1)]}, "status (TRE_R330) '09'"),
        ({"extension": [capacity("02", -1)]}, "count -1"),
        ({"extension": [capacity("02", 1, temporality="02")]}, "only 01 (current)"),
        ({"extension": [capacity("02", 1), capacity("02", 2)]}, "given twice"),
        ({"name": ""}, "Location.name"),
        ({"status": "closed"}, "Location.status"),
        ({"managingOrganization": {"reference": "Organization/000000000"}}, "no structure"),
    ],
)
def test_a_bad_location_is_refused_and_changes_nothing(
    client: TestClient, db: Database, structures: None, change: dict[str, Any], reason: str
) -> None:
    chu = facility_token(client, db, CHU)
    made = send(client, chu, "POST", "/fhir/Location", unit_body(CHU, "Réa", capacity("02", 4)))
    unit_id = made.json()["id"]
    before = counted(db)
    for method, url in (("POST", "/fhir/Location"), ("PUT", f"/fhir/Location/{unit_id}")):
        bad = send(client, chu, method, url, {**unit_body(CHU, "Réa"), **change})
        assert bad.status_code == 422, bad.text
        assert reason in bad.json()["issue"][0]["diagnostics"]
    assert counted(db) == before
    kept = get(client, facility_token(client, db, CHU, READ), f"/fhir/Location/{unit_id}")
    assert [e["extension"][3]["valueInteger"] for e in kept["extension"]] == [4]


def test_available_beds_of_a_kind_near_a_place_nearest_first(
    client: TestClient, db: Database, factory: Factory, structures: None
) -> None:
    chu, clinic, far = (facility_token(client, db, f) for f in (CHU, CLINIC, FAR))
    at_chu = offer_of(client, chu, CHU, "USINV", capacity("01", 10), capacity("02", 2, "01"))
    at_clinic = offer_of(client, clinic, CLINIC, "USINV", capacity("02", 5))
    offer_of(client, far, FAR, "USINV", capacity("02", 9))  # 180 km away
    # Ten installed beds, none available: no match, though some capacity is above 0.
    offer_of(client, clinic, CLINIC, "USINV 2", capacity("01", 10), capacity("02", 0))
    reader = factory.token(READ)
    point = get(client, reader, "/fhir/Location", organization=f"Organization/{CLINIC}")
    lat = point["entry"][0]["resource"]["position"]["latitude"]
    lon = point["entry"][0]["resource"]["position"]["longitude"]
    search = {
        "specialty": f"{offer.ACTIVITY}|356",
        "location.capacity-status": f"{offer.STATUS}|02",
        "location.nb-capacity": "gt0",
        "location.near": f"{lat}|{lon}|50|km",
        "_include": "HealthcareService:location",
    }
    found = get(client, reader, "/fhir/HealthcareService", **search)
    matches = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "match"]
    assert [m["id"] for m in matches] == [at_clinic, at_chu]  # nearest first, FAR too far
    km = [m["extension"][-1]["valueQuantity"]["value"] for m in matches]
    assert km[0] == 0 and 8 < km[1] < 12
    assert sum(e["search"]["mode"] == "include" for e in found["entry"]) == 2
    # A women's bed available: only the CHU has one (gender and status on one record).
    women = get(client, reader, "/fhir/HealthcareService", **search,
                **{"location.gender-capacity-available": f"{offer.GENDER}|01"})  # fmt: skip
    assert [e["resource"]["id"] for e in women["entry"] if e["search"]["mode"] == "match"] == [
        at_chu
    ]
    # Wider: 300 km reaches Guadeloupe; Location's own near works alike.
    wide = get(client, reader, "/fhir/Location", near=f"{lat}|{lon}|300|km", _total="accurate")
    assert wide["total"] == 4
    assert get(client, reader, "/fhir/Location", near=f"{lat}|{lon}|1000|m")["entry"]
    bad = client.get("/fhir/Location", params={"near": "14.6|x"},
                     headers={"Authorization": f"Bearer {reader}"})  # fmt: skip
    assert bad.status_code == 400 and "latitude|longitude" in bad.text


def test_offer_changes_for_directory_consumers(
    client: TestClient, db: Database, factory: Factory, structures: None
) -> None:
    chu = facility_token(client, db, CHU)
    offer_of(client, chu, CHU, "USINV", capacity("02", 1))
    reader = factory.token(READ)
    for kind in ("Location", "HealthcareService"):
        changes = get(client, reader, f"/fhir/{kind}/_history", _since="2020-01-01")
        assert [e["resource"]["resourceType"] for e in changes["entry"]] == [kind]
    statement = get(client, reader, "/fhir/metadata")
    kinds = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {i["code"] for i in kinds["Location"]["interaction"]} >= {"create", "update"}
    assert "location.near" in {p["name"] for p in kinds["HealthcareService"]["searchParam"]}
