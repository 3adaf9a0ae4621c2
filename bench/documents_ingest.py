"""Document contents in and out: issue 13's figures "ingest of 200 KB PDFs through ITI-65 with
encryption: ≥ 100 documents/s on 2 cores, next to the raw write speed of the same disk
measured in the same run" and "retrieval (ITI-68) throughput as a ratio to reading the same
files unencrypted from disk".

    .venv/bin/python -m bench.documents_ingest [--documents 600] [--size 200000]
        [--concurrency 4] [--postgres] [--json F]

``enrs serve`` runs on a new database (SQLite, or a temporary PostgreSQL database) with the
fs blob storage under its data folder; the CHU's client (its facility has the patients in
care) sends one ITI-65 Bundle per document (a 200 KB PDF, base64 in the Binary), the bodies
built before the clock starts, from ``--concurrency`` closed-loop HTTP clients. Then it
retrieves each document by ITI-68 (``Binary/{id}``: read, decrypted, SHA-1 checked).

Baselines in the same run, on the same disk (the data folder), with the same concurrency:
- raw write: each PDF written to its own file and fsync'd (what storing it costs at the
  least, without encryption, metadata or HTTP);
- raw read: the same files read back, unencrypted (from the page cache, as the server's
  reads mostly are: the figure is the ratio of the platform's path to the plain file read).
Printed: documents/s, MB/s, p50/p95 ms, the server's CPU per document and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from itertools import count
from pathlib import Path

import httpx
from tests.documents.world import bundle
from tests.support.live_server import live_server

from bench import documents_data
from bench._load import ProcTreeSampler, percentiles
from bench.documents_search import PG_ADMIN_URL
from bench.http_baseline import say
from bench.identity_pdq import MB, _token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def ingest_token(url: str, base_url: str) -> str:
    """A token of the CHU's system client, allowed to file and read documents."""
    scope = "system/DocumentReference.crs system/Binary.r"
    return _token(url, base_url, scope, finess=documents_data.CHU_FINESS)


def fake_pdf(size: int, rng: random.Random) -> bytes:
    """``size`` bytes that pass for a PDF (the header the repository checks; a body of
    random bytes: incompressible, like a scanned report)."""
    head = b"%PDF-1.4\n"
    return head + rng.randbytes(size - len(head))


def run_closed(jobs: list[Callable[[], int]], concurrency: int) -> dict[str, float]:
    """Each job (returning bytes moved, or -1 on error) from ``concurrency`` threads."""
    next_job = count()
    lat: list[float] = []
    moved, errors = [0], [0]
    lock = threading.Lock()

    def worker() -> None:
        while (i := next(next_job)) < len(jobs):
            t0 = time.perf_counter()
            done = jobs[i]()
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(elapsed)
                if done < 0:
                    errors[0] += 1
                else:
                    moved[0] += done

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    p50, p95 = percentiles([round(x * 1000) for x in lat], (50, 95))
    return {
        "documents": len(lat), "errors": errors[0], "per_s": len(lat) / elapsed,
        "mb_per_s": moved[0] / MB / elapsed, "p50_ms": p50 / 1000, "p95_ms": p95 / 1000,
    }  # fmt: skip


def _raw_write(folder: Path, name: str, data: bytes) -> Callable[[], int]:
    def job() -> int:
        path = folder / name
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return len(data)

    return job


def _raw_read(path: Path) -> Callable[[], int]:
    return lambda: len(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--documents", type=int, default=600)
    add("--size", type=int, default=200_000)
    add("--patients", type=int, default=1000)
    add("--concurrency", type=int, default=4)
    add("--postgres", action="store_true")
    add("--pg-admin-url", default=PG_ADMIN_URL)
    add("--seed", type=int, default=0)
    add("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        # The data folder (blobs), the raw files and the SQLite database on one disk.
        tmp, url = documents_data.database(
            stack, "enrs-docingest-", postgres=args.postgres, pg_admin_url=args.pg_admin_url
        )
        seeded = documents_data.seed(url, patients=args.patients, documents=0, seed=args.seed)
        pdfs = [fake_pdf(args.size, rng) for _ in range(args.documents)]
        chu = documents_data.CHU_OID
        bodies = []
        for data in pdfs:
            ipp = rng.choice(seeded.sample)[0]
            patient = {"identifier": {"system": f"urn:oid:{chu}", "value": ipp}}
            bodies.append(
                json.dumps(bundle((data, "application/pdf", {}), patient=patient)).encode()
            )
        raw = tmp / "raw"
        raw.mkdir()
        say(f"raw write: {args.documents} files of {args.size:,} bytes, fsync'd...")
        rows["raw write (fsync)"] = run_closed(
            [_raw_write(raw, f"{i}.pdf", d) for i, d in enumerate(pdfs)], args.concurrency
        )
        server = stack.enter_context(live_server(data_dir=tmp / "var", database_url=url))
        sampler = stack.enter_context(ProcTreeSampler(server.process.pid))
        headers = {"Authorization": f"Bearer {ingest_token(url, server.base_url)}"}
        local = threading.local()

        def http() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=server.base_url, headers=headers, timeout=120)
            client: httpx.Client = local.client
            return client

        ids: list[str] = []

        def post(body: bytes) -> Callable[[], int]:
            def job() -> int:
                answer = http().post(
                    "/fhir", content=body, headers={"Content-Type": "application/fhir+json"}
                )
                if answer.status_code != 200:
                    return -1
                ids.append(answer.json()["entry"][1]["response"]["location"].split("/")[1])
                return args.size

            return job

        def cpu() -> float:
            return sum(c for _, c in sampler.snapshot().values())

        say(f"ITI-65: {args.documents} documents...")
        cpu0 = cpu()
        rows["ITI-65 provide (encrypted)"] = run_closed([post(b) for b in bodies], args.concurrency)
        rows["ITI-65 provide (encrypted)"]["server_cpu_ms"] = (cpu() - cpu0) * 1000 / args.documents
        say("raw read...")
        rows["raw read (unencrypted)"] = run_closed(
            [_raw_read(raw / f"{i}.pdf") for i in range(args.documents)], args.concurrency
        )

        def get(doc_id: str) -> Callable[[], int]:
            def job() -> int:
                answer = http().get(f"/fhir/Binary/{doc_id}")
                return len(answer.content) if answer.status_code == 200 else -1

            return job

        say(f"ITI-68: {len(ids)} documents...")
        cpu0 = cpu()
        rows["ITI-68 retrieve (decrypted)"] = run_closed([get(i) for i in ids], args.concurrency)
        rows["ITI-68 retrieve (decrypted)"]["server_cpu_ms"] = (
            (cpu() - cpu0) * 1000 / max(1, len(ids))
        )
        peak = sampler.overall_peak_rss / MB
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{kind}, {args.documents} documents of {args.size:,} bytes, {args.concurrency} "
          f"clients, server peak RSS {peak:.0f} MB")  # fmt: skip
    print(f"{'scenario':30}{'docs':>6}{'err':>5}{'docs/s':>8}{'MB/s':>8}{'p50 ms':>8}"
          f"{'p95 ms':>8}{'srv ms':>8}")  # fmt: skip
    for name, r in rows.items():
        print(f"{name:30}{r['documents']:>6.0f}{r['errors']:>5.0f}{r['per_s']:>8.1f}"
              f"{r['mb_per_s']:>8.1f}{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}"
              f"{r.get('server_cpu_ms', 0):>8.1f}")  # fmt: skip
    ingest, write = rows["ITI-65 provide (encrypted)"], rows["raw write (fsync)"]
    read, plain = rows["ITI-68 retrieve (decrypted)"], rows["raw read (unencrypted)"]
    print(f"ingest / raw write: {ingest['per_s'] / write['per_s']:.2f}; "
          f"retrieve / raw read: {read['per_s'] / plain['per_s']:.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "server_peak_rss_mb": peak}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
