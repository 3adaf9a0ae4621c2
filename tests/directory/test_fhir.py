"""The directory over FHIR (IHE mCSD ITI-90): a small Annuaire Santé extraction and FINESS
file imported, then searched and read through HTTP as a directory consumer would."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import Factory
from tests.directory.test_import import (
    MAILBOX_COLUMNS,
    SKILL_COLUMNS,
    finess,
    line,
    person,
    position,
    ps_file,
    rpps,
    run,
    structure,
    write,
)

from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.db import Database

SCOPE = "system/Practitioner.rs system/PractitionerRole.rs system/Organization.rs"
CHU = finess(1)
NURSE = {
    "Code profession": "60",
    "Libellé profession": "Infirmier",
    "Code savoir-faire": "",
    "Libellé savoir-faire": "",
    "Code type savoir-faire": "",
}


@pytest.fixture
def token(factory: Factory, db: Database, tmp_path: Path) -> str:
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, **{"Nom d'exercice": "HÉLÈNE", "Prénom d'exercice": "Anne"}),
        line(1, site=CHU, **{"Code mode exercice": "S", "Libellé mode exercice": "Salarié"}),
        line(2, **{"Nom d'exercice": "DUPONT", **NURSE}),
        line(3, **{"Nom d'exercice": "DURAND"}, postal="97110", dept="971",
             **{"Libellé commune (coord. structure)": "Pointe-à-Pitre"}),
    )  # fmt: skip
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    structures.write_bytes(
        (
            "finess;etalab;95;2024-01-18\n"
            + structure(CHU)
            + position(CHU, 708963.33, 1617190.19, "UTM_N20")
        ).encode("cp1252")
    )
    assert run(db, people).error is None and run(db, structures).error is None
    return factory.token(SCOPE)


def get(client: TestClient, token: str, url: str, **params: str) -> dict[str, Any]:
    response = client.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def test_practitioners_by_name_identifier_and_profession(client: TestClient, token: str) -> None:
    helene, dupont, durand = (f"Practitioner/8{rpps(n)}" for n in (1, 2, 3))
    assert ids(get(client, token, "/fhir/Practitioner", **{"name:contains": "lene"})) == [helene]
    # Two letters: no trigram to look up, the names are scanned.
    assert ids(get(client, token, "/fhir/Practitioner", **{"name:contains": "LÈ"})) == [helene]
    assert ids(get(client, token, "/fhir/Practitioner", **{"name:contains": "upon"})) == [dupont]
    assert ids(get(client, token, "/fhir/Practitioner", family="helene")) == [helene]
    assert ids(get(client, token, "/fhir/Practitioner", **{"family:exact": "helene"})) == []
    assert ids(get(client, token, "/fhir/Practitioner", given="anne")) == [helene]
    by_rpps = get(
        client, token, "/fhir/Practitioner", identifier=f"https://rpps.esante.gouv.fr|{rpps(2)}"
    )
    assert ids(by_rpps) == [dupont]
    by_national = get(client, token, "/fhir/Practitioner", identifier=f"{RPPS_SYSTEM}|8{rpps(3)}")
    assert ids(by_national) == [durand]
    doctors = get(client, token, "/fhir/Practitioner", **{"qualification-code": "10"})
    assert ids(doctors) == [helene, durand]  # as registered
    by_name = {"qualification-code": "10", "_sort": "family"}
    assert ids(get(client, token, "/fhir/Practitioner", **by_name)) == [durand, helene]
    assert "total" not in doctors  # counted only when asked
    counted = get(
        client, token, "/fhir/Practitioner", **{"qualification-code": "10"}, _total="accurate"
    )
    assert counted["total"] == 2
    nurse = get(client, token, f"/fhir/{dupont}")
    assert nurse["qualification"][0]["code"]["coding"][0]["code"] == "60"
    assert nurse["name"] == [
        {"use": "official", "family": "DUPONT", "given": ["Marie"], "prefix": ["Docteur"]}
    ]
    assert {i["system"] for i in nurse["identifier"]} == {
        RPPS_SYSTEM,
        "https://rpps.esante.gouv.fr",
    }


def test_roles_by_profession_and_commune_with_their_practitioner_and_site(
    client: TestClient, token: str
) -> None:
    found = get(
        client,
        token,
        "/fhir/PractitionerRole",
        role="10",
        **{"address-city": "fort-de-france"},
        _include="PractitionerRole:organization",
        _total="accurate",
    )
    assert found["total"] == 2
    roles = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "match"]
    assert {r["practitioner"]["reference"] for r in roles} == {f"Practitioner/8{rpps(1)}"}
    salaried = next(r for r in roles if "organization" in r and "reference" in r["organization"])
    assert salaried["organization"]["reference"] == f"Organization/{CHU}"
    assert ids(found, "include") == [f"Organization/{CHU}"]
    with_people = get(
        client, token, "/fhir/PractitionerRole", **{"address-postalcode": "97110"},
        _include="PractitionerRole:practitioner",
    )  # fmt: skip
    assert ids(with_people, "include") == [f"Practitioner/8{rpps(3)}"]
    assert with_people["entry"][0]["resource"]["practitioner"]["display"] == "Marie DURAND"
    by_person = get(
        client, token, "/fhir/PractitionerRole", practitioner=f"Practitioner/8{rpps(1)}"
    )
    assert len(ids(by_person)) == 2


def test_organizations_with_position_and_their_roles(client: TestClient, token: str) -> None:
    found = get(
        client, token, "/fhir/Organization", **{"name:contains": "martiniq"},
        _revinclude="PractitionerRole:organization",
    )  # fmt: skip
    assert ids(found) == [f"Organization/{CHU}"]
    assert len(ids(found, "include")) == 1
    chu = get(client, token, f"/fhir/Organization/{CHU}")
    assert chu["identifier"][0] == {
        "use": "official",
        "type": {
            "coding": [
                {
                    "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                    "code": "FINEG",
                }
            ]
        },
        "system": FINESS_SYSTEM,
        "value": CHU,
    }
    [address] = chu["address"]
    assert (address["postalCode"], address["city"]) == ("97200", "FORT DE FRANCE")
    point = {e["url"]: e["valueDecimal"] for e in address["extension"][0]["extension"]}
    assert abs(point["latitude"] - 14.62) < 1e-5 and abs(point["longitude"] + 61.06) < 1e-5
    assert ids(get(client, token, "/fhir/Organization", **{"address-city": "fort de france"})) == [
        f"Organization/{CHU}"
    ]
    assert ids(get(client, token, "/fhir/Organization", type="101")) == [f"Organization/{CHU}"]


def test_errors_and_permissions(client: TestClient, token: str, factory: Factory) -> None:
    missing = client.get(
        "/fhir/Practitioner/899999999999", headers={"Authorization": f"Bearer {token}"}
    )
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    bad = client.get(
        "/fhir/Practitioner",
        params={"_sort": "birthdate"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad.status_code == 400
    assert client.get("/fhir/Organization").status_code == 401
    other = factory.token("system/Patient.rs")
    forbidden = client.get("/fhir/Organization", headers={"Authorization": f"Bearer {other}"})
    assert forbidden.status_code == 403
    capabilities = client.get("/fhir/metadata").json()
    kinds = {r["type"] for r in capabilities["rest"][0]["resource"]}
    assert {"Practitioner", "PractitionerRole", "Organization"} <= kinds


def test_history_gives_what_changed_since(
    client: TestClient, token: str, db: Database, tmp_path: Path
) -> None:
    everything = get(client, token, "/fhir/Practitioner/_history")
    assert everything["type"] == "history" and len(everything["entry"]) == 3
    assert everything["entry"][0]["request"]["method"] == "PUT"
    since = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.01)
    renamed = write(
        tmp_path / "next.txt",
        line(1, **{"Nom d'exercice": "HÉLÈNE", "Prénom d'exercice": "Anne"}),
        line(1, site=CHU, **{"Code mode exercice": "S", "Libellé mode exercice": "Salarié"}),
        line(2, **{"Nom d'exercice": "DUPONT-MARTIN", **NURSE}),
    )
    assert run(db, renamed, removal_limit=None).error is None  # DURAND gone
    changed = get(client, token, "/fhir/Practitioner/_history", _since=since)
    people = {e["resource"]["id"]: e["resource"] for e in changed["entry"]}
    assert set(people) == {f"8{rpps(2)}", f"8{rpps(3)}"}
    assert people[f"8{rpps(2)}"]["name"][0]["family"] == "DUPONT-MARTIN"
    assert people[f"8{rpps(3)}"]["active"] is False
    paged = get(client, token, "/fhir/Practitioner/_history", _count="1")
    assert len(paged["entry"]) == 1 and [k["relation"] for k in paged["link"]] == ["self", "next"]
    bad = client.get(
        "/fhir/Practitioner/_history",
        params={"_since": "yesterday"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad.status_code == 400


def test_mailboxes_and_savoir_faire(
    client: TestClient, token: str, db: Database, tmp_path: Path, factory: Factory
) -> None:
    skills = ps_file(
        tmp_path / "PS_LibreAcces_SavoirFaire_202612010000.txt",
        SKILL_COLUMNS,
        person(1) | {"Code type savoir-faire": "S", "Code savoir-faire": "SM26",
                     "Libellé savoir-faire": "Qualifié en Médecine Générale"},
    )  # fmt: skip
    boxes = ps_file(
        tmp_path / "Extraction_Correspondance_MSSante_202612010000.txt",
        MAILBOX_COLUMNS,
        person(1) | {"Type de BAL": "PER", "Adresse BAL": "anne.helene@medecin.mssante.fr"},
        {"Type de BAL": "ORG", "Adresse BAL": "secretariat@chu-martinique.mssante.fr",
         "Identification Structure": CHU},
    )  # fmt: skip
    assert run(db, skills).error is None and run(db, boxes).error is None
    helene = f"Practitioner/8{rpps(1)}"
    by_box = get(client, token, "/fhir/Practitioner", **{"mailbox-mss": "Anne.Helene@"})
    assert ids(by_box) == [helene]
    read = get(client, token, f"/fhir/{helene}")
    assert {"system": "email", "value": "anne.helene@medecin.mssante.fr", "use": "work"} in read[
        "telecom"
    ]
    skill = read["qualification"][-1]["code"]["coding"][0]
    assert skill["code"] == "SM26" and skill["system"].endswith("TRE-R38-SpecialiteOrdinale")
    desk = {"mailbox-mss:exact": "secretariat@chu-martinique.mssante.fr"}
    org = get(client, token, "/fhir/Organization", **desk)
    assert ids(org) == [f"Organization/{CHU}"]
    assert org["entry"][0]["resource"]["telecom"][-1]["value"].startswith("secretariat@")
    # The mailboxes as mCSD Endpoints: by address, by owner, by organization, with it.
    reader = factory.token(f"{SCOPE} system/Endpoint.rs")
    mine = get(client, reader, "/fhir/Endpoint",
               identifier="mailto:Anne.Helene@medecin.mssante.fr")  # fmt: skip
    box = mine["entry"][0]["resource"]
    assert box["address"] == "mailto:anne.helene@medecin.mssante.fr"
    assert box["connectionType"]["code"] == "direct-project" and box["status"] == "active"
    assert {"system": RPPS_SYSTEM, "value": f"8{rpps(1)}"} in box["identifier"]
    assert "managingOrganization" not in box  # her practice is not a FINESS structure
    by_owner = get(client, reader, "/fhir/Endpoint", identifier=f"{RPPS_SYSTEM}|8{rpps(1)}")
    assert ids(by_owner) == [f"Endpoint/{box['id']}"]
    desks = get(client, reader, "/fhir/Endpoint", organization=CHU,
                _include="Endpoint:organization", **{"mailbox-type": "ORG"})  # fmt: skip
    assert ids(desks, "include") == [f"Organization/{CHU}"] and len(ids(desks)) == 1
    assert desks["entry"][0]["resource"]["managingOrganization"]["reference"] == (
        f"Organization/{CHU}"
    )
    assert get(client, reader, f"/fhir/Endpoint/{box['id']}")["id"] == box["id"]
    assert len(get(client, reader, "/fhir/Endpoint/_history", _since="2020-01-01")["entry"]) == 2
    refused = client.get("/fhir/Endpoint", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403  # the Endpoint scope is needed


def test_a_common_substring_paged_with_other_conditions(
    client: TestClient, db: Database, factory: Factory, tmp_path: Path
) -> None:
    """Names sharing ``ART`` (one in two) over several pages, with a profession: each page in
    registration order, the matches of the name *and* the profession only, none twice, none
    missed (on SQLite the FTS table is read first, in its own order)."""
    names = {n: f"{'MARTIN' if n % 2 else 'DUBOIS'}{n}" for n in range(10, 40)}
    lines = [
        line(n, **{"Nom d'exercice": name}, **(NURSE if n % 3 == 0 else {}))
        for n, name in names.items()
    ]
    assert run(db, write(tmp_path / "PS_LibreAcces_Personne_activite_1.txt", *lines)).error is None
    wanted = [f"Practitioner/8{rpps(n)}" for n in range(10, 40) if n % 2 and n % 3]
    token = factory.token(SCOPE)
    for inside in ("art", "rt"):  # two letters: no trigram, the names are scanned
        seen: list[str] = []
        url: str | None = (
            f"/fhir/Practitioner?name:contains={inside}&qualification-code=10&_count=3"
        )
        for _ in range(len(wanted)):  # a page holds one at least
            if url is None:
                break
            answer = client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
            seen += ids(answer.json())
            links = answer.json()["link"]
            url = next((link["url"] for link in links if link["relation"] == "next"), None)
        assert seen == wanted, inside
