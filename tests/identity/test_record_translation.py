"""An identity fed over one protocol and read over the other comes back with its whole
demographic record, translated between HL7 v2 and FHIR (:mod:`enrs.identity.translate`):
fed by ADT through python-hl7's MLLP client and read by PDQm over HTTP, fed by ITI-104 and
read by PDQ (QBP^Q22) through the same MLLP client; and the mappings themselves."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import hl7
import pytest
from fastapi.testclient import TestClient
from tests.identity.feeders import CHU, feeder_token
from tests.identity.test_fhir import auth, fr_patient
from tests.identity.test_fhir import feed as fhir_feed
from tests.identity.test_hl7 import Feed, code, err, feed_server, msh, pid, q22

from enrs.identity import translate
from enrs.kit.db import Database
from enrs.kit.hl7v2 import parse_message

RPPS = "1.2.250.1.71.4.2.1"
FINESS = "1.2.250.1.71.4.2.2"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
V2_0002 = "http://terminology.hl7.org/CodeSystem/v2-0002"
V2_0063 = "http://terminology.hl7.org/CodeSystem/v2-0063"
V2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"
BIRTH_LIST = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"

# A PAM-FR A28 with the whole record: prefix, used name, home, work and birth addresses, home,
# mobile, e-mail and work telecoms, language, marital status, second of twins, the patient's
# primary facility and GP (PD1), and her husband as next of kin (NK1).
PID_FIELDS = {
    5: "JOSEPH^Marie-Line^Marie-Line Rose^^MME^^L~ANDRE^Marie-Line^^^^^D",
    11: "12 rue Schoelcher^^Fort-de-France^^97200^FRA^H~^^^^^^BDL^^97209"
    "~1 rue du Port^^Le Robert^^97231^FRA^O",
    13: "^PRN^PH^^^^^^^^^0596123456~^PRN^CP^^^^^^^^^0696112233~^NET^Internet^ml@example.org",
    14: "^WPN^PH^^^^^^^^^0596000000",
    15: "fr^French^ISO639",
    16: "M^Married^HL70002",
    24: "Y",
    25: "2",
}
PD1 = (
    f"PD1|||CHU de Martinique^^^^^&{FINESS}&ISO^^^^970211207"
    f"|810000000001^MARIE^Lise^^^Dr^^^&{RPPS}&ISO"
)
NK1 = (
    "NK1|1|JOSEPH^Paul^^^M.|SPO^Spouse^HL70063|12 rue Schoelcher^^Fort-de-France^^97200^FRA^H"
    "|^PRN^CP^^^^^^^^^0696998877|^WPN^PH^^^^^^^^^0596445566|N^Next-of-Kin^HL70131"
    "||||||||M"
)


def adt_with_record(ipp: str) -> str:
    fields = pid(ipp).rstrip("\r").split("|")
    for n, text in PID_FIELDS.items():
        fields[n] = text
    return msh("A28", f"R{ipp}") + "|".join(fields) + "\r" + PD1 + "\r" + NK1 + "\r"


# What a FHIR reader gets of that record.
EXPECTED_FHIR: dict[str, Any] = {
    "name": [
        {
            "use": "official",
            "family": "JOSEPH",
            "given": ["Marie-Line"],
            "extension": [{"url": BIRTH_LIST, "valueString": "Marie-Line Rose"}],
            "prefix": ["MME"],
        },
        {"use": "usual", "family": "ANDRE", "given": ["Marie-Line"]},
    ],
    "address": [
        {
            "use": "home",
            "line": ["12 rue Schoelcher"],
            "city": "Fort-de-France",
            "postalCode": "97200",
            "country": "FRA",
        },
        {
            "use": "work",
            "line": ["1 rue du Port"],
            "city": "Le Robert",
            "postalCode": "97231",
            "country": "FRA",
        },
    ],
    "telecom": [
        {"system": "phone", "value": "0596123456", "use": "home"},
        {"system": "phone", "value": "0696112233", "use": "mobile"},
        {"system": "email", "value": "ml@example.org"},
        {"system": "phone", "value": "0596000000", "use": "work"},
    ],
    "communication": [
        {
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}], "text": "French"},
            "preferred": True,
        }
    ],
    "maritalStatus": {
        "coding": [{"system": V3_MARITAL, "code": "M"}, {"system": V2_0002, "code": "M"}],
        "text": "Married",
    },
    "multipleBirthInteger": 2,
    "generalPractitioner": [
        {
            "type": "Organization",
            "identifier": {"system": f"urn:oid:{FINESS}", "value": "970211207"},
            "display": "CHU de Martinique",
        },
        {
            "type": "Practitioner",
            "identifier": {"system": f"urn:oid:{RPPS}", "value": "810000000001"},
            "display": "Dr Lise MARIE",
        },
    ],
    "contact": [
        {
            "relationship": [
                {"coding": [{"system": V2_0063, "code": "SPO"}], "text": "Spouse"},
                {"coding": [{"system": V2_0131, "code": "N"}], "text": "Next-of-Kin"},
            ],
            "name": {"family": "JOSEPH", "given": ["Paul"], "prefix": ["M."]},
            "telecom": [
                {"system": "phone", "value": "0696998877", "use": "mobile"},
                {"system": "phone", "value": "0596445566", "use": "work"},
            ],
            "address": {
                "use": "home",
                "line": ["12 rue Schoelcher"],
                "city": "Fort-de-France",
                "postalCode": "97200",
                "country": "FRA",
            },
            "gender": "male",
        }
    ],
}


@pytest.fixture
def feed(database_url: str, client: TestClient) -> Iterator[Feed]:
    """The MLLP feed on the database the HTTP API (``client``) serves."""
    with feed_server(database_url) as running:
        yield running


@pytest.fixture
def token(client: TestClient, db: Database) -> str:
    return feeder_token(client, db, "system/Patient.cruds", (CHU,))


def segments(answer: hl7.Message, name: str) -> list[str]:
    return [str(seg) for seg in answer if str(seg[0]) == name]


def test_an_identity_fed_by_adt_is_read_whole_over_pdqm(
    feed: Feed, client: TestClient, token: str
) -> None:
    assert code(feed.send(adt_with_record("500"))) == "AA"
    found = client.get("/fhir/Patient", params={"family": "JOSEPH"}, headers=auth(token))
    assert found.status_code == 200, found.text
    [entry] = found.json()["entry"]
    resource = entry["resource"]
    for element, expected in EXPECTED_FHIR.items():
        assert resource[element] == expected, element
    # The birth place is FR Core's extension, not an address.
    assert "97209" in str(resource["extension"])
    # The regional view (the RRI) reads the same record.
    rri = next(link for link in resource["link"] if link["type"] == "refer")["other"]
    regional = client.get(f"/fhir/{rri['reference']}", headers=auth(token)).json()
    assert regional["contact"] == EXPECTED_FHIR["contact"]


def test_an_identity_fed_over_fhir_is_read_whole_over_pdq(
    feed: Feed, client: TestClient, token: str
) -> None:
    body = fr_patient("600") | copy.deepcopy(EXPECTED_FHIR)
    made = fhir_feed(client, token, body)
    assert made.status_code == 201, made.text
    answer = feed.send(q22("1", "@PID.5.1.1^JOSEPH", "@PID.7.1^19610409"))
    assert code(answer) == "AA" and str(answer.segment("QAK")[2]) == "OK", answer
    [found] = segments(answer, "PID")
    fields = found.split("|")
    assert fields[5] == "JOSEPH^Marie-Line^Rose^^MME^^L~ANDRE^Marie-Line^^^^^D"
    assert fields[11] == PID_FIELDS[11].replace("~^^^^^^BDL^^97209", "") + "~^^^^^^BDL^^97209"
    assert fields[13] == PID_FIELDS[13]
    assert fields[14] == PID_FIELDS[14]
    assert fields[15] == "fr^French^ISO639"
    assert fields[16] == "M^Married^HL70002"
    assert (fields[24], fields[25]) == ("Y", "2")
    # RSP^K22: PID, then PD1 and NK1 (ITI-21 [PID [PD1] [{NK1}]]).
    names = [str(seg[0]) for seg in answer]
    assert names[names.index("PID") :] == ["PID", "PD1", "NK1"]
    [pd1] = segments(answer, "PD1")
    assert pd1 == (
        f"PD1|||CHU de Martinique^^^^^&{FINESS}&ISO^^^^970211207"
        f"|810000000001^Dr Lise MARIE^^^^^^^&{RPPS}&ISO"
    )
    [nk1] = segments(answer, "NK1")
    assert nk1 == NK1


def test_the_same_identity_read_back_over_its_own_protocol_is_as_fed(
    feed: Feed, client: TestClient, token: str
) -> None:
    """No translation for a reader of the feeder's protocol: PDQ gives the ADT's fields and
    segments as they were, PDQm the Patient's elements as they were."""
    assert code(feed.send(adt_with_record("700"))) == "AA"
    answer = feed.send(q22("2", "@PID.3.1^700"))
    [found] = segments(answer, "PID")
    fields = found.split("|")
    for n, text in PID_FIELDS.items():
        assert fields[n] == text, n
    assert segments(answer, "PD1") == [PD1] and segments(answer, "NK1") == [NK1]


# ------------------------------------------------------------------------- the mappings


def test_v2_to_fhir_and_back_keeps_the_record() -> None:
    elements = translate.v2_to_fhir(PID_FIELDS, [PD1, NK1])
    assert elements == EXPECTED_FHIR
    fields, segs = translate.fhir_to_v2(elements)
    # PID-5: XPN-3 the further first names; PID-11: the birth place stays aside (FR Core).
    assert fields[5] == "JOSEPH^Marie-Line^Rose^^MME^^L~ANDRE^Marie-Line^^^^^D"
    assert (
        fields[11]
        == "12 rue Schoelcher^^Fort-de-France^^97200^FRA^H~1 rue du Port^^Le Robert^^97231^FRA^O"
    )
    for n in (13, 14, 15, 16, 24, 25):
        assert fields[n] == PID_FIELDS[n], n
    assert segs[1] == NK1
    assert translate.v2_to_fhir(fields, segs) == EXPECTED_FHIR


def test_delimiters_in_a_fhir_value_are_escaped() -> None:
    fields, segs = translate.fhir_to_v2(
        {
            "name": [{"use": "official", "family": "O^BRIEN|X", "given": ["Anne~Marie"]}],
            "contact": [{"name": {"family": "A&B"}}],
        }
    )
    assert fields[5] == "O\\S\\BRIEN\\F\\X^Anne\\R\\Marie^^^^^L"
    message = parse_message(
        f"MSH|^~\\&|A|B|C|D|||ADT^A28|1|P|2.5\rPID|||1||{fields[5]}\r{segs[0]}".encode()
    )
    pid_segment = message.segment("PID")
    assert pid_segment is not None and pid_segment.get(5) == "O^BRIEN|X"
    assert pid_segment.get(5, 2) == "Anne~Marie"
    nk1 = message.segment("NK1")
    assert nk1 is not None and nk1.get(2) == "A&B"


def test_the_birth_name_is_the_official_name_either_way() -> None:
    """An untyped name read as the birth name (PAM-FR, no L) is FHIR's official one, and an
    untyped FHIR name with no official one is PID-5's L."""
    fhir = translate.v2_to_fhir({5: "DUPONT^Jean~DURAND^Jean^^^^^D"}, [])
    assert [n.get("use") for n in fhir["name"]] == ["official", "usual"]
    fields, _ = translate.fhir_to_v2({"name": [{"family": "DUPONT", "given": ["Jean"]}]})
    assert fields[5] == "DUPONT^Jean^^^^^L"
    fields, _ = translate.fhir_to_v2(
        {"name": [{"family": "DUPONT", "use": "official"}, {"family": "DUP"}]}
    )
    assert fields[5] == "DUPONT^^^^^^L~DUP"


@pytest.mark.parametrize(
    ("v2", "v3"),
    [("M", "M"), ("S", "S"), ("D", "D"), ("W", "W"), ("C", "C"), ("A", "L"), ("E", "L"),
     ("N", "A"), ("P", "T"), ("G", "T"), ("B", "U"), ("I", "I")],
)  # fmt: skip
def test_marital_status_codes(v2: str, v3: str) -> None:
    fhir = translate.v2_to_fhir({16: v2}, [])
    assert fhir["maritalStatus"]["coding"] == [
        {"system": V3_MARITAL, "code": v3},
        {"system": V2_0002, "code": v2},
    ]
    # Back to v2: the v2 code as fed; from a v3 code alone, its v2 counterpart.
    assert translate.fhir_to_v2(fhir)[0][16] == f"{v2}^^HL70002"
    alone = {"maritalStatus": {"coding": [{"system": V3_MARITAL, "code": v3}]}}
    back = translate.fhir_to_v2(alone)[0][16].split("^")[0]
    assert translate.MARITAL[back] == v3


def test_unknown_marital_status_and_multiple_birth_flags() -> None:
    fhir = translate.v2_to_fhir({16: "U", 24: "N"}, [])
    assert fhir["maritalStatus"]["coding"][0]["code"] == "UNK"
    assert fhir["multipleBirthBoolean"] is False
    assert translate.fhir_to_v2({"multipleBirthBoolean": True})[0] == {24: "Y"}
    assert translate.fhir_to_v2({"multipleBirthInteger": 3})[0] == {24: "Y", 25: "3"}


def test_a_managing_organisation_is_pd1_3_when_no_organisation_is_the_gp() -> None:
    ref = {
        "display": "Clinique Saint-Paul",
        "identifier": {"system": f"urn:oid:{FINESS}", "value": "970200001"},
    }
    _, segs = translate.fhir_to_v2({"managingOrganization": ref})
    assert segs == [f"PD1|||Clinique Saint-Paul^^^^^&{FINESS}&ISO^^^^970200001"]
    # A literal reference without an identifier keeps its display only.
    _, segs = translate.fhir_to_v2(
        {"generalPractitioner": [{"reference": "Practitioner/12", "display": "Dr X"}]}
    )
    assert segs == ["PD1||||^Dr X"]


# ------------------------------------------------------------------------- the death


def _adt_death(ipp: str, when: str, flag: str, event: str = "A08") -> str:
    fields = pid(ipp).rstrip("\r").split("|")
    fields += [""] * (31 - len(fields))
    fields[29], fields[30] = when, flag
    return msh(event, f"D{next(_CONTROL)}") + "|".join(fields) + "\r"


_CONTROL = itertools.count(1)


def _death_day(db: Database, ipp: str) -> object:
    from sqlalchemy import select

    from enrs.identity.models import SourceIdentity

    with db.session(write=False) as session:
        return session.scalar(select(SourceIdentity.death_date).where(SourceIdentity.ipp == ipp))


def test_a_death_fed_by_adt_is_kept_and_read_over_both_protocols(
    feed: Feed, client: TestClient, token: str, db: Database
) -> None:
    """PID-29 and PID-30 (PAM-FR) are kept with the identity, given back as fed over PDQ and
    as ``deceasedDateTime`` over PDQm; the day is the identity's ``death_date`` (the imaging
    retention job's). A malformed one is refused (AR) and the identity keeps what it had."""
    assert code(feed.send(msh("A28", "D0") + pid("810"))) == "AA"
    assert _death_day(db, "810") is None
    assert code(feed.send(_adt_death("810", "202611301425-0400", "Y"))) == "AA"
    assert str(_death_day(db, "810")) == "2026-11-30"
    found = client.get("/fhir/Patient", params={"identifier": f"urn:oid:{CHU}|810"},
                       headers=auth(token)).json()  # fmt: skip
    [entry] = found["entry"]
    assert entry["resource"]["deceasedDateTime"] == "2026-11-30T14:25:00-04:00"
    answer = feed.send(q22("3", "@PID.3.1^810"))
    [found_pid] = segments(answer, "PID")
    assert found_pid.split("|")[29:31] == ["202611301425-0400", "Y"]
    for when, flag, error in (
        ("hier", "Y", "102"),
        ("20261131", "Y", "102"),  # no 31st of November
        ("", "X", "103"),
        ("20261130", "N", "102"),  # a date that the indicator denies
    ):
        refused = feed.send(_adt_death("810", when, flag))
        assert code(refused) == "AR" and err(refused)[0] == error, (when, flag)
    assert str(_death_day(db, "810")) == "2026-11-30"
    # A death known but not its day: the indicator alone, no day.
    assert code(feed.send(_adt_death("811", "", "Y", "A28"))) == "AA"
    assert _death_day(db, "811") is None
    found = client.get("/fhir/Patient", params={"identifier": f"urn:oid:{CHU}|811"},
                       headers=auth(token)).json()  # fmt: skip
    assert found["entry"][0]["resource"]["deceasedBoolean"] is True


def test_a_death_fed_over_fhir_is_kept_and_read_over_pdq(
    feed: Feed, client: TestClient, token: str, db: Database
) -> None:
    made = fhir_feed(client, token, fr_patient("820") | {"deceasedDateTime": "2026-11-30"})
    assert made.status_code == 201, made.text
    assert str(_death_day(db, "820")) == "2026-11-30"
    answer = feed.send(q22("4", "@PID.3.1^820"))
    [found_pid] = segments(answer, "PID")
    assert found_pid.split("|")[29:31] == ["20261130", "Y"]
    for bad in (
        {"deceasedDateTime": "30/11/2026"},
        {"deceasedDateTime": "2026-11-30", "deceasedBoolean": True},
        {"deceasedBoolean": "yes"},
    ):
        refused = fhir_feed(client, token, fr_patient("820") | bad)
        assert refused.status_code == 422, bad
        assert refused.json()["resourceType"] == "OperationOutcome"
    assert str(_death_day(db, "820")) == "2026-11-30"
    alive = fhir_feed(client, token, fr_patient("820") | {"deceasedBoolean": False})
    assert alive.status_code == 200, alive.text
    assert _death_day(db, "820") is None
    [found_pid] = segments(feed.send(q22("5", "@PID.3.1^820")), "PID")
    assert found_pid.split("|")[29:31] == ["", "N"]


@pytest.mark.parametrize(
    ("dtm", "fhir"),
    [
        ("2026", "2026"),
        ("202611", "2026-11"),
        ("20261130", "2026-11-30"),
        ("202611301425", "2026-11-30"),  # a time without its zone: the day alone
        ("20261130142507.25+0100", "2026-11-30T14:25:07+01:00"),
        ("202611301425-0400", "2026-11-30T14:25:00-04:00"),
        ("20261330", None),
        ("2026113", None),
        ("hier", None),
    ],
)
def test_dtm_and_fhir_datetime(dtm: str, fhir: str | None) -> None:
    assert translate.dtm_to_fhir(dtm) == fhir


def test_fhir_datetime_to_dtm_and_the_death_day() -> None:
    from datetime import date

    from enrs.identity import record

    assert translate.fhir_to_dtm("2026-11-30T14:25:00Z") == "20261130142500+0000"
    assert translate.fhir_to_dtm("2026-11-30T14:25:00-04:00") == "20261130142500-0400"
    assert translate.fhir_to_dtm("2026-11") == "202611"
    assert translate.fhir_to_dtm("2026-11-30T14:25") is None  # FHIR wants seconds and a zone
    assert translate.fhir_to_dtm("2026-02-30") is None
    day = record.death_date
    assert day({"fhir": {"deceasedDateTime": "2026-11-30T02:00:00+01:00"}}) == date(2026, 11, 30)
    assert day({"fhir": {"deceasedDateTime": "2024-02"}}) == date(2024, 2, 29)  # its last day
    assert day({"v2": {"PID": {"29": "2025", "30": "Y"}}}) == date(2025, 12, 31)
    assert day({"fhir": {"deceasedBoolean": True}}) is None
    assert day({"v2": {"PID": {"30": "Y"}}}) is None and day(None) is None
