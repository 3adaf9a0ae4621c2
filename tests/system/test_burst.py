"""A burst of concurrent requests on one HTTP worker of ``enrs serve``: every one is answered,
none refused for want of a database connection.

The burst is a thousand authenticated FHIR searches (``GET /fhir/AuditEvent``: a token check,
a sync endpoint reading the database, the unit finished in a second thread hop, an audit
record appended) sent at once, each on its own connection, to a server with one worker.
Before the worker capped the requests holding a database connection (``kit/admission.py``),
such a burst ended with some answered 503: requests holding a pooled connection waited for a
thread while the threads waited for a pooled connection, until the pool's 30 s timeout."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
from tests.support.live_server import live_server

from enrs.accounts import service as accounts_service
from enrs.kit.db import Database

BURST = 1000


def _client(database_url: str) -> tuple[str, str]:
    db = Database(database_url)
    try:
        with db.transaction() as session:
            created, secret = accounts_service.create_client(
                session, name="Burst DPI", scope="system/AuditEvent.rs"
            )
            assert secret is not None
            return created.client_id, secret
    finally:
        db.dispose()


async def _burst(base_url: str, token: str, count: int) -> list[httpx.Response | None]:
    """``count`` searches sent at once, each on its own connection; ``None`` for a request
    not answered within two minutes."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120
    ) as http:
        start = asyncio.Event()

        async def one() -> httpx.Response | None:
            await start.wait()  # every request leaves at once
            try:
                return await http.get("/fhir/AuditEvent", params={"_count": "10"})
            except httpx.TimeoutException:
                return None

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


def test_a_burst_on_one_worker_is_answered_in_full(tmp_path: Path, database_url: str) -> None:
    client_id, secret = _client(database_url)
    with live_server(
        data_dir=tmp_path / "var", database_url=database_url, workers=1, start_timeout=120
    ) as server:
        answer = httpx.post(
            f"{server.base_url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        began = time.monotonic()
        responses = asyncio.run(_burst(server.base_url, token, BURST))
        took = time.monotonic() - began
        statuses = Counter(r.status_code if r is not None else "no answer" for r in responses)
        refused = next((r for r in responses if r is not None and r.status_code != 200), None)
        detail = refused.text if refused is not None else ""
        assert statuses == {200: BURST}, f"{statuses} in {took:.1f} s: {detail}"
        assert all(r is not None and r.json()["resourceType"] == "Bundle" for r in responses)
        # Every request was audited: the burst's own records are there, after it.
        after = httpx.get(
            f"{server.base_url}/fhir/AuditEvent",
            params={"_count": "1", "_total": "accurate"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert after.status_code == 200, after.text
        assert after.json()["total"] >= BURST
        assert "QueuePool" not in server.log()
