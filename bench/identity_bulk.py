"""Bulk load of an identity registry: N source identities from the labelled generator
(bench/identity_data.py) written straight into a migrated database, as if every record had
already gone through ``identity.service.feed`` and been matched perfectly (one regional patient
per generated person; link NEW for a person's first record, AUTO for the others).

    .venv/bin/python -m bench.identity_bulk --database-url URL [--records 1000000] [--seed 0]
        [--keep-indexes] [--explain 3]

identity_source rows carry every column the service fills, the normalised ones computed with
``identity.traits.normalize_name`` exactly as ``service._apply`` does. SQLite: SQLAlchemy Core
``insert()`` executemany on one connection with ``PRAGMA synchronous=OFF``; PostgreSQL: psycopg
``COPY ... FROM STDIN``. Both: few transactions, the secondary indexes of identity_source and
identity_link dropped before and rebuilt after (``--keep-indexes`` to insert through them), the
sequences moved past the loaded ids; PostgreSQL tables are then ``VACUUM ANALYZE``d (what
autovacuum would have done to a grown registry); SQLite is not ANALYZEd (the service never
does it), see ``--explain``. The first ``--records`` records of ``generate(n, seed=...)`` are
the same whatever ``n``, so a later record of the stream (``stream(..., extra=k)``) is new to
the registry: the first record of a new person or a later record of a known one.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import secrets
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Index, Table, create_engine, insert, text
from sqlalchemy.engine import make_url

from bench.http_baseline import temporary_postgres
from bench.identity_data import SourceRecord, generate
from enrs.identity import repository
from enrs.identity.matching.compare import Traits
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import IdentityLink, RegionalPatient, SourceIdentity
from enrs.identity.traits import (
    INS_NIR_OID,
    normalize_address,
    normalize_city,
    normalize_name,
    normalize_phone,
    phonetic,
)
from enrs.kit.db import Database, utcnow
from enrs.kit.migrate import upgrade_head

PATIENT: Table = RegionalPatient.__table__  # type: ignore[assignment]
SOURCE: Table = SourceIdentity.__table__  # type: ignore[assignment]
LINK: Table = IdentityLink.__table__  # type: ignore[assignment]
ACTOR = "bench:bulk"
CACHE_VERSION = 2  # bump when the rows written change (invalidates the cached registries)
Row = dict[str, Any]  # column name -> value, every column of the table


def stream(n_records: int, seed: int, *, extra: int = 0) -> Iterator[SourceRecord]:
    """The registry's ``n_records`` records, then ``extra`` records that follow them."""
    return islice(generate(n_records + extra, seed=seed), n_records + extra)


class RowMaker:
    """Turns records into (patient row or None, source row, link row), ids assigned in order."""

    def __init__(self, model_version: str) -> None:
        self.model_version = model_version
        self.patients: dict[int, int] = {}  # person_id -> patient id
        self.sources = 0
        self.now = utcnow()
        self._norm: dict[str | None, str] = {}

    def norm(self, value: str | None) -> str:
        out = self._norm.get(value)
        if out is None:
            out = self._norm[value] = normalize_name(value)
        return out

    def keys(self, rec: SourceRecord, first_given: str) -> dict[str, str | None]:
        """The matching keys, as ``service.matching_keys`` computes them."""
        keys = {
            "p_birth_name": phonetic(self.norm(rec.birth_name)),
            "p_first_given": phonetic(self.norm(first_given)),
            "n_address": normalize_address(rec.address_line),
            "n_city": normalize_city(rec.city),
            "n_phone": normalize_phone(rec.phone),
            "n_email": None,
            "birth_order": None,
        }
        return {k: v or None for k, v in keys.items()}

    def rows(self, rec: SourceRecord) -> tuple[Row | None, Row, Row]:
        """The rows of one record, what ``service.feed`` (HL7 path) would have written."""
        now, patient_row = self.now, None
        patient_id = self.patients.get(rec.person_id)
        if patient_id is None:
            patient_id = self.patients[rec.person_id] = len(self.patients) + 1
            rri = secrets.token_hex(8).upper()  # as service.new_patient
            patient_row = {"id": patient_id, "rri": rri, "active": True, "merged_into_id": None,
                           "created_at": now, "updated_at": now}  # fmt: skip
        self.sources += 1
        given = [g.strip() for g in rec.given_names if g and g.strip()]
        source = {
            "id": self.sources, "authority": rec.authority, "ipp": rec.ipp,
            "patient_id": patient_id, "birth_name": rec.birth_name, "used_name": rec.used_name,
            "given_names": " ".join(given), "birth_date": rec.birth_date, "sex": rec.sex,
            "birth_place": rec.birth_place, "address_line": rec.address_line or None,
            "postal_code": rec.postal_code or None, "city": rec.city or None, "country": "FRA",
            "telecom": json.dumps([{"system": "phone", "value": rec.phone}]) if rec.phone else None,
            "ins": rec.ins, "ins_system": (rec.ins_system or INS_NIR_OID) if rec.ins else None,
            "status": rec.status, "attributes": " ".join(sorted(rec.attributes)),
            "method_collection": None, "validation_mode": None,
            "n_birth_name": self.norm(rec.birth_name), "n_used_name": self.norm(rec.used_name),
            "n_given_names": "|".join(self.norm(g) for g in given),
            "n_first_given": self.norm(given[0]),
            "birth_year": rec.birth_date.year if rec.birth_date else None,
            **self.keys(rec, given[0]),
            "active": True, "version": 1, "created_at": now, "updated_at": now,
        }  # fmt: skip
        auto = patient_row is None
        link = {
            "id": self.sources, "source_id": self.sources, "patient_id": patient_id,
            "method": "AUTO" if auto else "NEW", "score": None,
            "model_version": self.model_version if auto else None, "actor": ACTOR,
            "reason": None, "created_at": now, "ended_at": None, "ended_by": None,
        }  # fmt: skip
        return patient_row, source, link


def _columns(table: Table) -> list[str]:
    return [c.name for c in table.columns]


def secondary_indexes(table: Table) -> list[Index]:
    """The non-unique indexes of ``table`` (the PK and the unique constraints stay)."""
    return sorted((i for i in table.indexes if not i.unique), key=lambda i: str(i.name))


@dataclass
class LoadStats:
    """What a load did and how long each phase took (seconds)."""

    backend: str
    records: int
    persons: int
    rows: int
    insert_s: float
    index_s: float
    finish_s: float
    total_s: float
    rows_per_s: float
    records_per_s: float
    db_size_mb: float


def database_size(url: str) -> int:
    """Bytes on disk: the SQLite file and its WAL, or ``pg_database_size``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    finally:
        engine.dispose()


def _write_batch(conn: Any, pg: bool, batch: dict[str, list[Row]]) -> None:
    for table in (PATIENT, SOURCE, LINK):
        rows = batch[table.name]
        if not rows:
            continue
        if pg:  # conn is the psycopg connection
            names = _columns(table)
            copy = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
            with conn.cursor() as cur, cur.copy(copy) as cp:
                for row in rows:
                    cp.write_row([row.get(name) for name in names])  # absent: NULL
        else:  # conn is a SQLAlchemy connection
            conn.execute(insert(table), rows)
        rows.clear()


def load(
    url: str,
    records: Iterable[SourceRecord],
    *,
    batch_size: int = 20_000,
    commit_every: int = 200_000,
    keep_indexes: bool = False,
    progress: bool = True,
) -> LoadStats:
    """Migrate ``url`` and load ``records`` (e.g. ``stream(n, seed)``) into it."""
    upgrade_head(url)
    pg = make_url(url).get_backend_name() == "postgresql"
    engine = create_engine(url)
    maker = RowMaker(MatchModel.load().version)
    dropped = [] if keep_indexes else secondary_indexes(SOURCE) + secondary_indexes(LINK)
    started = time.perf_counter()
    batch: dict[str, list[Row]] = {t.name: [] for t in (PATIENT, SOURCE, LINK)}
    with engine.connect() as conn:
        if not pg:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")  # this loading connection only
            conn.exec_driver_sql("PRAGMA cache_size=-1000000")  # 1 GB page cache
        for index in dropped:
            index.drop(conn)
        conn.commit()
        raw: Any = conn.connection.driver_connection if pg else conn
        for i, rec in enumerate(records, start=1):
            patient, source, link = maker.rows(rec)
            if patient is not None:
                batch[PATIENT.name].append(patient)
            batch[SOURCE.name].append(source)
            batch[LINK.name].append(link)
            if i % batch_size == 0:
                _write_batch(raw, pg, batch)
            if i % commit_every == 0:
                raw.commit()
                if progress:
                    rate = i / (time.perf_counter() - started)
                    print(f"  {i:>9,} records ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        _write_batch(raw, pg, batch)
        raw.commit()
        inserted = time.perf_counter()
        for index in dropped:
            index.create(conn)
        conn.commit()
        indexed = time.perf_counter()
        _finish(engine, conn, pg)
    engine.dispose()
    done = time.perf_counter()
    n_rows = maker.sources * 2 + len(maker.patients)
    return LoadStats(
        backend="postgresql" if pg else "sqlite",
        records=maker.sources,
        persons=len(maker.patients),
        rows=n_rows,
        insert_s=inserted - started,
        index_s=indexed - inserted,
        finish_s=done - indexed,
        total_s=done - started,
        rows_per_s=n_rows / (done - started),
        records_per_s=maker.sources / (done - started),
        db_size_mb=database_size(url) / 2**20,
    )


def format_stats(stats: LoadStats) -> str:
    """A two-line table of a load."""
    head = ("backend", "records", "persons", "rows", "insert s", "index s", "finish s",
            "total s", "rows/s", "records/s", "DB MB")  # fmt: skip
    values = (stats.backend, f"{stats.records:,}", f"{stats.persons:,}", f"{stats.rows:,}",
              f"{stats.insert_s:.1f}", f"{stats.index_s:.1f}", f"{stats.finish_s:.1f}",
              f"{stats.total_s:.1f}", f"{stats.rows_per_s:,.0f}", f"{stats.records_per_s:,.0f}",
              f"{stats.db_size_mb:,.0f}")  # fmt: skip
    widths = [max(len(h), len(v)) + 2 for h, v in zip(head, values, strict=True)]
    return "\n".join(
        "".join(f"{cell:>{w}}" for cell, w in zip(line, widths, strict=True))
        for line in (head, values)
    )


def _finish(engine: Engine, conn: Any, pg: bool) -> None:
    """Sequences past the loaded ids and statistics (PostgreSQL); the identity change log
    emptied but its last entry (nobody read ahead of the load) and a clean WAL (SQLite)."""
    if not pg:
        conn.exec_driver_sql(
            "DELETE FROM identity_change WHERE seq < (SELECT max(seq) FROM identity_change)"
        )
        conn.commit()
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    for table in (PATIENT, SOURCE, LINK):
        sql = f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM "  # noqa: S608
        conn.exec_driver_sql(sql + table.name)
    conn.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
        for table in (PATIENT, SOURCE, LINK):
            auto.exec_driver_sql(f"VACUUM ANALYZE {table.name}")


def explain_candidates(url: str, samples: Iterable[SourceRecord]) -> list[dict[str, Any]]:
    """The plan and timing (warm: second call) of ``repository.candidates`` for each sample
    record: its SQL (``repository.blocking_sql``) explained with its parameters (``EXPLAIN
    QUERY PLAN`` on SQLite, ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL)."""
    from bench.identity_quality import to_input  # only when asked

    db = Database(url)
    out = []
    for rec in samples:
        data = to_input(rec)
        traits = Traits(
            birth_name=normalize_name(data.birth_name),
            used_name=normalize_name(data.used_name),
            given_names=tuple(normalize_name(g) for g in data.given_names),
            birth_date=data.birth_date,
            sex=data.sex,
            birth_place=data.birth_place,
            postal_code=data.postal_code,
            ins=data.ins,
        )
        with db.transaction() as session:  # the second call is timed (warm)
            repository.candidates(session, traits)
        with db.transaction() as session:
            t0 = time.perf_counter()
            found = repository.candidates(session, traits)
            elapsed = time.perf_counter() - t0
            statement, params = repository.blocking_sql(session, traits) or ("", ())
            prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
            rows = session.connection().exec_driver_sql(prefix + statement, params).all()
            plan = [str(r[-1]) for r in rows]
        out.append({"record": f"{rec.birth_name} {rec.given_names[0]} {rec.birth_date}",
                    "candidates": len(found), "ms": elapsed * 1000, "plan": plan})  # fmt: skip
    db.dispose()
    return out


def sqlite_registry(
    n: int, seed: int, extra: int, folder: Path
) -> tuple[Path, list[SourceRecord], dict[str, Any]]:
    """A working copy in ``folder`` of the SQLite registry cached under the temp dir (keyed by
    size, seed and CACHE_VERSION; built if missing) and the ``extra`` records that follow it."""
    cache = Path(tempfile.gettempdir()) / f"enrs-identity-registry-v{CACHE_VERSION}-{n}-s{seed}"
    db, tail = cache.with_suffix(".db"), cache.with_suffix(".next.pickle")
    info: dict[str, Any] = {"cache": str(db), "reused": db.exists() and tail.exists()}
    if info["reused"]:
        with tail.open("rb") as fh:
            following: list[SourceRecord] = pickle.load(fh)  # noqa: S301 - our own file
        info["reused"] = len(following) >= extra
    if not info["reused"]:
        print(f"building the SQLite registry cache {db}...", file=sys.stderr, flush=True)
        part = db.with_suffix(".part")
        for stale in (part, Path(f"{part}-wal"), Path(f"{part}-shm")):
            stale.unlink(missing_ok=True)
        records = stream(n, seed, extra=max(extra, 100_000))
        info["load"] = asdict(load(f"sqlite:///{part}", islice(records, n)))
        following = list(records)
        with tail.open("wb") as fh:
            pickle.dump(following, fh)
        part.rename(db)
    work = folder / "registry.db"
    t0 = time.perf_counter()
    shutil.copyfile(db, work)
    info["copy_s"] = time.perf_counter() - t0
    upgrade_head(f"sqlite:///{work}")  # a cache built before the latest migrations
    return work, following[:extra], info


@contextmanager
def pg_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new database ``enrs_rt_<hex>`` on the server of ``admin_url`` (a copy of
    ``template``, if given), dropped on exit."""
    with temporary_postgres(admin_url, prefix="enrs_rt", template=template) as url:
        yield url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--commit-every", type=int, default=200_000)
    parser.add_argument("--keep-indexes", action="store_true", help="insert through the indexes")
    parser.add_argument("--explain", type=int, default=0, help="explain the candidate query for "
                        "K records that follow the registry (after the load)")  # fmt: skip
    parser.add_argument("--no-load", action="store_true", help="only --explain")
    args = parser.parse_args(argv)
    if not args.no_load:
        stats = load(
            args.database_url, stream(args.records, args.seed), batch_size=args.batch_size,
            commit_every=args.commit_every, keep_indexes=args.keep_indexes,
        )  # fmt: skip
        print(format_stats(stats))
        print(json.dumps(asdict(stats)), file=sys.stderr)
    if args.explain:
        tail = deque(stream(args.records, args.seed, extra=args.explain), maxlen=args.explain)
        for item in explain_candidates(args.database_url, tail):
            print(f"\n{item['record']}: {item['candidates']} candidates in {item['ms']:.1f} ms")
            print("\n".join(f"  {line}" for line in item["plan"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
