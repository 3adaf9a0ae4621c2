"""The retention job (issue 13): the only physical deletion of a document — rows and content
gone, each deletion in the audit trail with the patient — a patient's record as a whole, as
French law counts it (R.1112-7: after the last document, a minor's until their 28th birthday,
10 years after a death), and nothing younger touched."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from enrs.documents import retention
from enrs.documents.models import DmpExport, DocumentEntry, SubmissionSet
from enrs.identity import service as identity_service
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database, utcnow
from enrs.settings import Settings
from tests.documents.world import CHU_OID, Region, bundle, make_region, pdf
from tests.support.identities import person
from tests.support.live_server import run_enrs


def _file(region: Region, text: str, rri: str | None = None) -> str:
    """A PDF filed for the region's patient (or ``rri``): its DocumentReference id."""
    patient = {"reference": f"Patient/{rri}"} if rri else None
    answer = region.provide(bundle((pdf(text), "application/pdf", {}), patient=patient))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def _aged(db: Database, years: float, *ids: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(DocumentEntry)
            .where(DocumentEntry.resource_id.in_(ids))
            .values(date=utcnow() - timedelta(days=round(365.25 * years)))
        )


def _ago(years: float) -> date:
    return (utcnow() - timedelta(days=round(365.25 * years))).date()


NAMES = {  # each patient a name of its own: none is matched to another
    "IPP-2": "MARTIN", "IPP-Y": "BERNARD", "IPP-A": "THOMAS", "IPP-U": "PETIT",
    "IPP-M": "ROBERT", "IPP-B": "RICHARD", "IPP-R": "DURAND", "IPP-C": "LEROY",
    "IPP-M2": "MOREAU", "IPP-F": "SIMON",
}  # fmt: skip


def _patient(app: FastAPI, db: Database, ipp: str, born: date | None, died: date | None) -> str:
    """Another regional patient (a CHU identity of its own name, born ``born``, and dead
    ``died`` as FHIR ``deceasedDateTime`` gives it): its RRI."""
    record = {"fhir": {"deceasedDateTime": died.isoformat()}} if died else None
    data = person(CHU_OID, ipp, birth_name=NAMES[ipp], birth_date=born, record=record)
    with db.transaction() as session:
        fed = identity_service.feed(
            session, app.state.matcher, data, actor="test", config=app.state.identity_config
        )
    return fed.rri


def _left(db: Database) -> list[str]:
    with db.transaction(write=False) as session:
        return sorted(session.scalars(select(DocumentEntry.resource_id)))


def _deleted(db: Database) -> list[tuple[str | None, str | None, str]]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(AuditRecord.entity_ref, AuditRecord.patient_ref, AuditRecord.detail).where(
                AuditRecord.category == "retention", AuditRecord.interaction == "delete"
            )
        ).all()
    return [(ref, patient, json.loads(detail or "{}")["rule"]) for ref, patient, detail in rows]


def test_a_record_goes_20_years_after_its_last_document_and_is_audited(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, settings: Settings
) -> None:
    """An old document of a patient with a recent one is kept; once the last is past the
    period, all go, each deletion audited with the patient and the rule."""
    region = make_region(app, client, db, tmp_path)
    old, recent = _file(region, "ancien"), _file(region, "récent")
    other_rri = _patient(app, db, "IPP-2", date(1950, 1, 1), None)
    other = _file(region, "autre patient", other_rri)
    _aged(db, 21, old)
    blobs = lambda: sorted((settings.storage_path / "documents").rglob("*.blob"))  # noqa: E731
    assert len(blobs()) == 3

    assert retention.purge(db, app.state.storage, years=20, dry_run=True).documents == 0
    assert retention.purge(db, app.state.storage, years=20).documents == 0
    assert _left(db) == sorted([old, recent, other])

    _aged(db, 20.1, recent)
    assert retention.purge(db, app.state.storage, years=20, dry_run=True).documents == 2
    assert len(blobs()) == 3 and len(_left(db)) == 3
    done = retention.purge(db, app.state.storage, years=20)
    assert done.documents == 2 and done.contents_left == 0
    assert _left(db) == [other]
    with db.transaction(write=False) as session:
        # (the other patient's submission and export stay)
        assert session.scalar(select(func.count()).select_from(SubmissionSet)) == 1
        assert session.scalar(select(func.count()).select_from(DmpExport)) == 1
    rule = "20 years after the last document"
    assert sorted(_deleted(db)) == sorted(
        (f"DocumentReference/{ref}", f"Patient/{region.rri}", rule) for ref in (old, recent)
    )
    assert len(blobs()) == 1
    for ref in (old, recent):
        gone = region.client.get(f"/fhir/Binary/{ref}", headers=region.chu)
        assert gone.status_code == 404
    assert region.client.get(f"/fhir/Binary/{other}", headers=region.chu).status_code == 200
    assert retention.purge(db, app.state.storage, years=20).documents == 0


def test_a_minors_record_is_kept_until_their_28th_birthday(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    """Documents 21 years old of a patient born 25 years ago stay; of one born 29 years ago,
    go. An identity without a birth date (it may be a minor's) keeps the record too."""
    region = make_region(app, client, db, tmp_path)
    young = _file(region, "enfant", _patient(app, db, "IPP-Y", _ago(25), None))
    adult = _file(region, "adulte", _patient(app, db, "IPP-A", _ago(29), None))
    unknown = _file(region, "sans date", _patient(app, db, "IPP-U", None, None))
    _aged(db, 21, young, adult, unknown)
    assert retention.purge(db, app.state.storage, years=20).documents == 1
    assert _left(db) == sorted([young, unknown])


def test_a_dead_patients_record_goes_ten_years_after_the_death(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    """R.1112-7: died less than 10 years after the last document, the record is kept 10 years
    from the death, in all cases (a minor's too), before its 20 years; the latest day of death
    the patient's identities give counts; a death 10 years after the last document or more
    changes nothing."""
    region = make_region(app, client, db, tmp_path)
    cases = {  # ipp: (born, last document, death (years ago), deleted?)
        "IPP-M": (_ago(60), 12, 11, True),  # died a year after the last document: goes
        "IPP-B": (_ago(60), 12, 9, False),  # died 9 years ago: 10 years not passed
        "IPP-R": (_ago(60), 15, 2, False),  # died 13 years after the last document: 20 years
        "IPP-C": (_ago(20), 12, 11, True),  # a child's: goes too
    }
    filed = {}
    for ipp, (born, last, died, _) in cases.items():
        filed[ipp] = _file(region, ipp, _patient(app, db, ipp, born, _ago(died)))
        _aged(db, last, filed[ipp])
    # Another identity of IPP-M's patient says they died 9 years ago: the later day counts.
    with db.transaction() as session:
        patient = session.scalars(
            select(SourceIdentity.patient_id).where(SourceIdentity.ipp == "IPP-M")
        ).one()
    later = _patient(app, db, "IPP-M2", _ago(60), _ago(9))
    with db.transaction() as session:
        session.execute(
            update(SourceIdentity).where(SourceIdentity.ipp == "IPP-M2").values(patient_id=patient)
        )
    assert later  # (its own regional patient is left without identity or document)
    assert retention.purge(db, app.state.storage, years=20).documents == 1
    assert _left(db) == sorted(filed[i] for i in ("IPP-M", "IPP-B", "IPP-R"))
    assert [rule for *_, rule in _deleted(db)] == ["10 years after the death"]
    with db.transaction() as session:
        session.execute(
            update(SourceIdentity).where(SourceIdentity.ipp == "IPP-M2").values(active=False)
        )
    assert retention.purge(db, app.state.storage, years=20).documents == 1
    assert _left(db) == sorted(filed[i] for i in ("IPP-B", "IPP-R"))


def test_a_merged_patients_documents_count_with_the_survivors(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old documents of a patient merged into another are the survivor's: kept while
    the survivor has a recent one, deleted with the survivor's record, judged once even when
    the two patients fall in two batches (and each statement names one row)."""
    monkeypatch.setattr(retention, "BATCH", 1)
    monkeypatch.setattr(retention, "CHUNK", 1)
    region = make_region(app, client, db, tmp_path)
    merged_rri = _patient(app, db, "IPP-F", date(1950, 1, 1), None)
    old = _file(region, "dossier fusionné", merged_rri)
    recent = _file(region, "récent")
    _aged(db, 25, old)
    with db.transaction() as session:
        survivor = session.scalars(
            select(RegionalPatient.id).where(RegionalPatient.rri == region.rri)
        ).one()
        session.execute(
            update(RegionalPatient)
            .where(RegionalPatient.rri == merged_rri)
            .values(active=False, merged_into_id=survivor)
        )
    assert retention.purge(db, app.state.storage, years=20).documents == 0
    _aged(db, 21, recent)
    assert retention.purge(db, app.state.storage, years=20, dry_run=True).documents == 2
    assert retention.purge(db, app.state.storage, years=20).documents == 2
    assert _left(db) == []


def test_cli(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, settings: Settings
) -> None:
    region = make_region(app, client, db, tmp_path)
    _aged(db, 21, _file(region, "ancien"))
    dry = run_enrs(settings, "documents", "retention", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 document(s) of records past their period" in dry.stdout
    done = run_enrs(settings, "documents", "retention", "--years", "30")
    assert "deleted 0 document(s)" in done.stdout
    done = run_enrs(settings, "documents", "retention")
    assert "deleted 1 document(s)" in done.stdout and _left(db) == []


def test_contents_without_a_document_are_swept_after_a_grace_period(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    """What a process dying between a filing's contents and its commit leaves behind."""
    region = make_region(app, client, db, tmp_path)
    answer = region.provide(bundle((pdf("gardé"), "application/pdf", {})))
    assert answer.status_code == 200, answer.text
    kept = answer.json()["entry"][1]["response"]["location"].split("/")[1]
    storage = app.state.storage
    orphan = "documents/2026/12/left-by-a-crash"
    storage.put(orphan, pdf("orphelin"), "application/pdf")

    assert retention.sweep(db, storage).orphans == 0  # younger than the grace period
    assert retention.sweep(db, storage, grace=timedelta(0), dry_run=True).orphans == 1
    assert storage.exists(orphan)
    done = retention.sweep(db, storage, grace=timedelta(0))
    assert done.orphans == 1 and done.failed == 0
    assert not storage.exists(orphan)
    assert region.client.get(f"/fhir/Binary/{kept}", headers=region.chu).status_code == 200
    with db.transaction(write=False) as session:
        swept = session.scalars(
            select(AuditRecord.entity_ref).where(AuditRecord.category == "retention")
        ).all()
    assert swept == [orphan]
