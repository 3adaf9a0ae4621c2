"""The identity server's FHIR interface through HTTP: PIXm ITI-104 feed and ITI-83 $ihe-pix,
PDQm ITI-78 search and ITI-119 $match, permissions, errors, audit."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from tests.conftest import Factory
from tests.identity.feeders import CHU, CLINIC, GP, feeder_token

from enrs.identity.fhir import STATUS_SYSTEM
from enrs.identity.models import SourceIdentity
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.settings import PLACEHOLDER_OID_ROOT

NIR = "1.2.250.1.213.1.4.8"
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
FHIR_JSON = "application/fhir+json"
RRI_SYSTEM = f"urn:oid:{PLACEHOLDER_OID_ROOT}.1"  # the test settings' OID root


def nir(first13: str) -> str:
    return f"{first13}{97 - int(first13) % 97:02d}"


INS = nir("2610497209123")


def fr_patient(
    ipp: str,
    authority: str = CHU,
    *,
    family: str = "JOSEPH",
    given: tuple[str, ...] = ("Marie-Line", "Rose"),
    usual: str | None = None,
    birth: str = "1961-04-09",
    gender: str = "female",
    insee: str | None = "97209",
    postal: str = "97200",
    city: str = "Fort-de-France",
    ins: str | None = None,
    status: str = "PROV",
) -> dict[str, Any]:
    """An FR Core Patient as a facility's DPI would send it."""
    identifiers: list[dict[str, Any]] = [
        {"use": "usual", "system": f"urn:oid:{authority}", "value": ipp}
    ]
    if ins:
        identifiers.append({"use": "official", "system": f"urn:oid:{NIR}", "value": ins})
    names: list[dict[str, Any]] = [
        {
            "use": "official",
            "family": family,
            "given": list(given[:1]),
            "extension": [
                {
                    "url": FR_CORE + "fr-core-patient-birth-list-given-name",
                    "valueString": " ".join(given),
                }
            ],
        }
    ]
    if usual:
        names.append({"use": "usual", "family": usual})
    extensions: list[dict[str, Any]] = [
        {
            "url": FR_CORE + "fr-core-identity-reliability",
            "extension": [{"url": "identityStatus", "valueCoding": {"code": status}}],
        }
    ]
    if insee:
        place = {
            "extension": [
                {"url": FR_CORE + "fr-core-address-insee-code", "valueCoding": {"code": insee}}
            ]
        }
        extensions.append(
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": place,
            }
        )
    return {
        "resourceType": "Patient",
        "extension": extensions,
        "identifier": identifiers,
        "name": names,
        "gender": gender,
        "birthDate": birth,
        "address": [{"line": ["12 rue Victor Hugo"], "postalCode": postal, "city": city}],
        "telecom": [{"system": "phone", "value": "0596 00 00 00"}],
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def feed(client: TestClient, token: str, resource: dict[str, Any], **headers: str) -> Response:
    ipp = next(i for i in resource["identifier"] if i["use"] == "usual")
    url = f"/fhir/Patient?identifier={quote(ipp['system'] + '|' + ipp['value'])}"
    return client.put(
        url,
        json=resource,
        headers={"Content-Type": FHIR_JSON, **auth(token), **headers},
    )


def rri_of(resource: dict[str, Any]) -> str:
    return next(i["value"] for i in resource["identifier"] if i["system"] == RRI_SYSTEM)


def identifiers(params: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params["parameter"]
        if p["name"] == "targetIdentifier"
    }


@pytest.fixture
def token(client: TestClient, db: Database) -> str:
    """A system client writing the identities of the three facilities of these tests."""
    return feeder_token(client, db, "system/Patient.cruds", (CHU, CLINIC, GP))


def pix(client: TestClient, token: str, query: str) -> Response:
    return client.get(f"/fhir/Patient/$ihe-pix?{query}", headers=auth(token))


def test_two_facilities_one_person_one_rri_and_pix(client: TestClient, token: str) -> None:
    first = feed(client, token, fr_patient("1"))
    assert first.status_code == 201, first.text
    assert first.headers["content-type"].startswith(FHIR_JSON)
    created = first.json()
    assert created["resourceType"] == "Patient"
    assert first.headers["Location"].endswith(f"/fhir/Patient/{created['id']}")
    assert first.headers["ENRS-Link-Method"] == "NEW"
    rri = rri_of(created)
    rri_ident = next(i for i in created["identifier"] if i["system"] == RRI_SYSTEM)
    assert rri_ident["use"] == "secondary" and rri_ident["type"]["coding"][0]["code"] == "RRI"
    official = next(n for n in created["name"] if n["use"] == "official")
    assert official["given"] == ["Marie-Line"]
    assert official["extension"][0]["valueString"] == "Marie-Line Rose"

    # Day and month swapped, no hyphen, upper case: the matcher links it.
    second = feed(
        client, token, fr_patient("A9", CLINIC, given=("MARIE LINE",), birth="1961-09-04")
    )
    assert second.status_code == 201
    assert second.headers["ENRS-Link-Method"] == "AUTO"
    assert float(second.headers["ENRS-Link-Score"]) > 0
    assert rri_of(second.json()) == rri

    again = feed(client, token, fr_patient("1", city="Le Lamentin"))
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "2"

    found = pix(client, token, f"sourceIdentifier=urn:oid:{CHU}|1")
    assert found.status_code == 200, found.text
    params = found.json()
    assert params["resourceType"] == "Parameters"
    assert identifiers(params) == {(f"urn:oid:{CLINIC}", "A9"), (RRI_SYSTEM, rri)}
    target_ids = [
        p["valueReference"]["reference"] for p in params["parameter"] if p["name"] == "targetId"
    ]
    assert target_ids == [f"Patient/{rri}"]

    by_rri = pix(client, token, f"sourceIdentifier={RRI_SYSTEM}|{rri}").json()
    assert identifiers(by_rri) == {(f"urn:oid:{CHU}", "1"), (f"urn:oid:{CLINIC}", "A9")}
    narrowed = pix(
        client, token, f"sourceIdentifier=urn:oid:{CHU}|1&targetSystem=urn:oid:{CLINIC}"
    ).json()
    assert identifiers(narrowed) == {(f"urn:oid:{CLINIC}", "A9")}


def test_pix_errors_follow_the_profile(client: TestClient, token: str) -> None:
    assert feed(client, token, fr_patient("1")).status_code == 201
    unknown_ipp = pix(client, token, f"sourceIdentifier=urn:oid:{CHU}|nope")
    assert unknown_ipp.status_code == 404
    issue = unknown_ipp.json()["issue"][0]
    assert issue["code"] == "not-found"
    assert issue["diagnostics"] == "sourceIdentifier Patient Identifier not found"
    unknown_domain = pix(client, token, "sourceIdentifier=urn:oid:1.2.3.4|1")
    assert unknown_domain.status_code == 400
    assert unknown_domain.json()["issue"][0]["code"] == "code-invalid"
    unknown_target = pix(
        client, token, f"sourceIdentifier=urn:oid:{CHU}|1&targetSystem=urn:oid:1.2.3.4"
    )
    assert unknown_target.status_code == 403
    assert unknown_target.json()["issue"][0]["diagnostics"] == "targetSystem not found"
    assert pix(client, token, "").status_code == 400
    assert pix(client, token, "sourceIdentifier=nobar").status_code == 400


def test_the_ins_is_given_out_only_from_a_qualified_identity(
    client: TestClient, token: str
) -> None:
    first = feed(client, token, fr_patient("1", ins=INS, status="RECUP"))
    assert first.status_code == 201, first.text
    # The facility's own identity is echoed with its INS...
    assert (f"urn:oid:{NIR}", INS) in {
        (i["system"], i["value"]) for i in first.json()["identifier"]
    }
    rri = rri_of(first.json())
    # ...but a RECUP identity's INS is not shared.
    params = pix(client, token, f"sourceIdentifier={RRI_SYSTEM}|{rri}").json()
    assert identifiers(params) == {(f"urn:oid:{CHU}", "1")}
    searched = client.get(f"/fhir/Patient?identifier=urn:oid:{CHU}|1", headers=auth(token))
    systems = {i["system"] for i in searched.json()["entry"][0]["resource"]["identifier"]}
    assert f"urn:oid:{NIR}" not in systems

    second = feed(client, token, fr_patient("77", GP, family="JOSEPHE", ins=INS, status="QUAL"))
    assert second.status_code == 201
    assert second.headers["ENRS-Link-Method"] == "INS" and rri_of(second.json()) == rri
    params = pix(client, token, f"sourceIdentifier=urn:oid:{CHU}|1").json()
    assert identifiers(params) == {
        (f"urn:oid:{GP}", "77"),
        (f"urn:oid:{NIR}", INS),
        (RRI_SYSTEM, rri),
    }
    by_ins = pix(client, token, f"sourceIdentifier=urn:oid:{NIR}|{INS}").json()
    assert (RRI_SYSTEM, rri) in identifiers(by_ins)
    assert (f"urn:oid:{NIR}", INS) not in identifiers(by_ins)


def test_an_invalid_ins_key_is_refused_and_nothing_is_stored(
    client: TestClient, token: str, db: Database
) -> None:
    bad = INS[:-2] + f"{(int(INS[-2:]) + 1) % 97:02d}"
    response = feed(client, token, fr_patient("78", GP, ins=bad, status="RECUP"))
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "key" in outcome["issue"][0]["diagnostics"]
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(SourceIdentity)) == 0


def test_an_ins_of_other_traits_is_refused_naming_the_trait(
    client: TestClient, token: str, db: Database
) -> None:
    man = feed(client, token, fr_patient("79", GP, ins=INS, status="QUAL", gender="male"))
    assert man.status_code == 422
    assert "the identity's sex is M" in man.json()["issue"][0]["diagnostics"]
    older = feed(client, token, fr_patient("79", GP, ins=INS, status="QUAL", birth="1960-04-09"))
    assert older.status_code == 422
    assert "year ending in 61" in older.json()["issue"][0]["diagnostics"]
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(SourceIdentity)) == 0


def test_feed_refuses_malformed_requests(client: TestClient, token: str) -> None:
    headers = {"Content-Type": FHIR_JSON, **auth(token)}
    url = f"/fhir/Patient?identifier=urn:oid:{CHU}|1"
    malformed = client.put(url, content=b'{"resourceType": "Patient",', headers=headers)
    assert malformed.status_code == 400
    assert malformed.json()["resourceType"] == "OperationOutcome"
    wrong_type = client.put(url, json={"resourceType": "Observation"}, headers=headers)
    assert wrong_type.status_code == 422
    body = fr_patient("1")
    assert client.put("/fhir/Patient", json=body, headers=headers).status_code == 400
    assert client.put("/fhir/Patient?identifier=1", json=body, headers=headers).status_code == 400
    other = f"/fhir/Patient?identifier=urn:oid:{CHU}|2"
    assert client.put(other, json=body, headers=headers).status_code == 400
    xml = {**headers, "Content-Type": "application/fhir+xml"}
    assert client.put(url, content=b"<Patient/>", headers=xml).status_code == 415
    no_birth_name = {**body, "name": [{"use": "usual", "given": ["Rose"]}]}
    assert client.put(url, json=no_birth_name, headers=headers).status_code == 422
    assert client.put(url, json={**body, "gender": "f"}, headers=headers).status_code == 422


def test_feed_prefer_operation_outcome_reports_the_link(client: TestClient, token: str) -> None:
    feed(client, token, fr_patient("1"))
    response = feed(
        client,
        token,
        fr_patient("A9", CLINIC, birth="1961-09-04"),
        Prefer="return=OperationOutcome",
    )
    assert response.status_code == 201
    issue = response.json()["issue"][0]
    assert issue["severity"] == "information" and "AUTO" in issue["diagnostics"]


def test_an_intra_facility_duplicate_is_told_to_the_sender(client: TestClient, token: str) -> None:
    """Two IPPs of the CHU with the same traits are never linked: a task for the cell, and a
    warning to the CHU naming its other IPP (it merges them itself if they are one person)."""
    assert feed(client, token, fr_patient("1")).status_code == 201
    response = feed(client, token, fr_patient("2"), Prefer="return=OperationOutcome")
    assert response.status_code == 201 and response.headers["ENRS-Link-Method"] == "NEW"
    task = response.headers["ENRS-Task"]
    [warning] = [i for i in response.json()["issue"] if i["severity"] == "warning"]
    assert "same person as IPP 1 of this facility" in warning["diagnostics"]
    assert f"task {task.split('id=')[1]}" in warning["diagnostics"]
    assert warning["expression"] == ["Patient.identifier"]
    # The clinic's identity of the same person: linked, no such warning.
    other = feed(client, token, fr_patient("C1", CLINIC), Prefer="return=OperationOutcome")
    assert other.status_code == 201
    assert [i for i in other.json()["issue"] if i["severity"] == "warning"] == []


def test_permissions(client: TestClient, factory: Factory, db: Database) -> None:
    body = fr_patient("1")
    url = f"/fhir/Patient?identifier=urn:oid:{CHU}|1"
    anonymous = client.put(url, json=body, headers={"Content-Type": FHIR_JSON})
    assert anonymous.status_code == 401
    assert anonymous.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient?family=x").status_code == 401
    reader = factory.token("system/Patient.rs")
    assert feed(client, reader, body).status_code == 403
    updater = factory.token("system/Patient.u")
    forbidden = feed(client, updater, body)
    assert forbidden.status_code == 403 and "Patient.c" in forbidden.text
    feeder = feeder_token(client, db, "system/Patient.cu", [CHU])
    assert feed(client, feeder, body).status_code == 201
    assert client.get("/fhir/Patient?family=x", headers=auth(feeder)).status_code == 403
    auditor = factory.token("system/AuditEvent.rs")
    assert pix(client, auditor, f"sourceIdentifier=urn:oid:{CHU}|1").status_code == 403
    assert client.get("/fhir/Patient?family=joseph", headers=auth(reader)).status_code == 200


def test_calls_are_audited_with_the_patient(client: TestClient, token: str, db: Database) -> None:
    rri = rri_of(feed(client, token, fr_patient("1")).json())
    pix(client, token, f"sourceIdentifier=urn:oid:{CHU}|1")
    with db.transaction() as session:
        records = list(
            session.scalars(select(AuditRecord).where(AuditRecord.patient_ref == f"Patient/{rri}"))
        )
    kinds = {(r.interaction, r.action) for r in records}
    assert ("create", "C") in kinds and ("operation", "E") in kinds


@pytest.fixture
def registry(client: TestClient, token: str) -> dict[str, str]:
    """Three people, four identities: the IPP → RRI of each."""
    people = [
        fr_patient("10", family="Lefèvre", given=("Hélène",), birth="1980-02-03", postal="97200"),
        fr_patient(
            "11",
            family="LEFEVRE",
            given=("Paul",),
            birth="1975-06-07",
            gender="male",
            postal="97232",
            insee="97213",
            city="Le Lamentin",
        ),
        fr_patient(
            "12",
            family="MARTIN",
            usual="LEFÈVRE",
            given=("Anne", "Marie"),
            birth="1990-12-25",
            postal="75012",
            insee="75112",
            city="Paris",
        ),
        fr_patient(
            "B10", CLINIC, family="LEFEVRE", given=("HELENE",), birth="1980-02-03", postal="97200"
        ),
    ]
    rris = {}
    for person in people:
        response = feed(client, token, person)
        assert response.status_code == 201, response.text
        rris[person["identifier"][0]["value"]] = rri_of(response.json())
    assert rris["10"] == rris["B10"]
    return rris


def search(client: TestClient, token: str, query: str) -> dict[str, Any]:
    response = client.get(f"/fhir/Patient?{query}", headers=auth(token))
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def ipps(bundle: dict[str, Any]) -> set[str]:
    return {
        next(
            i["value"]
            for i in e["resource"]["identifier"]
            if i["type"]["coding"][0]["code"] == "PI"
        )
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    }


def test_pdqm_search(client: TestClient, token: str, registry: dict[str, str]) -> None:
    assert ipps(search(client, token, "family=lefevre")) == {"10", "11", "12", "B10"}
    assert ipps(search(client, token, "family=LEFÈ")) == {"10", "11", "12", "B10"}
    assert ipps(search(client, token, "family:exact=Lefèvre")) == {"10"}
    assert ipps(search(client, token, "family:exact=LEFÈVRE")) == {"12"}
    assert ipps(search(client, token, "family:contains=ART")) == {"12"}
    assert ipps(search(client, token, "given=helene")) == {"10", "B10"}
    assert ipps(search(client, token, "given=marie")) == {"12"}
    assert ipps(search(client, token, "given:exact=Anne")) == {"12"}
    assert ipps(search(client, token, "birthdate=1980")) == {"10", "B10"}
    assert ipps(search(client, token, "birthdate=ge1980-01-01")) == {"10", "12", "B10"}
    assert ipps(search(client, token, "birthdate=lt1976")) == {"11"}
    assert ipps(search(client, token, "birthdate=1975-06")) == {"11"}
    assert ipps(search(client, token, "gender=male")) == {"11"}
    assert ipps(search(client, token, f"identifier=urn:oid:{CHU}|11")) == {"11"}
    domain = search(client, token, f"family=lefevre&identifier=urn:oid:{CLINIC}|")
    assert ipps(domain) == {"B10"}
    assert domain["entry"][0]["resource"]["identifier"][0]["system"] == f"urn:oid:{CLINIC}"
    assert len(domain["entry"][0]["resource"]["identifier"]) == 1
    unknown = client.get("/fhir/Patient?identifier=urn:oid:1.2.3.4|", headers=auth(token))
    assert unknown.status_code == 404 and "targetSystem" in unknown.text
    rri = registry["10"]
    assert ipps(search(client, token, f"identifier={RRI_SYSTEM}|{rri}")) == {"10", "B10"}
    assert ipps(search(client, token, "address-postalcode=972")) == {"10", "11", "B10"}
    assert ipps(search(client, token, "address-city=paris")) == {"12"}
    assert ipps(search(client, token, "family=lefevre&given=paul")) == {"11"}
    assert ipps(search(client, token, "family=nobody")) == set()
    # LIKE's wildcards are taken literally; a second first name, exactly
    assert ipps(search(client, token, "family=le_")) == set()
    assert ipps(search(client, token, "family:contains=%")) == set()
    assert ipps(search(client, token, "given:exact=Marie")) == {"12"}
    assert ipps(search(client, token, "given:exact=Mar")) == set()
    assert ipps(search(client, token, "given=ma,pa&gender=male")) == {"11"}
    assert ipps(search(client, token, "identifier=11")) == {"11"}
    assert ipps(search(client, token, "address-city:exact=Paris")) == {"12"}
    assert ipps(search(client, token, "address-city:contains=LAMENT")) == {"11"}
    assert ipps(search(client, token, "address-postalcode=97_")) == set()
    bad = client.get("/fhir/Patient?family:below=x", headers=auth(token))
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_pdqm_paging(client: TestClient, token: str, registry: dict[str, str]) -> None:
    first = search(client, token, "family=lefevre&_count=3")
    assert first["total"] == 4 and len(first["entry"]) == 3
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(following.removeprefix("http://testserver"), headers=auth(token))
    assert second.status_code == 200
    assert len(second.json()["entry"]) == 1
    everyone = ipps(first) | ipps(second.json())
    assert everyone == {"10", "11", "12", "B10"}


def test_read_source_identity_and_regional_patient(
    client: TestClient, token: str, registry: dict[str, str]
) -> None:
    bundle = search(client, token, f"identifier=urn:oid:{CHU}|10")
    source_id = bundle["entry"][0]["resource"]["id"]
    source = client.get(f"/fhir/Patient/{source_id}", headers=auth(token))
    assert source.status_code == 200
    assert source.json()["link"] == [
        {"other": {"reference": f"Patient/{registry['10']}"}, "type": "refer"}
    ]
    regional = client.get(f"/fhir/Patient/{registry['10']}", headers=auth(token)).json()
    assert regional["id"] == registry["10"]
    assert {(i["system"], i["value"]) for i in regional["identifier"]} == {
        (f"urn:oid:{CHU}", "10"),
        (f"urn:oid:{CLINIC}", "B10"),
        (RRI_SYSTEM, registry["10"]),
    }
    assert len([link for link in regional["link"] if link["type"] == "seealso"]) == 2
    missing = client.get("/fhir/Patient/999999", headers=auth(token))
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def match(client: TestClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        "/fhir/Patient/$match",
        json=body,
        headers={"Content-Type": FHIR_JSON, **auth(token)},
    )
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def grade(entry: dict[str, Any]) -> str:
    ext = entry["search"]["extension"][0]
    assert ext["url"] == "http://hl7.org/fhir/StructureDefinition/match-grade"
    return str(ext["valueCode"])


def test_pdqm_match_ranks_the_right_person_first(
    client: TestClient, token: str, registry: dict[str, str]
) -> None:
    query = fr_patient("x", family="LEFEBVRE", given=("Helene",), birth="1980-03-02")
    query.pop("identifier")
    bundle = match(
        client,
        token,
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": query},
                {"name": "count", "valueInteger": 5},
            ],
        },
    )
    assert bundle["type"] == "searchset" and bundle["total"] >= 1
    best = bundle["entry"][0]
    assert rri_of(best["resource"]) == registry["10"]
    assert 0.5 < best["search"]["score"] <= 1
    assert grade(best) in ("certain", "probable")
    scores = [e["search"]["score"] for e in bundle["entry"]]
    assert scores == sorted(scores, reverse=True)
    assert len({rri_of(e["resource"]) for e in bundle["entry"]}) == len(bundle["entry"])

    exact = fr_patient("x", family="Lefèvre", given=("Hélène",), birth="1980-02-03")
    exact.pop("identifier")
    certain = match(
        client,
        token,
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": exact},
                {"name": "onlyCertainMatches", "valueBoolean": True},
            ],
        },
    )
    assert certain["total"] == 1 and grade(certain["entry"][0]) == "certain"
    bare = match(client, token, exact)  # a bare Patient body is a match without options
    assert rri_of(bare["entry"][0]["resource"]) == registry["10"]

    stranger = fr_patient("x", family="NGUYEN", given=("Bao",), birth="2001-01-01", insee=None)
    stranger.pop("identifier")
    assert match(client, token, stranger)["total"] == 0


def test_pdqm_match_refuses_bad_parameters(client: TestClient, token: str) -> None:
    headers = {"Content-Type": FHIR_JSON, **auth(token)}
    url = "/fhir/Patient/$match"
    empty = {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 2}]}
    assert client.post(url, json=empty, headers=headers).status_code == 400
    wrong = {"resourceType": "Observation"}
    assert client.post(url, json=wrong, headers=headers).status_code == 422


def test_metadata_lists_patient(client: TestClient) -> None:
    cap = client.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in cap["rest"][0]["resource"]}
    patient = resources["Patient"]
    assert {i["code"] for i in patient["interaction"]} == {"update", "read", "search-type"}
    params = {p["name"] for p in patient["searchParam"]}
    assert {"family", "given", "birthdate", "gender", "identifier", "_id"} <= params
    operations = {o["name"]: o["definition"] for o in patient["operation"]}
    assert operations == {
        "ihe-pix": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
        "match": "http://hl7.org/fhir/OperationDefinition/Patient-match",
    }


def test_update_by_id_and_identity_attributes(client: TestClient, token: str) -> None:
    created = feed(client, token, fr_patient("1")).json()
    url, headers = f"/fhir/Patient/{created['id']}", {"Content-Type": FHIR_JSON, **auth(token)}
    body = fr_patient("1", city="Schoelcher")
    # Attributes read leniently: in a 'comment' sub-extension or as the identityStatus itself.
    body["extension"][0]["extension"].append({"url": "comment", "valueCoding": {"code": "HOMA"}})
    assert client.put(url, json=body, headers=headers).status_code == 400  # no Patient.id
    updated = client.put(url, json={**body, "id": created["id"]}, headers=headers)
    assert updated.status_code == 200, updated.text
    stored = updated.json()
    assert stored["address"][0]["city"] == "Schoelcher" and stored["meta"]["versionId"] == "2"
    reliability = stored["extension"][0]["extension"]
    assert {
        "url": "comment",
        "valueCoding": {"system": STATUS_SYSTEM, "code": "HOMA"},
    } in reliability
    assert client.put("/fhir/Patient/424242", json=body, headers=headers).status_code == 404
    regional = client.put(f"/fhir/Patient/{rri_of(created)}", json=body, headers=headers)
    assert regional.status_code == 405

    doubtful = fr_patient("2", CLINIC)
    doubtful["extension"][0]["extension"] = [
        {"url": "identityStatus", "valueCoding": {"code": "DOUT"}}
    ]
    response = feed(client, token, doubtful)
    assert response.status_code == 201, response.text
    codes = {e["valueCoding"]["code"] for e in response.json()["extension"][0]["extension"]}
    assert codes == {"PROV", "DOUT"}
    assert response.headers["ENRS-Link-Method"] == "NEW"  # a douteuse identity is never linked
    by_id = search(client, token, f"_id={created['id']}")
    assert ipps(by_id) == {"1"}


def test_a_registered_domain_without_patients_is_known(client: TestClient, token: str) -> None:
    """GP is a registered domain (``token`` registered it) that nobody fed yet: a search in
    it finds nothing, a cross-reference says "not found" — not "unknown domain" as for a
    domain nobody registered."""
    headers = auth(token)
    empty = client.get("/fhir/Patient", params={"identifier": f"urn:oid:{GP}|"}, headers=headers)
    assert empty.status_code == 200 and empty.json()["total"] == 0
    unregistered = client.get(
        "/fhir/Patient", params={"identifier": "urn:oid:1.2.250.1.71.4.2.2.77|"}, headers=headers
    )
    assert unregistered.status_code == 404
    assert "targetSystem not found" in unregistered.text
    nobody = pix(client, token, f"sourceIdentifier=urn:oid:{GP}|1")
    assert nobody.status_code == 404 and "Patient Identifier not found" in nobody.text


def test_match_scores_are_calibrated_probabilities(
    client: TestClient, token: str, registry: dict[str, str]
) -> None:
    """A certain match and a probable one (another birth month) no longer both score 1.0: the
    score is the model's calibrated probability, in the order of the grades."""
    scored = {}
    for birth in ("1980-02-03", "1980-11-03"):  # registry "10" is born 1980-02-03
        query = fr_patient("x", family="Lefèvre", given=("Hélène",), birth=birth)
        query.pop("identifier")
        best = match(client, token, query)["entry"][0]
        assert rri_of(best["resource"]) == registry["10"]
        scored[birth] = (grade(best), best["search"]["score"])
    (certain_grade, certain), (other_grade, other) = scored.values()
    assert certain_grade == "certain" and other_grade in ("probable", "possible")
    assert 0.9 < certain < 1.0 and other < certain


def _merge_body(system: str, surviving: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "active": False,
        "link": [
            {"type": "replaced-by", "other": {"identifier": {"system": system, "value": surviving}}}
        ],
    }


def _put(client: TestClient, token: str, authority: str, ipp: str, body: Any) -> Response:
    url = f"/fhir/Patient?identifier={quote(f'urn:oid:{authority}|{ipp}')}"
    return client.put(url, json=body, headers={"Content-Type": FHIR_JSON, **auth(token)})


def test_a_facility_merges_its_own_identities_over_iti_104(
    client: TestClient, token: str, db: Database
) -> None:
    """ITI-104 merge (PMIR's replaced-by): the facility's duplicate IPP disappears into its
    other one, within its own domain only, as with ADT^A40."""
    kept = feed(client, token, fr_patient("1"))
    assert kept.status_code == 201
    dup = feed(client, token, fr_patient("2", family="MARTIN", given=("Paul",), gender="male"))
    assert dup.status_code == 201
    dup_id = dup.json()["id"]
    merged = _put(client, token, CHU, "2", _merge_body(f"urn:oid:{CHU}", "1"))
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert body["active"] is False
    assert body["link"] == [
        {"other": {"reference": f"Patient/{rri_of(kept.json())}"}, "type": "replaced-by"}
    ]
    read = client.get(f"/fhir/Patient/{dup_id}", headers=auth(token)).json()
    assert read["active"] is False
    found = client.get("/fhir/Patient", params={"family": "MARTIN"}, headers=auth(token)).json()
    assert found["total"] == 0  # a merged identity is never found
    again = _put(client, token, CHU, "2", _merge_body(f"urn:oid:{CHU}", "1"))
    assert again.status_code == 200  # repeated: a no-op
    other_domain = _put(client, token, CHU, "1", _merge_body(f"urn:oid:{CLINIC}", "9"))
    assert other_domain.status_code == 422 and "own domain" in other_domain.text
    unknown = _put(client, token, CHU, "1", _merge_body(f"urn:oid:{CHU}", "nobody"))
    assert unknown.status_code == 404
    half = _put(client, token, CHU, "1", {**_merge_body(f"urn:oid:{CHU}", "3"), "active": True})
    assert half.status_code == 422
    clinic_only = feeder_token(client, db, "system/Patient.cruds", [CLINIC])
    refused = _put(client, clinic_only, CHU, "1", _merge_body(f"urn:oid:{CHU}", "2"))
    assert refused.status_code == 403


def test_other_identifiers_kept_when_their_domain_is_registered(
    client: TestClient, token: str
) -> None:
    """An identifier of a registered domain is kept with the identity and cross-referenced;
    one of an unregistered domain is ignored, and the OperationOutcome says why."""
    body = fr_patient("1")
    body["identifier"] += [
        {"system": "urn:oid:1.2.250.1.71.4.2.2.77", "value": "X9"},
        {
            "system": f"urn:oid:{GP}",
            "value": "G42",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
        },
    ]
    answer = feed(client, token, body, Prefer="return=OperationOutcome")
    assert answer.status_code == 201, answer.text
    issues = answer.json()["issue"]
    assert issues[0]["severity"] == "information"
    warnings = [i for i in issues if i["severity"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["expression"] == ["Patient.identifier"]
    assert "'X9' (untyped, 1.2.250.1.71.4.2.2.77) ignored" in warnings[0]["diagnostics"]
    assert "not registered" in warnings[0]["diagnostics"]
    # Kept: answered with the identity, and a PIX query by it finds the patient.
    read = client.get(answer.headers["Location"], headers=auth(token)).json()
    assert (f"urn:oid:{GP}", "G42") in {(i["system"], i["value"]) for i in read["identifier"]}
    found = pix(client, token, f"sourceIdentifier=urn:oid:{GP}|G42")
    assert found.status_code == 200, found.text
    assert (f"urn:oid:{CHU}", "1") in identifiers(found.json())
    by_ipp = pix(client, token, f"sourceIdentifier=urn:oid:{CHU}|1")
    assert (f"urn:oid:{GP}", "G42") in identifiers(by_ipp.json())
    # A new version without it: no longer kept.
    assert feed(client, token, fr_patient("1")).status_code == 200
    assert pix(client, token, f"sourceIdentifier=urn:oid:{GP}|G42").status_code == 404


def test_the_whole_demographic_record_comes_back(client: TestClient, token: str) -> None:
    """What an FR Core Patient says beyond the matching traits is kept and given back as fed:
    prefixes, every name, address and telecom, marital status, multiple birth, contacts,
    language, general practitioner, managing organisation."""
    body = fr_patient("1")
    body["name"][0]["prefix"] = ["MME"]
    body["name"].append({"use": "usual", "family": "ANDRÉ", "given": ["Marie-Line"]})
    body["telecom"] += [
        {"system": "phone", "value": "0696 11 22 33", "use": "mobile"},
        {"system": "email", "value": "mljoseph@example.org"},
    ]
    body["address"].append(
        {"use": "work", "line": ["CHU Pierre Zobda-Quitman"], "city": "Fort-de-France"}
    )
    extra = {
        "maritalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}
            ]
        },
        "multipleBirthInteger": 2,
        "contact": [
            {
                "relationship": [
                    {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}
                        ]
                    }
                ],
                "name": {"family": "JOSEPH", "given": ["Paul"]},
                "telecom": [{"system": "phone", "value": "0596 99 88 77"}],
            }
        ],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}}],
        "generalPractitioner": [
            {
                "display": "Dr Lise MARIE",
                "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000001"},
            }
        ],
        "managingOrganization": {"display": "CHU de Martinique"},
    }
    body |= extra
    made = feed(client, token, body)
    assert made.status_code == 201, made.text
    read = client.get(made.headers["Location"], headers=auth(token)).json()
    for name in ("name", "telecom", "address", *extra):
        assert read[name] == body[name], name
    found = client.get("/fhir/Patient", params={"family": "JOSEPH"}, headers=auth(token)).json()
    assert found["entry"][0]["resource"]["contact"] == extra["contact"]
    # A new version without them: the record is what was fed last.
    assert feed(client, token, fr_patient("1")).status_code == 200
    again = client.get(made.headers["Location"], headers=auth(token)).json()
    assert "maritalStatus" not in again and len(again["telecom"]) == 1
    # A malformed element: refused, nothing changed.
    bad = feed(client, token, {**fr_patient("1"), "maritalStatus": "M"})
    assert bad.status_code == 422 and "Patient.maritalStatus" in bad.text


def test_match_tells_a_twin_by_the_order_of_birth(client: TestClient, token: str) -> None:
    """The second of twins asks ``$match`` about herself: her sister, fed as the first of the
    multiple birth with a first name that starts hers, is no ``certain`` match; the sister
    asking about herself is."""
    sister = fr_patient("70", family="ROSIER", given=("Marie",), birth="2015-08-21")
    sister["multipleBirthInteger"] = 1
    assert feed(client, token, sister).status_code == 201
    grades = {}
    for order in (1, 2):
        query = fr_patient("x", family="ROSIER", given=("Marie Rose",), birth="2015-08-21")
        query.pop("identifier")
        query["multipleBirthInteger"] = order
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": query}],
        }
        grades[order] = grade(match(client, token, body)["entry"][0])
    assert grades == {1: "certain", 2: "probable"}
