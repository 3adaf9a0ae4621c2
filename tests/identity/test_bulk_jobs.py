"""``enrs identity dedup`` and ``enrs identity train`` as an operator runs them, in a
subprocess, on a registry fed through the identity service."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from bench.identity_bulk import load, stream
from sqlalchemy import select
from tests.identity.test_service import CONFIG
from tests.support.identities import person
from tests.support.live_server import enrs_command

from enrs.identity import service, workbench
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import DEFAULT_MODEL, MatchModel
from enrs.identity.models import IdentityTask, SourceIdentity
from enrs.identity.schemas import SourceIdentityIn
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database

CHU, CLINIC = "1.2.250.1.71.4.2.2.1", "1.2.250.1.71.4.2.2.2"


def _blind() -> EmbeddedMatcher:
    """Real-time matching that links nothing and queues nothing: what dedup must catch up."""
    data = json.loads(DEFAULT_MODEL.read_text())
    data["thresholds"] = {"auto_link": 1000.0, "review": 1000.0}
    return EmbeddedMatcher(MatchModel.from_dict(data))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _run(tmp_path: Path, database_url: str, *args: str, check: bool = True) -> Any:
    return subprocess.run(
        enrs_command("identity", *args),
        env={
            "ENRS_DATA_DIR": str(tmp_path / "var"),
            "ENRS_DATABASE_URL": database_url,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


def _ins(prefix13: str) -> str:
    return f"{prefix13}{97 - int(prefix13) % 97:02d}"


def _feed(db: Database, matcher: EmbeddedMatcher, data: SourceIdentityIn) -> int:
    with db.transaction() as session:
        service.feed(session, matcher, data, actor="test", config=CONFIG)
        source = session.scalar(
            select(SourceIdentity).where(
                SourceIdentity.authority == data.authority, SourceIdentity.ipp == data.ipp
            )
        )
        assert source is not None
        return source.id


def _tasks(db: Database) -> list[IdentityTask]:
    with db.transaction() as session:
        return list(session.scalars(select(IdentityTask).order_by(IdentityTask.id)))


def test_dedup_queues_what_real_time_missed_and_respects_the_cell(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    blind = _blind()
    a1 = _feed(db, blind, person(CHU, "A1"))
    a2 = _feed(
        db, blind, person(CLINIC, "A2", given_names=["MARIE LINE"], birth_date=date(1961, 9, 4))
    )
    t1 = _feed(
        db,
        blind,
        person(
            CHU,
            "T1",
            birth_name="Louis",
            given_names=["Paul"],
            sex="M",
            birth_date=date(1990, 5, 5),
        ),
    )
    t2 = _feed(
        db,
        blind,
        person(
            CHU,
            "T2",
            birth_name="Louis",
            given_names=["Pierre"],
            sex="M",
            birth_date=date(1990, 5, 5),
        ),
    )
    # Same traits, two different valid INS: two people, never proposed.
    marc = {
        "birth_name": "Durand",
        "given_names": ["Marc"],
        "sex": "M",
        "birth_date": date(1985, 5, 1),
        "birth_place": "97101",
    }
    _feed(
        db,
        blind,
        person(CHU, "C1", **marc, ins=_ins("1850597209123"), status="QUAL"),
    )
    _feed(
        db,
        blind,
        person(CLINIC, "C2", **marc, ins=_ins("1850597209124"), status="QUAL"),
    )
    _feed(
        db,
        blind,
        person(
            CHU,
            "D1",
            birth_name="Bellay",
            given_names=["Yves"],
            sex="M",
            birth_date=date(1950, 1, 30),
            birth_place="97101",
        ),
    )
    assert _tasks(db) == []

    dry = json.loads(_run(tmp_path, database_url, "dedup", "--dry-run", "--json").stdout)
    assert dry["identities"] == 7 and dry["patient_pairs"] == 2 and dry["tasks_created"] == 0
    assert _tasks(db) == []
    listed = _run(tmp_path, database_url, "dedup", "--dry-run").stdout.splitlines()
    pairs = [line for line in listed if " ~ " in line]
    assert len(pairs) == 2  # named as the cell and the facilities know them
    assert any(f"{CHU}|T2 (RRI " in line and "|T1 (RRI " in line for line in pairs), listed
    assert all("weight " in line and "birth_date " in line for line in pairs), listed

    first = json.loads(_run(tmp_path, database_url, "dedup", "--json").stdout)
    assert first["tasks_created"] == 2 and first["peak_rss_mb"] > 0
    tasks = {(t.source_id, t.other_source_id): t for t in _tasks(db)}
    assert set(tasks) == {(a2, a1), (t2, t1)}
    swapped = tasks[(a2, a1)]
    assert swapped.kind == "DUPLICATE" and swapped.status == "OPEN"
    assert swapped.score is not None and swapped.score >= MatchModel.load().review
    assert json.loads(swapped.levels or "{}")["birth_date"] == "day_month_swapped"
    assert json.loads(tasks[(t2, t1)].levels or "{}")["given"] == "else"

    with db.transaction() as session:
        workbench.decide(session, tasks[(t2, t1)].id, "KEEP_APART", reason="jumeaux", actor="cell")
    again = json.loads(_run(tmp_path, database_url, "dedup", "--json").stdout)
    assert (again["tasks_created"], again["already_open"], again["kept_apart"]) == (0, 1, 1)
    assert len(_tasks(db)) == 2

    with db.transaction() as session:
        audited = session.scalars(
            select(AuditRecord).where(AuditRecord.interaction == "identity-dedup")
        ).all()
    created = [r for r in audited if r.action == "C"]
    assert len(created) == 2 and all(r.patient_ref for r in created)
    assert len([r for r in audited if r.action == "E"]) == 2  # the two real runs
    report = subprocess.run(
        enrs_command("audit", "verify"),
        env={"ENRS_DATA_DIR": str(tmp_path / "var"), "ENRS_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stdout + report.stderr


def test_dedup_human_report(tmp_path: Path, database_url: str, db: Database) -> None:
    blind = _blind()
    _feed(db, blind, person(CHU, "A1"))
    _feed(db, blind, person(CLINIC, "A2", used_name="Martin"))
    out = _run(tmp_path, database_url, "dedup").stdout
    assert "scanned 2 identities" in out and "1 potential-duplicate tasks created" in out


def test_train_writes_a_model_the_server_can_load(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    load(database_url, islice(stream(2500, seed=3), 2500), progress=False)
    output = tmp_path / "trained.json"
    done = _run(tmp_path, database_url, "train", "--output", str(output), "--max-pairs", "2e5")
    assert f"written to {output}" in done.stdout
    data = json.loads(output.read_text())
    base = MatchModel.load()
    model = MatchModel.from_dict(data)
    assert model.version != base.version and data["training"]["identities"] == 2500
    assert data["training"]["base_version"] == base.version
    assert (model.auto_link, model.review) == (base.auto_link, base.review)
    weight = {(c.name, lv.label): lv.weight for c in model.comparisons for lv in c.levels}
    before = {(c.name, lv.label): lv.weight for c in base.comparisons for lv in c.levels}
    assert weight != before  # estimated, not copied
    for name in ("name", "given", "birth_date", "birth_place"):
        assert weight[(name, "exact")] > 3 > -3 > weight[(name, "else")]
    assert weight[("birth_date", "null")] == 0.0  # null levels are not trained
    # The trained model scores: same person high, different persons low.
    matcher = EmbeddedMatcher(model)
    with db.transaction() as session:
        rows = session.scalars(select(SourceIdentity).order_by(SourceIdentity.id).limit(400))
        by_patient: dict[int, list[SourceIdentity]] = {}
        for row in rows:
            by_patient.setdefault(row.patient_id, []).append(row)
    pairs = [v[:2] for v in by_patient.values() if len(v) > 1]
    same = [matcher.score(service.traits_of(a), service.traits_of(b)).weight for a, b in pairs]
    firsts = [v[0] for v in by_patient.values()]
    other = [
        matcher.score(service.traits_of(a), service.traits_of(b)).weight
        for a, b in zip(firsts, firsts[len(firsts) // 2 :], strict=False)  # far apart persons
    ]
    assert sorted(same)[len(same) // 2] > model.auto_link
    assert sorted(other)[len(other) // 2] < 0 and max(other) < model.auto_link


def test_train_refuses_a_registry_too_small(tmp_path: Path, database_url: str) -> None:
    done = _run(tmp_path, database_url, "train", check=False)
    assert done.returncode == 1 and "training needs at least 1000" in done.stderr
