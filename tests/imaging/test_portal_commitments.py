"""The Storage Commitment reports not delivered yet, for the regional team: listed with their
last error, tried again from the portal once the modality is repaired; admins only, audited."""

from __future__ import annotations

import html

from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from enrs.imaging import commitment
from enrs.imaging.models import CommitmentReport
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.support.portal import csrf_of, log_in


def _kept(db: Database, aet: str, *, failed: bool) -> tuple[int, str]:
    report = Dataset()
    report.TransactionUID = generate_uid()
    with db.transaction() as session:
        kept = commitment.keep(session, aet, 2, report)
        row = session.get(CommitmentReport, kept)
        assert row is not None
        row.attempts, row.last_error = 5, "no association: connection refused"
        if failed:
            row.status = commitment.FAILED
    return kept, str(report.TransactionUID)


def _row(db: Database, kept: int) -> tuple[str, int]:
    with db.transaction(write=False) as session:
        row = session.get(CommitmentReport, kept)
        assert row is not None
        return row.status, row.attempts


def test_the_reports_not_delivered_are_listed_and_tried_again(
    client: TestClient, factory: Factory, db: Database
) -> None:
    factory.user("dr.x", rpps="10001234565")
    factory.user("root", roles=("admin",))
    log_in(client, "dr.x")
    assert client.get("/admin/imagerie/engagements").status_code == 403
    client.cookies.clear()

    log_in(client, "root")
    assert 'id="aucun"' in client.get("/admin/imagerie/engagements").text
    given_up, uid = _kept(db, "MODALITE1", failed=True)
    waiting, _ = _kept(db, "MODALITE2", failed=False)
    page = html.unescape(client.get("/admin/imagerie/engagements").text)
    assert "MODALITE1" in page and uid in page and "abandonné" in page
    assert "MODALITE2" in page and "en attente d'un nouvel essai" in page
    assert "connection refused" in page and "des instances manquent" in page
    assert f'action="/admin/imagerie/engagements/{given_up}/relancer"' in page

    csrf = csrf_of(client.get("/account").text)
    refused = client.post(f"/admin/imagerie/engagements/{given_up}/relancer", data={"csrf": "x"})
    assert refused.status_code == 403 and _row(db, given_up) == ("failed", 5)
    again = client.post(f"/admin/imagerie/engagements/{given_up}/relancer", data={"csrf": csrf})
    assert again.status_code == 200 and "renvoyé dans quelques secondes" in html.unescape(
        again.text
    )
    assert _row(db, given_up) == ("pending", 0)
    assert _row(db, waiting) == ("pending", 5)
    missing = client.post("/admin/imagerie/engagements/999999/relancer", data={"csrf": csrf})
    assert missing.status_code == 404
    with db.transaction(write=False) as session:
        trail = session.execute(
            select(AuditRecord.interaction, AuditRecord.entity_ref, AuditRecord.outcome).where(
                AuditRecord.resource_type == "StorageCommitment"
            )
        ).all()
    assert ("update", f"StorageCommitment/{given_up}", "0") in trail
    assert ("search-type", None, "0") in trail
    assert any(outcome != "0" for _, _, outcome in trail)  # the refusals too
