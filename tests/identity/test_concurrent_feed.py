"""Writers wait their turn: facilities feeding identities over PIXm ITI-104 at the same time,
to the real ``enrs serve`` (2 HTTP workers) with its audit writers running, never get a
``503 database unavailable``; every identity acknowledged is stored, with its audit record.
(On SQLite a read transaction that later writes used to fail at once with "database is
locked" whenever another writer had committed meanwhile.)"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy import func, select
from tests.identity.feeders import register_domains
from tests.identity.test_fhir import CHU, CLINIC, FHIR_JSON, fr_patient
from tests.support.live_server import live_server

from enrs.accounts import service as accounts_service
from enrs.identity.models import SourceIdentity
from enrs.kit.audit.models import AuditRecord
from enrs.kit.audit.trail import verify_chain
from enrs.kit.db import Database

FAMILIES = ("JOSEPH", "MARTIN", "LOUIS", "EDOUARD", "CELESTE", "VALENTIN", "ROSE", "ALEXIS")


def _client(db: Database) -> tuple[str, str]:
    register_domains(db, (CHU, CLINIC))
    with db.transaction() as session:
        client, secret = accounts_service.create_client(
            session, name="DPI", scope="system/Patient.cus", authorities=(CHU, CLINIC)
        )
        assert secret is not None
        return client.client_id, secret


def _sender(base: str, token: str, authority: str, count: int, answers: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        for i in range(count):
            family = FAMILIES[i % len(FAMILIES)]
            patient = fr_patient(
                f"{i}", authority, family=family, birth=f"19{50 + i % 40}-0{1 + i % 9}-1{i % 9}"
            )
            query = quote(f"urn:oid:{authority}|{i}")
            answers.append(http.put(f"/fhir/Patient?identifier={query}", json=patient).status_code)


def test_concurrent_feeders_all_get_their_identities_stored(
    database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url)
    client_id, secret = _client(db)
    per_sender = 60
    with live_server(data_dir=tmp_path / "var", database_url=database_url, workers=2) as server:
        grant = {"grant_type": "client_credentials"}
        token = httpx.post(
            f"{server.base_url}/oauth/token", data=grant, auth=(client_id, secret)
        ).json()["access_token"]
        answers: dict[str, list[int]] = {CHU: [], CLINIC: []}
        senders = [
            threading.Thread(
                target=_sender, args=(server.base_url, token, authority, per_sender, answers[a])
            )
            for a, authority in ((CHU, CHU), (CLINIC, CLINIC))
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(300)
    statuses = answers[CHU] + answers[CLINIC]
    assert len(statuses) == 2 * per_sender
    assert [s for s in statuses if s not in (200, 201)] == [], server.log()[-3000:]
    with db.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(SourceIdentity)) == 2 * per_sender
        feeds = select(func.count()).select_from(AuditRecord).where(AuditRecord.category == "rest")
        assert (session.scalar(feeds) or 0) >= 2 * per_sender
    assert verify_chain(db).ok
    db.dispose()
