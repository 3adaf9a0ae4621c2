"""The feed to the DMP (issue 13): each eligible document (qualified INS, no opposition) sent
through the XDS.b adapter to the fake DMP over HTTP, retried with back-off, idempotent, its
status visible; the others held or skipped, never sent. A correction or a withdrawal of a
document the DMP holds follows by ITI-57; a replacement carries the RPLC association."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from enrs.documents import dmp_feed, service, xds
from enrs.documents.dmp import DmpOutcome, XdsDmpAdapter
from enrs.documents.models import DmpExport, DocumentEntry
from enrs.documents.terminology import Binding
from enrs.identity import service as identity_service
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database, utcnow
from tests.documents.world import (
    CHU,
    CHU_OID,
    DOCTOR_AT_CHU,
    Region,
    bundle,
    coding,
    make_region,
    pdf,
)
from tests.support.dmp_pki import make_pki
from tests.support.fake_dmp import FakeDmp, StoredDocument
from tests.support.identities import person
from tests.support.waiting import wait_until

INS = "2610497209123"
INS = f"{INS}{97 - int(INS) % 97:02d}"


@pytest.fixture
def region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    return make_region(app, client, db, tmp_path)


@pytest.fixture
def dmp() -> Iterator[FakeDmp]:
    fake = FakeDmp().start()
    yield fake
    fake.stop()


def _qualify(region: Region) -> None:
    """The CHU qualifies the patient's identity with the INS (INSi, then ADT)."""
    with region.db.transaction() as session:
        identity_service.feed(
            session,
            region.app.state.matcher,
            person(CHU_OID, "800001", ins=INS, status="QUAL"),
            actor="test",
            config=region.app.state.identity_config,
        )


def _file(region: Region, **options: Any) -> str:
    options.setdefault("author_rpps", DOCTOR_AT_CHU)
    options.setdefault("author_finess", CHU)
    answer = region.provide(bundle((pdf("Compte rendu DMP"), "application/pdf", options)))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def _send(region: Region, dmp: FakeDmp, timeout: float = 5.0) -> dmp_feed.Tally:
    with XdsDmpAdapter(dmp.url, timeout=timeout) as adapter:
        return dmp_feed.send_due(
            region.db, region.app.state.storage, adapter, source_id="1.2.250.1.999.4"
        )


def _status(region: Region, doc_id: str) -> DmpExport:
    with region.db.transaction(write=False) as session:
        entry = session.scalar(select(DocumentEntry).where(DocumentEntry.resource_id == doc_id))
        assert entry is not None
        row = dmp_feed.status_of(session, entry)
        assert row is not None
        session.expunge(row)
        return row


def _due_now(region: Region) -> None:
    with region.db.transaction() as session:
        session.execute(update(DmpExport).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def test_an_eligible_document_reaches_the_dmp_once(region: Region, dmp: FakeDmp) -> None:
    _qualify(region)
    doc = _file(region)
    tally = _send(region, dmp)
    assert tally.sent == 1
    [held] = dmp.documents()
    assert held.content == pdf("Compte rendu DMP")
    assert _status(region, doc).status == "sent"
    assert _send(region, dmp).sent == 0  # nothing due any more

    with region.db.transaction() as session:  # an administrator sends it again: idempotent
        entry = session.scalar(select(DocumentEntry).where(DocumentEntry.resource_id == doc))
        assert entry is not None
        dmp_feed.ask_again(session, entry)
    assert _send(region, dmp).sent == 1
    assert len(dmp.documents()) == 1 and _status(region, doc).status == "sent"
    with region.db.transaction(write=False) as session:
        exports = session.scalars(
            select(AuditRecord.patient_ref).where(AuditRecord.category == "dmp")
        ).all()
    assert exports == [f"Patient/{region.rri}"] * 2


def test_without_a_qualified_ins_the_document_waits(region: Region, dmp: FakeDmp) -> None:
    doc = _file(region)
    assert _send(region, dmp).held == 1
    assert dmp.calls == 0
    row = _status(region, doc)
    assert row.status == "held" and "INS" in (row.last_error or "")
    _qualify(region)
    _due_now(region)
    assert _send(region, dmp).sent == 1


def test_an_opposition_is_honoured_on_the_way_out(
    region: Region, dmp: FakeDmp, factory: Any
) -> None:
    _qualify(region)
    doc = _file(region)
    factory.user("regional", roles=("admin",))
    from tests.support.portal import log_in

    team = TestClient(region.app)
    log_in(team, "regional")
    opposed = team.post(
        "/api/documents/oppositions", json={"patient": f"Patient/{region.rri}", "document": doc}
    )
    assert opposed.status_code == 201
    assert _send(region, dmp).skipped == 1
    assert dmp.calls == 0 and _status(region, doc).status == "skipped"


def test_a_failing_dmp_is_retried_with_back_off(region: Region, dmp: FakeDmp) -> None:
    _qualify(region)
    doc = _file(region)
    dmp.fail_next(2, status=503)
    assert _send(region, dmp).retried == 1
    first = _status(region, doc)
    assert first.status == "pending" and first.attempts == 1
    assert _send(region, dmp).retried == 0  # not due yet: it waits its back-off
    _due_now(region)
    assert _send(region, dmp).retried == 1
    second = _status(region, doc)
    assert second.attempts == 2
    assert second.next_attempt_at - second.updated_at > first.next_attempt_at - first.updated_at
    _due_now(region)
    assert _send(region, dmp).sent == 1
    assert len(dmp.documents()) == 1


def test_a_refusal_is_final_and_says_why(region: Region) -> None:
    _qualify(region)
    doc = _file(region)
    refusing = FakeDmp(known_patients=[]).start()  # this patient has no DMP
    try:
        assert _send(region, refusing).refused == 1
    finally:
        refusing.stop()
    row = _status(region, doc)
    assert row.status == "refused" and "XDSUnknownPatientId" in (row.last_error or "")


# --- corrections, withdrawals and replacements after the document reached the DMP ----------------

LOINC = "2.16.840.1.113883.6.1"
JDV_J08 = "1.2.250.1.213.1.1.4.13"


def _put(region: Region, doc: str, **changes: Any) -> None:
    resource = region.client.get(f"/fhir/DocumentReference/{doc}", headers=region.chu).json()
    headers = {**region.chu, "Content-Type": "application/fhir+json"}
    url = f"/fhir/DocumentReference/{doc}"
    done = region.client.put(url, json={**resource, **changes}, headers=headers)
    assert done.status_code == 200, done.text


def _correct(region: Region, doc: str) -> None:
    """The author's structure corrects the type and hides the document from professionals."""
    labels = [{"coding": [coding(Binding.CONFIDENTIALITY, c)]} for c in ("N", "MASQUE_PS")]
    _put(region, doc, type={"coding": [coding(Binding.TYPE, "11488-4")]}, securityLabel=labels)


def _withdraw(region: Region, doc: str) -> None:
    _put(region, doc, status="entered-in-error")


def _sent(region: Region, dmp: FakeDmp) -> tuple[str, StoredDocument]:
    """A document filed for the qualified patient and sent: its id and what the DMP holds."""
    _qualify(region)
    doc = _file(region)
    assert _send(region, dmp).sent == 1
    [held] = dmp.documents()
    return doc, held


def _dmp_audit(region: Region) -> list[tuple[str, str, str | None]]:
    with region.db.transaction(write=False) as session:
        rows = session.execute(
            select(AuditRecord.action, AuditRecord.outcome, AuditRecord.detail)
            .where(AuditRecord.category == "dmp")
            .order_by(AuditRecord.seq)
        ).all()
    return [(action, outcome, detail) for action, outcome, detail in rows]


def test_a_correction_of_a_sent_document_reaches_the_dmp(region: Region, dmp: FakeDmp) -> None:
    doc, first = _sent(region, dmp)
    _correct(region, doc)
    row = _status(region, doc)
    assert (row.status, row.operation, row.dmp_version) == ("pending", "update", 1)
    assert _send(region, dmp).sent == 1
    old, new = dmp.versions(first.unique_id)
    assert old.status == xds.STATUS_DEPRECATED and new.status == xds.STATUS_APPROVED
    assert new.lid == old.entry_uuid == f"urn:uuid:{doc}" and new.version == 2
    assert new.codes["typeCode"] == [("11488-4", LOINC)]
    assert ("MASQUE_PS", JDV_J08) in new.codes["confidentialityCode"]
    row = _status(region, doc)
    assert (row.status, row.operation, row.dmp_version) == ("sent", "update", 2)
    assert _send(region, dmp).sent == 0  # nothing due any more
    assert _dmp_audit(region) == [("E", "0", None), ("U", "0", '{"dmp": "update"}')]


def test_a_withdrawal_deprecates_the_document_in_the_dmp(region: Region, dmp: FakeDmp) -> None:
    doc, first = _sent(region, dmp)
    _withdraw(region, doc)
    assert _status(region, doc).operation == "deprecate"
    assert _send(region, dmp).sent == 1
    [held] = dmp.versions(first.unique_id)
    assert held.status == xds.STATUS_DEPRECATED
    row = _status(region, doc)
    assert (row.status, row.operation, row.dmp_version) == ("sent", "deprecate", 1)
    assert _dmp_audit(region)[-1] == ("U", "0", '{"dmp": "deprecate"}')


def test_a_failing_update_is_retried_with_back_off(region: Region, dmp: FakeDmp) -> None:
    doc, first = _sent(region, dmp)
    _correct(region, doc)
    dmp.fail_next(1, status=503)
    assert _send(region, dmp).retried == 1
    row = _status(region, doc)
    assert (row.status, row.attempts) == ("pending", 1) and "503" in (row.last_error or "")
    assert _send(region, dmp).retried == 0  # it waits its back-off
    _due_now(region)
    assert _send(region, dmp).sent == 1
    assert len(dmp.versions(first.unique_id)) == 2
    assert [a[1] for a in _dmp_audit(region)] == ["0", "4", "0"]


def test_a_refused_update_is_kept_with_the_dmp_codes(region: Region, dmp: FakeDmp) -> None:
    doc, _ = _sent(region, dmp)
    _withdraw(region, doc)
    with FakeDmp() as other:  # a DMP that does not hold the document
        assert _send(region, other).refused == 1
    row = _status(region, doc)
    assert row.status == "refused" and "XDSMetadataUpdateError" in (row.last_error or "")
    assert _dmp_audit(region)[-1][:2] == ("U", "4")


@pytest.mark.parametrize("change", [_correct, _withdraw])
def test_an_update_the_dmp_applied_unanswered_counts_as_done(
    region: Region, dmp: FakeDmp, change: Any
) -> None:
    doc, first = _sent(region, dmp)
    change(region, doc)
    dmp.hang_next(1, seconds=1.0, then_process=True)  # applied after the courier gave up
    assert _send(region, dmp, timeout=0.3).retried == 1
    assert wait_until(lambda: dmp.held(first.unique_id) != first, timeout=10)
    _due_now(region)
    assert _send(region, dmp).sent == 1  # the repeat is already applied: done
    versions = dmp.versions(first.unique_id)
    assert len(versions) == (2 if change is _correct else 1)
    assert versions[-1].status == (
        xds.STATUS_APPROVED if change is _correct else xds.STATUS_DEPRECATED
    )
    row = _status(region, doc)
    assert row.status == "sent" and row.dmp_version == len(versions)


def test_a_document_never_sent_is_not_updated(region: Region, dmp: FakeDmp) -> None:
    withdrawn, corrected = _file(region), _file(region)
    assert _send(region, dmp).held == 2  # no qualified INS yet
    _withdraw(region, withdrawn)
    _correct(region, corrected)
    for doc in (withdrawn, corrected):
        row = _status(region, doc)
        assert (row.status, row.operation, row.dmp_version) == ("held", "register", None)
    _qualify(region)
    _due_now(region)
    tally = _send(region, dmp)
    assert (tally.skipped, tally.sent) == (1, 1)
    assert _status(region, withdrawn).status == "skipped"
    [held] = dmp.documents()  # the corrected one, with its current metadata, by ITI-41
    assert held.entry_uuid == f"urn:uuid:{corrected}" and held.version == 1
    assert held.codes["typeCode"] == [("11488-4", LOINC)]
    assert dmp.calls == 1


def test_a_replacement_supersedes_the_version_the_dmp_holds(region: Region, dmp: FakeDmp) -> None:
    first, held = _sent(region, dmp)
    second = _file(region, replaces=first)
    assert _send(region, dmp).sent == 1
    replaced, replacement = dmp.documents()
    assert replaced.status == xds.STATUS_DEPRECATED
    assert replacement.entry_uuid == f"urn:uuid:{second}"
    assert replacement.replaces == held.entry_uuid
    assert replacement.status == xds.STATUS_APPROVED


def test_a_version_replaced_before_it_was_sent_is_not_sent(region: Region, dmp: FakeDmp) -> None:
    _qualify(region)
    first = _file(region)
    second = _file(region, replaces=first)
    tally = _send(region, dmp)
    assert (tally.sent, tally.skipped) == (1, 1)
    assert _status(region, first).status == "skipped"
    [held] = dmp.documents()
    assert held.entry_uuid == f"urn:uuid:{second}" and held.replaces is None


class _WithdrawnWhileSending:
    """The DMP, reached while the author's structure withdraws the document."""

    def __init__(self, adapter: XdsDmpAdapter, region: Region, doc: str) -> None:
        self.adapter, self.region, self.doc = adapter, region, doc

    def send(self, doc: xds.XdsDocument) -> DmpOutcome:
        _withdraw(self.region, self.doc)
        return self.adapter.send(doc)

    def update(self, update: xds.XdsUpdate) -> DmpOutcome:
        return self.adapter.update(update)


def test_a_withdrawal_during_the_first_send_follows_it(region: Region, dmp: FakeDmp) -> None:
    _qualify(region)
    doc = _file(region)
    with XdsDmpAdapter(dmp.url, timeout=5) as adapter:
        racing = _WithdrawnWhileSending(adapter, region, doc)
        source = "1.2.250.1.999.4"
        assert (
            dmp_feed.send_due(region.db, region.app.state.storage, racing, source_id=source).sent
            == 1
        )
    row = _status(region, doc)
    assert (row.status, row.operation, row.dmp_version) == ("pending", "deprecate", 1)
    assert _send(region, dmp).sent == 1
    [held] = dmp.documents()
    assert held.status == xds.STATUS_DEPRECATED


# --- with the structure's certificate: HTTPS and a VIHF in every request ------------------------


def test_with_a_certificate_the_feed_signs_a_vihf_for_each_request(
    region: Region, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    _qualify(region)
    doc = _file(region)
    options = {"author_rpps": None, "author_finess": CHU}
    answer = region.provide(bundle((pdf("Sans RPPS"), "application/pdf", options)))
    assert answer.status_code == 200, answer.text
    no_rpps = str(answer.json()["entry"][1]["response"]["location"].split("/")[1])
    with FakeDmp(vihf_cert=pki.signer.cert, tls=pki.server) as national:
        settings = region.app.state.settings.model_copy(
            update={
                "dmp_url": national.url,
                "dmp_cert_file": pki.cert_file,
                "dmp_key_file": pki.key_file,
                "dmp_ca_file": pki.ca_file,
                "dmp_homologation": "HOMOL-TEST-01",
            }
        )

        def feed() -> dmp_feed.Tally:
            with dmp_feed.adapter_for(settings) as adapter:
                return dmp_feed.send_due(
                    region.db, region.app.state.storage, adapter, source_id="1.2.250.1.999.4"
                )

        tally = feed()
        assert (tally.sent, tally.refused) == (1, 1)
        assert _status(region, doc).status == "sent"
        refused = _status(region, no_rpps)
        assert refused.status == "refused" and "RPPS" in (refused.last_error or "")
        _withdraw(region, doc)  # ITI-57 carries its VIHF too
        assert feed().sent == 1
        [held] = national.documents()
        assert held.status == xds.STATUS_DEPRECATED


def test_an_opposition_after_sending_masks_the_document_in_the_dmp(
    region: Region, dmp: FakeDmp, factory: Any
) -> None:
    from tests.support.portal import log_in

    doc, first = _sent(region, dmp)
    factory.user("regional", roles=("admin",))
    team = TestClient(region.app)
    log_in(team, "regional")
    masked = ("MASQUE_PS", JDV_J08)

    def latest() -> StoredDocument:
        return dmp.versions(first.unique_id)[-1]

    # an opposition to this document: a new version masked to professionals
    opposed = team.post(
        "/api/documents/oppositions", json={"patient": f"Patient/{region.rri}", "document": doc}
    )
    assert opposed.status_code == 201
    assert _status(region, doc).operation == "update"
    assert _send(region, dmp).sent == 1
    assert masked in latest().codes["confidentialityCode"] and latest().version == 2
    # lifted: a new version without the mask
    assert team.delete(f"/api/documents/oppositions/{opposed.json()['id']}").status_code == 200
    assert _send(region, dmp).sent == 1
    assert masked not in latest().codes["confidentialityCode"] and latest().version == 3
    # an opposition to all sharing masks it again
    everything = team.post("/api/documents/oppositions", json={"patient": f"Patient/{region.rri}"})
    assert everything.status_code == 201
    assert _send(region, dmp).sent == 1
    assert masked in latest().codes["confidentialityCode"] and latest().version == 4
    assert _send(region, dmp).sent == 0  # nothing more to say


class _OpposedWhileSending:
    """The DMP, reached while the patient opposes sharing all their documents."""

    def __init__(self, adapter: XdsDmpAdapter, region: Region) -> None:
        self.adapter, self.region = adapter, region

    def send(self, doc: xds.XdsDocument) -> DmpOutcome:
        with self.region.db.transaction() as session:
            patient = identity_service.patient_by_rri(session, self.region.rri)
            assert patient is not None
            service.record_opposition(session, patient, actor="test", document=None, reason=None)
        return self.adapter.send(doc)

    def update(self, update: xds.XdsUpdate) -> DmpOutcome:
        return self.adapter.update(update)


def test_an_opposition_during_the_first_send_follows_it(region: Region, dmp: FakeDmp) -> None:
    _qualify(region)
    doc = _file(region)
    with XdsDmpAdapter(dmp.url, timeout=5) as adapter:
        racing = _OpposedWhileSending(adapter, region)
        source = "1.2.250.1.999.4"
        tally = dmp_feed.send_due(region.db, region.app.state.storage, racing, source_id=source)
    assert tally.sent == 1
    row = _status(region, doc)
    assert (row.status, row.operation, row.dmp_version) == ("pending", "update", 1)
    assert _send(region, dmp).sent == 1
    [_, masked] = dmp.versions(dmp.documents()[0].unique_id)
    assert ("MASQUE_PS", JDV_J08) in masked.codes["confidentialityCode"]
