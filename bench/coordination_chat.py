"""The care circle's live chat: issue 15's figure "1,000 connected clients across 2 HTTP
workers, messages/s delivered, p95 from send to receipt on another client, next to the
broker's own round trip in the same run".

    .venv/bin/python -m bench.coordination_chat [--clients 1000] [--messages 60] [--rate 10]
        [--sqlite]

``enrs serve`` with two HTTP workers (PostgreSQL by default, the broker being its
``LISTEN/NOTIFY``; ``--sqlite``: the embedded default, woken by a look at the outbox every
0.2 s) holds ``--clients`` open Server-Sent Events streams of the two doctors of one circle
(as many browser tabs). One member posts ``--messages`` messages at ``--rate`` per second over
HTTP (``POST /fhir/Communication``); each stream must receive every message, in order, or the
run fails. Printed: deliveries per second (every message to every stream, from the first send
to the last receipt), p50/p95/max from the start of the POST to the receipt on a stream, the
POST's own latency, and the broker's round trip measured in the same run (a ``NOTIFY`` from
one PostgreSQL connection to a ``LISTEN``\\ ing one, 200 times), the ratio between the two
p95, and the server processes' peak RSS. The streams are read by one asyncio process over raw
sockets (an HTTP client library would measure itself: see ``bench/_load.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi.testclient import TestClient
from tests.coordination.circles import doctor, make_circle, operation
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, make_region
from tests.support.live_server import live_server
from tests.support.portal import log_in

from bench._load import percentiles
from bench.documents_search import PG_ADMIN_URL
from bench.identity_bulk import pg_database
from enrs.accounts import service as accounts_service
from enrs.app import create_app
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.settings import Settings

PASSWORD = "Correct-horse-42!"
_TEXT = re.compile(rb'"text": "m(\d+)"')


def _setup(tmp: Path, url: str) -> tuple[str, list[str]]:
    """The region, the circle of the two doctors, and their portal session cookies."""
    upgrade_head(url)
    settings = Settings(
        _env_file=None, data_dir=tmp / "setup", database_url=url, base_url="http://bench",
        oidc_issuer="", storage_backend="fs",
    )  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as client:
        db: Database = app.state.db
        region = make_region(app, client, db, tmp)
        cookies = []
        for name, rpps in (("dr.chu", DOCTOR_AT_CHU), ("dr.clinique", DOCTOR_ELSEWHERE)):
            with db.transaction() as session:
                accounts_service.create_user(
                    session, username=name, display_name=name, password=PASSWORD,
                    roles=["professional"], rpps=rpps,
                )  # fmt: skip
            browser = TestClient(app)
            log_in(browser, name)
            cookies.append(browser.cookies["enrs_session"])
        chu = TestClient(app, cookies={"enrs_session": cookies[0]})
        other = TestClient(app, cookies={"enrs_session": cookies[1]})
        team = str(make_circle(region, chu).json()["id"])
        assert operation(
            chu, team, "invite", member=doctor(DOCTOR_ELSEWHERE), role="IDE"
        ).is_success
        assert operation(other, team, "accept").is_success
    return team, cookies


class Streams:
    """``count`` SSE streams over raw sockets, each recording when message ``m{i}`` arrived."""

    def __init__(self, port: int, cookies: list[str], count: int, messages: int) -> None:
        self.port, self.cookies, self.count = port, cookies, count
        self.received = [[0.0] * messages for _ in range(count)]
        self.order_ok = [True] * count
        self.done = asyncio.Event()
        self.remaining = count * messages

    async def open_all(self) -> list[asyncio.Task[None]]:
        # Opened 20 at a time, as browsers come: a burst of a thousand requests makes each
        # worker's threads wait for database connections that requests waiting for a thread
        # hold (docs/benchmarks.md).
        tasks = []
        for start in range(0, self.count, 20):
            ready = []
            for index in range(start, min(start + 20, self.count)):
                opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                tasks.append(asyncio.create_task(self._one(index, opened)))
                ready.append(opened)
            await asyncio.gather(*ready)
        return tasks

    async def _one(self, index: int, opened: asyncio.Future[None]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        cookie = self.cookies[index % len(self.cookies)]
        writer.write(
            f"GET /api/coordination/stream HTTP/1.1\r\nHost: bench\r\n"
            f"Cookie: enrs_session={cookie}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            opened.set_exception(RuntimeError(f"stream {index}: {status!r}"))
            return
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        opened.set_result(None)
        last, got = -1, self.received[index]
        while True:
            line = await reader.readline()
            if not line:
                return
            found = _TEXT.search(line)
            if found is None:
                continue
            number = int(found.group(1))
            got[number] = time.perf_counter()
            if number != last + 1:
                self.order_ok[index] = False
            last = number
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()


def _post_all(base_url: str, cookie: str, team: str, count: int, rate: float) -> list[float]:
    """Send the messages at ``rate`` per second: each POST's start time (perf_counter)."""
    starts = []
    with httpx.Client(base_url=base_url, cookies={"enrs_session": cookie}, timeout=30) as http:
        began = time.perf_counter()
        for number in range(count):
            pause = began + number / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            starts.append(time.perf_counter())
            body = {
                "resourceType": "Communication",
                "about": [{"reference": f"CareTeam/{team}"}],
                "payload": [{"contentString": f"m{number}"}],
            }
            answer = http.post(
                "/fhir/Communication", json=body, headers={"Content-Type": "application/fhir+json"}
            )
            answer.raise_for_status()
    return starts


def _post_latencies(base_url: str, cookie: str, team: str, count: int) -> list[float]:
    found = []
    with httpx.Client(base_url=base_url, cookies={"enrs_session": cookie}, timeout=30) as http:
        for number in range(count):
            body = {
                "resourceType": "Communication",
                "about": [{"reference": f"CareTeam/{team}"}],
                "payload": [{"contentString": f"p{number}"}],
                "topic": {"text": "mesure"},
            }
            started = time.perf_counter()
            http.post(
                "/fhir/Communication", json=body, headers={"Content-Type": "application/fhir+json"}
            ).raise_for_status()
            found.append(time.perf_counter() - started)
    return found


def _notify_round_trips(url: str, count: int = 200) -> list[float]:
    """The broker alone: NOTIFY on one connection until the LISTENing one gets it."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    found = []
    with (
        psycopg.connect(conninfo, autocommit=True) as listener,
        psycopg.connect(conninfo, autocommit=True) as sender,
    ):
        listener.execute("LISTEN bench_round_trip")
        for _ in range(count):
            started = time.perf_counter()
            sender.execute("NOTIFY bench_round_trip")
            for _note in listener.notifies(timeout=5, stop_after=1):
                break
            found.append(time.perf_counter() - started)
    return found


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def _peak_rss_mb(pids: list[int]) -> dict[int, float]:
    peaks = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
        if hwm:
            peaks[pid] = int(hwm.group(1)) / 1024
    return peaks


def _row(what: str, count: int, rate: float, ms: tuple[float, float, float]) -> None:
    print(f"| {what} | {count:,} | {rate:,.0f} | " + " | ".join(f"{v:.2f}" for v in ms) + " |")


def _ms(values: list[float], points: tuple[float, ...]) -> list[float]:
    return [p / 1000 for p in percentiles([round(v * 1_000_000) for v in values], points)]


async def _run(port: int, base_url: str, cookies: list[str], team: str, args: Any) -> None:
    streams = Streams(port, cookies, args.clients, args.messages)
    tasks = await streams.open_all()
    await asyncio.sleep(1.0)
    sent: list[float] = []
    poster = threading.Thread(
        target=lambda: sent.extend(_post_all(base_url, cookies[0], team, args.messages, args.rate))
    )
    poster.start()
    try:
        await asyncio.wait_for(streams.done.wait(), timeout=args.messages / args.rate + 60)
    except TimeoutError:
        sys.exit(f"{streams.remaining} deliveries missing: the figures do not count")
    poster.join()
    for task in tasks:
        task.cancel()
    if not all(streams.order_ok):
        sys.exit("a stream received messages out of order: the figures do not count")
    latencies = [got[n] - sent[n] for got in streams.received for n in range(args.messages)]
    last = max(max(got) for got in streams.received)
    deliveries = args.clients * args.messages
    rate = deliveries / (last - sent[0])
    p50, p95, top = _ms(latencies, (50, 95, 100))
    _row("send → receipt on every stream", deliveries, rate, (p50, p95, top))
    args.p95 = p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-chat-")))
        url = (
            f"sqlite:///{tmp / 'enrs.db'}"
            if args.sqlite
            else stack.enter_context(pg_database(PG_ADMIN_URL))
        )
        team, cookies = _setup(tmp, url)
        server = stack.enter_context(live_server(data_dir=tmp / "var", database_url=url, workers=2))
        port = int(server.base_url.rsplit(":", 1)[1])
        workers = [p for p in _tree(server.process.pid) if p != server.process.pid]
        print(
            f"{'SQLite' if args.sqlite else 'PostgreSQL'}: {args.clients} streams over 2 HTTP "
            f"workers, {args.messages} messages at {args.rate:g}/s"
        )
        print("| what | deliveries | per second | p50 ms | p95 ms | max ms |")
        print("|---|---|---|---|---|---|")
        try:
            asyncio.run(_run(port, server.base_url, cookies, team, args))
        except BaseException:
            print(server.log()[-4000:], file=sys.stderr)
            raise
        posts = _post_latencies(server.base_url, cookies[0], team, 100)
        p50, p95, top = _ms(posts, (50, 95, 100))
        _row("POST /fhir/Communication alone", 100, 100 / sum(posts), (p50, p95, top))
        if not args.sqlite:
            trips = _notify_round_trips(url)
            b50, b95, btop = _ms(trips, (50, 95, 100))
            _row("baseline: PostgreSQL NOTIFY → LISTEN", 200, 200 / sum(trips), (b50, b95, btop))
            print(f"ratio of the p95: {args.p95 / b95:,.0f}× the broker's own round trip")
        peaks = _peak_rss_mb(_tree(server.process.pid))
        print(
            "peak RSS of the server processes: "
            + ", ".join(f"{mb:.0f} MB" for mb in peaks.values())
            + f" (total {sum(peaks.values()):.0f} MB; {len(workers)} children)"
        )


if __name__ == "__main__":
    main()
