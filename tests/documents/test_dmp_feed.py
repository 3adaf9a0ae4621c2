"""The feed to the DMP (issue 13): each eligible document (qualified INS, no opposition) sent
through the XDS.b adapter to the fake DMP over HTTP, retried with back-off, idempotent, its
status visible; the others held or skipped, never sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from enrs.documents import dmp_feed
from enrs.documents.dmp import XdsDmpAdapter
from enrs.documents.models import DmpExport, DocumentEntry
from enrs.identity import service as identity_service
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database, utcnow
from tests.documents.world import CHU, CHU_OID, DOCTOR_AT_CHU, Region, bundle, make_region, pdf
from tests.support.fake_dmp import FakeDmp
from tests.support.identities import person

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
