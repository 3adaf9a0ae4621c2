"""SQLite's writers take turns (``kit/sqlite.py``): across threads and processes, a writing
unit of work waits for the one in progress and goes when it ends, the turn is given back
whatever ends the transaction, and read-only units never wait. Real
SQLite files migrated by Alembic, real processes."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from tests.support.waiting import wait_until

from enrs.kit.audit import AuditEntry, verify_chain, write_entries
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
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
    with db.transaction() as session:
        session.execute(text("CREATE TABLE held (x INTEGER)"))
        holding.set()
        release.wait(30)
        session.execute(text("INSERT INTO held VALUES (1)"))
    db.dispose()


def test_a_writer_waits_for_another_process_and_goes_when_it_commits(
    sqlite_db: Database,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    holding, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_a_turn, args=(sqlite_db.url, holding, release))
    child.start()
    assert holding.wait(60)
    seen: list[int] = []

    def write() -> None:
        with sqlite_db.transaction() as session:
            seen.append(int(session.execute(text("SELECT count(*) FROM held")).scalar() or 0))

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive() and seen == []  # waiting for the other process's turn
    with sqlite_db.transaction(write=False) as session:  # a reader does not wait
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0
    release.set()
    thread.join(30)
    assert seen == [1]  # its turn came after the other's commit
    child.join(30)
    assert child.exitcode == 0


def test_the_turn_is_given_back_when_a_unit_of_work_fails(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError), sqlite_db.transaction() as session:
        session.execute(text("SELECT 1"))
        raise RuntimeError("the request failed")
    session = sqlite_db.session(write=True)
    session.execute(text("SELECT 1"))
    session.close()  # returned to the pool without a commit or a rollback of its own
    done = threading.Event()

    def write() -> None:
        write_entries(sqlite_db, [entry(1)])
        done.set()

    threading.Thread(target=write).start()
    assert done.wait(5)  # nobody kept the turn


def test_writers_of_many_threads_each_get_their_turn(sqlite_db: Database) -> None:
    def writer(start: int) -> None:
        for i in range(start, start + 25):
            write_entries(sqlite_db, [entry(i)])

    threads = [threading.Thread(target=writer, args=(n * 100,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    report = verify_chain(sqlite_db)
    assert report.ok and report.checked == 150


def test_a_read_only_unit_of_work_cannot_write(sqlite_db: Database) -> None:
    with pytest.raises(Exception, match="readonly"), sqlite_db.transaction(write=False) as s:
        s.execute(text("CREATE TABLE nope (x INTEGER)"))


def test_a_server_process_checkpoints_from_a_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'enrs.db'}"
    upgrade_head(url)
    db = Database(url)
    db.start_checkpoints()
    try:
        with db.transaction() as session:  # commits no longer checkpoint the WAL themselves
            assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        main = tmp_path / "enrs.db"
        size = main.stat().st_size
        for i in range(200):
            write_entries(db, [entry(i)])
        # the pages written reach the database file through the thread's checkpoints
        assert wait_until(lambda: main.stat().st_size > size)
        assert verify_chain(db).checked == 200
    finally:
        db.dispose()
