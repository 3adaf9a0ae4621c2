"""The read policy (``identity/access.py``) on every read of the identity server, FHIR and
HL7 v2: an INS not qualified never comes out and never leads to a patient; an inactive
identity is never found and its data never given out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import Factory
from tests.identity.feeders import feeder_token
from tests.identity.test_fhir import CLINIC, FHIR_JSON, GP, NIR, auth, feed, fr_patient, nir
from tests.identity.test_hl7 import CHU, CONFIG, Feed, code, err, feed_server, mrg, msh, pid
from tests.identity.test_xref import ask_fhir, ask_v2, cx, rri_of

from enrs.identity import repository

INS_RECUP = nir("2610497209123")  # JOSEPH, RECUP at the CHU
INS_VALI = nir("1750697232123")  # LEFEVRE, VALI at the clinic


@pytest.fixture
def mllp(database_url: str) -> Iterator[Feed]:
    with feed_server(database_url) as running:
        yield running


def get(client: TestClient, token: str, path: str) -> dict[str, Any]:
    response = client.get(path, headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def match(client: TestClient, token: str, resource: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": FHIR_JSON, **auth(token)}
    response = client.post("/fhir/Patient/$match", json=resource, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_ins_not_qualified_never_comes_out_nor_leads_to_a_patient(
    client: TestClient, factory: Factory, mllp: Feed
) -> None:
    feeder = feeder_token(client, factory.db, "system/Patient.cu", (CHU, CLINIC, GP))
    joseph = fr_patient("1", CHU, ins=INS_RECUP, status="RECUP")
    created = feed(client, feeder, joseph)
    assert created.status_code == 201, created.text
    assert INS_RECUP in created.text  # the feeder's own identity, echoed (ITI-104)
    lefevre = fr_patient(
        "B7",
        CLINIC,
        family="LEFEVRE",
        given=("Paul",),
        birth="1975-06-07",
        gender="male",
        ins=INS_VALI,
        status="VALI",
    )
    assert feed(client, feeder, lefevre).status_code == 201
    source_id = created.json()["id"]
    rri = rri_of(mllp, CHU, "1")

    reader = factory.token("system/Patient.rs")
    answers = [
        get(client, reader, "/fhir/Patient?family=joseph"),
        get(client, reader, "/fhir/Patient?family=lefevre"),
        get(client, reader, f"/fhir/Patient/{source_id}"),
        get(client, reader, f"/fhir/Patient/{rri}"),
        get(client, reader, f"/fhir/Patient/$ihe-pix?sourceIdentifier=urn:oid:{CHU}|1"),
        match(client, reader, fr_patient("x", CHU, ins=INS_RECUP)),
    ]
    for answer in answers:
        assert INS_RECUP not in str(answer) and INS_VALI not in str(answer), answer
    assert ask_v2(mllp, "1", cx("1", CHU, "PI")) == ask_fhir(client, reader, CHU, "1")
    assert not any(i[2] == "INS" for i in ask_v2(mllp, "2", cx("1", CHU, "PI")))
    for n, ins in enumerate((INS_RECUP, INS_VALI)):
        by_ins = [
            f"/fhir/Patient?identifier=urn:oid:{NIR}|{ins}",
            f"/fhir/Patient?identifier={ins}",
            f"/fhir/Patient?identifier=urn:oid:{NIR}|",
        ]
        for path in by_ins:
            assert "entry" not in get(client, reader, path), path
        assert ask_v2(mllp, f"i{n}", cx(ins, NIR, "INS")) == "not found"
        assert ask_fhir(client, reader, NIR, ins) == "not found"

    # Once an identity carrying it is qualified, the INS is shared and leads to the patient.
    qualified = fr_patient("77", GP, family="JOSEPHE", ins=INS_RECUP, status="QUAL")
    assert feed(client, feeder, qualified).status_code == 201
    assert INS_RECUP in str(get(client, reader, f"/fhir/Patient/{rri}"))
    found = get(client, reader, f"/fhir/Patient?identifier=urn:oid:{NIR}|{INS_RECUP}")
    assert [e["resource"]["identifier"][0]["value"] for e in found["entry"]] == ["77"]
    assert INS_RECUP not in str(get(client, reader, f"/fhir/Patient/{source_id}"))  # RECUP
    assert ask_v2(mllp, "q", cx(INS_RECUP, NIR, "INS")) == ask_fhir(client, reader, NIR, INS_RECUP)
    assert (INS_RECUP, NIR, "INS") in ask_v2(mllp, "r", cx("1", CHU, "PI"))


def test_an_inactive_identity_is_never_found_and_its_data_never_given_out(
    client: TestClient, factory: Factory, mllp: Feed
) -> None:
    paul = {"name": "DUCLOS", "given": "Paul", "dob": "19900130", "sex": "M"}
    assert code(mllp.send(msh("A28", "1") + pid("1"))) == "AA"
    assert code(mllp.send(msh("A28", "2") + pid("2", **paul))) == "AA"
    merged = mllp.source(CHU, "2")
    assert merged is not None
    retired_rri = rri_of(mllp, CHU, "2")
    assert code(mllp.send(msh("A40", "3") + pid("1") + mrg("2"))) == "AA"
    survivor_rri = rri_of(mllp, CHU, "1")

    reader = factory.token("system/Patient.rs")
    for query in (
        "family=duclos",
        f"_id={merged.id}",
        f"identifier=urn:oid:{CHU}|2",
        "birthdate=1990-01-30",
        f"identifier=urn:oid:{CONFIG.rri_authority}|{retired_rri}",
    ):
        assert "entry" not in get(client, reader, f"/fhir/Patient?{query}"), query
    probe = fr_patient("x", CHU, family="DUCLOS", given=("Paul",), birth="1990-01-30")
    probe["gender"] = "male"
    matched = match(client, reader, probe).get("entry", [])
    assert str(merged.id) not in {e["resource"]["id"] for e in matched}
    assert ask_fhir(client, reader, CHU, "2") == ask_v2(mllp, "4", cx("2", CHU, "PI"))
    assert ask_fhir(client, reader, CHU, "2") == "not found"

    read = get(client, reader, f"/fhir/Patient/{merged.id}")
    assert read["active"] is False and "DUCLOS" not in str(read)
    assert set(read) == {"resourceType", "id", "meta", "active", "link"}
    assert read["link"] == [
        {"other": {"reference": f"Patient/{survivor_rri}"}, "type": "replaced-by"}
    ]
    retired = get(client, reader, f"/fhir/Patient/{retired_rri}")
    assert retired["active"] is False and "DUCLOS" not in str(retired) and "name" not in retired
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{survivor_rri}"}, "type": "replaced-by"}
    ]
    regional = get(client, reader, f"/fhir/Patient/{survivor_rri}")
    assert "DUCLOS" not in str(regional)
    assert {(i["value"]) for i in regional["identifier"]} == {"1", survivor_rri}
    with mllp.db.transaction() as session:  # the cell still has all of it
        kept = repository.source(session, merged.id)
        assert kept is not None and kept.birth_name == "DUCLOS" and not kept.active
    assert err(mllp.send(msh("A31", "5") + pid("2", **paul)))[0] == "204"
