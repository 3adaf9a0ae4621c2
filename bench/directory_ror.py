"""The ROR over HTTP: structures counting their beds, consumers looking for available beds
near a place, at the size of a large region (default 5,000 structures, each with 3 units and
their offers: 15,000 HealthcareService and Location, 45,000 capacity records).

    .venv/bin/python -m bench.directory_ror [--database URL] [--structures 5000]
        [--concurrency 4] [--duration 20] [--json F]

Without ``--database`` a SQLite database is made in a temporary folder; with a PostgreSQL URL,
that database is migrated, filled (it must be empty) and analyzed. Structures are spread at
random over a 300 km × 300 km square (a region and its neighbours); each unit's available
beds are drawn 0–10. ``enrs serve`` runs on it; closed-loop HTTP clients (httpx), each
waiting its answer:

- baseline in the same run: ``Location/{id}``, a read by key;
- ``HealthcareService?specialty=&location.capacity-status=02&location.nb-capacity=gt0&
  location.near=lat|lon|50|km`` (the ROR's search: one activity, available beds, nearest
  first), from random points;
- ``Location?near=lat|lon|30|km&capacity-status=02&nb-capacity=gt0``;
- ``PUT Location/{id}``: a structure's client recounting one of its units (a write, audited).

Printed per scenario: queries, errors, queries/s, p50/p95/p99 ms, results per query, the
server's CPU per query, its p95 over the baseline's; and the server's peak RSS."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
from tests.support.live_server import live_server

from bench._load import ProcTreeSampler
from bench.directory_search import print_table
from bench.identity_pdq import MB, Query, _http_query, run_scenarios
from bench.identity_realtime import say
from enrs.accounts import service as accounts_service
from enrs.directory import offer
from enrs.directory.identifiers import luhn_key
from enrs.directory.models import Capacity, CareService, CareUnit, Structure
from enrs.kit.db import Database, utcnow
from enrs.kit.migrate import upgrade_head

READ = "system/HealthcareService.rs system/Location.rs"
BLANK = (
    "long_name", "name_complement", "addressee", "address_line", "postal_code", "city",
    "n_city", "commune_code", "department_code", "department", "phone", "fax",
    "category_code", "category", "category_group_code", "category_group", "siret", "ape_code",
    "pricing_code", "pricing", "sph_code", "sph", "opened_on", "authorised_on",
    "source_updated_on", "uai",
)  # fmt: skip
WRITE = "system/Location.ru"
CENTRE, HALF_KM = (16.0, -61.5), 150.0
ACTIVITIES = sorted(offer.ACTIVITIES)


def _point(rng: random.Random) -> tuple[float, float]:
    dlat = HALF_KM / 111.2
    dlon = HALF_KM / (111.2 * math.cos(math.radians(CENTRE[0])))
    return (
        CENTRE[0] + rng.uniform(-dlat, dlat),
        CENTRE[1] + rng.uniform(-dlon, dlon),
    )


def fill(url: str, structures: int, seed: int) -> None:
    """``structures`` located structures, 3 units each with their offer and capacities."""
    rng = random.Random(seed)
    now = utcnow()
    db = Database(url)
    try:
        with db.transaction() as session:
            rows = []
            for n in range(structures):
                body = f"99{n:06d}"
                lat, lon = _point(rng)
                rows.append({
                    "finess": f"{body}{luhn_key(body)}", "finess_ej": "", "name": f"STRUCTURE {n}",
                    "n_name": f"structure {n}", "content_hash": "bench", "latitude": lat,
                    "longitude": lon, "created_at": now, "updated_at": now,
                    **dict.fromkeys(BLANK, ""),
                })  # fmt: skip
            session.execute(sa.insert(Structure), rows)
            ids = list(session.scalars(sa.select(Structure.id).order_by(Structure.id)))
            units = [
                {"structure_id": s, "name": f"Unité {k}", "status": "active",
                 "created_at": now, "updated_at": now, "capacity_updated_at": now,
                 "capacity_updated_by": "bench"}
                for s in ids for k in range(3)
            ]  # fmt: skip
            session.execute(sa.insert(CareUnit), units)
            made = session.execute(sa.select(CareUnit.id, CareUnit.structure_id)).all()
            capacity, services = [], []
            for unit_id, structure_id in made:
                installed = rng.randint(5, 40)
                for status, count in (("01", installed), ("02", rng.randint(0, 10))):
                    capacity.append({
                        "unit_id": unit_id, "nature": "01", "status": status, "gender": "03",
                        "count": count, "updated_at": now,
                    })  # fmt: skip
                code = rng.choice(ACTIVITIES)
                services.append({
                    "structure_id": structure_id, "unit_id": unit_id, "name": f"HC {code}",
                    "field_code": "01", "field": offer.FIELDS["01"], "activity_code": code,
                    "activity": offer.ACTIVITIES[code], "care_mode_code": "28",
                    "care_mode": offer.CARE_MODES["28"], "active": True, "created_at": now,
                    "updated_at": now,
                })  # fmt: skip
            session.execute(sa.insert(Capacity), capacity)
            session.execute(sa.insert(CareService), services)
        # Statistics, as PostgreSQL's autovacuum would gather them after such a load (a plan
        # made on an empty table's guesses starts from the wrong index). Not on SQLite, which
        # has no autovacuum: there its statistics made these searches 20 % slower.
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
                conn.commit()
    finally:
        db.dispose()


def _facility_tokens(url: str, base_url: str, count: int) -> list[tuple[str, list[int]]]:
    """Tokens of ``count`` structures' clients, each with its structure's units."""
    db = Database(url)
    out = []
    try:
        with db.transaction() as session:
            picked = session.execute(
                sa.select(Structure.finess, Structure.id).order_by(Structure.id).limit(count)
            ).all()
            made = []
            for finess, structure_id in picked:
                client, secret = accounts_service.create_client(
                    session, name=f"bench {finess}", scope=WRITE, finess=finess
                )
                units = list(
                    session.scalars(
                        sa.select(CareUnit.id).where(CareUnit.structure_id == structure_id)
                    )
                )
                made.append((client.client_id, secret or "", units))
        for client_id, secret, units in made:
            answer = httpx.post(
                f"{base_url}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
            )
            answer.raise_for_status()
            out.append((str(answer.json()["access_token"]), units))
    finally:
        db.dispose()
    return out


def _recount(token: str, unit_id: int, finess: str, rng: random.Random) -> Query:
    body = {
        "resourceType": "Location", "name": "Unité recomptée", "status": "active",
        "managingOrganization": {"reference": f"Organization/{finess}"},
        "extension": [
            {"url": "https://interop.esante.gouv.fr/ig/fhir/ror/StructureDefinition/"
                    "ror-location-supported-capacity",
             "extension": [
                 {"url": "capacityType",
                  "valueCodeableConcept": {"coding": [{"system": offer.NATURE, "code": "01"}]}},
                 {"url": "capacityStatus",
                  "valueCodeableConcept": {"coding": [{"system": offer.STATUS, "code": status}]}},
                 {"url": "nbCapacity", "valueInteger": count},
             ]}
            for status, count in (("01", 30), ("02", rng.randint(0, 10)))
        ],
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def run(http: httpx.Client) -> tuple[bool, int]:
        answer = http.put(f"/fhir/Location/{unit_id}", json=body, headers=headers)
        return answer.status_code == 200, 1

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="an empty database (default: SQLite, temporary)")
    parser.add_argument("--structures", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="enrs-ror-") as tmp:
        url = args.database or f"sqlite:///{tmp}/enrs.db"
        upgrade_head(url)
        say(f"filling {args.structures} structures...")
        fill(url, args.structures, args.seed)
        units = 3 * args.structures

        def q(path: str, **params: str) -> Query:
            return _http_query(f"{path}?{urlencode(params)}")

        def near(km: int) -> str:
            lat, lon = _point(rng)
            return f"{lat:.5f}|{lon:.5f}|{km}|km"

        ror = [
            q("/fhir/HealthcareService", specialty=f"{offer.ACTIVITY}|{rng.choice(ACTIVITIES)}",
              **{"location.capacity-status": f"{offer.STATUS}|02",
                 "location.nb-capacity": "gt0", "location.near": near(50)})
            for _ in range(args.queries)
        ]  # fmt: skip
        locations = [
            q("/fhir/Location", near=near(30), **{"capacity-status": f"{offer.STATUS}|02",
                                                  "nb-capacity": "gt0"})
            for _ in range(args.queries)
        ]  # fmt: skip
        with (
            live_server(data_dir=Path(tmp) / "var", database_url=url) as server,
            ProcTreeSampler(server.process.pid) as sampler,
        ):
            from bench.identity_pdq import _token

            reader = _token(url, server.base_url, READ)
            writers = _facility_tokens(url, server.base_url, 16)
            db = Database(url)
            with db.transaction(write=False) as session:
                finess = dict(
                    session.execute(
                        sa.select(CareUnit.id, Structure.finess).join(
                            Structure, Structure.id == CareUnit.structure_id
                        )
                    ).all()
                )
            db.dispose()
            recounts = [
                _recount(token, unit, finess[unit], rng)
                for _ in range(args.queries // 16 + 1)
                for token, ids in writers
                for unit in ids[:1]
            ]
            scenarios: list[tuple[str, list[Query]]] = [
                ("Location/{id} (baseline)",
                 [_http_query(f"/fhir/Location/{rng.randint(1, units)}")
                  for _ in range(args.queries)]),
                ("HealthcareService ROR search, 50 km", ror),
                ("Location?near=30 km&available beds", locations),
                ("PUT Location/{id} (recount)", recounts),
            ]  # fmt: skip
            headers = {"Authorization": f"Bearer {reader}"}

            def http() -> httpx.Client:
                return httpx.Client(base_url=server.base_url, headers=headers, timeout=120)

            runs = [(name, http, queries) for name, queries in scenarios]
            rows = run_scenarios(runs, sampler, args.concurrency, args.duration)
            peak = sampler.overall_peak_rss / MB
    print_table(
        f"{args.structures} structures, {units} units and offers, "
        f"{args.concurrency} connections, server peak RSS {peak:.0f} MB",
        rows,
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "server_peak_rss_mb": peak}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
