"""Demographic queries against a large registry: the identity second pass's figure "PDQ
(QBP^Q22 and ITI-78) p95 on a 1,000,000-identity registry".

    .venv/bin/python -m bench.identity_pdq [--registry 1000000] [--queries 2000]
        [--concurrency 4] [--json F]

The registry is the one of bench/identity_realtime.py (bulk-loaded, cached under the temp dir
by size and seed; SQLite). ``enrs serve`` (HTTP + MLLP) runs on a copy. The queries are built
from records of the registry (so most find someone), sent by ``--concurrency`` closed-loop
clients each waiting for its answer:

- PDQ QBP^Q22 over MLLP (C ``hl7.client.MLLPClient``): birth name and birth date, exact; then a
  name prefix (``ABC*``) and the birth year (a partial date);
- PDQm ITI-78 over HTTP (httpx, a system client's bearer token): ``family`` and ``birthdate``;
- baseline in the same run: the PIX query QBP^Q23 by IPP (a point look-up on an index, the same
  MLLP path, parsing, access rules and audit write).

It prints per scenario the queries, errors, queries/s, p50/p95/p99 latency, hits per query,
the server's CPU and peak RSS, and the ratio of each p95 to the baseline's.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from itertools import count, islice
from pathlib import Path
from typing import Any

import httpx
from hl7.client import MLLPClient
from tests.support.live_server import free_port, live_server

from bench import identity_bulk as bulk
from bench._load import ProcTreeSampler, percentiles
from bench.http_baseline import PG_ADMIN_URL
from bench.identity_data import SourceRecord
from bench.identity_realtime import TS, register_senders, say
from enrs.accounts import service as accounts_service
from enrs.kit.db import Database
from enrs.kit.mllp import EB, frame

MB = 1024 * 1024
Query = Callable[[Any], tuple[bool, int]]  # one query on a connection: (ok, hits)


def _msh(sender: str, kind: str, control: str) -> str:
    return f"MSH|^~\\&|DPI|FAC^{sender}^ISO|ENRS|REGION|{TS}||{kind}|{control}|P|2.5\r"


def q22(sender: str, control: str, params: Sequence[str]) -> bytes:
    qpd = f"QPD|IHE PDQ Query|Q{control}|{'~'.join(params)}\r"
    return frame((_msh(sender, "QBP^Q22^QBP_Q21", control) + qpd + "RCP|I|20^RD\r").encode())


def q23(sender: str, control: str, rec: SourceRecord) -> bytes:
    qpd = f"QPD|IHE PIX Query|Q{control}|{rec.ipp}^^^&{rec.authority}&ISO^PI\r"
    return frame((_msh(sender, "QBP^Q23^QBP_Q21", control) + qpd + "RCP|I\r").encode())


def _mllp_query(message: bytes) -> Query:
    def run(conn: MLLPClient) -> tuple[bool, int]:
        raw = conn.send(message)
        while raw and not raw.endswith(EB + b"\r"):
            raw += conn.socket.recv(65536)
        ok = b"\rMSA|AA|" in raw
        return ok, raw.count(b"\rPID|")

    return run


def _http_query(path: str) -> Query:
    def run(http: httpx.Client) -> tuple[bool, int]:
        answer = http.get(path)
        return answer.status_code == 200, len(answer.json().get("entry", []))

    return run


def closed_loop(
    connect: Callable[[], Any], queries: Sequence[Query], concurrency: int, seconds: float
) -> tuple[list[float], int, list[int], float]:
    """Run ``queries`` over ``concurrency`` connections until done or ``seconds`` passed:
    latencies (ms), errors, hits per query, elapsed seconds."""
    next_index, deadline = count(), time.perf_counter() + seconds
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    hits: list[list[int]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def client(slot: int) -> None:
        with connect() as conn:
            while (i := next(next_index)) < len(queries) and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                ok, found = queries[i](conn)
                lat[slot].append((time.perf_counter() - t0) * 1000)
                hits[slot].append(found)
                errors[slot] += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return (
        [x for per in lat for x in per],
        sum(errors),
        [x for per in hits for x in per],
        time.perf_counter() - started,
    )


def _tree_cpu(sampler: ProcTreeSampler) -> float:
    """CPU seconds used so far by the server's process tree."""
    return sum(cpu for _, cpu in sampler.snapshot().values())


def run_scenarios(
    scenarios: list[tuple[str, Callable[[], Any], list[Query]]],
    sampler: ProcTreeSampler,
    concurrency: int,
    duration: float,
) -> list[dict[str, Any]]:
    """Each scenario's queries over ``concurrency`` closed-loop connections made by its own
    ``connect``: a row of figures per scenario (the first is the baseline of the table)."""
    rows: list[dict[str, Any]] = []
    for name, connect, queries in scenarios:
        say(f"{name}: {len(queries)} queries, {concurrency} connections...")
        cpu0 = _tree_cpu(sampler)
        lat, errors, hits, elapsed = closed_loop(connect, queries, concurrency, duration)
        cpu = _tree_cpu(sampler) - cpu0
        p50, p95, p99 = percentiles([round(x * 1000) for x in lat], (50, 95, 99))
        rows.append({
            "scenario": name, "queries": len(lat), "errors": errors,
            "per_s": len(lat) / elapsed, "p50_ms": p50 / 1000, "p95_ms": p95 / 1000,
            "p99_ms": p99 / 1000, "hits_mean": sum(hits) / max(1, len(hits)),
            "server_cpu_ms_per_query": cpu * 1000 / max(1, len(lat)),
        })  # fmt: skip
    return rows


def _token(
    url: str, base_url: str, scope: str = "system/Patient.rs", finess: str | None = None
) -> str:
    """An access token of a new system client of ``scope`` on the server at ``base_url``
    (of the member facility ``finess``, if given)."""
    db = Database(url)
    with db.transaction() as session:
        client, secret = accounts_service.create_client(
            session, name=f"bench {scope}", scope=scope, finess=finess
        )
    db.dispose()
    answer = httpx.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, secret or ""),
    )
    if answer.status_code != 200:
        raise RuntimeError(f"token refused: {answer.status_code} {answer.text}")
    token: str = answer.json()["access_token"]
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--registry", type=int, default=1_000_000, help="source identities in the registry")
    add("--seed", type=int, default=0)
    add("--queries", type=int, default=2000, help="queries per scenario")
    add("--concurrency", type=int, default=4, help="client connections")
    add("--duration", type=float, default=30.0, help="measured seconds per scenario (cap)")
    add("--postgres", action="store_true", help="a temporary PostgreSQL database, bulk-loaded")
    add("--pg-admin-url", default=PG_ADMIN_URL)
    add("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-pdq-")))
        if args.postgres:
            url = stack.enter_context(bulk.pg_database(args.pg_admin_url))
            say(f"bulk-loading {args.registry:,} identities into PostgreSQL...")
            bulk.load(url, bulk.stream(args.registry, args.seed))
        else:
            path, _following, _reg = bulk.sqlite_registry(args.registry, args.seed, 0, tmp)
            url = f"sqlite:///{path}"
        known = list(islice(bulk.stream(min(args.registry, 200_000), args.seed), 200_000))
        sample = [r for r in rng.sample(known, min(len(known), args.queries)) if r.birth_date]
        sender = sample[0].authority
        register_senders(url, {r.authority for r in sample})
        mllp_port = free_port()
        server = stack.enter_context(
            live_server(
                data_dir=tmp / "var", database_url=url, extra_env={"ENRS_MLLP_PORT": str(mllp_port)}
            )
        )
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", mllp_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        sampler = stack.enter_context(ProcTreeSampler(server.process.pid))
        headers = {"Authorization": f"Bearer {_token(url, server.base_url)}"}

        def mllp() -> MLLPClient:
            conn = MLLPClient("127.0.0.1", mllp_port)
            conn.socket.settimeout(60)
            return conn

        def http() -> httpx.Client:
            return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)

        def day(r: SourceRecord) -> str:
            assert r.birth_date is not None
            return r.birth_date.strftime("%Y%m%d")

        scenarios: list[tuple[str, Callable[[], Any], list[Query]]] = [
            ("PIX QBP^Q23 by IPP (baseline)", mllp,
             [_mllp_query(q23(sender, f"X{i}", r)) for i, r in enumerate(sample)]),
            ("PDQ QBP^Q22 name + birth date", mllp,
             [_mllp_query(q22(sender, f"P{i}", [f"@PID.5.1.1^{r.birth_name}",
                                                 f"@PID.7.1^{day(r)}"]))
              for i, r in enumerate(sample)]),
            ("PDQ QBP^Q22 prefix* + birth year", mllp,
             [_mllp_query(q22(sender, f"W{i}", [f"@PID.5.1.1^{r.birth_name[:3]}*",
                                                 f"@PID.7.1^{day(r)[:4]}"]))
              for i, r in enumerate(sample)]),
            ("PDQm ITI-78 family + birthdate", http,
             [_http_query(f"/fhir/Patient?family={httpx.QueryParams({'f': r.birth_name})['f']}"
                          f"&birthdate={r.birth_date}&_count=20")
              for r in sample]),
        ]  # fmt: skip
        rows = run_scenarios(scenarios, sampler, args.concurrency, args.duration)
        peak = sampler.overall_peak_rss / MB
    base = float(rows[0]["p95_ms"])
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"registry {args.registry:,} identities ({backend}), {args.concurrency} connections, "
          f"server peak RSS {peak:.0f} MB")  # fmt: skip
    print(f"{'scenario':34}{'queries':>8}{'errors':>7}{'q/s':>7}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'p99 ms':>8}{'hits':>6}{'srv ms/q':>9}{'p95/base':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['scenario']:34}{r['queries']:>8}{r['errors']:>7}{r['per_s']:>7.0f}"
              f"{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['hits_mean']:>6.1f}"
              f"{r['server_cpu_ms_per_query']:>9.2f}{r['p95_ms'] / base:>9.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"registry": args.registry, "rows": rows,
                                         "server_peak_rss_mb": peak}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
