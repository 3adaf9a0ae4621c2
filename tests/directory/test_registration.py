"""Regional registration in the directory (issue 12): professionals and structures the
national files do not cover, registered through the FHIR API and the portal with a local
identifier, an RPPS number attached later, what is refused, and a national import that leaves
them be."""

from __future__ import annotations

import html
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.conftest import Factory
from tests.directory.test_import import finess, line, rpps, run, structure, write
from tests.support.live_server import LiveServer, enrs_command, live_server
from tests.support.portal import csrf_of, log_in

from enrs.directory.fhir import PROFESSION, RPPS_NUMBER_SYSTEM, SIRET_SYSTEM
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM, RegionalSystems, luhn_key
from enrs.directory.models import Activity, Professional, Structure
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.settings import Settings

WRITER = "system/Practitioner.cruds system/PractitionerRole.cruds system/Organization.cruds"
READER = "system/Practitioner.rs system/PractitionerRole.rs system/Organization.rs"
FHIR_JSON = "application/fhir+json"
CHU = finess(1)


@pytest.fixture
def systems(settings: Settings) -> RegionalSystems:
    return RegionalSystems.of(settings.oid_root)


@pytest.fixture
def national(db: Database, tmp_path: Path) -> Path:
    """A national extraction (two doctors, one at the CHU) and the FINESS file, imported."""
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, **{"Nom d'exercice": "HÉLÈNE"}),
        line(1, site=CHU),
        line(2, **{"Nom d'exercice": "DUPONT"}),
    )
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    structures.write_bytes(("finess;etalab;95;2024-01-18\n" + structure(CHU)).encode("cp1252"))
    assert run(db, people).error is None and run(db, structures).error is None
    return people


@pytest.fixture
def writer(factory: Factory) -> dict[str, str]:
    return {"Authorization": f"Bearer {factory.token(WRITER)}", "Content-Type": FHIR_JSON}


def send(
    client: TestClient, method: str, url: str, headers: dict[str, str], body: Any
) -> tuple[int, dict[str, Any]]:
    response = client.request(method, url, headers=headers, content=json.dumps(body))
    answer: dict[str, Any] = response.json()
    return response.status_code, answer


def practitioner(family: str = "MARTIN", given: str = "Lucie", **more: Any) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": family, "given": [given]}]} | more


def organization(name: str = "Service social du Lamentin", **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "name": name,
        "identifier": [{"system": SIRET_SYSTEM, "value": "12345678900017"}],
        "address": [{"line": ["3 rue Schœlcher"], "postalCode": "97232", "city": "Le Lamentin"}],
        "telecom": [{"system": "phone", "value": "0596 00 00 00"}],
    } | more


def role(who: str, where: str, system: str, code: str, display: str = "") -> dict[str, Any]:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": f"Practitioner/{who}"},
        "organization": {"reference": f"Organization/{where}"},
        "code": [{"coding": [coding]}],
    }


def get(client: TestClient, headers: dict[str, str], url: str, **params: str) -> Any:
    response = client.get(url, params=params, headers={"Authorization": headers["Authorization"]})
    return response.json() if response.status_code == 200 else response.status_code


def count(db: Database, model: Any) -> int:
    with db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def identifiers(resource: dict[str, Any]) -> dict[str, tuple[str | None, str]]:
    return {i["system"]: (i.get("use"), i["value"]) for i in resource["identifier"]}


def register_social_worker(
    client: TestClient, writer: dict[str, str], systems: RegionalSystems
) -> tuple[str, str, str]:
    """A structure, an educator and her activity there: their ids."""
    status, place = send(client, "POST", "/fhir/Organization", writer, organization())
    assert status == 201, place
    status, person = send(client, "POST", "/fhir/Practitioner", writer, practitioner())
    assert status == 201, person
    body = role(person["id"], place["id"], systems.profession, "ES")
    status, activity = send(client, "POST", "/fhir/PractitionerRole", writer, body)
    assert status == 201, activity
    return person["id"], place["id"], activity["id"]


# --- the API ---------------------------------------------------------------------------------


def test_a_social_worker_registered_then_read_and_found(
    client: TestClient, writer: dict[str, str], systems: RegionalSystems, db: Database
) -> None:
    who, where, activity = register_social_worker(client, writer, systems)
    assert (who, where) == ("L00000001", "S00000001")
    assert systems.professional == "urn:oid:1.2.250.1.999.3.1"  # the placeholder root
    person = get(client, writer, f"/fhir/Practitioner/{who}")
    assert identifiers(person) == {systems.professional: ("official", who)}
    assert person["meta"]["tag"][0] | {"display": ""} == {
        "system": "urn:oid:1.2.250.1.999.3",
        "code": "regional",
        "display": "",
    }
    assert person["name"][0] == {"use": "official", "family": "MARTIN", "given": ["Lucie"]}
    [profession] = person["qualification"]
    assert profession["code"]["coding"] == [
        {"system": systems.profession, "code": "ES", "display": "Éducateur spécialisé"}
    ]
    place = get(client, writer, f"/fhir/Organization/{where}")
    assert identifiers(place) == {
        systems.structure: ("official", where),
        SIRET_SYSTEM: (None, "12345678900017"),
    }
    assert place["address"][0]["city"] == "Le Lamentin" and place["meta"]["tag"]
    found = get(client, writer, "/fhir/Practitioner", name="mart")
    assert [e["resource"]["id"] for e in found["entry"]] == [who]
    by_id = get(client, writer, "/fhir/Practitioner", identifier=who)
    assert [e["resource"]["id"] for e in by_id["entry"]] == [who]
    local = get(client, writer, "/fhir/Practitioner", identifier=f"{systems.professional}|{who}")
    assert [e["resource"]["id"] for e in local["entry"]] == [who]
    elsewhere = get(client, writer, "/fhir/Practitioner", identifier=f"urn:oid:1.2.3|{who}")
    assert "entry" not in elsewhere
    place_by_id = get(
        client, writer, "/fhir/Organization", identifier=f"{systems.structure}|{where}"
    )
    assert [e["resource"]["id"] for e in place_by_id["entry"]] == [where]
    staff = get(client, writer, "/fhir/PractitionerRole", organization=f"Organization/{where}")
    for role, expected in (
        (f"{systems.profession}|ES", [activity]),
        ("ES", [activity]),
        (f"{PROFESSION}|ES", []),
        (f"{systems.profession}|10", []),
    ):
        by_role = get(client, writer, "/fhir/PractitionerRole", role=role)
        assert [e["resource"]["id"] for e in by_role.get("entry", [])] == expected, role
    [entry] = staff["entry"]
    assert entry["resource"]["id"] == activity
    assert entry["resource"]["practitioner"]["reference"] == f"Practitioner/{who}"
    assert entry["resource"]["organization"] == {
        "reference": f"Organization/{where}",
        "display": "Service social du Lamentin",
    }
    named = get(client, writer, "/fhir/Organization", name="service social")
    assert [e["resource"]["id"] for e in named["entry"]] == [where]
    with db.transaction(write=False) as session:
        audited = session.execute(
            select(AuditRecord.interaction, AuditRecord.entity_ref, AuditRecord.outcome).where(
                AuditRecord.action == "C"
            )
        ).all()
    assert sorted(audited) == sorted(
        [
            ("create", f"Organization/{where}", "0"),
            ("create", f"Practitioner/{who}", "0"),
            ("create", f"PractitionerRole/{activity}", "0"),
        ]
    )


def test_the_capability_statement_lists_the_writes(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    kinds = {r["type"]: r for r in statement["rest"][0]["resource"]}
    codes = {k: {i["code"] for i in kinds[k]["interaction"]} for k in kinds}
    assert {"create", "update", "read", "search-type"} <= codes["Practitioner"]
    assert {"create", "update", "read", "search-type"} <= codes["Organization"]
    assert {"create", "read", "search-type"} <= codes["PractitionerRole"]
    assert "update" not in codes["PractitionerRole"]


def test_an_rpps_attached_later_gives_the_national_id_and_keeps_the_local_one(
    client: TestClient, writer: dict[str, str], systems: RegionalSystems, db: Database
) -> None:
    who, _, activity = register_social_worker(client, writer, systems)
    number = rpps(77)
    body = practitioner(
        "MARTIN-JOSEPH",
        id=who,
        identifier=[
            {"system": systems.professional, "value": who},
            {"system": RPPS_NUMBER_SYSTEM, "value": number},
        ],
    )
    response = client.put(f"/fhir/Practitioner/{who}", headers=writer, content=json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.headers["location"].endswith(f"/Practitioner/8{number}")
    person = response.json()
    assert person["id"] == f"8{number}" and person["name"][0]["family"] == "MARTIN-JOSEPH"
    assert identifiers(person) == {
        RPPS_SYSTEM: ("official", f"8{number}"),
        RPPS_NUMBER_SYSTEM: (None, number),
        systems.professional: ("secondary", who),
    }
    assert get(client, writer, f"/fhir/Practitioner/{who}") == 404
    found = get(client, writer, "/fhir/Practitioner", identifier=f"{RPPS_NUMBER_SYSTEM}|{number}")
    assert [e["resource"]["id"] for e in found["entry"]] == [f"8{number}"]
    # Still found by the local identifier a consumer may have stored.
    kept = get(client, writer, "/fhir/Practitioner", identifier=f"{systems.professional}|{who}")
    assert [e["resource"]["id"] for e in kept["entry"]] == [f"8{number}"]
    mine = get(client, writer, f"/fhir/PractitionerRole/{activity}")
    assert mine["practitioner"]["reference"] == f"Practitioner/8{number}"
    # The same number again changes nothing; the update goes on under the new id.
    body |= {"id": f"8{number}", "name": [{"family": "MARTIN", "given": ["Lucie"]}]}
    again = client.put(f"/fhir/Practitioner/8{number}", headers=writer, content=json.dumps(body))
    assert again.status_code == 200 and again.json()["name"][0]["family"] == "MARTIN"
    with db.transaction(write=False) as session:
        detail = session.scalar(
            select(AuditRecord.detail).where(AuditRecord.entity_ref == f"Practitioner/8{number}")
        )
    assert detail is not None and json.loads(detail)["previous_id"] == who


def test_refused_writes_change_nothing(
    client: TestClient,
    writer: dict[str, str],
    systems: RegionalSystems,
    db: Database,
    national: Path,
    factory: Factory,
) -> None:
    who, where, _ = register_social_worker(client, writer, systems)
    before = get(client, writer, f"/fhir/Practitioner/{who}")
    wrong_key = rpps(78)[:-1] + str((int(rpps(78)[-1]) + 1) % 10)

    def put(body: dict[str, Any], url: str = f"/fhir/Practitioner/{who}") -> tuple[int, str]:
        status, outcome = send(client, "PUT", url, writer, body)
        assert outcome["resourceType"] == "OperationOutcome"
        return status, outcome["issue"][0]["diagnostics"]

    rpps_id = [{"system": RPPS_NUMBER_SYSTEM, "value": wrong_key}]
    status, text = put(practitioner(id=who, identifier=rpps_id))
    assert status == 400 and "key" in text
    taken = [{"system": RPPS_SYSTEM, "value": f"8{rpps(1)}"}]  # HÉLÈNE's, national
    status, text = put(practitioner(id=who, identifier=taken))
    assert status == 409 and "already in the directory" in text
    assert get(client, writer, f"/fhir/Practitioner/{who}") == before
    # National entries are the national files' alone.
    status, text = put(practitioner(id=f"8{rpps(2)}"), f"/fhir/Practitioner/8{rpps(2)}")
    assert status == 409 and "national referential" in text
    status, text = put(organization(id=CHU), f"/fhir/Organization/{CHU}")
    assert status == 409 and "FINESS" in text
    status, text = put(practitioner(id="L00000099"), "/fhir/Practitioner/L00000099")
    assert status == 404
    status, text = put(practitioner(id="L00000002"))
    assert status == 400 and "id in the URL" in text
    # Malformed or refused bodies: 400, nothing stored, no identifier spent.
    models = (Professional, Structure, Activity)
    professionals, structures, activities = (count(db, m) for m in models)
    for url, body in [
        ("/fhir/Practitioner", practitioner(active="yes")),
        ("/fhir/Practitioner", {"resourceType": "Practitioner", "name": "MARTIN"}),
        ("/fhir/Practitioner", {"resourceType": "Practitioner", "name": [{"given": ["Lu"]}]}),
        ("/fhir/Practitioner", practitioner(identifier=rpps_id)),
        ("/fhir/Practitioner", practitioner(identifier=[{"system": "urn:x", "value": "1"}])),
        ("/fhir/Organization", organization(identifier=[{"system": FINESS_SYSTEM, "value": CHU}])),
        ("/fhir/Organization", organization(name="")),
        ("/fhir/Organization", organization(address=[{"postalCode": "972"}])),
        ("/fhir/PractitionerRole", role(who, where, systems.profession, "XX")),
        ("/fhir/PractitionerRole", role(who, where, "urn:x", "ES")),
        ("/fhir/PractitionerRole", role(who, where, PROFESSION, "41", "") | {"code": []}),
        ("/fhir/PractitionerRole", role(who, "S00000042", PROFESSION, "41")),
        ("/fhir/PractitionerRole", role(who, where, PROFESSION, "77")),  # no label known
    ]:
        status, outcome = send(client, "POST", url, writer, body)
        assert status == 400, (url, body, outcome)
        assert outcome["resourceType"] == "OperationOutcome"
    status, outcome = send(
        client, "POST", "/fhir/PractitionerRole", writer, role(f"8{rpps(1)}", CHU, PROFESSION, "41")
    )
    assert status == 409  # a national professional's activities come from the national file
    status, outcome = send(
        client, "POST", "/fhir/PractitionerRole", writer, role(who, where, systems.profession, "ES")
    )
    assert status == 409 and "registered already" in outcome["issue"][0]["diagnostics"]
    bad_json = client.post("/fhir/Practitioner", headers=writer, content="{not json")
    assert bad_json.status_code == 400
    assert (professionals, structures, activities) == tuple(count(db, m) for m in models)
    status, person = send(client, "POST", "/fhir/Practitioner", writer, practitioner("BLANC"))
    assert status == 201 and person["id"] == "L00000002"  # the refused ones spent none
    # Who may write.
    body = json.dumps(practitioner())
    anonymous = client.post("/fhir/Practitioner", headers={"Content-Type": FHIR_JSON}, content=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["resourceType"] == "OperationOutcome"
    reader = {"Authorization": f"Bearer {factory.token(READER)}", "Content-Type": FHIR_JSON}
    for method, url in [
        ("POST", "/fhir/Practitioner"),
        ("PUT", f"/fhir/Practitioner/{who}"),
        ("POST", "/fhir/Organization"),
        ("PUT", f"/fhir/Organization/{where}"),
        ("POST", "/fhir/PractitionerRole"),
    ]:
        denied = client.request(method, url, headers=reader, content=body)
        assert denied.status_code == 403, (method, url)
    assert count(db, Professional) == professionals + 1
    with db.transaction(write=False) as session:
        refused = session.scalars(
            select(AuditRecord.outcome).where(AuditRecord.action.in_(["C", "U"]))
        ).all()
    assert refused.count("0") == 4  # the three registrations and BLANC
    assert len(refused) > 20  # every refusal is in the trail too


def test_an_organization_updated_and_deactivated(
    client: TestClient, writer: dict[str, str], systems: RegionalSystems
) -> None:
    _, where, _ = register_social_worker(client, writer, systems)
    body = organization(
        "Service social du Lamentin (CCAS)",
        id=where,
        active=False,
        identifier=[{"system": systems.structure, "value": where}],
    )
    status, place = send(client, "PUT", f"/fhir/Organization/{where}", writer, body)
    assert status == 200, place
    assert place["name"] == "Service social du Lamentin (CCAS)" and place["active"] is False
    assert "identifier" in place and SIRET_SYSTEM not in identifiers(place)


# --- the national files ----------------------------------------------------------------------


def test_a_national_import_leaves_the_regional_entries_intact(
    client: TestClient,
    writer: dict[str, str],
    systems: RegionalSystems,
    db: Database,
    national: Path,
    tmp_path: Path,
) -> None:
    who, where, activity = register_social_worker(client, writer, systems)
    before = [get(client, writer, f"/fhir/{ref}") for ref in (
        f"Practitioner/{who}", f"Organization/{where}", f"PractitionerRole/{activity}"
    )]  # fmt: skip
    # The next extraction: DUPONT gone (and made inactive), the FINESS file without the CHU.
    smaller = write(tmp_path / "PS_LibreAcces_Personne_activite_202612080000.txt", line(1))
    done = run(db, smaller, removal_limit=None)
    assert done.error is None
    assert done.counts["directory_professional"]["gone"] == 1
    structures = tmp_path / "etalab-cs1100507-stock-20240125-0336.csv"
    structures.write_bytes(
        ("finess;etalab;95;2024-01-25\n" + structure(finess(2))).encode("cp1252")
    )
    done = run(db, structures, removal_limit=None)
    assert done.error is None and done.counts["directory_structure"]["gone"] == 1
    after = [get(client, writer, f"/fhir/{ref}") for ref in (
        f"Practitioner/{who}", f"Organization/{where}", f"PractitionerRole/{activity}"
    )]  # fmt: skip
    assert after == before and all(r["active"] for r in after)
    assert get(client, writer, f"/fhir/Practitioner/8{rpps(2)}")["active"] is False


def test_the_national_file_takes_over_once_it_lists_an_attached_rpps(
    client: TestClient,
    writer: dict[str, str],
    systems: RegionalSystems,
    db: Database,
    national: Path,
    tmp_path: Path,
) -> None:
    who, _, activity = register_social_worker(client, writer, systems)
    number = rpps(41)
    body = practitioner(id=who, identifier=[{"system": RPPS_NUMBER_SYSTEM, "value": number}])
    assert send(client, "PUT", f"/fhir/Practitioner/{who}", writer, body)[0] == 200
    listed = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612080000.txt",
        line(1),
        line(41, **{"Nom d'exercice": "MARTIN", "Code profession": "41",
                    "Libellé profession": "Assistant de service social"}),
    )  # fmt: skip
    assert run(db, listed, removal_limit=None).error is None
    person = get(client, writer, f"/fhir/Practitioner/8{number}")
    assert "meta" in person and "tag" not in person["meta"]  # national now
    assert identifiers(person)[systems.professional] == ("secondary", who)
    professions = {q["code"]["coding"][0]["code"] for q in person["qualification"]}
    assert {"ES", "41"} <= professions  # the regional activity stays, beside the national one
    assert get(client, writer, f"/fhir/PractitionerRole/{activity}")["active"] is True
    refused = send(
        client, "PUT", f"/fhir/Practitioner/8{number}", writer, body | {"id": f"8{number}"}
    )
    assert refused[0] == 409


# --- the portal ------------------------------------------------------------------------------


def portal_admin(client: TestClient, factory: Factory) -> None:
    factory.user("gestion", roles=("admin",))
    log_in(client, "gestion")


def test_the_portal_registers_a_structure_a_professional_then_an_rpps(
    client: TestClient, factory: Factory, db: Database, national: Path
) -> None:
    portal_admin(client, factory)
    search = html.unescape(client.get("/annuaire").text)
    assert 'href="/annuaire/enregistrement"' in search
    form = client.get("/annuaire/enregistrement")
    assert form.status_code == 200 and "Conseiller en économie sociale et familiale" in form.text
    csrf = csrf_of(form.text)
    made = client.post(
        "/annuaire/enregistrement/structure",
        data={"csrf": csrf, "nom": "CCAS de Schœlcher", "adresse": "1 place de la mairie",
              "code_postal": "97233", "commune": "Schœlcher", "telephone": ""},
        follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303 and made.headers["location"] == "/annuaire/structure/S00000001"
    page = html.unescape(client.get("/annuaire/structure/S00000001").text)
    assert "CCAS de Schœlcher" in page and "Identifiant régional S00000001" in page
    registered = client.post(
        "/annuaire/enregistrement/professionnel",
        data={"csrf": csrf, "nom": "Joseph", "prenom": "Anaïs", "civilite": "Madame",
              "profession": "regional|CESF", "structure": "S00000001"},
        follow_redirects=False,
    )  # fmt: skip
    assert registered.status_code == 303
    assert registered.headers["location"] == "/annuaire/ps/L00000001"
    card = html.unescape(client.get("/annuaire/ps/L00000001").text)
    assert "Conseiller en économie sociale et familiale" in card and "CCAS de Schœlcher" in card
    assert (
        "Identifiant régional L00000001" in card and 'action="/annuaire/ps/L00000001/rpps"' in card
    )
    # In a national structure too, with a TRE_G15 profession.
    second = client.post(
        "/annuaire/enregistrement/professionnel",
        data={"csrf": csrf, "nom": "Roseau", "prenom": "Paul", "civilite": "",
              "profession": "G15|41", "structure": CHU},
        follow_redirects=False,
    )  # fmt: skip
    assert second.headers["location"] == "/annuaire/ps/L00000002"
    wrong = client.post("/annuaire/ps/L00000001/rpps", data={"csrf": csrf, "rpps": "12345678901"})
    assert wrong.status_code == 400 and "clé" in html.unescape(wrong.text)
    taken = client.post("/annuaire/ps/L00000001/rpps", data={"csrf": csrf, "rpps": rpps(1)})
    assert taken.status_code == 409 and "déjà" in html.unescape(taken.text)
    attached = client.post(
        "/annuaire/ps/L00000001/rpps",
        data={"csrf": csrf, "rpps": rpps(55)},
        follow_redirects=False,
    )
    assert attached.status_code == 303
    assert attached.headers["location"] == f"/annuaire/ps/8{rpps(55)}"
    card = html.unescape(client.get(f"/annuaire/ps/8{rpps(55)}").text)
    assert f"RPPS {rpps(55)}" in card and "identifiant régional L00000001" in card
    with db.transaction(write=False) as session:
        trail = session.execute(
            select(AuditRecord.interaction, AuditRecord.entity_ref, AuditRecord.outcome).where(
                AuditRecord.action.in_(["C", "U"])
            )
        ).all()
    assert ("create", "Organization/S00000001", "0") in trail
    assert ("create", "Practitioner/L00000001", "0") in trail
    assert ("update", f"Practitioner/8{rpps(55)}", "0") in trail


def test_the_portal_registration_is_for_admins_with_a_csrf_token(
    client: TestClient, factory: Factory, db: Database
) -> None:
    factory.user("soignant", roles=("professional",))
    log_in(client, "soignant")
    assert 'href="/annuaire/enregistrement"' not in client.get("/annuaire").text
    assert client.get("/annuaire/enregistrement").status_code == 403
    csrf = csrf_of(client.get("/annuaire").text)
    refused = client.post(
        "/annuaire/enregistrement/structure", data={"csrf": csrf, "nom": "Tentative"}
    )
    assert refused.status_code == 403
    client.cookies.clear()
    portal_admin(client, factory)
    forged = client.post(
        "/annuaire/enregistrement/structure", data={"csrf": "forged", "nom": "Tentative"}
    )
    assert forged.status_code == 403
    csrf = csrf_of(client.get("/annuaire/enregistrement").text)
    empty = client.post("/annuaire/enregistrement/structure", data={"csrf": csrf, "nom": " "})
    assert empty.status_code == 400 and "nom" in html.unescape(empty.text)
    assert count(db, Structure) == 0


# --- in a browser ----------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env |= {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url}
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    with live_server(data_dir=data_dir, database_url=database_url) as running:
        yield running


@pytest.mark.browser
def test_an_admin_registers_an_educator_in_the_browser(
    browser: Any, server: LiveServer, tmp_path: Path
) -> None:
    page = browser.new_page()
    page.goto(server.base_url + "/login")
    page.fill("#username", "admin")
    page.fill("#password", "Admin-demo-2026!")
    page.click("button[type=submit]")
    page.wait_for_url(server.base_url + "/")
    page.goto(server.base_url + "/annuaire")
    page.click("text=Enregistrer dans l'annuaire régional")
    page.wait_for_url("**/annuaire/enregistrement")
    page.fill("#structure-nom", "Foyer de l'enfance du Robert")
    page.fill("#structure-code-postal", "97231")
    page.fill("#structure-commune", "Le Robert")
    page.click("#enregistrer-structure button[type=submit]")
    # (the demo registered its facility, doctor and nurse: S00000001, L00000001, L00000002)
    page.wait_for_url("**/annuaire/structure/S00000002")
    assert "Identifiant régional S00000002" in page.locator("#structure").inner_text()
    page.goto(server.base_url + "/annuaire/enregistrement")
    page.screenshot(path=str(tmp_path / "formulaire.png"), full_page=True)
    page.fill("#ps-nom", "CÉSAIRE")
    page.fill("#ps-prenom", "Léa")
    page.select_option("#ps-profession", "regional|ES")
    page.fill("#ps-structure", "S00000002")
    page.click("#enregistrer-professionnel button[type=submit]")
    page.wait_for_url("**/annuaire/ps/L00000003")
    assert "Éducateur spécialisé" in page.locator(".activities").inner_text()
    body = "1000000077"
    number = body + str(luhn_key(body))
    page.fill("#rpps", number)
    page.click("#rattacher-rpps button[type=submit]")
    page.wait_for_url(f"**/annuaire/ps/8{number}")
    assert f"RPPS {number}" in page.locator("#identifiers").inner_text()
    page.screenshot(path=str(tmp_path / "enregistrement.png"), full_page=True)
