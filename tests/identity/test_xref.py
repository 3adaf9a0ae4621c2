"""One cross-reference for both transactions: the same registry asked over HL7 v2 (ITI-9
QBP^Q23 on a live MLLP listener, the ``hl7`` package's client) and over FHIR (ITI-83
``Patient/$ihe-pix``) gives the same answer, identifier by identifier."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.conftest import Factory
from tests.identity.test_fhir import auth
from tests.identity.test_hl7 import CHU, CLINIC, CONFIG, Feed, code, feed_server, mrg, msh, pid

from enrs.identity import repository
from enrs.identity.models import RegionalPatient
from enrs.identity.xref import MAX_MERGE_HOPS

GP = "1.2.250.1.71.4.2.2.3"
NIR = "1.2.250.1.213.1.4.8"
INS_QUAL, INS_VALI = "261049720912388", "190019720900548"
RRI = CONFIG.rri_authority
PEOPLE = [
    ("DUPONT", "Jean", "19400101", "M"),
    ("BERNARD", "Lucie", "19430202", "F"),
    ("THOMAS", "Hugo", "19460303", "M"),
    ("PETIT", "Chloe", "19490404", "F"),
    ("ROBERT", "Louis", "19520505", "M"),
    ("RICHARD", "Emma", "19550606", "F"),
    ("DURAND", "Gabriel", "19580707", "M"),
    ("DUBOIS", "Jade", "19610808", "F"),
    ("MOREAU", "Arthur", "19640909", "M"),
    ("LAURENT", "Alice", "19671010", "F"),
    ("SIMON", "Jules", "19701111", "M"),
    ("MICHEL", "Lina", "19731212", "F"),
    ("LEFEBVRE", "Adam", "19760113", "M"),
    ("LEROY", "Rose", "19790214", "F"),
    ("ROUX", "Leo", "19820315", "M"),
    ("DAVID", "Mia", "19850416", "F"),
    ("BERTRAND", "Noah", "19880517", "M"),
    ("MOREL", "Anna", "19910618", "F"),
    ("FOURNIER", "Paul", "19940719", "M"),
]


@pytest.fixture
def mllp(database_url: str) -> Iterator[Feed]:
    with feed_server(database_url, {CHU: (CHU, CLINIC), CLINIC: (CLINIC,), GP: (GP,)}) as running:
        yield running


def send(feed: Feed, message: str) -> None:
    answer = feed.send(message)
    assert code(answer) == "AA", str(answer)


def rri_of(feed: Feed, authority: str, ipp: str) -> str:
    with feed.db.transaction() as session:
        source = repository.source_by_key(session, authority, ipp)
        assert source is not None
        patient = session.get(RegionalPatient, source.patient_id)
        assert patient is not None
        return patient.rri


def build_registry(feed: Feed) -> dict[str, str]:
    """Several facilities, a qualified and an unqualified INS, a merge, a chain of merges
    longer than followed, an inactive regional patient. Returns named RRIs."""
    mary = {"name": "JOSEPH", "given": "Marie-Line^Marie-Line Rose", "dob": "19610409"}
    send(feed, msh("A28", "1") + pid("1", ins=INS_QUAL, status="QUAL", **mary))
    send(feed, msh("A28", "2", facility=f"CLINIC^{CLINIC}^ISO") + pid("A1", authority=CLINIC))
    gp = msh("A28", "3", facility=f"GP^{GP}^ISO")
    send(feed, gp + pid("G1", authority=GP, name="JOSEPHE", ins=INS_QUAL, status="RECUP"))
    assert rri_of(feed, CHU, "1") == rri_of(feed, CLINIC, "A1") == rri_of(feed, GP, "G1")
    paul = {"name": "DUCLOS", "given": "Paul", "dob": "19900130", "sex": "M"}
    send(feed, msh("A28", "4") + pid("2", ins=INS_VALI, status="VALI", **paul))
    send(feed, msh("A28", "5") + pid("3", name="DUCLAUX", given="Pierre", dob="19920517"))
    rris = {"mary": rri_of(feed, CHU, "1"), "paul": rri_of(feed, CHU, "2")}
    rris["merged"] = rri_of(feed, CHU, "3")
    send(feed, msh("A40", "6") + pid("2", ins=INS_VALI, status="VALI", **paul) + mrg("3"))
    # A chain of merges one longer than followed: c0's patient -> c1's -> ... -> c17's.
    for k, (name, given, dob, sex) in enumerate(PEOPLE[: MAX_MERGE_HOPS + 2]):
        send(feed, msh("A28", f"c{k}") + pid(f"c{k}", name=name, given=given, dob=dob, sex=sex))
    rris["chain_start"] = rri_of(feed, CHU, "c0")
    rris["chain_near"] = rri_of(feed, CHU, f"c{MAX_MERGE_HOPS - 1}")
    for k in range(MAX_MERGE_HOPS + 1):
        name, given, dob, sex = PEOPLE[k + 1]
        person = pid(f"c{k + 1}", name=name, given=given, dob=dob, sex=sex)
        send(feed, msh("A40", f"m{k}") + person + mrg(f"c{k}"))
    rris["chain_end"] = rri_of(feed, CHU, f"c{MAX_MERGE_HOPS + 1}")
    # A regional patient made inactive, though it still has an active identity.
    name, given, dob, sex = PEOPLE[-1]
    send(feed, msh("A28", "9") + pid("9", name=name, given=given, dob=dob, sex=sex))
    rris["inactive"] = rri_of(feed, CHU, "9")
    with feed.db.transaction() as session:
        stmt = update(RegionalPatient).where(RegionalPatient.rri == rris["inactive"])
        session.execute(stmt.values(active=False))
    return rris


Answer = frozenset[tuple[str, str, str]] | str


def ask_v2(feed: Feed, control: str, cx: str, domains: str = "") -> Answer:
    qpd = f"QPD|IHE PIX Query^IHE PIX Query|Q{control}|{cx}|{domains}\r"
    answer = feed.send(msh("Q23", control) + qpd + "RCP|I\r")
    if code(answer) == "AE":
        where = str(answer.segment("ERR")[2])  # ERR-2: QPD-3's CX-4, or its CX-1
        return {"QPD^1^3^1^4": "unknown domain", "QPD^1^3^1^1": "not found"}[where]
    assert code(answer) == "AA"
    if answer["QAK.F2"] == "NF":
        return frozenset()
    return frozenset((str(r[0]), str(r[3][1]), str(r[4])) for r in answer.segment("PID")[3])


_FHIR_TYPES = {"PI": "PI", "RRI": "RRI", "INS-NIR": "INS", "INS-NIA": "INS"}


def ask_fhir(client: TestClient, token: str, system: str, value: str, target: str = "") -> Answer:
    query = f"sourceIdentifier=urn:oid:{system}|{value}"
    if target:
        query += f"&targetSystem=urn:oid:{target}"
    response = client.get(f"/fhir/Patient/$ihe-pix?{query}", headers=auth(token))
    if response.status_code == 400:
        return "unknown domain"
    if response.status_code == 404:
        return "not found"
    assert response.status_code == 200, response.text
    found: set[tuple[str, str, str]] = set()
    for param in response.json()["parameter"]:
        if param["name"] == "targetIdentifier":
            ident: dict[str, Any] = param["valueIdentifier"]
            kind = _FHIR_TYPES[ident["type"]["coding"][0]["code"]]
            found.add((ident["value"], ident["system"].removeprefix("urn:oid:"), kind))
    return frozenset(found)


def cx(value: str, system: str, kind: str) -> str:
    if kind == "INS":
        return f"{value}^^^ASIP-SANTE-INS-NIR&{system}&ISO^INS"
    return f"{value}^^^&{system}&ISO^{kind}"


def test_pix_v2_and_pixm_answer_the_same(mllp: Feed, client: TestClient, factory: Factory) -> None:
    rris = build_registry(mllp)
    token = factory.token("system/Patient.rs")
    mary = {
        ("1", CHU, "PI"),
        ("A1", CLINIC, "PI"),
        ("G1", GP, "PI"),
        (INS_QUAL, NIR, "INS"),  # from the qualified identity CHU|1 (G1's is RECUP)
        (rris["mary"], RRI, "RRI"),
    }
    paul = {("2", CHU, "PI"), (rris["paul"], RRI, "RRI")}  # no INS: VALI; not the merged 3
    chain_end = {(f"c{MAX_MERGE_HOPS + 1}", CHU, "PI"), (rris["chain_end"], RRI, "RRI")}
    questions: list[tuple[str, str, str, Answer]] = [
        ("1", CHU, "PI", frozenset(mary - {("1", CHU, "PI")})),
        ("A1", CLINIC, "PI", frozenset(mary - {("A1", CLINIC, "PI")})),
        ("G1", GP, "PI", frozenset(mary - {("G1", GP, "PI")})),
        (INS_QUAL, NIR, "INS", frozenset(mary - {(INS_QUAL, NIR, "INS")})),
        (rris["mary"], RRI, "RRI", frozenset(mary - {(rris["mary"], RRI, "RRI")})),
        ("2", CHU, "PI", frozenset(paul - {("2", CHU, "PI")})),
        (INS_VALI, NIR, "INS", "not found"),  # an INS not qualified leads nowhere
        ("3", CHU, "PI", "not found"),  # merged into 2: inactive
        (rris["merged"], RRI, "RRI", frozenset(paul)),  # its patient, merged into paul's
        (rris["chain_near"], RRI, "RRI", frozenset(chain_end)),  # two merges followed
        (rris["chain_start"], RRI, "RRI", "not found"),  # more merges than followed
        (rris["inactive"], RRI, "RRI", "not found"),
        ("nobody", CHU, "PI", "not found"),
        ("1", "1.2.3.4.5", "PI", "unknown domain"),
    ]
    for n, (value, system, kind, expected) in enumerate(questions):
        v2 = ask_v2(mllp, str(n), cx(value, system, kind))
        fhir = ask_fhir(client, token, system, value)
        assert v2 == fhir, (value, system, v2, fhir)
        assert fhir == expected, (value, system, fhir)
    # The domains asked for (QPD-4, targetSystem) restrict the answer the same way.
    for n, domain in enumerate((GP, NIR, RRI, CLINIC)):
        v2 = ask_v2(mllp, f"d{n}", cx("1", CHU, "PI"), f"^^^&{domain}&ISO")
        fhir = ask_fhir(client, token, CHU, "1", domain)
        assert v2 == fhir == frozenset(i for i in mary if i[1] == domain), domain
    assert ask_v2(mllp, "d9", cx("2", CHU, "PI"), f"^^^&{GP}&ISO") == frozenset()  # NF
    assert ask_fhir(client, token, CHU, "2", GP) == frozenset()
