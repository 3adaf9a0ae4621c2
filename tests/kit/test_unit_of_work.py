"""One unit of work per request (``kit/http.TransactionalRoute`` over ``kit/unit_of_work``):
what a request writes is stored when it is acknowledged, whatever FastAPI does with the exit
of yield dependencies (the route, not a dependency, owns the session); its audit records are
committed with it; a failure rolls back and is audited; a request declared read-only cannot
write (SQLite); commits are durable.

Routes of a test router are added to the real application, over the real database."""

from __future__ import annotations

import threading

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from tests.conftest import BACKEND
from tests.support.audit_failure import refuse_audit_inserts

from enrs.kit.audit.models import AuditRecord
from enrs.kit.audit.trail import verify_chain
from enrs.kit.db import Database
from enrs.kit.errors import Conflict, NotFound
from enrs.kit.events import EventRecord, emit
from enrs.kit.http import DbSession, TransactionalRoute, in_unit, new_entry


def _audited(request: Request, what: str) -> None:
    new_entry(request, "rest", "create", action="C", resource_type="Test", entity_ref=what)


def _test_routes() -> APIRouter:
    router = APIRouter(route_class=TransactionalRoute)

    @router.post("/test/write", status_code=201)
    def write(request: Request, session: DbSession) -> dict[str, str]:
        emit(session, "test.written", {"by": "write"})
        _audited(request, "write")
        return {"status": "created"}

    @router.post("/test/write-then-fail")
    def write_then_fail(request: Request, session: DbSession) -> None:
        emit(session, "test.written", {"by": "write-then-fail"})
        _audited(request, "write-then-fail")
        session.flush()
        raise Conflict("the second half of the write is refused")

    @router.get("/test/sneaky-write")
    def sneaky_write(session: DbSession) -> dict[str, str]:
        emit(session, "test.written", {"by": "a GET"})
        session.flush()
        return {"status": "written?"}

    # Async endpoints whose database part runs through in_unit (one thread hop).
    def _read(request: Request, session: DbSession, what: str) -> JSONResponse:
        new_entry(request, "rest", "read", action="R", resource_type="Test", entity_ref=what)
        events = session.scalar(select(func.count()).select_from(EventRecord))
        if what == "missing":
            raise NotFound("no such thing")
        if what == "sneaky":
            emit(session, "test.written", {"by": "an in_unit GET"})
            session.flush()
        return JSONResponse({"events": events}, status_code=410 if what == "gone" else 200)

    @router.get("/test/in-unit/{what}")
    async def read_in_unit(request: Request, session: DbSession, what: str) -> JSONResponse:
        return await in_unit(request, lambda: _read(request, session, what))

    @router.post("/test/in-unit-write", status_code=201)
    async def write_in_unit(request: Request, session: DbSession) -> dict[str, str]:
        def work() -> dict[str, str]:
            emit(session, "test.written", {"by": "in_unit"})
            _audited(request, "in-unit-write")
            return {"status": "created"}

        return await in_unit(request, work)

    return router


@pytest.fixture
def test_app(app: FastAPI) -> FastAPI:
    app.include_router(_test_routes())
    return app


@pytest.fixture
def tclient(test_app: FastAPI) -> TestClient:
    with TestClient(test_app) as client:
        yield client  # type: ignore[misc]


def _events(db: Database) -> list[str]:
    with db.sessionmaker() as session:
        return list(session.scalars(select(EventRecord.payload).order_by(EventRecord.id)))


def _audit(db: Database) -> list[tuple[str | None, str]]:
    with db.sessionmaker() as session:
        rows = session.execute(
            select(AuditRecord.entity_ref, AuditRecord.outcome).order_by(AuditRecord.seq)
        )
        return [(ref, outcome) for ref, outcome in rows]


def test_a_write_acknowledged_is_stored(tclient: TestClient, db: Database) -> None:
    # With the FastAPI releases 0.106 to 0.117 (which pyproject allowed), a yield dependency
    # holding the session ended before the route committed: 201, and nothing stored. The
    # route now owns the session; this test fails on the old code under FastAPI 0.115.
    answer = tclient.post("/test/write")
    assert answer.status_code == 201
    assert _events(db) == ['{"by": "write"}']
    assert _audit(db) == [("write", "0")]


def test_audit_records_commit_with_the_data_or_nothing_is_kept(
    tclient: TestClient, db: Database
) -> None:
    refuse_audit_inserts(db, True)
    answer = tclient.post("/test/write")
    assert answer.status_code == 503
    assert "audit trail" in answer.json()["detail"]
    assert _events(db) == []  # the data went with its audit records
    refuse_audit_inserts(db, False)
    assert tclient.post("/test/write").status_code == 201
    assert _events(db) == ['{"by": "write"}']
    assert _audit(db) == [("write", "0")]
    assert verify_chain(db).ok


def test_a_failed_write_is_rolled_back_and_audited_as_failed(
    tclient: TestClient, db: Database
) -> None:
    answer = tclient.post("/test/write-then-fail")
    assert answer.status_code == 409
    assert _events(db) == []
    assert _audit(db) == [("write-then-fail", "4")]


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite enforces read-only transactions")
def test_a_request_declared_read_only_cannot_write(tclient: TestClient, db: Database) -> None:
    answer = tclient.get("/test/sneaky-write")
    assert answer.status_code == 503
    assert _events(db) == []


def test_a_read_in_one_hop_is_audited_before_its_answer(
    tclient: TestClient, test_app: FastAPI, db: Database
) -> None:
    # The connections the requests check out (the app's WAL checkpoints, a thread of their
    # own that may hold one at any moment, left out), each removed when checked in.
    held: set[int] = set()

    def checked_out(_conn: object, record: object, _proxy: object) -> None:
        if threading.current_thread().name != "wal-checkpoints":
            held.add(id(record))

    def checked_in(_conn: object, record: object) -> None:
        held.discard(id(record))

    app_db: Database = test_app.state.db
    for engine in {app_db.engine, app_db._reader}:
        event.listen(engine, "checkout", checked_out)
        event.listen(engine, "checkin", checked_in)
    answer = tclient.get("/test/in-unit/thing")
    assert answer.status_code == 200
    assert answer.json() == {"events": 0}
    assert _audit(db) == [("thing", "0")]  # committed before the answer was sent
    assert tclient.get("/test/in-unit/gone").status_code == 410  # a failure, not raised
    assert tclient.get("/test/in-unit/missing").status_code == 404  # raised in the thread
    assert _audit(db) == [("thing", "0"), ("gone", "4"), ("missing", "4")]
    assert verify_chain(db).ok
    assert not held  # every session the requests opened closed before their answer


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite enforces read-only transactions")
def test_a_read_in_one_hop_cannot_write(tclient: TestClient, db: Database) -> None:
    assert tclient.get("/test/in-unit/sneaky").status_code == 503
    assert _events(db) == []


def test_a_write_in_one_hop_commits_with_its_audit(tclient: TestClient, db: Database) -> None:
    assert tclient.post("/test/in-unit-write").status_code == 201
    assert _events(db) == ['{"by": "in_unit"}']
    assert _audit(db) == [("in-unit-write", "0")]


def test_commits_are_durable(db: Database) -> None:
    for write in (True, False):
        with db.session(write=write) if hasattr(db, "session") else db.sessionmaker() as session:
            if db.is_sqlite:  # FULL: the commit is on disk before it returns (2)
                assert session.execute(text("PRAGMA synchronous")).scalar() == 2
            else:
                assert session.execute(text("SHOW synchronous_commit")).scalar() != "off"


@pytest.mark.skipif(BACKEND != "postgresql", reason="a PostgreSQL database setting")
def test_synchronous_commit_off_in_the_database_is_overridden(database_url: str) -> None:
    admin = Database(database_url)
    name = admin.engine.url.database
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    db = Database(database_url)
    with db.transaction() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0
    db.dispose()
