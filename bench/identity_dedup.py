"""Registry-wide duplicate scan: ``enrs identity dedup`` over a bulk-loaded registry.

    .venv/bin/python -m bench.identity_dedup [--records 1000000] [--seed 0] [--missed 0.02]
        [--postgres] [--json F]

The registry is bulk-loaded by bench/identity_bulk.py (every person's records linked to one
regional patient; the SQLite file is cached under /tmp). Then ``--missed`` of the records that
were linked automatically are split off to a regional patient of their own, as if real-time
matching had missed them (the ground truth is kept). The scan runs as the operator runs it,
``python -m enrs identity dedup --json`` in a subprocess: wall time, identities/s, the
command's peak RSS, the tasks it created. Quality: the share of split records the cell's queue
now pairs with their own person (recall), and the tasks pairing two different persons (twins,
homonyms: what the cell reviews). Baseline in the same run: the exact-traits self-join (same
birth name, first name, birth date and sex) in DuckDB on the same frame, the duplicate report
most facilities run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import bindparam, select, update

from bench import identity_bulk as bulk
from enrs.identity.models import IdentityLink, IdentityTask, RegionalPatient, SourceIdentity
from enrs.identity.registry_frame import load_registry
from enrs.kit.db import Database, utcnow

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def split_missed(db: Database, fraction: float, seed: int) -> dict[int, int]:
    """Move ``fraction`` of the AUTO-linked identities to a new patient each; returns
    {new patient id: the patient (person) it was split from}."""
    rng = random.Random(seed)
    with db.transaction() as session:
        auto = session.execute(
            select(IdentityLink.source_id, IdentityLink.patient_id).where(
                IdentityLink.method == "AUTO", IdentityLink.ended_at.is_(None)
            )
        ).all()
        chosen = sorted(rng.sample(auto, int(len(auto) * fraction)))
        now = utcnow()
        first_id = (
            session.scalar(select(RegionalPatient.id).order_by(RegionalPatient.id.desc()).limit(1))
            or 0
        ) + 1
        truth: dict[int, int] = {}
        patients, links = [], []
        for k, (source_id, patient_id) in enumerate(chosen):
            new_id = first_id + k
            truth[new_id] = patient_id
            patients.append(
                {
                    "id": new_id,
                    "rri": f"SPLIT{new_id:011d}",
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            links.append(
                {
                    "source_id": source_id,
                    "patient_id": new_id,
                    "method": "NEW",
                    "actor": "bench:split",
                    "created_at": now,
                }
            )
        session.execute(RegionalPatient.__table__.insert(), patients)
        ids = [s for s, _ in chosen]
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            session.execute(
                update(IdentityLink)
                .where(IdentityLink.source_id.in_(part), IdentityLink.ended_at.is_(None))
                .values(ended_at=now, ended_by="bench:split")
            )
        session.execute(
            update(SourceIdentity.__table__)
            .where(SourceIdentity.__table__.c.id == bindparam("sid"))
            .values(patient_id=bindparam("pid")),
            [{"sid": s, "pid": first_id + k} for k, (s, _) in enumerate(chosen)],
        )
        session.execute(IdentityLink.__table__.insert(), links)
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            for table in ("identity_patient", "identity_link"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"  # noqa: S608
                )
            conn.commit()
    return truth


def baseline(db: Database) -> tuple[float, set[frozenset[int]]]:
    """The exact-traits duplicate report, in DuckDB on the same frame; its seconds."""
    started = time.perf_counter()
    con = duckdb.connect()
    load_registry(db, con)
    rows = con.execute(
        """SELECT DISTINCT l.patient_id, r.patient_id FROM identities l JOIN identities r
           ON l.birth_name = r.birth_name AND l.first_given = r.first_given
          AND l.birth_date = r.birth_date AND l.sex = r.sex AND l.id < r.id
           WHERE l.birth_name <> '' AND l.patient_id <> r.patient_id"""
    ).fetchall()
    con.close()
    return time.perf_counter() - started, {frozenset(r) for r in rows}


def run_dedup(url: str, data_dir: Path) -> tuple[dict[str, Any], float, float]:
    """The command in a subprocess: its JSON report, wall seconds, peak RSS (MB)."""
    env = {**os.environ, "ENRS_DATABASE_URL": url, "ENRS_DATA_DIR": str(data_dir)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "enrs", "identity", "dedup", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(done.stdout.strip().splitlines()[-1]), wall, peak


def task_pairs(db: Database) -> set[frozenset[int]]:
    with db.transaction() as session:
        rows = session.execute(
            select(SourceIdentity.patient_id, IdentityTask.other_patient_id).join(
                SourceIdentity, SourceIdentity.id == IdentityTask.source_id
            )
        ).all()
    return {frozenset(r) for r in rows}


def score(pairs: set[frozenset[int]], truth: dict[int, int]) -> dict[str, Any]:
    def person(patient: int) -> int:
        return truth.get(patient, patient)

    found = {p for p in pairs if len({person(x) for x in p}) == 1}
    recalled = sum(1 for new, old in truth.items() if frozenset((new, old)) in found)
    return {
        "pairs": len(pairs),
        "true_pairs": len(found),
        "other_pairs": len(pairs) - len(found),
        "recall": recalled / len(truth) if truth else None,
    }


def bench(url: str, records: int, missed: float, seed: int, tmp: Path) -> dict[str, Any]:
    db = Database(url)
    truth = split_missed(db, missed, seed)
    base_s, base_pairs = baseline(db)
    report, wall, peak = run_dedup(url, tmp / "var")
    enrs = score(task_pairs(db), truth)
    db.dispose()
    return {
        "records": records,
        "missed": len(truth),
        "dedup": {
            **report,
            "wall_s": wall,
            "child_peak_rss_mb": peak,
            **enrs,
            "ids_per_s": report["identities"] / wall,
        },
        "baseline": {"seconds": base_s, **score(base_pairs, truth)},
        "time_ratio": wall / base_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missed", type=float, default=0.02)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.postgres:
            url = stack.enter_context(bulk.pg_database(PG_ADMIN))
            bulk.load(url, islice(bulk.stream(args.records, args.seed), args.records))
        else:
            path, _, _ = bulk.sqlite_registry(args.records, args.seed, 0, tmp)
            url = f"sqlite:///{path}"
        out = bench(url, args.records, args.missed, args.seed, tmp)
    out["backend"] = "postgresql" if args.postgres else "sqlite"
    d, b = out["dedup"], out["baseline"]
    print(f"backend {out['backend']}: {d['identities']:,} identities, {out['missed']:,} split off")
    print(
        f"  enrs identity dedup: {d['wall_s']:.1f} s wall ({d['ids_per_s']:,.0f} identities/s; "
        f"load {d['seconds']['load']:.1f} s, scoring {d['seconds']['score']:.1f} s, tasks "
        f"{d['seconds'].get('tasks', 0):.1f} s), peak RSS {d['child_peak_rss_mb']:.0f} MB"
    )
    print(
        f"    {d['scored_pairs']:,} scored pairs, {d['tasks_created']:,} tasks: "
        f"{d['true_pairs']:,} same person, {d['other_pairs']:,} two persons; "
        f"recall on split records {d['recall']:.3f}"
    )
    print(
        f"  baseline exact traits: {b['seconds']:.1f} s, {b['pairs']:,} pairs ({b['true_pairs']:,} "
        f"same person), recall {b['recall']:.3f}; time ratio enrs/baseline {out['time_ratio']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
