"""HTTP baseline of ``enrs serve``: closed-loop load on /healthz (the HTTP stack), /fhir/metadata
(+ bearer token check) and /fhir/AuditEvent?_count=10 (authenticated, scope-checked, audited DB
read + hash-chained audit write); then the identity server's realistic mix over a registry
seeded with ``--persons`` generated persons: authenticated and audited FHIR ``Patient`` read
(``Patient/{id}``), search (``family`` + ``birthdate``), the two alternated, and PIXm ITI-104
create (a new identity matched and stored per request); plus an in-process micro-benchmark of
``TokenIssuer.verify``.

Run from the repository root::

    .venv/bin/python -m bench.http_baseline [--duration 10] [--concurrency 32] [--workers 2]
        [--postgres | --database-url URL] [--json PATH]

SQLite in a temporary data dir by default; ``--postgres`` creates a temporary database on the
local PostgreSQL (``--pg-admin-url``) and drops it afterwards; ``--database-url`` uses an existing
database as is (it is migrated and gets a "bench" client and audit records). The server runs as
``enrs serve`` in a subprocess, stopped with SIGTERM at the end, also on error or Ctrl-C; the load
generator runs in its own process (see :mod:`bench._load`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from tests.support.live_server import enrs_command, free_port, live_server

from bench._load import LoadSpec, ProcTreeSampler, percentiles, run_load_subprocess

Request = tuple[str, str, str]  # method, path, body ("{n}": a number unique in the run)


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: tuple[Request, ...]
    token: bool = True


BASE_SCENARIOS = (
    Scenario("healthz", (("GET", "/healthz", ""),), token=False),
    Scenario("metadata (token check)", (("GET", "/fhir/metadata", ""),)),
    Scenario("AuditEvent (DB+audit)", (("GET", "/fhir/AuditEvent?_count=10", ""),)),
)
BENCH_AUTHORITY = "1.2.250.1.71.4.2.2.99"  # the facility whose ITI-104 creates are measured
PG_ADMIN_URL = os.environ.get(
    "ENRS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MB = 1024 * 1024
COLUMNS = (  # header, width, row key (None: req/s ratio to /healthz), format
    ("scenario", 22, "scenario", "<"), ("requests", 9, "requests", ">"),
    ("errors", 7, "errors", ">"), ("req/s", 7, "req_per_s", ">.0f"),
    ("p50 ms", 8, "p50_ms", ">.1f"), ("p95 ms", 8, "p95_ms", ">.1f"),
    ("p99 ms", 8, "p99_ms", ">.1f"), ("/healthz", 9, None, ">.2f"),
    ("srv CPU%", 9, "server_cpu_pct", ">.0f"), ("per worker", 11, "worker_cpu_pct", ">"),
    ("conns", 7, "worker_connections", ">"), ("gen CPU%", 9, "loadgen_cpu_pct", ">.0f"),
    ("pg CPU%", 8, "db_cpu_pct", ">.0f"), ("other%", 7, "other_cpu_pct", ">.0f"),
    ("srv RSS MB", 11, "server_peak_rss_mb", ">.0f"),
)  # fmt: skip


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.http_baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--duration", type=float, default=10.0, help="measured seconds per scenario")
    add("--warmup", type=float, default=2.0, help="warm-up seconds per scenario (not measured)")
    add("--ramp", type=float, default=1.0, help="seconds over which the connections open")
    add("--concurrency", type=int, default=32, help="concurrent keep-alive connections")
    add("--workers", type=int, default=2, help="server worker processes (ENRS_HTTP_WORKERS)")
    add("--max-requests", type=int, default=500_000, help="request cap per scenario")
    add("--verify-seconds", type=float, default=2.0, help="TokenIssuer.verify micro-bench time")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--database-url", help="an existing database (default: temporary SQLite)")
    db.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL database")
    add("--pg-admin-url", default=PG_ADMIN_URL, help="PostgreSQL server for --postgres")
    add("--persons", type=int, default=5000, help="persons generated into the registry")
    add("--no-identity", action="store_true", help="skip the identity server's scenarios")
    add("--only", default="", help="comma-separated words: run the scenarios whose name has one")
    add("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


@contextmanager
def temporary_postgres(
    admin_url: str, prefix: str = "enrs_bench", template: str | None = None
) -> Iterator[str]:
    """Create a database (empty, or a copy of ``template``) on the server of ``admin_url``;
    drop it on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        copy = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def token_microbench(folder: Path, seconds: float, max_ops: int = 2_000_000) -> dict[str, float]:
    """Verify one ES256 access token in a loop for ~``seconds``: ops/s, percentiles in µs."""
    from enrs.kit.security.keys import KeyRing
    from enrs.kit.security.tokens import TokenIssuer

    keys = KeyRing(folder, "ES256")
    keys.load()
    issuer = TokenIssuer(keys, "http://127.0.0.1:8000", 3600)
    token, _ = issuer.issue(subject="bench", client_id="bench", scope="system/AuditEvent.rs")
    for _ in range(200):
        issuer.verify(token)
    samples: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    end = start + int(seconds * 1e9)
    while len(samples) < max_ops:
        t0 = clock()
        issuer.verify(token)
        t1 = clock()
        samples.append(t1 - t0)
        if t1 >= end:
            break
    p50, p95, p99 = (v / 1000 for v in percentiles(samples, (50, 95, 99)))
    ops_per_s = len(samples) / ((clock() - start) / 1e9)
    return {"ops": len(samples), "ops_per_s": ops_per_s, "p50_us": p50, "p95_us": p95,
            "p99_us": p99}  # fmt: skip


def _prepare(data_dir: Path, database_url: str, authorities: list[str]) -> dict[str, str]:
    """``enrs migrate``, ``enrs identity domains add`` of each authority and ``enrs clients
    create``; return the client's credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    out = ""
    scope = "system/AuditEvent.rs system/Patient.crus"
    create = ["clients", "create", "bench", "--scope", scope]
    create += [arg for a in authorities for arg in ("--authority", a)]
    domains = [("identity", "domains", "add", a) for a in authorities]
    for args in (("migrate",), *domains, tuple(create)):
        done = subprocess.run(
            enrs_command(*args), env=env, capture_output=True, text=True, timeout=120
        )
        if done.returncode:
            raise RuntimeError(f"enrs {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        out = done.stdout
    creds: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return creds


def seed_registry(database_url: str, persons: int) -> list[tuple[int, str, str]]:
    """Feed the generated records of ``persons`` persons through the identity service (as
    facilities would); return ``(id, birth name, birth date)`` of the stored identities."""
    from bench.identity_data import generate
    from bench.identity_quality import to_input
    from enrs.identity import service
    from enrs.identity.config import IdentityConfig
    from enrs.identity.matching.engine import matcher_for
    from enrs.identity.models import SourceIdentity
    from enrs.kit.db import Database
    from enrs.settings import PLACEHOLDER_OID_ROOT

    db, matcher = Database(database_url), matcher_for(None)
    config = IdentityConfig(PLACEHOLDER_OID_ROOT)  # as the server started with --dev
    records = list(generate(persons, seed=3))
    for start in range(0, len(records), 500):
        with db.transaction() as session:
            for rec in records[start : start + 500]:
                service.feed(session, matcher, to_input(rec), actor="bench", config=config)
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(SourceIdentity.id, SourceIdentity.birth_name, SourceIdentity.birth_date)
            .where(SourceIdentity.birth_date.is_not(None))
            .order_by(SourceIdentity.id)
        ).all()
    db.dispose()
    return [(int(i), str(name), str(born)) for i, name, born in rows]


def identity_scenarios(registry: list[tuple[int, str, str]]) -> list[Scenario]:
    """Read, search, both alternated, and ITI-104 create, over the seeded registry."""
    from tests.identity.test_fhir import fr_patient

    from bench.identity_data import generate

    sample = random.Random(5).sample(registry, min(2000, len(registry)))
    reads = tuple(("GET", f"/fhir/Patient/{i}", "") for i, _, _ in sample)
    searches = tuple(
        ("GET", f"/fhir/Patient?family={quote(name)}&birthdate={born}", "")
        for _, name, born in sample
    )
    creates = []
    for rec in generate(600, seed=4):
        if rec.birth_date is None:
            continue
        body = fr_patient(
            "b{n}", BENCH_AUTHORITY, family=rec.birth_name, given=rec.given_names,
            birth=rec.birth_date.isoformat(), gender={"M": "male", "F": "female"}.get(
                rec.sex, "unknown"), insee=rec.birth_place, postal=rec.postal_code, city=rec.city,
        )  # fmt: skip
        path = f"/fhir/Patient?identifier={quote(f'urn:oid:{BENCH_AUTHORITY}|b')}{{n}}"
        creates.append(("PUT", path, json.dumps(body)))
    mix = tuple(r for pair in zip(reads, searches, strict=True) for r in pair)
    return [
        Scenario("Patient read (DB+audit)", reads),
        Scenario("Patient search (DB+audit)", searches),
        Scenario("read/search mix (DB+audit)", mix),
        Scenario("ITI-104 create (DB+audit)", tuple(creates)),
    ]


def _token(base_url: str, creds: dict[str, str]) -> str:
    response = httpx.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def run_scenario(
    name: str, spec: LoadSpec, sampler: ProcTreeSampler, *, workers: int, db_match: bytes
) -> dict[str, Any]:
    """One closed-loop run: latencies; server RSS peak, CPU and connections per worker."""
    spec = replace(spec, start_at=time.time() + 1.5)
    sampler.reset_peak()
    with ThreadPoolExecutor(1) as pool:  # CPU figures over the measured window only
        start = spec.start_at + spec.warmup
        job = pool.submit(sampler.cpu_window, start, spec.duration, spec.port, db_match)
        result = run_load_subprocess(spec)
        window = job.result(timeout=60)
    p50, p95, p99 = (v / 1e6 for v in percentiles(result.latencies_ns, (50, 95, 99)))
    elapsed, seconds = max(result.elapsed, 1e-9), spec.duration
    server_cpu = sum(window.cpu.values())
    gen_cpu = 100 * result.cpu_seconds / elapsed
    busiest = sorted(window.cpu.values(), reverse=True)[:workers]  # the workers
    conns = sorted(window.connections.values(), reverse=True)[:workers]
    return {
        "scenario": name, "path": spec.path, "requests": result.requests,
        "errors": result.errors, "statuses": result.statuses,
        "transport_errors": result.transport_errors, "timeouts": result.timeouts,
        "elapsed_s": result.elapsed, "req_per_s": result.requests / elapsed,
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "server_peak_rss_mb": sampler.peak_rss / MB, "server_processes": len(window.cpu),
        "server_cpu_pct": 100 * server_cpu / seconds,
        "worker_cpu_pct": [round(100 * c / seconds) for c in busiest],
        "worker_connections": conns + [0] * (workers - len(conns)),
        "loadgen_cpu_pct": gen_cpu, "loadgen_peak_rss_mb": result.peak_rss_kb / 1024,
        "db_cpu_pct": 100 * window.db_cpu / seconds,
        "other_cpu_pct": 100 * (window.machine_cpu - server_cpu - window.db_cpu) / seconds
        - gen_cpu,
    }  # fmt: skip


def _table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    rows, m, tv = report["scenarios"], report["machine"], report["token_verify"]
    base = rows[0]["req_per_s"] if rows else 0.0
    lines = ["".join(f"{h:{'<' if a == '<' else '>'}{w}}" for h, w, _, a in COLUMNS)]
    for row in rows:
        cells = []
        for _, width, key, align in COLUMNS:
            value = row[key] if key else row["req_per_s"] / base if base else float("nan")
            value = "/".join(map(str, value)) if isinstance(value, list) else value
            cells.append(f"{value:{align[0]}{width}{align[1:]}}")
        lines.append("".join(cells))
    lines += [
        f"TokenIssuer.verify (ES256, in-process, 1 thread): {tv['ops_per_s']:.0f} ops/s, "
        f"p50 {tv['p50_us']:.1f} µs, p95 {tv['p95_us']:.1f} µs, p99 {tv['p99_us']:.1f} µs",
        f"peak RSS: server tree {report['server_peak_rss_mb']:.1f} MB (sum over "
        f"{rows[0]['server_processes'] if rows else '?'} processes), "
        f"load generator {report['loadgen_peak_rss_mb']:.1f} MB",
        f"machine: nproc {m['nproc']}, Python {m['python']}, {m['platform']}, load average "
        f"{m['loadavg_before'][0]:.2f} before; {m['workers']} workers, concurrency "
        f"{m['concurrency']}, database {m['database']}, {m['duration']:g} s per scenario after "
        f"{m['warmup']:g} s warm-up",
    ]
    return "\n".join(lines)


def say(message: str) -> None:
    """Progress, on stderr."""
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Prepare, serve, load every scenario, print the table (and write the JSON)."""
    args = _args(argv)
    loadavg = os.getloadavg()  # other jobs on the machine skew the figures
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-bench-")))
        data_dir = tmp / "var"
        if args.postgres:
            database_url = stack.enter_context(temporary_postgres(args.pg_admin_url))
        else:
            database_url = args.database_url or f"sqlite:///{data_dir / 'enrs.db'}"
        url = make_url(database_url)
        backend = url.get_backend_name()
        # the PostgreSQL backends serving our database are titled "postgres: USER DB HOST ..."
        db_match = f" {url.database} ".encode() if backend == "postgresql" else b""
        say(f"TokenIssuer.verify micro-bench ({args.verify_seconds:g} s)...")
        micro = token_microbench(tmp / "micro-keys", args.verify_seconds)
        say(f"migrating the {backend} database...")
        creds = _prepare(data_dir, database_url, [BENCH_AUTHORITY])
        scenarios = list(BASE_SCENARIOS)
        if not args.no_identity:
            say(f"seeding the registry with {args.persons} persons...")
            scenarios += identity_scenarios(seed_registry(database_url, args.persons))
        if args.only:
            words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
            scenarios = [s for s in scenarios if any(w in s.name.lower() for w in words)]
        say(f"starting {args.workers} worker(s)...")
        port = free_port()
        server = stack.enter_context(
            live_server(
                data_dir=data_dir,
                database_url=database_url,
                workers=args.workers,
                port=port,
                start_timeout=120,  # a shared machine's load may slow the start-up
            )
        )
        bearer = ("Authorization", f"Bearer {_token(server.base_url, creds)}")
        content = ("Content-Type", "application/fhir+json")
        for scenario in scenarios:  # fail fast rather than measure 100 % errors
            method, path, body = scenario.requests[0]
            check = httpx.request(
                method, server.base_url + path.replace("{n}", "0"),
                content=body.replace("{n}", "0").encode() or None,
                headers=(bearer, content) if scenario.token else (), timeout=10,
            )  # fmt: skip
            if not check.is_success:
                raise RuntimeError(f"{method} {path} -> {check.status_code}: {check.text[:500]}")
        sampler = stack.enter_context(ProcTreeSampler(server.process.pid))
        rows = []
        for scenario in scenarios:
            say(f"{scenario.name}: {args.warmup:g} s warm-up + {args.duration:g} s...")
            spec = LoadSpec(
                host="127.0.0.1", port=port, path=scenario.requests[0][1],
                headers=(bearer, content) if scenario.token else (),
                requests=scenario.requests if len(scenario.requests) > 1 else (),
                concurrency=args.concurrency, duration=args.duration, warmup=args.warmup,
                ramp=min(args.ramp, args.warmup), max_requests=args.max_requests,
            )  # fmt: skip
            rows.append(
                run_scenario(scenario.name, spec, sampler, workers=args.workers, db_match=db_match)
            )
        report: dict[str, Any] = {
            "machine": {
                "nproc": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform(terse=True), "loadavg_before": loadavg,
                "workers": args.workers, "concurrency": args.concurrency, "database": backend,
                "duration": args.duration, "warmup": args.warmup, "ramp": spec.ramp,
                "client": "raw asyncio streams on uvloop, HTTP/1.1 keep-alive, 1 process",
            },
            "scenarios": rows, "token_verify": micro,
            "server_peak_rss_mb": sampler.overall_peak_rss / MB,
            "loadgen_peak_rss_mb": max(r["loadgen_peak_rss_mb"] for r in rows),
        }  # fmt: skip
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server and the temporary database are already gone
        say("interrupted")
        sys.exit(130)
