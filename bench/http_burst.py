"""A burst on one HTTP worker of ``enrs serve``: ``--burst`` authenticated, audited FHIR searches
(``GET /fhir/AuditEvent?_count=10``) sent at once, each on its own connection; how many are
answered 200, 503 or not at all within ``--timeout`` seconds, the time to the last answer, and
the latencies (from the common start) of the answered ones. The figure of ``kit/admission.py``:
before it, such a burst locked the worker up (requests holding every pooled connection waited
for a thread, every thread for a connection).

Run from the repository root::

    .venv/bin/python -m bench.http_burst [--burst 1000] [--workers 1] [--postgres] [--json PATH]

The server, its database (temporary SQLite, or PostgreSQL with ``--postgres``) and its client
are prepared as by :mod:`bench.http_baseline`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from tests.support.live_server import live_server

from bench._load import percentiles
from bench.http_baseline import PG_ADMIN_URL, _prepare, _token, temporary_postgres

PATH = "/fhir/AuditEvent?_count=10"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.http_burst",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--burst", type=int, default=1000, help="requests sent at once")
    add("--workers", type=int, default=1, help="server worker processes (ENRS_HTTP_WORKERS)")
    add("--timeout", type=float, default=120.0, help="seconds a request may wait for its answer")
    add("--postgres", action="store_true", help="a temporary PostgreSQL database")
    add("--pg-admin-url", default=PG_ADMIN_URL, help="PostgreSQL server for --postgres")
    add("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


async def burst(base_url: str, token: str, count: int, timeout: float) -> dict[str, Any]:
    """Send ``count`` requests at once; what became of them."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {token}"}
    outcomes: Counter[str] = Counter()
    latencies: list[int] = []
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=timeout
    ) as http:
        start = asyncio.Event()
        began = 0.0

        async def one() -> None:
            await start.wait()
            try:
                answer = await http.get(PATH)
            except httpx.TimeoutException:
                outcomes["no answer"] += 1
                return
            outcomes[str(answer.status_code)] += 1
            latencies.append(round((time.monotonic() - began) * 1000))

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.sleep(0)
        began = time.monotonic()
        start.set()
        await asyncio.gather(*tasks)
    first, p50, p95 = percentiles(latencies, (0, 50, 95))
    return {
        "burst": count,
        "outcomes": dict(outcomes),
        "last_answer_s": max(latencies, default=0) / 1000,
        "first_answer_ms": first,
        "p50_ms": p50,
        "p95_ms": p95,
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-burst-")))
        data_dir = tmp / "var"
        if args.postgres:
            database_url = stack.enter_context(temporary_postgres(args.pg_admin_url))
        else:
            database_url = f"sqlite:///{data_dir / 'enrs.db'}"
        creds = _prepare(data_dir, database_url, [])
        server = stack.enter_context(
            live_server(
                data_dir=data_dir,
                database_url=database_url,
                workers=args.workers,
                start_timeout=120,
            )
        )
        token = _token(server.base_url, creds)
        loadavg = os.getloadavg()
        figures = asyncio.run(burst(server.base_url, token, args.burst, args.timeout))
        figures.update(
            database=database_url.split(":", 1)[0],
            workers=args.workers,
            loadavg_1m=round(loadavg[0], 2),
        )
    print(
        f"{figures['burst']} at once on {args.workers} worker(s), {figures['database']}: "
        f"{figures['outcomes']}; last answer {figures['last_answer_s']:.1f} s, "
        f"first {figures['first_answer_ms']:.0f} ms, p50 {figures['p50_ms']:.0f} ms, "
        f"p95 {figures['p95_ms']:.0f} ms "
        f"(load average {figures['loadavg_1m']})"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
