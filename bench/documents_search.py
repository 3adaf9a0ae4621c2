"""ITI-67 at a regional repository's size: issue 13's figure "1,600,000 documents' metadata
indexed: ITI-67 search by patient p95 ≤ 50 ms".

    .venv/bin/python -m bench.documents_search [--patients 300000] [--documents 1600000]
        [--postgres] [--queries 1000] [--concurrency 4] [--duration 30] [--json F]

A new database (SQLite under a temporary folder, or a temporary PostgreSQL database) is
migrated and filled by ``bench/documents_data.py``; ``enrs serve`` runs on it; the CHU's
system client (its facility has every patient in care) gets a token; ``--concurrency``
closed-loop HTTP clients send, for random patients:

- baseline in the same run: ``DocumentReference/{id}``, a read by key (the same access rule);
- ``DocumentReference?patient.identifier=urn:oid:{CHU}|{IPP}`` (ITI-67, the newest 20);
- ``DocumentReference?patient=Patient/{RRI}&type=…&date=ge…`` (ITI-67 with filters);
- ``List?patient.identifier=…`` (ITI-66).

Printed per scenario: queries, errors, queries/s, p50/p95/p99 ms, results per query, the
server's CPU per query, its p95 over the baseline's; and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
from tests.support.live_server import live_server

from bench import documents_data
from bench._load import ProcTreeSampler
from bench.directory_search import print_table
from bench.http_baseline import say
from bench.identity_pdq import MB, Query, _http_query, _token, run_scenarios
from enrs.documents.models import DocumentEntry
from enrs.kit.db import Database

SCOPE = "system/DocumentReference.rs system/List.s system/Binary.r"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def facility_token(url: str, base_url: str) -> str:
    """A token of the CHU's system client (its facility has the patients in care)."""
    return _token(url, base_url, SCOPE, finess=documents_data.CHU_FINESS)


def _document_ids(url: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    db = Database(url)
    try:
        with db.transaction(write=False) as session:
            top = int(session.scalar(sa.select(sa.func.max(DocumentEntry.id))) or 0)
            picks = [rng.randint(1, top) for _ in range(n)]
            return list(
                session.scalars(
                    sa.select(DocumentEntry.resource_id).where(DocumentEntry.id.in_(picks))
                )
            )
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--patients", type=int, default=300_000)
    add("--documents", type=int, default=1_600_000)
    add("--postgres", action="store_true", help="a temporary PostgreSQL database")
    add("--pg-admin-url", default=PG_ADMIN_URL)
    add("--queries", type=int, default=1000)
    add("--concurrency", type=int, default=4)
    add("--duration", type=float, default=30.0)
    add("--seed", type=int, default=0)
    add("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        tmp, url = documents_data.database(
            stack, "enrs-docsearch-", postgres=args.postgres, pg_admin_url=args.pg_admin_url
        )
        say(f"seeding {args.documents:,} documents of {args.patients:,} patients...")
        started = time.perf_counter()
        seeded = documents_data.seed(
            url, patients=args.patients, documents=args.documents, seed=args.seed
        )
        say(f"seeded in {time.perf_counter() - started:.0f} s")
        patients = [rng.choice(seeded.sample) for _ in range(args.queries)]
        doc_ids = _document_ids(url, args.queries, args.seed)
        chu = documents_data.CHU_OID

        def q(path: str, **params: str) -> Query:
            return _http_query(f"{path}?{urlencode(params)}")

        by_ipp = [{"patient.identifier": f"urn:oid:{chu}|{ipp}"} for ipp, _ in patients]
        filtered = [
            {
                "patient": f"Patient/{rri}",
                "type": "http://loinc.org|11490-0",
                "date": "ge2020-01-01",
            }
            for _, rri in patients
        ]
        scenarios: list[tuple[str, list[Query]]] = [
            (
                "DocumentReference/{id} (baseline)",
                [_http_query(f"/fhir/DocumentReference/{i}") for i in doc_ids],
            ),
            ("ITI-67 patient.identifier", [q("/fhir/DocumentReference", **p) for p in by_ipp]),
            ("ITI-67 patient+type+date", [q("/fhir/DocumentReference", **p) for p in filtered]),
            ("ITI-66 List patient.identifier", [q("/fhir/List", **p) for p in by_ipp]),
        ]
        server = stack.enter_context(live_server(data_dir=tmp / "var", database_url=url))
        sampler = stack.enter_context(ProcTreeSampler(server.process.pid))
        headers = {"Authorization": f"Bearer {facility_token(url, server.base_url)}"}

        def http() -> httpx.Client:
            return httpx.Client(base_url=server.base_url, headers=headers, timeout=120)

        runs = [(name, http, queries) for name, queries in scenarios]
        rows = run_scenarios(runs, sampler, args.concurrency, args.duration)
        peak = sampler.overall_peak_rss / MB
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print_table(
        f"{kind}, {args.documents:,} documents of {args.patients:,} patients, "
        f"{args.concurrency} connections, server peak RSS {peak:.0f} MB",
        rows,
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "server_peak_rss_mb": peak}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
