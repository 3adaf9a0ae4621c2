"""Documents by HL7 v2 over MLLP (issue 13): MDM^T02 and ORU^R01 carrying a PDF or a CDA in an
OBX of type ED, sent by hl7's MLLP client to the platform's listener; acknowledged AA and
found by ITI-67, or refused AE/AR with an ERR naming the problem and nothing stored."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hl7.client import MLLPClient
from sqlalchemy import func, select

from enrs import mllp_routes
from enrs.accounts import service as accounts_service
from enrs.documents.models import DocumentEntry
from enrs.identity.hl7 import IdentityFeed
from enrs.kit.audit.models import AuditRecord
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.settings import Settings
from tests.documents.world import (
    CHU,
    CHU_OID,
    CLINIC,
    DOCTOR_AT_CHU,
    IPP,
    Region,
    make_region,
    pdf,
)
from tests.support.mllp import serving

SENDER = "1.2.250.1.999.1"  # the CHU's interface engine (MSH-4)


@pytest.fixture
def region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    return make_region(app, client, db, tmp_path)


@pytest.fixture
def port(region: Region, settings: Settings) -> Iterator[int]:
    """The platform's MLLP handler, with every route, on a free port; the CHU's interface
    engine registered to write its own domain (documents and identities)."""
    with region.db.transaction() as session:
        accounts_service.create_mllp_sender(
            session,
            name="Moteur CHU",
            sender_oid=SENDER,
            authorities=[CHU_OID],
            scope="system/Patient.cu system/DocumentReference.cu",
            finess=CHU,
        )
    db = Database(settings.database_url)
    audit = AuditWriter(db)
    routes = mllp_routes.platform_routes(settings)
    handler = IdentityFeed(
        db, region.app.state.matcher, audit, config=region.app.state.identity_config, routes=routes
    )
    try:
        with serving(handler) as port:
            yield port
    finally:
        audit.close()
        db.dispose()


def send(port: int, message: str) -> hl7.Message:
    with MLLPClient("127.0.0.1", port) as client:
        raw = client.send_message(message)
    return hl7.parse(raw[1:-2].decode())


def ack(answer: hl7.Message) -> tuple[str, str]:
    errors = [str(s[8]) for s in answer if str(s[0]) == "ERR"]
    return str(answer["MSA.F1"]), " ".join(errors)


def _ed(data: bytes, subtype: str) -> str:
    return f"^TEXT^{subtype}^Base64^{base64.b64encode(data).decode()}"


def mdm(control: str, data: bytes, *, subtype: str = "PDF", unique: str = "1.2.250.1.999.7.1",
        ipp: str = IPP, type_code: str = "11490-0", parent: str = "", extra: str = "",
        event: str = "T02", sender: str = SENDER) -> str:  # fmt: skip
    return "\r".join(
        [
            f"MSH|^~\\&|DPI|CHU^{sender}^ISO|ENRS|ENRS|20261201103000||MDM^{event}^MDM_T02|{control}|P|2.5",
            f"EVN|{event}|20261201103000",
            f"PID|||{ipp}^^^CHU&{CHU_OID}&ISO^PI||JOSEPH^Marie-Line^^^^^L||19610409|F",
            "PV1||I",
            f"TXA|1|CR|AP|20261201093000|8{DOCTOR_AT_CHU}^MARTIN^Paul|||||||{unique}|{parent}||||AU",
            f"OBX|1|ED|{type_code}^Lettre de sortie^LN||{_ed(data, subtype)}||||||F",
            "OBX|2|CE|FACILITY_TYPE^Secteur d'activité||SA01^Établissement public de santé^1.2.250.1.71.4.2.4||||||F",
            "OBX|3|CE|PRACTICE_SETTING^Cadre d'exercice||ETABLISSEMENT^Établissement de santé^1.2.250.1.213.1.1.4.9||||||F",
            *([extra] if extra else []),
        ]
    )


CDA = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="1.2.250.1.999.7.5" extension="CR1"/>
  <code code="11490-0" codeSystem="2.16.840.1.113883.6.1" displayName="Lettre de sortie"/>
  <title>Lettre de sortie</title>
  <effectiveTime value="20261201093000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <recordTarget><patientRole>
    <id root="{chu}" extension="{ipp}"/>
    <patient><name><family qualifier="BR">JOSEPH</family><given>Marie-Line</given></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>
      <birthTime value="19610409"/></patient>
  </patientRole></recordTarget>
  <author><time value="20261201093000+0100"/><assignedAuthor>
    <id root="1.2.250.1.71.4.2.1" extension="8{rpps}"/>
    <assignedPerson><name><family>MARTIN</family><given>Paul</given></name></assignedPerson>
    <representedOrganization><id root="1.2.250.1.71.4.2.2" extension="1{chu_finess}"/></representedOrganization>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="1{chu_finess}"/>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <documentationOf><serviceEvent>
    <effectiveTime><low value="20261125080000+0100"/><high value="20261201090000+0100"/></effectiveTime>
    <performer typeCode="PRF"><assignedEntity><id root="1.2.250.1.71.4.2.1" extension="8{rpps}"/>
      <representedOrganization>
        <standardIndustryClassCode code="ETABLISSEMENT" codeSystem="1.2.250.1.213.1.1.4.9"/>
      </representedOrganization></assignedEntity></performer>
  </serviceEvent></documentationOf>
  <componentOf><encompassingEncounter><effectiveTime value="20261125"/>
    <location><healthCareFacility><code code="SA01" codeSystem="1.2.250.1.71.4.2.4"/></healthCareFacility></location>
  </encompassingEncounter></componentOf>
  <component><nonXMLBody><text mediaType="application/pdf" representation="B64">{pdf}</text></nonXMLBody></component>
</ClinicalDocument>
"""


def cda(ipp: str = IPP) -> bytes:
    return CDA.format(
        chu=CHU_OID, ipp=ipp, rpps=DOCTOR_AT_CHU, chu_finess=CHU,
        pdf=base64.b64encode(pdf("Lettre de sortie CDA")).decode(),
    ).encode()  # fmt: skip


def oru(control: str, data: bytes) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|DPI|CHU^{SENDER}^ISO|ENRS|ENRS|20261201103000||ORU^R01^ORU_R01|{control}|P|2.5",
            f"PID|||{IPP}^^^CHU&{CHU_OID}&ISO^PI||JOSEPH^Marie-Line^^^^^L||19610409|F",
            "OBR|1||CR1^DPI|11490-0^Lettre de sortie^LN|||20261201093000",
            f"OBX|1|ED|11490-0^Lettre de sortie^LN||{_ed(data, 'XML')}||||||F",
            "OBX|2|CE|MASQUE_PS^Masqué aux professionnels||Y||||||F",
        ]
    )


def _count(region: Region) -> int:
    with region.db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(DocumentEntry)) or 0)


def _found(region: Region) -> list[dict[str, object]]:
    answer = region.client.get(
        f"/fhir/DocumentReference?patient=Patient/{region.rri}", headers=region.chu
    )
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_mdm_t02_files_a_pdf(region: Region, port: int) -> None:
    answer = send(port, mdm("M1", pdf("Lettre MDM")))
    assert ack(answer)[0] == "AA", ack(answer)
    [doc] = _found(region)
    assert doc["masterIdentifier"]["value"] == "urn:oid:1.2.250.1.999.7.1"  # type: ignore[index]
    got = region.client.get(doc["content"][0]["attachment"]["url"], headers=region.chu)  # type: ignore[index]
    assert got.content == pdf("Lettre MDM")

    update = send(
        port,
        mdm("M2", pdf("Lettre corrigée"), unique="1.2.250.1.999.7.2", parent="1.2.250.1.999.7.1"),
    )
    assert ack(update)[0] == "AA", ack(update)
    statuses = sorted(str(d["status"]) for d in _found(region))
    assert statuses == ["current", "superseded"]


def test_oru_r01_files_a_cda_with_its_header(region: Region, port: int) -> None:
    answer = send(port, oru("O1", cda()))
    assert ack(answer)[0] == "AA", ack(answer)
    [doc] = _found(region)
    assert doc["type"]["coding"][0]["code"] == "11490-0"  # type: ignore[index]
    labels = {c["code"] for s in doc["securityLabel"] for c in s["coding"]}  # type: ignore[attr-defined]
    assert labels == {"N", "MASQUE_PS"}


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (lambda: mdm("B1", b"not a pdf at all"), "AE", "not application/pdf"),
        (lambda: mdm("B2", pdf(), type_code="99999-9"), "AE", "99999-9"),
        (lambda: mdm("B3", pdf(), ipp="NOBODY"), "AE", "knows no patient"),
        (lambda: mdm("B4", pdf()).replace("^Base64^", "^Base64^%%%"), "AE", "base64"),
        (lambda: oru("B5", cda(ipp="NOBODY")), "AE", "recordTarget"),
        (lambda: oru("B6", b"<ClinicalDocument>broken"), "AE", "CDA"),
        (
            lambda: mdm("B7", pdf()).replace(f"CHU&{CHU_OID}", "CLINIQUE&1.2.250.1.999.2.1"),
            "AE",
            "may not write",
        ),
        (
            lambda: mdm(
                "B8",
                pdf(),
                extra="OBX|4|CE|MASQUE_PS^Masqué||Y||||||F\rOBX|5|CE|INVISIBLE_PATIENT^Invisible||Y||||||F",
            ),
            "AE",
            "MASQUE_PS and INVISIBLE_PATIENT together",
        ),
    ],
)
def test_bad_messages_are_refused_and_nothing_is_stored(
    region: Region, port: int, message: object, code: str, words: str
) -> None:
    assert ack(send(port, mdm("OK", pdf(), unique="1.2.250.1.999.7.100")))[0] == "AA"
    answer = send(port, message())  # type: ignore[operator]
    got, errors = ack(answer)
    assert got == code and words in errors, (got, errors)
    assert _count(region) == 1
    assert (
        ack(send(port, mdm("OK2", pdf(), unique="1.2.250.1.999.7.9")))[0] == "AA"
    )  # still serving


def cancel(control: str, unique: str, *, sender: str = SENDER) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|DPI|CHU^{sender}^ISO|ENRS|ENRS|20261202103000||MDM^T11^MDM_T01|{control}|P|2.5",
            "EVN|T11|20261202103000",
            f"PID|||{IPP}^^^CHU&{CHU_OID}&ISO^PI||JOSEPH^Marie-Line^^^^^L||19610409|F",
            "PV1||I",
            f"TXA|1|CR|AP|20261202093000||||||||{unique}|||||CA",
        ]
    )


def test_mdm_t10_replaces_and_t11_withdraws_by_the_authors_structure(
    region: Region, port: int
) -> None:
    first, second = "1.2.250.1.999.7.1", "1.2.250.1.999.7.2"
    assert ack(send(port, mdm("R1", pdf("Lettre v1"), unique=first)))[0] == "AA"
    # T10 without the replaced version: refused, nothing filed
    refused = send(port, mdm("R2", pdf("Lettre v2"), unique=second, event="T10"))
    assert ack(refused)[0] == "AE" and "TXA-13" in ack(refused)[1]
    assert _count(region) == 1
    replaced = send(port, mdm("R3", pdf("Lettre v2"), unique=second, parent=first, event="T10"))
    assert ack(replaced)[0] == "AA", ack(replaced)
    statuses = {d["masterIdentifier"]["value"]: d["status"] for d in _found(region)}  # type: ignore[index]
    assert statuses == {f"urn:oid:{first}": "superseded", f"urn:oid:{second}": "current"}

    # Another facility's engine, even one allowed the same domain, cannot cancel it.
    clinic = "1.2.250.1.999.2"
    with region.db.transaction() as session:
        accounts_service.create_mllp_sender(
            session, name="Moteur clinique", sender_oid=clinic, authorities=[CHU_OID],
            scope="system/Patient.cu system/DocumentReference.cu", finess=CLINIC,
        )  # fmt: skip
    foreign = send(port, cancel("C1", second, sender=clinic))
    assert ack(foreign)[0] == "AE" and "author's structure" in ack(foreign)[1]
    unknown = send(port, cancel("C2", "1.2.250.1.999.7.99"))
    assert ack(unknown)[0] == "AE" and "1.2.250.1.999.7.99" in ack(unknown)[1]
    assert {d["status"] for d in _found(region)} == {"superseded", "current"}

    assert ack(send(port, cancel("C3", second)))[0] == "AA"
    with region.db.transaction(write=False) as session:
        entry = session.scalar(select(DocumentEntry).where(DocumentEntry.unique_id == second))
        assert entry is not None and entry.status == "entered-in-error"
        actions = session.scalars(
            select(AuditRecord.action).where(
                AuditRecord.entity_ref == f"DocumentReference/{entry.resource_id}"
            )
        ).all()
    assert "U" in actions
    assert ack(send(port, cancel("C4", second)))[0] == "AA"  # again: already withdrawn
