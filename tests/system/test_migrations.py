"""The Alembic migrations build exactly the schema the models describe, and go down again."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, insert, text
from sqlalchemy.orm import Session

from enrs.kit.db import Database
from enrs.kit.migrate import alembic_config


def test_models_match_migrations(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises when autogenerate finds a difference


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    command.check(cfg)


def test_alembic_ini_for_developers(tmp_path: Path) -> None:
    """`alembic -c alembic.ini …` (new revisions, history, upgrade) finds the packaged folder,
    from any working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env["ENRS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.db'}"
    ini = Path(__file__).parents[2] / "alembic.ini"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cfg = alembic_config(env["ENRS_DATABASE_URL"])
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with Database(env["ENRS_DATABASE_URL"]).engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def _insert_as_stored_then(session: Session, values: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """An identity of ``values`` (``service.prepare``), a regional patient of its own, as the
    schema the database is at holds it (today's ORM has columns added since): the patient's
    id and the columns written."""
    conn = session.connection()
    tables = MetaData()
    patients = Table("identity_patient", tables, autoload_with=conn)
    sources = Table("identity_source", tables, autoload_with=conn)
    now = datetime.now(UTC)
    row = {"rri": "R1", "active": True, "created_at": now, "updated_at": now}
    patient_id = int(conn.execute(insert(patients).values(row)).inserted_primary_key[0])
    old = {k: v for k, v in values.items() if k in sources.c}
    conn.execute(insert(sources).values({**old, "patient_id": patient_id}))
    return patient_id, old


def test_the_authorities_in_use_are_registered_on_upgrade(database_url: str) -> None:
    """20261204_0700: every authority already fed or bound to a feeder becomes a registered
    domain, so an upgraded server refuses nothing it accepted before."""
    from tests.identity.test_service import CONFIG
    from tests.support.identities import person

    from enrs.identity import repository, service

    fed, client_oid, sender_oid = "1.2.250.1.71.4.2.2.1", "1.2.250.1.71.4.2.2.2", "1.2.3.4.5"
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "20261204_0300")
    db = Database(database_url)
    try:
        with db.transaction() as session:
            _insert_as_stored_then(session, service.prepare(person(fed, "1"), CONFIG).values)
            # As the accounts tables were then (no facility column yet).
            now = {"at": datetime.now(UTC)}
            session.execute(
                text(
                    "INSERT INTO account_client (id, client_id, name, secret_hash, scope, "
                    "redirect_uris, public, active, created_at) VALUES ('c1', 'dpi', 'DPI', "
                    "'x', 'system/Patient.cu', '', false, true, :at)"
                ),
                now,
            )
            session.execute(
                text(
                    "INSERT INTO account_mllp_sender (id, sender_oid, name, scope, active, "
                    "created_at) VALUES ('s1', :oid, 'GAM', 'system/Patient.cu', true, :at)"
                ),
                {**now, "oid": sender_oid},
            )
            session.execute(
                text("INSERT INTO account_client_authority VALUES ('c1', :a)"), {"a": client_oid}
            )
            for oid in (sender_oid, fed):
                session.execute(
                    text("INSERT INTO account_mllp_sender_authority VALUES ('s1', :a)"), {"a": oid}
                )
        command.upgrade(cfg, "head")
        with db.transaction(write=False) as session:
            registered = {(d.oid, d.namespace) for d in repository.domains(session)}
        assert registered == {(fed, None), (client_oid, None), (sender_oid, None)}
    finally:
        db.dispose()


def test_identities_stored_before_get_their_matching_keys_on_upgrade(database_url: str) -> None:
    """20261205_0900: the phonetic keys, address, city, phone and e-mail of identities stored
    before are computed by the upgrade, so blocking finds them as it finds new ones."""
    import json

    from tests.identity.test_service import CONFIG
    from tests.support.identities import person

    from enrs.identity import repository, service
    from enrs.identity.schemas import Telecom

    cfg = alembic_config(database_url)
    command.downgrade(cfg, "20261204_1100")
    db = Database(database_url)
    fed = "1.2.250.1.71.4.2.2.1"
    data = person(
        fed,
        "1",
        birth_name="Gauthier",
        address_line="12 bd Saint-Jean",
        city="Ste-Anne",
        telecom=[Telecom(system="phone", value="+596 696 12 34 56"),
                 Telecom(system="email", value="M.Gauthier@Example.org")],
        record={"v2": {"PID": {"24": "Y", "25": "2"}}},
    )  # fmt: skip
    try:
        with db.transaction() as session:
            values = service.prepare(data, CONFIG).values
            patient_id, old = _insert_as_stored_then(session, values)
            assert "p_birth_name" not in old and json.loads(old["telecom"])
        command.upgrade(cfg, "head")
        with db.transaction(write=False) as session:
            (stored,) = repository.sources_of_patient(session, patient_id)
            keys = (stored.p_birth_name, stored.p_first_given, stored.n_address, stored.n_city)
            assert keys == ("GOTIER", "MARIELINE", "12 BOULEVARD SAINT JEAN", "SAINTE ANNE")
            assert (stored.n_phone, stored.n_email) == ("696123456", "m.gauthier@example.org")
            assert stored.birth_order == "2"
            other_day = date(1962, 7, 30)  # neither the date nor the spelling: the sound
            probe = service.prepare(
                person(fed, "2", birth_name="GOTIER", birth_date=other_day), CONFIG
            ).traits
            assert stored.id in {c.id for c in repository.candidates(session, probe)}
    finally:
        db.dispose()
