"""Admission of a worker's requests to the database (``kit/admission.py``): no more requests
hold a unit of work at once than the pool has connections and the worker threads (less a
reserve); the others wait their turn, holding nothing, and one that waits too long is answered
503 with Retry-After and an OperationOutcome, not a pool error; a route that asks for no
session (``/healthz``) takes no turn.

Requests go to the real application over the real database, concurrently, in one event loop
(``httpx.ASGITransport``); a test route holds its turn until the test lets it go."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from tests.conftest import BACKEND, Factory

from enrs.kit.admission import RETRY_AFTER_S, Admission, Busy, request_capacity
from enrs.kit.db import Database
from enrs.kit.http import DbSession, TransactionalRoute


class Holder:
    """``GET /test/hold``: opens its unit's connection, then waits until released."""

    def __init__(self, app: FastAPI) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        router = APIRouter(route_class=TransactionalRoute)

        @router.get("/test/hold")
        def hold(session: DbSession) -> dict[str, int]:
            one = session.execute(text("SELECT 1")).scalar_one()
            self.holding.set()
            assert self.release.wait(10)
            return {"one": one}

        app.include_router(router)

    async def held(self) -> None:
        while not self.holding.is_set():
            await asyncio.sleep(0.01)


@pytest.fixture
def token(factory: Factory) -> str:
    return factory.token("system/AuditEvent.rs")


def _client(app: FastAPI, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_the_capacity_is_what_the_pool_and_the_threads_serve(db: Database) -> None:
    # SQLite: 48 + 10 connections in each of the writers' and readers' pools, 40 threads;
    # PostgreSQL: 16 + 16 connections. Four of either are left to the worker's own threads.
    assert request_capacity(db) == (36 if BACKEND == "sqlite" else 28)
    assert Admission.for_database(db).capacity == request_capacity(db)
    with pytest.raises(ValueError):
        Admission(0)


def test_a_turn_not_given_in_time_is_refused_busy() -> None:
    async def scenario() -> None:
        admission = Admission(1, timeout=0.2)
        async with admission.turn():
            assert admission.admitted == 1
            began = time.monotonic()
            with pytest.raises(Busy) as refused:
                async with admission.turn():
                    pytest.fail("a second turn was given")
            assert 0.15 < time.monotonic() - began < 2
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
        assert admission.admitted == 0  # the refused one holds nothing
        async with admission.turn():  # and the turn is free again
            assert admission.admitted == 1

    anyio.run(scenario)


def test_requests_over_the_capacity_wait_their_turn(app: FastAPI, token: str) -> None:
    holder = Holder(app)
    app.state.admission = admission = Admission(1, timeout=10)

    async def scenario() -> None:
        async with _client(app, token) as http:
            first = asyncio.create_task(http.get("/test/hold"))
            await holder.held()
            second = asyncio.create_task(http.get("/fhir/AuditEvent", params={"_count": "1"}))
            await asyncio.sleep(0.3)
            assert not second.done()  # waiting for the turn, not refused
            assert (admission.admitted, admission.waiting) == (1, 1)
            holder.release.set()
            assert (await first).json() == {"one": 1}
            answer = await second
            assert answer.status_code == 200, answer.text
            assert answer.json()["resourceType"] == "Bundle"
        assert (admission.admitted, admission.waiting) == (0, 0)

    anyio.run(scenario)


def test_a_request_waiting_too_long_is_answered_503_retry_after(app: FastAPI, token: str) -> None:
    holder = Holder(app)
    app.state.admission = admission = Admission(1, timeout=0.3)

    async def scenario() -> None:
        async with _client(app, token) as http:
            first = asyncio.create_task(http.get("/test/hold"))
            await holder.held()
            refused = await http.get("/fhir/AuditEvent", params={"_count": "1"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
            assert refused.headers["content-type"].startswith("application/fhir+json")
            outcome = refused.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "transient"
            assert "busy" in outcome["issue"][0]["diagnostics"]
            alive = await http.get("/healthz")  # asks for no session: takes no turn
            assert alive.status_code == 200
            holder.release.set()
            assert (await first).status_code == 200
            again = await http.get("/fhir/AuditEvent", params={"_count": "1"})
            assert again.status_code == 200, again.text
        assert admission.admitted == 0

    anyio.run(scenario)


def test_a_failed_request_gives_its_turn_back(app: FastAPI, token: str) -> None:
    app.state.admission = admission = Admission(1, timeout=0.5)

    async def scenario() -> None:
        async with _client(app, token) as http:
            for _ in range(3):  # a refusal (400) and a missing record (404) in the unit
                bad = await http.get("/fhir/AuditEvent", params={"date": "yesterday"})
                assert bad.status_code == 400, bad.text
                missing = await http.get("/fhir/AuditEvent/999999")
                assert missing.status_code == 404, missing.text
            anonymous = await http.get("/fhir/AuditEvent", headers={"Authorization": ""})
            assert anonymous.status_code == 401
            assert (await http.get("/fhir/AuditEvent")).status_code == 200
        assert admission.admitted == 0

    anyio.run(scenario)
