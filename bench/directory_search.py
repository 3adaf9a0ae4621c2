"""Directory searches at national size: issue 12's figure "search by name ``:contains`` and by
profession + commune: p95 ≤ 50 ms at that size" (2,500,000 activity lines).

    .venv/bin/python -m bench.directory_search --database URL [--queries 1000]
        [--concurrency 4] [--duration 30] [--json F]

``URL`` is a directory loaded by ``bench/directory_import.py`` (``--keep-database DIR`` for
SQLite: ``sqlite:///DIR/enrs.db``; on PostgreSQL, keep the database it made). ``enrs serve``
runs on it; a system client with the directory's read scopes gets a token; the queries are
built from entries of the database (so most find someone), sent by ``--concurrency``
closed-loop HTTP clients (httpx), each waiting for its answer:

- ``Practitioner?name:contains=`` three to five letters from inside a family name;
- ``PractitionerRole?role=&address-city=``: a profession and a commune of an activity;
- ``Practitioner?family=``: the start of a family name (an index range);
- baseline in the same run: ``Practitioner/{idNatPs}``, a read by key.

Printed per scenario: queries, errors, queries/s, p50/p95/p99 ms, results per query (the page
is 20), the server's CPU per query, its p95 over the baseline's; and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
from tests.support.live_server import live_server

from bench._load import ProcTreeSampler
from bench.identity_pdq import MB, Query, _http_query, _token, run_scenarios
from enrs.directory.models import Activity, Professional
from enrs.kit.db import Database

SCOPE = "system/Practitioner.rs system/PractitionerRole.rs system/Organization.rs"


def _samples(url: str, n: int, seed: int) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Family names, idNatPs and (profession, commune) pairs drawn from the database."""
    rng = random.Random(seed)
    db = Database(url)
    try:
        with db.transaction(write=False) as session:
            top = int(session.scalar(sa.select(sa.func.max(Professional.id))) or 0)
            ids = [rng.randint(1, top) for _ in range(n)]
            people = session.execute(
                sa.select(Professional.family, Professional.id_nat_ps).where(
                    Professional.id.in_(ids)
                )
            ).all()
            top_a = int(session.scalar(sa.select(sa.func.max(Activity.id))) or 0)
            picks = [rng.randint(1, top_a) for _ in range(n)]
            pairs = session.execute(
                sa.select(Activity.profession_code, Activity.city).where(
                    Activity.id.in_(picks), Activity.city != ""
                )
            ).all()
    finally:
        db.dispose()
    return [f for f, _ in people], [i for _, i in people], [(p, c) for p, c in pairs]


def _inside(name: str, rng: random.Random) -> str:
    """Three to five letters from inside ``name`` (what a user remembers of it)."""
    letters = name.replace(" ", "").replace("-", "")
    size = min(len(letters), rng.randint(3, 5))
    start = rng.randint(0, max(0, len(letters) - size))
    return letters[start : start + size]


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """The figures of :func:`~bench.identity_pdq.run_scenarios`, each p95 over the first
    row's."""
    base = float(rows[0]["p95_ms"]) or 1.0
    print(title)
    print(f"{'scenario':38}{'queries':>8}{'errors':>7}{'q/s':>7}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'p99 ms':>8}{'hits':>6}{'srv ms/q':>9}{'p95/base':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['scenario']:38}{r['queries']:>8}{r['errors']:>7}{r['per_s']:>7.0f}"
              f"{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['hits_mean']:>6.1f}"
              f"{r['server_cpu_ms_per_query']:>9.2f}{r['p95_ms'] / base:>9.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="a directory loaded at national size")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    families, national_ids, pairs = _samples(args.database, args.queries, args.seed)

    def q(path: str, **params: str) -> Query:
        return _http_query(f"{path}?{urlencode(params)}")

    contains = [q("/fhir/Practitioner", **{"name:contains": _inside(f, rng)}) for f in families]
    roles = [q("/fhir/PractitionerRole", role=p, **{"address-city": c}) for p, c in pairs]
    scenarios: list[tuple[str, list[Query]]] = [
        (
            "Practitioner/{idNatPs} (baseline)",
            [_http_query(f"/fhir/Practitioner/{i}") for i in national_ids],
        ),
        ("Practitioner?name:contains=", contains),
        ("PractitionerRole?role=&address-city=", roles),
        ("Practitioner?family= (start)", [q("/fhir/Practitioner", family=f[:4]) for f in families]),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="enrs-dirsearch-") as tmp,
        live_server(data_dir=Path(tmp) / "var", database_url=args.database) as server,
        ProcTreeSampler(server.process.pid) as sampler,
    ):
        headers = {"Authorization": f"Bearer {_token(args.database, server.base_url, SCOPE)}"}

        def http() -> httpx.Client:
            return httpx.Client(base_url=server.base_url, headers=headers, timeout=120)

        runs = [(name, http, queries) for name, queries in scenarios]
        rows = run_scenarios(runs, sampler, args.concurrency, args.duration)
        peak = sampler.overall_peak_rss / MB
    print_table(
        f"database {args.database}, {args.concurrency} connections, server peak RSS {peak:.0f} MB",
        rows,
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "server_peak_rss_mb": peak}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
