"""HTTP baseline of ``enrs serve``: closed-loop load on /healthz, /fhir/metadata (token check) and
/fhir/AuditEvent (authenticated, audited DB read + write), plus an in-process micro-benchmark of
``TokenIssuer.verify``.

Run from the repository root::

    .venv/bin/python -m bench.http_baseline [--duration 10] [--concurrency 32] [--workers 2]
        [--postgres | --database-url URL] [--client raw|httpx] [--load-procs 1] [--json PATH]

The server runs as a subprocess (``enrs serve``, stopped with SIGTERM at the end, even on error
or Ctrl-C); the load generator runs in separate spawned process(es), see :mod:`bench._load`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tests.support.live_server import enrs_command, free_port, live_server

from bench._load import LoadSpec, ProcTreeSampler, percentiles, run_load_processes

SCENARIOS: tuple[tuple[str, str, bool], ...] = (
    ("healthz", "/healthz", False),
    ("metadata (token check)", "/fhir/metadata", True),
    ("AuditEvent search (DB+audit)", "/fhir/AuditEvent?_count=10", True),
)
PG_ADMIN_URL = os.environ.get(
    "ENRS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MB = 1024 * 1024


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.http_baseline", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="ENRS_HTTP_WORKERS")
    parser.add_argument("--max-requests", type=int, default=500_000, help="cap per scenario")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load client")
    parser.add_argument("--load-procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--verify-seconds", type=float, default=2.0, help="token micro-bench")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--database-url", help="existing database (default: temp SQLite)")
    db.add_argument("--postgres", action="store_true", help="temporary PostgreSQL database")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="server for --postgres")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


@contextmanager
def temporary_postgres(admin_url: str) -> Iterator[str]:
    """Create an empty database on the server of ``admin_url``; drop it on exit."""
    name = f"enrs_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def token_microbench(folder: Path, seconds: float, max_ops: int = 2_000_000) -> dict[str, float]:
    """Verify one ES256 token in a loop for ~``seconds``: ops/s and p50/p95/p99 in µs."""
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
    elapsed = (clock() - start) / 1e9
    p50, p95, p99 = (v / 1000 for v in percentiles(samples, (50, 95, 99)))
    return {"ops": len(samples), "ops_per_s": len(samples) / elapsed, "p50_us": p50,
            "p95_us": p95, "p99_us": p99}  # fmt: skip


def _enrs(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(enrs_command(*args), env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"enrs {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _prepare(data_dir: Path, database_url: str) -> dict[str, str]:
    """Migrate and create a system client; return its credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    _enrs(env, "migrate")
    out = _enrs(env, "clients", "create", "bench", "--scope", "system/AuditEvent.rs")
    creds: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return creds


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
    name: str, spec: LoadSpec, sampler: ProcTreeSampler, load_procs: int
) -> dict[str, Any]:
    """One closed-loop scenario; figures plus server-tree RSS peak and CPU."""
    _, cpu_before, _ = sampler.snapshot()
    sampler.reset_peak()
    result = run_load_processes(spec, load_procs)
    _, cpu_after, nprocs = sampler.snapshot()
    ok_latencies = result.latencies_ns
    p50, p95, p99 = (v / 1e6 for v in percentiles(ok_latencies, (50, 95, 99)))
    wall = spec.warmup + spec.duration
    return {
        "scenario": name, "path": spec.path, "requests": result.requests,
        "errors": result.errors, "statuses": result.statuses,
        "transport_errors": result.transport_errors, "timeouts": result.timeouts,
        "elapsed_s": result.elapsed, "req_per_s": result.requests / max(result.elapsed, 1e-9),
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "server_peak_rss_mb": sampler.peak_rss / MB, "server_processes": nprocs,
        # server CPU over warm-up + measure (a sampler snapshot brackets the whole load run)
        "server_cpu_pct": 100 * (cpu_after - cpu_before) / wall,
        "loadgen_cpu_pct": 100 * result.cpu_seconds / max(result.elapsed, 1e-9),
        "loadgen_peak_rss_mb": result.peak_rss_kb / 1024,
    }  # fmt: skip


def _table(report: dict[str, Any]) -> str:
    rows = report["scenarios"]
    base = rows[0]["req_per_s"] if rows else 0.0
    head = ("scenario", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "vs healthz",
            "srv CPU%", "gen CPU%", "srv RSS MB")  # fmt: skip
    lines = [
        f"{head[0]:<29}{head[1]:>9}{head[2]:>8}{head[3]:>9}{head[4]:>8}{head[5]:>8}{head[6]:>8}"
        f"{head[7]:>11}{head[8]:>9}{head[9]:>9}{head[10]:>11}"
    ]
    for r in rows:
        ratio = r["req_per_s"] / base if base else float("nan")
        lines.append(
            f"{r['scenario']:<29}{r['requests']:>9}{r['errors']:>8}{r['req_per_s']:>9.0f}"
            f"{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}{r['p99_ms']:>8.2f}{ratio:>11.2f}"
            f"{r['server_cpu_pct']:>9.0f}{r['loadgen_cpu_pct']:>9.0f}{r['server_peak_rss_mb']:>11.1f}"
        )
    tv = report["token_verify"]
    lines.append(
        f"TokenIssuer.verify (in-process, 1 thread): {tv['ops_per_s']:.0f} ops/s, "
        f"p50 {tv['p50_us']:.1f} µs, p95 {tv['p95_us']:.1f} µs, p99 {tv['p99_us']:.1f} µs"
    )
    lines.append(
        f"peak RSS: server tree {report['server_peak_rss_mb']:.1f} MB "
        f"({rows[0]['server_processes'] if rows else '?'} processes, summed RSS), "
        f"load generator {report['loadgen_peak_rss_mb']:.1f} MB"
    )
    m = report["machine"]
    lines.append(
        f"machine: nproc {m['nproc']}, Python {m['python']}, {m['platform']}; workers "
        f"{m['workers']}, concurrency {m['concurrency']}, database {m['database']}, client "
        f"{m['client']} x{m['load_procs']} process(es), {m['duration']:.0f} s + "
        f"{m['warmup']:.0f} s warm-up per scenario"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: prepare, serve, load every scenario, print the table (and JSON)."""
    args = _args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-bench-")))
        data_dir = tmp / "var"
        if args.postgres:
            database_url = stack.enter_context(temporary_postgres(args.pg_admin_url))
        else:
            database_url = args.database_url or f"sqlite:///{data_dir / 'enrs.db'}"
        backend = make_url(database_url).get_backend_name()
        print(f"token micro-bench ({args.verify_seconds:.0f} s)...", file=sys.stderr)
        micro = token_microbench(tmp / "micro-keys", args.verify_seconds)
        print(
            f"preparing {backend} database, starting {args.workers} worker(s)...", file=sys.stderr
        )
        creds = _prepare(data_dir, database_url)
        port = free_port()
        server = stack.enter_context(
            live_server(
                data_dir=data_dir, database_url=database_url, workers=args.workers, port=port
            )
        )
        token = _token(server.base_url, creds)
        auth = (("Authorization", f"Bearer {token}"),)
        for _, path, needs_token in SCENARIOS:  # fail fast rather than measure 100 % errors
            check = httpx.get(
                server.base_url + path, headers=dict(auth) if needs_token else {}, timeout=10
            )
            if not check.is_success:
                raise RuntimeError(f"GET {path} -> {check.status_code}: {check.text[:500]}")
        sampler = stack.enter_context(ProcTreeSampler(server.process.pid))
        rows = []
        for name, path, needs_token in SCENARIOS:
            print(f"scenario {name}: {args.duration:.0f} s...", file=sys.stderr)
            spec = LoadSpec(
                host="127.0.0.1", port=port, path=path, headers=auth if needs_token else (),
                concurrency=args.concurrency, duration=args.duration, warmup=args.warmup,
                max_requests=args.max_requests, client=args.client,
            )  # fmt: skip
            rows.append(run_scenario(name, spec, sampler, args.load_procs))
        report: dict[str, Any] = {
            "machine": {
                "nproc": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform(terse=True), "workers": args.workers,
                "concurrency": args.concurrency, "database": backend, "client": args.client,
                "load_procs": args.load_procs, "duration": args.duration, "warmup": args.warmup,
            },
            "scenarios": rows, "token_verify": micro,
            "server_peak_rss_mb": sampler.overall_peak_rss / MB,
            "loadgen_peak_rss_mb": max((r["loadgen_peak_rss_mb"] for r in rows), default=0.0),
        }  # fmt: skip
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
