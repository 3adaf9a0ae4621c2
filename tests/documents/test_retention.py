"""The retention job (issue 13): the only physical deletion of a document — rows and content
gone, each deletion in the audit trail with the patient — and nothing younger touched."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from enrs.documents import retention
from enrs.documents.models import DmpExport, DocumentEntry, SubmissionSet
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database, utcnow
from enrs.settings import Settings
from tests.documents.world import bundle, make_region, pdf


def test_documents_past_the_period_are_deleted_and_audited(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, settings: Settings
) -> None:
    region = make_region(app, client, db, tmp_path)
    ids = []
    for text in ("ancien", "récent"):
        answer = region.provide(bundle((pdf(text), "application/pdf", {})))
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["entry"][1]["response"]["location"].split("/")[1])
    old, recent = ids
    with db.transaction() as session:
        session.execute(
            update(DocumentEntry)
            .where(DocumentEntry.resource_id == old)
            .values(date=utcnow() - timedelta(days=21 * 366))
        )
    blobs = sorted((settings.storage_path / "documents").rglob("*.blob"))
    assert len(blobs) == 2

    assert retention.purge(db, app.state.storage, years=20, dry_run=True).documents == 1
    assert len(sorted((settings.storage_path / "documents").rglob("*.blob"))) == 2
    done = retention.purge(db, app.state.storage, years=20)
    assert done.documents == 1 and done.contents_left == 0

    with db.transaction(write=False) as session:
        left = session.scalars(select(DocumentEntry.resource_id)).all()
        assert left == [recent]
        assert session.scalar(select(func.count()).select_from(SubmissionSet)) == 1
        assert session.scalar(select(func.count()).select_from(DmpExport)) == 1
        [record] = session.execute(
            select(AuditRecord.action, AuditRecord.patient_ref, AuditRecord.entity_ref).where(
                AuditRecord.category == "retention"
            )
        ).all()
    assert record == ("D", f"Patient/{region.rri}", f"DocumentReference/{old}")
    assert len(sorted((settings.storage_path / "documents").rglob("*.blob"))) == 1
    gone = region.client.get(f"/fhir/Binary/{old}", headers=region.chu)
    assert gone.status_code == 404
    assert region.client.get(f"/fhir/Binary/{recent}", headers=region.chu).status_code == 200


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
