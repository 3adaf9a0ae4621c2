"""The documents' retention job (``enrs documents retention``) on a regional registry, next to
one aggregate statement that judges the same records, in the same run.

    .venv/bin/python -m bench.documents_retention [--patients 30000] [--documents 160000]
        [--postgres]

The registry (``bench/documents_data.py``, rows written straight into the tables): documents
dated over the 36 years before 2026, one CHU identity per patient born 1930–2020, 5 % of the
patients dead since 2000; no merge. Measured, on the same database:

- **judge**: ``retention.purge(dry_run=True)``, the job's judging alone (patient by patient:
  the current patient, its merged ones, their last document, their identities' dates);
- **baseline**: one ``GROUP BY`` statement per table (last document and count per patient;
  birth dates and latest death per patient), the same rule applied to its rows in Python:
  what judging costs without following merges; its document count must equal the job's;
- **purge**: ``retention.purge``: rows deleted with their submission sets, DMP exports and
  audit records, the blobs' deletion asked for (the storage is empty: an absent blob is not an
  error, so the blobs' own cost is not measured).

Printed: seconds, patients/s and documents/s, the ratio baseline/judge, the process's peak RSS
(set by the seeding) and the Python heap's peak during a judging (``tracemalloc``, another dry
run).
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from contextlib import ExitStack
from datetime import UTC, datetime

import sqlalchemy as sa

from bench import documents_data
from bench.http_baseline import PG_ADMIN_URL, say
from enrs.documents import retention
from enrs.documents.models import DocumentEntry
from enrs.identity.models import SourceIdentity
from enrs.kit import retention as kit_retention
from enrs.kit.db import Database, utcnow
from enrs.kit.storage import FsBlobStorage, MasterKeyring

YEARS = 20


def baseline(db: Database) -> tuple[int, int]:
    """(patients, documents) past their period, judged from two aggregate statements."""
    now = utcnow()
    limit = kit_retention.cutoff(years=YEARS, now=now)
    born_after = kit_retention.cutoff(years=kit_retention.MINORS_UNTIL, now=now).date()
    died_before = kit_retention.cutoff(years=kit_retention.AFTER_DEATH, now=now).date()
    with db.transaction(write=False) as session:
        docs = session.execute(
            sa.select(DocumentEntry.patient_id, sa.func.max(DocumentEntry.date), sa.func.count())
            .group_by(DocumentEntry.patient_id)
        ).all()  # fmt: skip
        lives = {
            patient: (youngest, known, count, died)
            for patient, youngest, known, count, died in session.execute(
                sa.select(
                    SourceIdentity.patient_id,
                    sa.func.max(SourceIdentity.birth_date),
                    sa.func.count(SourceIdentity.birth_date),
                    sa.func.count(),
                    sa.func.max(SourceIdentity.death_date),
                )
                .where(SourceIdentity.active)
                .group_by(SourceIdentity.patient_id)
            )
        }
    patients = documents = 0
    for patient, last, count in docs:
        youngest, known, identities, died = lives.get(patient, (None, 0, 0, None))
        if (
            died is not None
            and died < died_before
            and kit_retention.died_soon_after(last.date(), died)
        ):
            expired = True
        else:
            adult = identities > 0 and known == identities and youngest <= born_after
            expired = last < limit and adult
        if expired:
            patients += 1
            documents += count
    return patients, documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--patients", type=int, default=30_000)
    add("--documents", type=int, default=160_000)
    add("--postgres", action="store_true", help="a temporary PostgreSQL database")
    add("--pg-admin-url", default=PG_ADMIN_URL)
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        tmp, url = documents_data.database(
            stack, "enrs-docret-", postgres=args.postgres, pg_admin_url=args.pg_admin_url
        )
        say(f"seeding {args.documents:,} documents of {args.patients:,} patients...")
        life = documents_data.Life(since=datetime(1990, 1, 1, tzinfo=UTC), span_years=36)
        documents_data.seed(
            url, patients=args.patients, documents=args.documents, seed=args.seed, life=life
        )
        storage = FsBlobStorage(tmp / "blobs", MasterKeyring(tmp / "keys.json"))
        db = Database(url)
        stack.callback(db.dispose)
        with db.transaction(write=False) as session:
            candidates = len(retention._candidates(session, retention.cutoff(YEARS), utcnow()))

        started = time.perf_counter()
        judged = retention.purge(db, storage, years=YEARS, dry_run=True)
        judge_s = time.perf_counter() - started
        started = time.perf_counter()
        base_patients, base_documents = baseline(db)
        base_s = time.perf_counter() - started
        assert base_documents == judged.documents, (base_documents, judged.documents)
        tracemalloc.start()  # (a second dry run: the seeding set the process's peak RSS)
        retention.purge(db, storage, years=YEARS, dry_run=True)
        heap = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        started = time.perf_counter()
        done = retention.purge(db, storage, years=YEARS)
        purge_s = time.perf_counter() - started
        assert done.documents == judged.documents
        with db.transaction(write=False) as session:
            left = session.scalar(sa.select(sa.func.count()).select_from(DocumentEntry))
    kind = "PostgreSQL" if args.postgres else "SQLite"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{kind}: {args.documents:,} documents of {args.patients:,} patients; {YEARS} years")
    print(f"candidates (a document past {YEARS} years, or a death): {candidates:,} patients")
    print(f"past their period: {base_patients:,} patients, {judged.documents:,} documents")
    print(f"judge (dry run):   {judge_s:7.2f} s  {candidates / judge_s:9.0f} patients/s")
    print(f"baseline (2 GROUP BY): {base_s:7.2f} s  ratio baseline/judge {base_s / judge_s:.3f}")
    print(
        f"purge:             {purge_s:7.2f} s  {done.documents / purge_s:9.0f} documents/s"
        f"  ({left:,} documents left)"
    )
    print(f"peak RSS: {peak:.0f} MB (the seeding's); the job's Python heap peak: {heap:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
