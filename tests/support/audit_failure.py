"""A real storage failure of the audit trail: a database trigger that makes every insert into
``audit_record`` fail (SQLite and PostgreSQL)."""

from __future__ import annotations

from enrs.kit.db import Database


def refuse_audit_inserts(db: Database, refuse: bool) -> None:
    """Install (``refuse``) or remove the trigger."""
    with db.engine.begin() as conn:
        if db.is_sqlite and refuse:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_record "
                "BEGIN SELECT RAISE(ABORT, 'audit storage refused'); END"
            )
        elif db.is_sqlite:
            conn.exec_driver_sql("DROP TRIGGER refuse_audit")
        elif refuse:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'audit storage refused'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_record "
                "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER refuse_audit ON audit_record")
            conn.exec_driver_sql("DROP FUNCTION refuse_audit()")
