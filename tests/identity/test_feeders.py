"""Feeders confined to their own patients: a system client (PIXm ITI-104, ``PUT Patient/{id}``)
and an HL7 v2 sender (ITI-30 over MLLP, with the ``hl7`` package's client) write only the
identities of the assigning authorities the admin registered for them; anything else is
refused, audited, and changes nothing. A new install accepts no sender."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import hl7
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from tests.conftest import Factory
from tests.identity.feeders import (
    CHU,
    CLINIC,
    feeder_token,
    register_domains,
    register_sender,
)
from tests.identity.test_fhir import FHIR_JSON, auth, feed, fr_patient
from tests.identity.test_hl7 import CONFIG, Feed, code, feed_server, msh, pid
from tests.identity.test_pam import OTHER, a24
from tests.support.portal import log_in

from enrs.accounts import service as accounts_service
from enrs.demo import DEMO_FINESS, DEMO_NAMESPACE, load_demo
from enrs.identity import domains
from enrs.identity.auth import finess_authority
from enrs.identity.config import IdentityConfig
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.settings import PLACEHOLDER_OID_ROOT, Settings

# --------------------------------------------------------------------------- helpers


def records(db: Database) -> list[AuditRecord]:
    with db.transaction() as session:
        return list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def failures(db: Database) -> list[tuple[str, str]]:
    """(outcome, description) of the audit records of failed calls or messages."""
    return [(r.outcome, r.outcome_desc or "") for r in records(db) if r.outcome != "0"]


def count_sources(db: Database) -> int:
    with db.transaction() as session:
        return len(list(session.scalars(select(SourceIdentity.id))))


def error(answer: hl7.Message) -> tuple[str, str, str]:
    """(ERR-2 location, ERR-3 code, ERR-8 text) of an acknowledgement."""
    err = answer.segment("ERR")
    return str(err[2]), str(answer["ERR.F3.R1.C1"]), str(answer["ERR.F8"])


def put_by_id(client: TestClient, token: str, source_id: str, body: dict[str, Any]) -> Response:
    headers = {"Content-Type": FHIR_JSON, **auth(token)}
    return client.put(f"/fhir/Patient/{source_id}", json={**body, "id": source_id}, headers=headers)


# --------------------------------------------------------------------------- FHIR


def test_a_client_writes_only_its_authorities_over_iti_104(
    client: TestClient, db: Database
) -> None:
    register_domains(db, [CLINIC])  # another facility's domain
    chu = feeder_token(client, db, "system/Patient.cruds", [CHU])
    refused = feed(client, chu, fr_patient("9", CLINIC))
    assert refused.status_code == 403
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "forbidden"
    assert f"assigning authority {CLINIC}" in outcome["issue"][0]["diagnostics"]
    assert count_sources(db) == 0
    assert failures(db) == [("4", outcome["issue"][0]["diagnostics"])]
    assert feed(client, chu, fr_patient("1")).status_code == 201  # its own


def test_a_client_cannot_update_another_facility_s_identity(
    client: TestClient, db: Database
) -> None:
    clinic = feeder_token(client, db, "system/Patient.cruds", [CLINIC])
    created = feed(client, clinic, fr_patient("9", CLINIC))
    assert created.status_code == 201
    source_id = created.json()["id"]
    chu = feeder_token(client, db, "system/Patient.cruds", [CHU])
    changed = fr_patient("9", CLINIC, family="DUCLOS", given=("Paul",), gender="male")
    by_id = put_by_id(client, chu, source_id, changed)
    assert by_id.status_code == 403 and CLINIC in by_id.json()["issue"][0]["diagnostics"]
    conditional = feed(client, chu, {**changed, "id": source_id})
    assert conditional.status_code == 403
    with db.transaction() as session:
        source = session.get(SourceIdentity, int(source_id))
        assert source is not None and (source.version, source.birth_name) == (1, "JOSEPH")
    assert [outcome for outcome, _ in failures(db)] == ["4", "4"]
    assert put_by_id(client, clinic, source_id, changed).status_code == 200


def test_a_revoked_client_writes_no_more_with_the_token_it_holds(
    client: TestClient, db: Database
) -> None:
    token = feeder_token(client, db, "system/Patient.cruds", [CHU])
    assert feed(client, token, fr_patient("1")).status_code == 201
    with db.transaction() as session:
        client_id = next(
            r.key for r in accounts_service.list_registrations(session) if r.kind == "system"
        )
        accounts_service.revoke(session, client_id)
    refused = feed(client, token, fr_patient("2"))
    assert refused.status_code == 403 and "not an active" in refused.text
    assert count_sources(db) == 1


def test_the_identity_cell_writes_for_every_authority(client: TestClient, factory: Factory) -> None:
    factory.user("cellule", roles=("identitovigilance",))
    log_in(client, "cellule")
    body = fr_patient("9", CLINIC)
    url = f"/fhir/Patient?identifier={quote(f'urn:oid:{CLINIC}|9')}"
    headers = {"Content-Type": FHIR_JSON}
    unregistered = client.put(url, json=body, headers=headers)  # a domain nobody declared
    assert unregistered.status_code == 422
    assert f"authority urn:oid:{CLINIC} is not registered" in unregistered.text
    register_domains(factory.db, [CLINIC])
    response = client.put(url, json=body, headers=headers)
    assert response.status_code == 201, response.text


def test_a_client_needs_its_authorities_registered_as_oids(db: Database) -> None:
    with db.transaction() as session, pytest.raises(Exception, match="OID"):
        accounts_service.create_client(
            session, name="x", scope="system/Patient.cu", authorities=["CHU-X"]
        )


# --------------------------------------------------------------------------- facility registry

CHU_FINESS, CLINIC_FINESS = "970100004", "970200002"  # made up, right keys


def own(db: Database, oid: str, finess: str) -> None:
    """The member facility ``finess`` owns the domain ``oid`` (``--owner``)."""
    with db.transaction() as session:
        domains.add(
            session, IdentityConfig(PLACEHOLDER_OID_ROOT), oid, namespace=None, owner=finess
        )


def facility_token(client: TestClient, db: Database, finess: str) -> str:
    """A token of a new system client of the facility ``finess`` (no domain bound by name)."""
    with db.transaction() as session:
        made, secret = accounts_service.create_client(
            session, name=f"DPI {finess}", scope="system/Patient.cruds", finess=finess
        )
    answer = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(made.client_id, secret)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_a_facility_s_client_writes_the_domains_its_facility_owns(
    client: TestClient, db: Database
) -> None:
    own(db, CHU, CHU_FINESS)
    own(db, CLINIC, CLINIC_FINESS)
    chu = facility_token(client, db, CHU_FINESS)
    assert feed(client, chu, fr_patient("1")).status_code == 201  # the CHU's domain
    refused = feed(client, chu, fr_patient("9", CLINIC))
    assert refused.status_code == 403 and f"authority {CLINIC}" in refused.text
    assert count_sources(db) == 1
    # The clinic's domain handed over to the CHU (a merger): the next request may write it.
    own(db, CLINIC, CHU_FINESS)
    assert feed(client, chu, fr_patient("9", CLINIC)).status_code == 201
    clinic = facility_token(client, db, CLINIC_FINESS)
    assert feed(client, clinic, fr_patient("8", CLINIC)).status_code == 403


def test_a_facility_needs_a_finess_with_its_key(db: Database) -> None:
    with db.transaction() as session, pytest.raises(Exception, match="does not check"):
        accounts_service.create_client(
            session, name="x", scope="system/Patient.cu", finess="970100005"
        )
    with db.transaction() as session, pytest.raises(Exception, match="does not check"):
        domains.add(
            session, IdentityConfig(PLACEHOLDER_OID_ROOT), CHU, namespace=None, owner="970100005"
        )


def test_an_mllp_sender_writes_the_domains_its_facility_owns(database_url: str) -> None:
    with feed_server(database_url, {}) as running:
        own(running.db, CHU, CHU_FINESS)
        own(running.db, CLINIC, CLINIC_FINESS)
        with running.db.transaction() as session:
            accounts_service.create_mllp_sender(
                session, name="GAM CHU", sender_oid=CHU, finess=CHU_FINESS
            )
        assert code(running.send(msh("A28", "1") + pid("1"))) == "AA"
        answer = running.send(msh("A28", "2") + pid("9", authority=CLINIC))
        assert code(answer) == "AE" and error(answer)[:2] == ("PID^1^3", "103")
        assert running.count(SourceIdentity) == 1


# --------------------------------------------------------------------------- HL7 v2


@pytest.fixture
def chu_feed(database_url: str) -> Iterator[Feed]:
    """A feed where the CHU's sender writes the CHU's identities, the clinic's its own."""
    with feed_server(database_url, {CHU: (CHU,), CLINIC: (CLINIC,)}) as running:
        yield running


def clinic_says(feed: Feed) -> None:
    """The clinic feeds its own identities 1 and 2 (two persons)."""
    head = msh("A28", "c1", facility=f"CLINIC^{CLINIC}^ISO")
    assert code(feed.send(head + pid("1", authority=CLINIC))) == "AA"
    head = msh("A28", "c2", facility=f"CLINIC^{CLINIC}^ISO")
    assert code(feed.send(head + pid("2", authority=CLINIC, **OTHER))) == "AA"


def patients(feed: Feed) -> dict[str, int | None]:
    with feed.db.transaction() as session:
        rows = session.scalars(select(SourceIdentity).where(SourceIdentity.authority == CLINIC))
        return {s.ipp: s.patient_id for s in rows if s.active}


def test_a28_naming_another_facility_is_refused(chu_feed: Feed) -> None:
    answer = chu_feed.send(msh("A28", "1") + pid("9", authority=CLINIC))
    assert code(answer) == "AE"
    where, err_code, text = error(answer)
    assert (where, err_code) == ("PID^1^3", "103") and f"authority {CLINIC}" in text
    # An identifier of the other facility beside its own IPP is refused too.
    both = pid("9").replace(f"&{CHU}&ISO^PI", f"&{CHU}&ISO^PI~77^^^&{CLINIC}&ISO^PI")
    answer = chu_feed.send(msh("A28", "2") + both)
    assert code(answer) == "AE" and error(answer)[0] == "PID^1^3"
    assert chu_feed.count(SourceIdentity) == 0
    assert [outcome for outcome, _ in failures(chu_feed.db)] == ["4", "4"]
    assert CLINIC in failures(chu_feed.db)[0][1]
    # Its own identity, with an INS beside the IPP (an INS is nobody's IPP): applied.
    own = msh("A28", "3") + pid("9", ins="261049720912388", status="QUAL")
    assert code(chu_feed.send(own)) == "AA"


def test_a40_merging_another_facility_s_patients_is_refused(chu_feed: Feed) -> None:
    clinic_says(chu_feed)
    before = patients(chu_feed)
    theirs = chu_feed.send(msh("A40", "m1") + pid("1", authority=CLINIC) + mrg_of("2", CLINIC))
    assert code(theirs) == "AE" and error(theirs)[:2] == ("PID^1^3", "103")
    prior = chu_feed.send(msh("A40", "m2") + pid("1") + mrg_of("2", CLINIC))
    assert code(prior) == "AE" and error(prior)[:2] == ("MRG^1^1", "103")
    assert f"authority {CLINIC}" in error(prior)[2]
    # Every PID/MRG group counts: a first group of its own does not carry a second.
    groups = pid("5") + mrg_of("6", CHU) + pid("1", authority=CLINIC) + mrg_of("2", CLINIC)
    mixed = chu_feed.send(msh("A40", "m3") + groups)
    assert code(mixed) == "AE" and error(mixed)[0] == "PID^2^3"
    assert patients(chu_feed) == before
    assert chu_feed.source(CHU, "5") is None
    with chu_feed.db.transaction() as session:
        assert all(p.active for p in session.scalars(select(RegionalPatient)))
    assert [outcome for outcome, _ in failures(chu_feed.db)] == ["4", "4", "4"]


def mrg_of(ipp: str, authority: str) -> str:
    return f"MRG|{ipp}^^^&{authority}&ISO^PI\r"


def test_a47_reidentifying_another_facility_s_patient_is_refused(chu_feed: Feed) -> None:
    clinic_says(chu_feed)
    theirs = chu_feed.send(msh("A47", "x1") + pid("10", authority=CLINIC) + mrg_of("1", CLINIC))
    assert code(theirs) == "AE" and error(theirs)[:2] == ("PID^1^3", "103")
    prior = chu_feed.send(msh("A47", "x2") + pid("10") + mrg_of("1", CLINIC))
    assert code(prior) == "AE" and error(prior)[:2] == ("MRG^1^1", "103")
    assert chu_feed.source(CLINIC, "1") is not None and chu_feed.source(CLINIC, "10") is None
    assert [outcome for outcome, _ in failures(chu_feed.db)] == ["4", "4"]


@pytest.mark.parametrize("event", ["A24", "A37"])
def test_a24_a37_of_another_facility_s_patients_are_refused(chu_feed: Feed, event: str) -> None:
    clinic_says(chu_feed)
    before = patients(chu_feed)
    theirs = a24("l1", "1", "2", event=event).replace(f"&{CHU}&ISO^PI", f"&{CLINIC}&ISO^PI")
    answer = chu_feed.send(theirs)
    assert code(answer) == "AE" and error(answer)[:2] == ("PID^1^3", "103")
    second = chu_feed.send(a24("l2", "1", "2", authority=CLINIC, event=event))
    assert code(second) == "AE" and error(second)[:2] == ("PID^2^3", "103")
    assert patients(chu_feed) == before
    assert [outcome for outcome, _ in failures(chu_feed.db)] == ["4", "4"]


def test_an_unregistered_sender_is_rejected(chu_feed: Feed) -> None:
    stranger = chu_feed.send(msh("A28", "1", facility="EVIL^1.2.3.4^ISO") + pid("1"))
    assert code(stranger) == "AR"
    assert error(stranger)[:2] == ("MSH^1^4", "103") and "not registered" in error(stranger)[2]
    unnamed = chu_feed.send(msh("A28", "2", facility="CHU-X") + pid("1"))  # no OID, no FINESS
    assert code(unnamed) == "AR" and error(unnamed)[0] == "MSH^1^4"
    query = chu_feed.send(
        msh("Q23", "3", facility="EVIL^1.2.3.4^ISO") + f"QPD|Q|T|1^^^&{CHU}&ISO^PI\r"
    )
    assert code(query) == "AR" and error(query)[0] == "MSH^1^4"
    assert chu_feed.count(SourceIdentity) == 0
    assert [outcome for outcome, _ in failures(chu_feed.db)] == ["8", "8", "8"]
    with chu_feed.db.transaction() as session:
        first = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).first()
        assert first is not None and first.agent_id == "1.2.3.4"


def test_a_new_install_refuses_every_message(database_url: str) -> None:
    with feed_server(database_url, {}) as fresh:
        answer = fresh.send(msh("A28", "1") + pid("1"))
        assert code(answer) == "AR" and error(answer)[0] == "MSH^1^4"
        query = fresh.send(msh("Q23", "2") + f"QPD|Q|T|1^^^&{CHU}&ISO^PI\r")
        assert code(query) == "AR" and error(query)[0] == "MSH^1^4"
        assert fresh.count(SourceIdentity) == 0 and fresh.count(AuditRecord) == 2


def test_a_sender_s_scopes_are_checked(database_url: str) -> None:
    db = Database(database_url)
    register_sender(db, CHU, [CHU], scope="system/Patient.s")  # PIX queries only
    register_sender(db, CLINIC, [CLINIC], scope="system/Patient.cu")  # feeds only
    db.dispose()
    with feed_server(database_url, {}) as running:
        write = running.send(msh("A28", "1") + pid("1"))
        assert code(write) == "AR" and error(write)[:2] == ("MSH^1^9", "200")
        assert "system/Patient.cu" in error(write)[2]
        clinic = f"CLINIC^{CLINIC}^ISO"
        fed = running.send(msh("A28", "2", facility=clinic) + pid("1", authority=CLINIC))
        assert code(fed) == "AA"
        query = msh("Q23", "3", facility=clinic) + f"QPD|Q|T|1^^^&{CLINIC}&ISO^PI\r"
        asked = running.send(query)
        assert code(asked) == "AR" and error(asked)[0] == "MSH^1^9"
        allowed = running.send(msh("Q23", "4") + f"QPD|Q|T|1^^^&{CLINIC}&ISO^PI\r")
        assert code(allowed) == "AA"


def test_a_sender_known_by_its_finess(database_url: str) -> None:
    oid = finess_authority("000897406", CONFIG)
    with feed_server(database_url, {oid: (oid,)}) as running:
        message = msh("A28", "1", facility="CHU-X^000897406^M") + pid("1").replace(
            f"^^^&{CHU}&ISO^PI", "^^^CHU-X&000897406&M^PI"
        )
        assert code(running.send(message)) == "AA"
        assert running.source(oid, "1") is not None


def test_a_revocation_applies_within_the_cache_expiry(database_url: str) -> None:
    ttl = 0.5
    with feed_server(database_url, {CHU: (CHU,)}, sender_ttl=ttl) as running:
        assert code(running.send(msh("A28", "1") + pid("1"))) == "AA"
        with running.db.transaction() as session:
            accounts_service.revoke(session, CHU)
        revoked_at = time.monotonic()
        while code(answer := running.send(msh("A28", "2") + pid("2"))) == "AA":
            assert time.monotonic() - revoked_at < ttl + 2, "revocation not applied"
            time.sleep(0.05)
        assert error(answer)[0] == "MSH^1^4"
        assert running.source(CHU, "1") is not None


def test_the_demo_registers_a_sender_and_a_client_that_work(
    settings: Settings, client: TestClient, db: Database
) -> None:
    first, again = load_demo(settings), load_demo(settings)  # idempotent
    assert any("Demo MLLP sender" in line for line in first)
    assert [line for line in again if "client_id=" in line] == [
        line for line in first if "client_id=" in line
    ]
    authority = finess_authority(DEMO_FINESS, IdentityConfig.from_settings(settings))
    register_domains(db, [CHU])  # another facility of the region
    with db.transaction() as session:
        kinds = sorted((r.kind, r.finess) for r in accounts_service.list_registrations(session))
        owned = [d.oid for d in domains.owned_by(session, DEMO_FINESS)]
    assert kinds == [("mllp", DEMO_FINESS), ("system", DEMO_FINESS)] and owned == [authority]
    with feed_server(settings.database_url, {}) as running:
        facility = f"{DEMO_NAMESPACE}^{DEMO_FINESS}^M"
        person = pid("1001").replace(f"^^^&{CHU}&ISO^PI", f"^^^{DEMO_NAMESPACE}&{DEMO_FINESS}&M^PI")
        assert code(running.send(msh("A28", "d1", facility=facility) + person)) == "AA"
        elsewhere = running.send(msh("A28", "d2", facility=facility) + pid("1002"))
        assert code(elsewhere) == "AE"
    creds = json.loads((settings.data_dir / "demo-client.json").read_text())
    token = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(creds["client_id"], creds["client_secret"]),
    ).json()["access_token"]
    assert feed(client, token, fr_patient("1003", authority)).status_code == 201
    assert feed(client, token, fr_patient("1004", CHU)).status_code == 403
