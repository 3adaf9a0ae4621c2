"""Real-time identity feed against a large registry: the identity issue's figures ("with
1,000,000 source identities in the registry, p95 of a create-and-match ≤ 20 ms and ≥ 300
identities/s sustained over the MLLP feed, on SQLite and on PostgreSQL").

    .venv/bin/python -m bench.identity_realtime [--registry 1000000] [--feed 5000]
        [--concurrency 4] [--duration 30] [--postgres] [--json F]

The registry is bulk-loaded (bench/identity_bulk.py); on SQLite it is cached under /tmp by size
and seed and copied for each run. The identities fed are the records that follow the registry
in the same generator stream: first records of new persons and later records (with errors) of
persons already known. Measured on the same database:

(a) in process, one thread: ``service.feed`` in its own transaction per record, with the time
    spent in its main steps (wrapped here, src untouched) and in ``cursor.execute``;
(b) over MLLP: ``enrs serve`` on the registry, pre-built ADT^A28 messages sent by C
    ``hl7.client.MLLPClient`` connections (threads of this process), each waiting for its ACK;
(c) baselines in the same run, on a second, EMPTY database: the same A28 load (the ratio is what
    the registry costs), a frame without MSH refused with AR (the bare MLLP round trip: framing,
    worker thread, ACK) and an unsupported event refused with AR (+ parsing and the audit write);
(d) peak RSS of the server process tree and of this process; database sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict
from itertools import count, islice
from pathlib import Path
from typing import Any

from hl7.client import MLLPClient
from sqlalchemy import event
from sqlalchemy.engine import make_url
from tests.support.live_server import free_port, live_server

from bench import identity_bulk as bulk
from bench._load import ProcTreeSampler, machine_cpu_seconds, percentiles, postgres_backends_cpu
from bench._load import proc_stats as all_proc_stats
from bench.http_baseline import PG_ADMIN_URL
from bench.identity_data import SourceRecord
from bench.identity_quality import to_input
from enrs.accounts import service as accounts_service
from enrs.identity import domains, repository, service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.kit.db import Database
from enrs.kit.errors import EnrsError
from enrs.kit.hl7v2 import STANDARD
from enrs.kit.migrate import upgrade_head
from enrs.kit.mllp import EB, frame
from enrs.settings import PLACEHOLDER_OID_ROOT

MB = 2**20
CONFIG = IdentityConfig(PLACEHOLDER_OID_ROOT)  # the generated INS are real-looking NIRs
TS = "20250101120000"
STEPS = (
    "candidates",
    "source_by_key",
    "ins_holders",
    "patient_rri",
    "insert_patient",
    "insert_source",
    "insert_link",
)
REFUSED = (("nomsh", "AR no MSH: round trip"), ("a99", "AR A99: +parse+audit"))


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- (a) in process


class _Clock:
    """Calls and seconds per named step (wrapped functions, or SQL statements through the
    engine events ``start`` and ``end``), and the candidate rows seen."""

    def __init__(self) -> None:
        self.steps: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.rows, self.t0 = 0, 0.0

    def add(self, name: str, seconds: float) -> None:
        entry = self.steps[name]
        entry[0] += 1
        entry[1] += seconds

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed

    def start(self, *_: Any) -> None:
        self.t0 = time.perf_counter()

    def end(self, *_: Any) -> None:
        self.add("SQL cursor.execute", time.perf_counter() - self.t0)

    def table(self, n: int) -> list[dict[str, Any]]:
        rows = [{"name": k, "calls": c / n, "ms": 1000 * t / n} for k, (c, t) in self.steps.items()]
        return sorted(rows, key=lambda r: -r["ms"])


def run_inprocess(url: str, records: Sequence[SourceRecord], warmup: int) -> dict[str, Any]:
    """(a): ``service.feed`` per record in its own transaction; latencies, steps, SQL."""
    db, clock = Database(url), _Clock()
    matcher = EmbeddedMatcher(MatchModel.load())
    for method in ("score", "score_rows"):  # this instance only
        setattr(
            matcher, method, clock.wrap(f"scoring (matcher.{method})", getattr(matcher, method))
        )
    saved = {name: getattr(repository, name) for name in STEPS}
    candidates = saved["candidates"]

    def counted(session: Any, traits: Traits, **kw: Any) -> list[Any]:
        found: list[Any] = candidates(session, traits, **kw)
        clock.rows += len(found)
        return found

    event.listen(db.engine, "before_cursor_execute", clock.start)
    event.listen(db.engine, "after_cursor_execute", clock.end)
    latencies, feed_ns, started = list[int](), 0, time.perf_counter()
    methods, errors = Counter[str](), Counter[str]()
    inputs = [to_input(r) for r in records]
    try:
        for name in STEPS:
            fn = counted if name == "candidates" else saved[name]
            setattr(repository, name, clock.wrap(f"repository.{name}", fn))
        for i, data in enumerate(inputs):
            if i == warmup:
                clock.steps.clear()
                clock.rows, started = 0, time.perf_counter()
            t0 = time.perf_counter_ns()
            try:
                with db.transaction() as session:
                    result = service.feed(session, matcher, data, actor="bench", config=CONFIG)
                    t1 = time.perf_counter_ns()
            except EnrsError as exc:
                errors[type(exc).__name__] += 1
                continue
            if i >= warmup:
                latencies.append(time.perf_counter_ns() - t0)
                feed_ns += t1 - t0
                methods[result.link_method] += 1
    finally:
        for name, fn in saved.items():
            setattr(repository, name, fn)
    elapsed, n = time.perf_counter() - started, max(len(latencies), 1)
    db.dispose()
    p50, p95, p99 = (v / 1e6 for v in percentiles(latencies, (50, 95, 99)))
    return {
        "records": len(latencies), "warmup_records": warmup, "errors": dict(errors),
        "records_per_s": len(latencies) / elapsed, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "mean_ms": 1000 * elapsed / n, "link_methods": dict(methods),
        "candidates_per_record": clock.rows / n,
        "commit_ms": (sum(latencies) - feed_ns) / 1e6 / n,
        "steps": clock.table(n),
    }  # fmt: skip


# --------------------------------------------------------------------------- (b) over MLLP


def adt_a28(rec: SourceRecord, control: str) -> bytes:
    """A PAM-FR ADT^A28 (create) message for ``rec``, MLLP-framed."""
    esc = STANDARD.escape
    ids = f"{esc(rec.ipp)}^^^&{rec.authority}&ISO^PI"
    if rec.ins:
        ids += f"~{rec.ins}^^^ASIP-SANTE-INS-NIR&{rec.ins_system}&ISO^INS"
    given = [esc(g) for g in rec.given_names]
    names = f"{esc(rec.birth_name)}^{given[0]}^{' '.join(given)}^^^^L"
    names += f"~{esc(rec.used_name)}^^^^^^D" if rec.used_name else ""
    address = f"{esc(rec.address_line)}^^{esc(rec.city)}^^{rec.postal_code}^FRA^H"
    address += f"~^^^^^^BDL^^{rec.birth_place}" if rec.birth_place else ""
    pid = [""] * 33
    pid[1], pid[3], pid[5], pid[8], pid[11] = "1", ids, names, rec.sex, address
    pid[7] = rec.birth_date.strftime("%Y%m%d") if rec.birth_date else ""
    pid[13] = f"^PRN^PH^^^^^^^^^{rec.phone}"
    pid[32] = "~".join([rec.status, *sorted(rec.attributes)])
    msh = (f"MSH|^~\\&|GAM|FAC^{rec.authority}^ISO|ENRS|REGION|{TS}||ADT^A28^ADT_A05|{control}"
           "|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8")  # fmt: skip
    segments = [msh, f"EVN||{TS}", "PID|" + "|".join(pid[1:]), "PV1|1|N"]
    return frame(("\r".join(segments) + "\r").encode("utf-8"))


def refused(kind: str, n: int) -> list[bytes]:
    """``n`` messages the server refuses with AR: ``nomsh`` (no header) or ``a99`` (event)."""
    if kind == "nomsh":
        return [frame(b"HELLO\r")] * n
    msh = f"MSH|^~\\&|GAM|FAC^1.2.3^ISO|ENRS|REGION|{TS}||ADT^A99^ADT_A01|R%d|P|2.5\r"
    return [frame((msh % i).encode()) for i in range(n)]


Sent = tuple[float, float, str]  # start, stop (perf_counter), MSA-1 or an error name


def mllp_load(port: int, messages: Sequence[bytes], concurrency: int, seconds: float) -> list[Sent]:
    """Send ``messages`` over ``concurrency`` connections, each waiting for its ACK, until all
    are sent or ``seconds`` passed (a connection stops at its first transport error)."""
    done: list[list[Sent]] = [[] for _ in range(concurrency)]
    next_index, deadline = count(), time.perf_counter() + seconds

    def client(slot: int) -> None:
        with MLLPClient("127.0.0.1", port) as conn:
            conn.socket.settimeout(60)
            conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while (i := next(next_index)) < len(messages) and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    raw = conn.send(messages[i])
                    while raw and not raw.endswith(EB + b"\r"):
                        raw += conn.socket.recv(4096)
                    msa = raw.find(b"\rMSA|")
                    code = raw[msa + 5 : msa + 7].decode() if msa >= 0 else "no MSA"
                except OSError as exc:
                    code = type(exc).__name__
                done[slot].append((t0, time.perf_counter(), code))
                if code not in ("AA", "AE", "AR"):
                    return

    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return [x for per in done for x in per]


def run_mllp(
    name: str, port: int, messages: Sequence[bytes], args: argparse.Namespace,
    sampler: ProcTreeSampler, db_match: bytes, *, expect: str = "AA", duration: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """One MLLP scenario: throughput over the measured window (after the warm-up), ACK
    latencies, CPU of the server tree, of this process (the clients) and of PostgreSQL."""
    sampler.reset_peak()
    box: list[list[Sent]] = []
    seconds = args.warmup + (duration or args.duration)
    job = threading.Thread(
        target=lambda: box.append(mllp_load(port, messages, args.concurrency, seconds))
    )
    job.start()
    measure_from = time.perf_counter() + args.warmup
    time.sleep(args.warmup)
    snaps = []
    for step in (0, 1):
        stats = all_proc_stats()
        snaps.append((time.perf_counter(), time.process_time(), machine_cpu_seconds(),
                      sampler.snapshot(stats), postgres_backends_cpu(stats, db_match)))  # fmt: skip
        if not step:
            job.join()
    (w0, c0, m0, tree0, pg0), (w1, c1, m1, tree1, pg1) = snaps
    kept = [r for r in box[0] if r[0] >= measure_from]
    codes = Counter(r[2] for r in kept)
    window, wall = max([r[1] for r in kept] + [measure_from]) - measure_from, max(w1 - w0, 1e-9)
    latencies = [int((b - a) * 1e9) for a, b, c in kept if c == expect]
    p50, p95, p99 = (v / 1e6 for v in percentiles(latencies, (50, 95, 99)))
    srv = sum(c - tree0[p][1] for p, (_, c) in tree1.items() if p in tree0)
    per_s = len(kept) / max(window, 1e-9)
    return {
        "scenario": name, "messages": len(kept), "sent_total": len(box[0]),
        "errors": len(kept) - codes.get(expect, 0), "acks": dict(codes), "per_s": per_s,
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "window_s": window,
        "server_cpu_pct": 100 * srv / wall, "server_cpu_ms_per_msg": 1000 * srv / wall / per_s,
        "client_cpu_pct": 100 * (c1 - c0) / wall, "machine_cpu_pct": 100 * (m1 - m0) / wall,
        "pg_cpu_pct": 100 * sum(c - pg0.get(p, 0.0) for p, c in pg1.items()) / wall,
        "server_peak_rss_mb": sampler.peak_rss / MB,
    }  # fmt: skip


def register_senders(url: str, facilities: set[str]) -> None:
    """Each facility (MSH-4 OID) registered as a domain and as an MLLP sender of its own
    identities: a new install accepts no sender. ``1.2.3``, the sender of the refused A99,
    writes nothing."""
    db = Database(url)
    with db.transaction() as session:
        for oid in sorted(facilities):
            if repository.domain(session, oid) is None:
                domains.add(session, CONFIG, oid, namespace=None)
        for oid in sorted(facilities | {"1.2.3"}):
            if accounts_service.mllp_sender_grant(session, oid) is None:
                writes = [oid] if oid != "1.2.3" else []
                accounts_service.create_mllp_sender(
                    session, name=f"FAC {oid}", sender_oid=oid, authorities=writes
                )
    db.dispose()


@contextmanager
def serve(url: str, folder: Path, workers: int = 0) -> Iterator[tuple[int, ProcTreeSampler]]:
    """``enrs serve`` (HTTP + MLLP) on ``url``, stopped with SIGTERM on exit; ``workers``: the
    MLLP listener processes (0: the server's default)."""
    port = free_port()
    env = {"ENRS_MLLP_PORT": str(port)} | ({"ENRS_MLLP_WORKERS": str(workers)} if workers else {})
    with live_server(data_dir=folder, database_url=url, extra_env=env) as server:
        for _ in range(150):  # 30 s
            with suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"no MLLP listener:\n{server.log()}")
        with ProcTreeSampler(server.process.pid) as sampler:
            yield port, sampler


# --------------------------------------------------------------------------- report


COLUMNS = (  # header, width, key, format
    ("scenario", 32, "scenario", "<"), ("registry", 10, "registry", ">,"),
    ("msgs", 7, "messages", ">"), ("errors", 7, "errors", ">"), ("ids/s", 7, "per_s", ">.0f"),
    ("p50 ms", 8, "p50_ms", ">.1f"), ("p95 ms", 8, "p95_ms", ">.1f"),
    ("p99 ms", 8, "p99_ms", ">.1f"), ("srv CPU%", 9, "server_cpu_pct", ">.0f"),
    ("srv ms/msg", 11, "server_cpu_ms_per_msg", ">.2f"), ("cli CPU%", 9, "client_cpu_pct", ">.0f"),
    ("pg CPU%", 8, "pg_cpu_pct", ">.0f"), ("srv RSS MB", 11, "server_peak_rss_mb", ">.0f"),
)  # fmt: skip


def table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = ["".join(f"{h:{'<' if a == '<' else '>'}{w}}" for h, w, _, a in COLUMNS)]
    for row in report["scenarios"]:
        cells = (f"{row[k]:{f[0]}{w}{f[1:]}}" if k in row else " " * w for _, w, k, f in COLUMNS)
        lines.append("".join(cells))
    a, reg, m, size = report["inprocess"], report["registry"], report["machine"], report["db_mb"]
    lines.append(f"(a) {a['mean_ms']:.2f} ms/record: {a['candidates_per_record']:.1f} candidate "
                 f"rows/record, commit {a['commit_ms']:.2f} ms; methods {a['link_methods']}; "
                 f"refused {a['errors'] or 'none'}. Steps (ms/record, calls/record):")  # fmt: skip
    lines += [f"  {s['ms']:6.2f} {s['calls']:6.2f}  {s['name']}" for s in a["steps"]]
    lines += [f"{r['scenario']}: ACKs {r['acks']}" for r in report["scenarios"][1:] if r["errors"]]
    source = f"reused cache {reg['cache']}" if reg.get("reused") else "bulk-loaded in this run"
    if reg.get("template"):
        source = f"a copy of the database {reg['template']}"
    lines.append(f"registry: {reg['identities']:,} identities ({source}); DB "
                 f"{size['start']:,.0f} MB before, {size['end']:,.0f} MB after; empty DB "
                 f"{size['empty']:,.0f} MB")  # fmt: skip
    if reg.get("load"):
        lines.append(bulk.format_stats(bulk.LoadStats(**reg["load"])))
    lines.append(f"peak RSS: server tree {report['server_peak_rss_mb']:.0f} MB, this process "
                 f"{report['bench_peak_rss_mb']:.0f} MB")  # fmt: skip
    for e in report["explain"]:
        lines.append(f"candidate query, {e['record']}: {e['candidates']} rows in {e['ms']:.1f} ms")
    lines += [f"  {row}" for row in report["explain"][0]["plan"]]
    lines.append(f"machine: nproc {m['nproc']}, Python {m['python']}, {m['database']}, load "
                 f"average {m['loadavg_before'][0]:.2f} before, reference loop "
                 f"{m['calibration_us']:.2f} µs/pair; MLLP: {m['concurrency']} "
                 f"connections, {m['duration']:g} s after {m['warmup']:g} s warm-up")  # fmt: skip
    t = report["targets"]
    lines.append(f"targets: p95 ≤ 20 ms in process {t['p95_inprocess_ok']}, over MLLP "
                 f"{t['p95_mllp_ok']}; ≥ 300 identities/s over MLLP "
                 f"{t['throughput_ok']}")  # fmt: skip
    return "\n".join(lines)


def calibrate(rounds: int = 7) -> float:
    """The machine's speed today: µs per pair of a fixed pure-Python loop (the reference
    level functions on every pair of 120 generated identities, best of ``rounds``). Figures of
    two runs compare only after scaling by this; this 2-core machine has shown it vary ~2×
    between sessions."""
    records = bulk.stream(120, 3)
    traits = [service.prepare(to_input(r), CONFIG).traits for r in records]
    matcher = EmbeddedMatcher(MatchModel.load())
    pairs = [(a, b) for i, a in enumerate(traits) for b in traits[i + 1 :]]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for a, b in pairs:
            matcher.score(a, b)
        best = min(best, time.perf_counter() - t0)
    return best / len(pairs) * 1e6


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return int(next(ln for ln in fh if ln.startswith("VmHWM:")).split()[1]) / 1024


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the registry, measure (a), (b), (c), print the table (and the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--registry", type=int, default=1_000_000, help="source identities in the registry")
    add("--seed", type=int, default=0)
    add("--feed", type=int, default=5000, help="records fed in process (a)")
    add("--messages", type=int, default=30_000, help="A28 messages available per MLLP run")
    add("--concurrency", type=int, default=4, help="MLLP client connections")
    add("--duration", type=float, default=30.0, help="measured seconds per MLLP run (cap)")
    add("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    add("--workers", type=int, default=0, help="MLLP listener processes (default: the server's)")
    add("--postgres", action="store_true", help="temporary PostgreSQL databases enrs_rt_<hex>")
    add("--pg-admin-url", default=PG_ADMIN_URL)
    add(
        "--pg-template",
        help="with --postgres: copy this database (a registry loaded before, "
        "same size and seed) instead of bulk-loading one",
    )
    add("--json", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop server, drop DBs
    loadavg, warm = os.getloadavg(), min(100, args.feed // 10)
    calibration = calibrate()
    extra = warm + args.feed + args.messages
    report: dict[str, Any] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-rt-")))
        if args.postgres and args.pg_template:
            url = stack.enter_context(bulk.pg_database(args.pg_admin_url, args.pg_template))
            empty = stack.enter_context(bulk.pg_database(args.pg_admin_url))
            _, following, _cache = bulk.sqlite_registry(args.registry, args.seed, extra, tmp)
            reg: dict[str, Any] = {"template": args.pg_template}
        elif args.postgres:
            url = stack.enter_context(bulk.pg_database(args.pg_admin_url))
            empty = stack.enter_context(bulk.pg_database(args.pg_admin_url))
            say(f"bulk-loading {args.registry:,} identities into PostgreSQL...")
            records = bulk.stream(args.registry, args.seed, extra=extra)
            reg = {"load": asdict(bulk.load(url, islice(records, args.registry)))}
            following = list(records)
        else:
            path, following, reg = bulk.sqlite_registry(args.registry, args.seed, extra, tmp)
            url, empty = f"sqlite:///{path}", f"sqlite:///{tmp / 'empty.db'}"
        reg["identities"] = args.registry
        upgrade_head(empty)
        sizes = {"start": bulk.database_size(url) / MB, "empty": bulk.database_size(empty) / MB}
        fed, rest = following[: warm + args.feed], following[warm + args.feed :]
        messages = [adt_a28(r, f"M{i}") for i, r in enumerate(rest)]
        say(f"(a) {len(fed):,} in-process feeds ({warm} warm-up)...")
        inproc = run_inprocess(url, fed, warm)
        report["explain"] = bulk.explain_candidates(url, rest[-3:])  # fed over MLLP, not yet
        keys = ("per_s", "p50_ms", "p95_ms", "p99_ms")
        rows = [{"scenario": "(a) service.feed in process", "registry": args.registry,
                 "messages": inproc["records"], "errors": sum(inproc["errors"].values()),
                 **{k: inproc["records_per_s" if k == "per_s" else k] for k in keys}}]  # fmt: skip
        peak = 0.0
        for size, db_url in ((args.registry, url), (0, empty)):
            match = f" {make_url(db_url).database} ".encode() if args.postgres else b""
            say(f"MLLP A28 x{args.concurrency} on the {size or 'empty'} registry...")
            register_senders(db_url, {r.authority for r in rest})
            with serve(db_url, tmp / f"var-{size}", args.workers) as (port, sampler):
                scen = f"({'b' if size else 'c'}) MLLP A28, {args.concurrency} conns"
                row = run_mllp(scen, port, messages, args, sampler, match)
                rows.append({"registry": size, **row})
                for kind, what in () if size else REFUSED:
                    say(f"(c) {what}...")
                    bursts = refused(kind, 200_000)  # more than 5 s can send
                    row = run_mllp(f"(c) {what}", port, bursts, args, sampler, match,
                                   expect="AR", duration=min(5.0, args.duration))  # fmt: skip
                    rows.append({"registry": 0, **row})
                peak = max(peak, sampler.overall_peak_rss / MB)
            if size:
                sizes["end"] = bulk.database_size(url) / MB
        mllp = rows[1]
        report |= {
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(terse=True), "loadavg_before": loadavg,
                        "database": "postgresql" if args.postgres else "sqlite",
                        "concurrency": args.concurrency, "duration": args.duration,
                        "mllp_workers": args.workers or "default",
                        "warmup": args.warmup, "seed": args.seed,
                        "calibration_us": calibration},
            "registry": reg, "inprocess": inproc, "scenarios": rows, "db_mb": sizes,
            "server_peak_rss_mb": peak, "bench_peak_rss_mb": _peak_rss_mb(),
            "targets": {"p95_inprocess_ok": inproc["p95_ms"] <= 20,
                        "p95_mllp_ok": mllp["p95_ms"] <= 20, "throughput_ok": mllp["per_s"] >= 300},
        }  # fmt: skip
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server and the temporary databases are already gone
        say("interrupted")
        sys.exit(130)
