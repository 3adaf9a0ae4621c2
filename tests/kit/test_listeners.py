"""``SqliteWriters``: the writers of the listener processes take turns on one SQLite database
(across threads and processes) and leave WAL checkpoints to a thread. Real SQLite files
migrated by Alembic, real processes."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.support.waiting import wait_until

from enrs.kit.audit import AuditEntry, verify_chain, write_entries
from enrs.kit.db import Database
from enrs.kit.listeners import SqliteWriters
from enrs.kit.migrate import upgrade_head


def entry(i: int) -> AuditEntry:
    return AuditEntry(category="hl7", interaction="ADT^A28", action="C", request_id=f"m{i}")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'enrs.db'}"
    upgrade_head(url)
    db = Database(url)
    yield db
    db.dispose()


def _hold_a_turn(url: str, holding: Any, release: Any) -> None:
    db = Database(url)
    writers = SqliteWriters(db)
    with writers:
        holding.set()
        release.wait(30)
        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE held (x INTEGER)"))
    writers.close()
    db.dispose()


def test_turns_are_taken_across_processes(sqlite_db: Database) -> None:
    ctx = multiprocessing.get_context("spawn")
    holding, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_a_turn, args=(sqlite_db.url, holding, release))
    child.start()
    assert holding.wait(60)
    writers = SqliteWriters(sqlite_db)
    turns: list[str] = []

    def take_turn() -> None:
        with writers, sqlite_db.engine.connect() as conn:
            turns.append(str(conn.execute(text("SELECT count(*) FROM held")).scalar()))

    thread = threading.Thread(target=take_turn)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and turns == []  # the other process has the turn
    release.set()
    thread.join(30)
    assert turns == ["0"]  # our turn came after its write
    child.join(30)
    assert child.exitcode == 0
    writers.close()


def test_checkpoints_are_left_to_a_thread(sqlite_db: Database, tmp_path: Path) -> None:
    writers = SqliteWriters(sqlite_db)
    writers.start_checkpoints(every=0.02, restart_every=2)
    with sqlite_db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    main = tmp_path / "enrs.db"
    size = main.stat().st_size
    for i in range(200):
        with writers:
            write_entries(sqlite_db, [entry(i)])
    # the pages written reach the database file through the thread's checkpoints only
    assert wait_until(lambda: main.stat().st_size > size)
    writers.close()
    assert verify_chain(sqlite_db).checked == 200
