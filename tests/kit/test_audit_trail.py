"""The audit trail's hash chain: concurrent writers, verification, append-only at the database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from enrs.kit.audit import AuditEntry, verify_chain, write_entries
from enrs.kit.db import Database


def _entry(i: int) -> AuditEntry:
    return AuditEntry(
        category="rest",
        interaction="read",
        action="R",
        agent_kind="user",
        agent_id=f"u{i}",
        patient_ref=f"Patient/{i}",
    )


@pytest.fixture
def trail_db(database_url: str) -> Database:
    return Database(database_url)


def test_chain_verifies_after_concurrent_writers(trail_db: Database) -> None:
    def writer(start: int) -> None:
        for i in range(start, start + 15):
            write_entries(trail_db, [_entry(i), _entry(i + 1000)])

    threads = [threading.Thread(target=writer, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_chain(trail_db)
    assert report.ok, report.problem
    assert report.checked == 4 * 15 * 2


def test_update_and_delete_are_refused_by_the_database(trail_db: Database) -> None:
    write_entries(trail_db, [_entry(1), _entry(2)])
    for statement in (
        "UPDATE audit_record SET agent_id = 'x' WHERE seq = 1",
        "DELETE FROM audit_record WHERE seq = 2",
    ):
        with pytest.raises(DBAPIError), trail_db.engine.begin() as conn:
            conn.execute(text(statement))
    assert verify_chain(trail_db).ok


def _drop_guards(db: Database) -> None:
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.execute(text("DROP TRIGGER audit_record_no_update"))
            conn.execute(text("DROP TRIGGER audit_record_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_record_no_change ON audit_record"))


def test_verify_finds_the_first_altered_record(trail_db: Database) -> None:
    write_entries(trail_db, [_entry(i) for i in range(1, 6)])
    _drop_guards(trail_db)  # an attacker with database access
    with trail_db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_record SET patient_ref = 'Patient/999' WHERE seq = 3"))
    report = verify_chain(trail_db)
    assert not report.ok and report.first_bad_seq == 3 and "altered" in (report.problem or "")


def test_verify_finds_a_removed_record(trail_db: Database) -> None:
    write_entries(trail_db, [_entry(i) for i in range(1, 6)])
    _drop_guards(trail_db)
    with trail_db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_record WHERE seq = 2"))
    report = verify_chain(trail_db)
    assert not report.ok and report.first_bad_seq == 2 and "missing" in (report.problem or "")


def test_verify_finds_a_rewritten_chain_tail(trail_db: Database) -> None:
    write_entries(trail_db, [_entry(i) for i in range(1, 4)])
    _drop_guards(trail_db)
    with trail_db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_record SET prev_hash = :h WHERE seq = 3"), {"h": "f" * 64})
    report = verify_chain(trail_db)
    assert not report.ok and report.first_bad_seq == 3


def test_group_commit_writer_keeps_every_entry_in_order(trail_db: Database) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from enrs.kit.audit.writer import AuditWriter

    writer = AuditWriter(trail_db, max_batch=7)

    def submit(i: int) -> list[int]:
        return writer.write([_entry(i), _entry(i + 10_000), _entry(i + 20_000)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(40)))
    writer.close()
    assert all(len(seqs) == 3 and seqs == list(range(seqs[0], seqs[0] + 3)) for seqs in results)
    assert sorted(s for seqs in results for s in seqs) == list(range(1, 121))
    report = verify_chain(trail_db)
    assert report.ok and report.checked == 120
    with trail_db.sessionmaker() as session:
        from enrs.kit.audit.models import AuditRecord

        first = session.get(AuditRecord, results[5][0])
        assert first is not None and first.agent_id == "u5"


def test_writer_reports_a_failed_batch(tmp_path: object) -> None:
    from enrs.kit.audit.writer import AuditWriter

    broken = Database(f"sqlite:///{tmp_path}/no-schema.db")  # no audit table: inserts fail
    writer = AuditWriter(broken)
    with pytest.raises(DBAPIError):
        writer.write([_entry(1)])
    writer.close()
