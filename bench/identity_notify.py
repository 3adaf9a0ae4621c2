"""Notification fan-out: the identity second pass's figure "10,000 merges to 5 subscribed
destinations, one down for a minute: all delivered in order, time to drain".

    .venv/bin/python -m bench.identity_notify [--merges 10000] [--down 60] [--postgres]
        [--json F]

A fresh database (SQLite FULL in a temporary data dir, or a temporary PostgreSQL database)
holds 2 x N identities of one facility (the CHU), registered directly (no matching: the
figure is the notifications'). Five destinations subscribe, as services (every patient, the
CHU's identifiers and the RRI): three MLLP listeners and one FHIR rest-hook (HTTP) that are
up, and one MLLP listener that starts only ``--down`` seconds later. The receivers are the
``hl7`` package's asyncio MLLP server and the standard library's HTTP server, in this process.

The notifications listener of ``enrs serve`` (``identity.subscriptions.run_notifications``)
runs in its own process. This process then merges, one transaction each, identity B{i} into
A{i} of the CHU for i = 0..N-1 (the service function of ADT^A40), as fast as it can. Each merge
retires a regional patient: one ADT^A40 (or one PMIR message) per destination.

Printed: merges/s, and (baseline for the write path) merges/s of 1,000 more pairs merged first
with no destination and no dispatcher; for each destination the messages received, whether they
came in merge order without loss or duplicate, when the last one arrived (from the first
merge), and the
latency merge-commit → receipt (p50/p95; for the down destination, its backlog, how long after
coming back it got the first message, and how fast it drained the backlog);
the dispatcher process's CPU seconds and peak RSS. Baseline in the same run: the same A40
bodies sent one after the other on one MLLP connection by the transport alone (no queue, no
database): the ratio of a destination's drain rate to it is the queue's cost.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import hl7
from sqlalchemy import select
from tests.support.receivers import HttpReceiver, MllpReceiver

from bench._load import percentiles
from bench.http_baseline import PG_ADMIN_URL, temporary_postgres
from enrs.identity import domains, repository, service, subscriptions, updates
from enrs.identity.config import IdentityConfig
from enrs.identity.schemas import SourceIdentityIn
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.kit.outbound.models import OutboundMessage
from enrs.kit.outbound.queue import statuses
from enrs.kit.outbound.transports import MllpTransport
from enrs.settings import PLACEHOLDER_OID_ROOT, Settings

CHU = "1.2.250.1.71.4.2.2.1"
CONFIG = IdentityConfig(PLACEHOLDER_OID_ROOT)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Clocked:
    """A receiver's arrivals: (time, merge number) in the order they came."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    def mllp(self, message: hl7.Message) -> str:
        ipp = str(message.segment("MRG")[1][0][0])  # B{i}
        with self.lock:
            self.arrivals.append((time.monotonic(), int(ipp[1:])))
        return "AA"

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


def _http_arrivals(receiver: HttpReceiver) -> list[tuple[float, int]]:
    found = []
    for post in receiver.posts():
        history = post["body"]["entry"][1]["resource"]["entry"]
        survivor = history[-1]["resource"]
        chu = [i["value"] for i in survivor["identifier"] if i["system"] == f"urn:oid:{CHU}"]
        found.append((post["at"], int(chu[-1][1:])))
    return found


def register(url: str, merges: int) -> None:
    db = Database(url)
    with db.transaction() as session:
        domains.add(session, CONFIG, CHU, namespace="CHU")
    for start in range(0, merges, 1000):
        with db.transaction() as session:
            for i in range(start, min(merges, start + 1000)):
                for kind, year in (("A", 1950), ("B", 1951)):
                    data = SourceIdentityIn(
                        authority=CHU,
                        ipp=f"{kind}{i}",
                        birth_name=f"NOM{i}{kind}",
                        given_names=["Jeanne"],
                        sex="F",
                        birth_date=date(year, 1 + i % 12, 1 + i % 28),
                    )
                    values = service.prepare(data, CONFIG).values
                    repository.create_identity(
                        session, values, patient_id=None, rri=secrets.token_hex(8).upper(),
                        method="NEW", score=None, model_version=None, actor="bench",
                    )  # fmt: skip
    db.dispose()


def subscribe(url: str, endpoints: dict[str, tuple[str, str]]) -> None:
    db = Database(url)
    with db.transaction() as session:
        for name, (transport, endpoint) in endpoints.items():
            subscriptions.subscribe(
                session, CONFIG, name=name, transport=transport, endpoint=endpoint,
                wanted=[CHU, CONFIG.rri_authority],
            )  # fmt: skip
    db.dispose()


def merge_all(url: str, merges: int, first: int = 0) -> list[float]:
    db = Database(url)
    committed = []
    for i in range(first, first + merges):
        with db.transaction() as session:
            updates.merge_sources(
                session, authority=CHU, surviving_ipp=f"A{i}", merged_ipp=f"B{i}", actor="bench"
            )
        committed.append(time.monotonic())
    db.dispose()
    return committed


def _proc(pid: int) -> tuple[float, int]:
    """CPU seconds and peak RSS (bytes) of a process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


def baseline(url: str, receiver: MllpReceiver) -> float:
    """Messages per second, the bodies of one destination sent by the transport alone."""
    db = Database(url)
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(OutboundMessage.body, OutboundMessage.control_id)
            .where(OutboundMessage.destination_id == 1)
            .order_by(OutboundMessage.id)
        ).all()
    db.dispose()
    transport = MllpTransport(f"127.0.0.1:{receiver.port}")
    start = time.monotonic()
    for body, control in rows:
        assert transport.send(body, control, "") is None
    elapsed = time.monotonic() - start
    transport.close()
    return len(rows) / elapsed


@contextmanager
def database(args: argparse.Namespace, folder: Path) -> Iterator[str]:
    if args.postgres:
        with temporary_postgres(args.pg_admin_url) as url:
            upgrade_head(url)
            yield url
        return
    url = f"sqlite:///{folder / 'enrs.db'}"
    upgrade_head(url)
    yield url


def run(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-notify-")))
        url = stack.enter_context(database(args, folder))
        extra = args.baseline_merges
        say(f"registering {2 * (args.merges + extra)} identities…")
        register(url, args.merges + extra)
        # Baseline: merges with no destination and no dispatcher (their events are before
        # every subscription: never notified).
        started = time.monotonic()
        merge_all(url, extra, first=args.merges)
        alone_rate = extra / (time.monotonic() - started)
        clocks = {name: Clocked() for name in ("mllp-1", "mllp-2", "mllp-3", "mllp-down")}
        receivers: dict[str, Any] = {
            name: MllpReceiver(answer=clocks[name].mllp) for name in clocks
        }
        http = HttpReceiver()
        for name, receiver in receivers.items():
            if name != "mllp-down":
                receiver.start()
        http.start()
        endpoints = {n: ("mllp", f"127.0.0.1:{r.port}") for n, r in receivers.items()}
        endpoints["fhir-hook"] = ("http", f"http://127.0.0.1:{http.port}/hook")
        subscribe(url, endpoints)
        settings = Settings(
            _env_file=None, data_dir=folder / "var", database_url=url,
            base_url="http://127.0.0.1:8000", log_level="warning",
        )  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        dispatcher = ctx.Process(target=subscriptions.run_notifications, args=(settings,))
        dispatcher.start()
        t0 = time.monotonic()
        back_at = t0 + args.down
        opener = threading.Timer(args.down, receivers["mllp-down"].start)
        opener.start()
        say(f"merging {args.merges} pairs; mllp-down opens in {args.down:.0f} s…")
        committed = merge_all(url, args.merges)
        merged_in = committed[-1] - t0
        say(f"merged in {merged_in:.1f} s; waiting for every destination…")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if all(c.count() >= args.merges for c in clocks.values()) and (
                len(http.posts()) >= args.merges
            ):
                break
            time.sleep(0.2)
        cpu, peak = _proc(dispatcher.pid or 0)
        with Database(url).transaction(write=False) as session:
            queues = {s.name: (s.pending, s.sent, s.rejected) for s in statuses(session)}
        dispatcher.terminate()
        dispatcher.join(30)
        opener.join()
        arrivals = {name: c.arrivals for name, c in clocks.items()}
        arrivals["fhir-hook"] = _http_arrivals(http)
        figures: dict[str, Any] = {
            "merges": args.merges,
            "backend": "postgresql" if args.postgres else "sqlite",
            "merges_per_s": round(args.merges / merged_in, 1),
            "merges_per_s_without_notifications": round(alone_rate, 1),
            "merging_s": round(merged_in, 1),
            "down_s": args.down,
            "dispatcher_cpu_s": round(cpu, 1),
            "dispatcher_peak_rss_mb": round(peak / 2**20, 1),
            "queues": queues,
            "destinations": {},
        }
        for name, got in arrivals.items():
            order = [i for _, i in got]
            lat = [int((stamp - committed[i]) * 1000) for stamp, i in got if i < len(committed)]
            p50, p95 = percentiles(lat, (50, 95))
            row: dict[str, Any] = {
                "received": len(got),
                "in_order_no_loss_no_duplicate": order == list(range(args.merges)),
                "last_at_s": round(got[-1][0] - t0, 1) if got else None,
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
            }
            if name == "mllp-down" and got:
                # Its backlog: the merges committed while it was down; drained when the
                # message of the last of them arrived.
                backlog = sum(1 for c in committed if c < back_at)
                first, caught_up = got[0][0], got[max(0, backlog - 1)][0]
                row["backlog"] = backlog
                row["first_after_back_s"] = round(first - back_at, 1)
                row["backlog_drained_in_s"] = round(caught_up - first, 1)
                row["drain_rate_per_s"] = round(backlog / max(caught_up - first, 1e-6), 1)
            figures["destinations"][name] = row
        bare = MllpReceiver().start()
        figures["baseline_transport_per_s"] = round(baseline(url, bare), 1)
        bare.stop()
        for receiver in [*receivers.values(), http]:
            receiver.stop()
        down = figures["destinations"]["mllp-down"]
        if "drain_rate_per_s" in down:
            down["ratio_to_baseline"] = round(
                down["drain_rate_per_s"] / figures["baseline_transport_per_s"], 3
            )
        return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merges", type=int, default=10_000)
    parser.add_argument("--down", type=float, default=60.0, help="seconds mllp-down is down")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--baseline-merges", type=int, default=1000, help="merges timed with no notification"
    )
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = run(args)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
