"""The coordination file of a patient followed for five years: issue 15's figure "the portal's
coordination file page, p95 ≤ 200 ms", next to a trivial authenticated page measured in the
same run.

    .venv/bin/python -m bench.coordination_file [--renders 200] [--concurrency 1] [--workers 1]
        [--postgres | --database-url URL]

SQLite in a temporary data dir by default; ``--postgres`` makes a temporary database on the
local PostgreSQL (``--pg-admin-url``) and drops it afterwards. The patient's history is made
through the services' public functions, as the platform would have recorded it: a circle of
10 members (the CHU's doctor who made it, seven professionals of the directory who accepted
their invitation, two family carers); 200 documents filed by the CHU's software (ITI-65, 20
submissions of 10, dated over five years); 2,000 messages in four threads of the circle's chat
and 500 tasks (about half completed or cancelled, the open ones in every other state, many
past their due date). The messages' and tasks' dates are then moved back over the five years
(the only rows written by hand: the services stamp them with the time of the call).

``enrs serve`` (``--workers`` HTTP workers) then answers, over real HTTP, as the CHU's doctor
logged in to the portal: ``GET /coordination/{circle}`` ``--renders`` times (after 10 not
counted), each answer checked (200, the circle's name, its bounded lists), from
``--concurrency`` clients. The baseline, in the same run and the same way: ``GET /`` (the
portal's home: the session checked, the page rendered, the call audited — the fixed cost of
any portal page). Printed: renders per second, p50/p95/max, the ratio of the p95 to the
baseline's, the server's CPU time per render (user + system, every process of the server; the
figure to compare on a shared machine, where the wall-clock latency waits for a core), the
page's size, the SQL statements one render runs (counted in-process), the
server processes' peak RSS, and whether the p95 meets the goal (200 ms).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from tests.coordination.circles import make_circle
from tests.directory.test_import import line, rpps, run, write
from tests.documents.world import CHU, CLINIC, DOCTOR_AT_CHU, bundle, make_region, pdf
from tests.support.live_server import live_server
from tests.support.portal import log_in

from bench._load import ProcTreeSampler, percentiles
from bench.http_baseline import PG_ADMIN_URL, temporary_postgres
from enrs.accounts import service as accounts_service
from enrs.app import create_app
from enrs.coordination import chat, service, tasks
from enrs.coordination.models import CareTeam
from enrs.documents.access import Reader
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.settings import Settings

GOAL_P95_MS = 200.0
YEARS = 5
PROFESSIONALS = [  # (directory person, site, role in the circle)
    (3, CHU, "néphrologue"), (4, CHU, "diététicienne"), (5, CLINIC, "IDE"),
    (6, CLINIC, "IDE"), (7, CHU, "pharmacien"), (8, CLINIC, "kinésithérapeute"),
    (9, CLINIC, "médecin traitant"),
]  # fmt: skip
CARERS = ["Mme Louise Bellay (épouse)", "M. Paul Bellay (fils)"]
TOPICS = ["Général", "Soins", "Traitement", "Rendez-vous"]
TYPES = ["11490-0", "11488-4", "18748-4", "11502-2", "34133-9"]
STATES = (  # (share of the tasks, the states they go through from "requested")
    (0.40, ["completed"]), (0.12, ["cancelled"]), (0.14, []), (0.10, ["accepted"]),
    (0.14, ["in-progress"]), (0.10, ["on-hold"]),
)  # fmt: skip
PASSWORD = "Correct-horse-42!"


def _readers(db: Database, team: CareTeam) -> list[Reader]:
    """The circle's professionals as readers (their RPPS; no practice site needed)."""
    with db.transaction(write=False) as session:
        found = [
            Reader(f"user:bench-{m.rpps}", m.display, "user", m.rpps, frozenset())
            for m in service.members(session, team)
            if m.rpps and m.status == "active"
        ]
    return found


def _members(db: Database, team_id: str, maker: Reader) -> CareTeam:
    with db.transaction() as session:
        team = service.team_by_id(session, team_id)
        actor = service.Actor(maker)
        for person, _site, role in PROFESSIONALS:
            new = service.NewMember("practitioner", role, rpps=rpps(person))
            service.invite(session, actor, team, new)
            invited = Reader(
                f"user:bench-{person}", f"Dr {person}", "user", rpps(person), frozenset()
            )
            service.accept(session, service.Actor(invited), team)
        for carer in CARERS:
            new = service.NewMember("related-person", "aidant", display=carer)
            service.invite(session, actor, team, new)
    return team


def _documents(region: Any, rng: random.Random, count: int, start: datetime) -> None:
    """``count`` documents filed by the CHU's software (ITI-65), dated over the years."""
    span = (datetime.now(UTC) - start).total_seconds()
    for first in range(0, count, 10):
        items = []
        for n in range(first, min(first + 10, count)):
            when = start + timedelta(seconds=span * (n + rng.random()) / count)
            options = {
                "type_code": rng.choice(TYPES),
                "date": when.isoformat(timespec="seconds"),
                "description": f"Compte rendu n° {n + 1}",
            }
            items.append((pdf(f"Compte rendu {n + 1}"), "application/pdf", options))
        answer = region.provide(bundle(*items))
        assert answer.status_code == 200, answer.text


def _messages(
    db: Database, team: CareTeam, readers: list[Reader], rng: random.Random, count: int,
    start: datetime,
) -> None:  # fmt: skip
    """``count`` messages posted by the members in four threads, then dated over the years."""
    step = (datetime.now(UTC) - start) / count
    for first in range(0, count, 250):
        with db.transaction() as session:
            for n in range(first, min(first + 250, count)):
                words = " ".join(
                    rng.choice(["pansement", "tension", "bilan", "RDV"]) for _ in range(8)
                )
                message, _ = chat.post(
                    session, rng.choice(readers), team, f"Message {n + 1} : {words}",
                    topic=rng.choice(TOPICS),
                )  # fmt: skip
                message.sent_at = start + step * n


def _tasks(
    db: Database, team: CareTeam, readers: list[Reader], rng: random.Random, count: int,
    start: datetime,
) -> None:  # fmt: skip
    """``count`` tasks asked by the members, moved to mixed states; due dates over the years
    and the next three months, so that many open ones are overdue."""
    now = datetime.now(UTC)
    span = (now + timedelta(days=90) - start).total_seconds()
    roles = [role for _p, _s, role in PROFESSIONALS]
    plan = [path for share, path in STATES for _ in range(round(share * count))][:count]
    plan += [[]] * (count - len(plan))
    rng.shuffle(plan)
    for first in range(0, count, 100):
        with db.transaction() as session:
            for n in range(first, min(first + 100, count)):
                due = start + timedelta(seconds=span * rng.random())
                owner = tasks.Owner("role", role=rng.choice(roles))
                fields = tasks.TaskFields(f"Tâche {n + 1}", owner, due=due)
                reader = rng.choice(readers)
                task = tasks.create(session, reader, team, fields)
                for state in plan[n]:
                    fields = tasks.TaskFields(fields.title, owner, status=state, due=due)
                    tasks.update(session, reader, task, fields)
                task.created_at = task.updated_at = due - timedelta(days=7)


def _setup(tmp: Path, url: str, args: argparse.Namespace) -> tuple[str, str, str, int]:
    """The region, the patient's five years in the circle, and the doctor's session cookie:
    ``(circle id, circle name, cookie, SQL statements of one render)``."""
    upgrade_head(url)
    settings = Settings(
        _env_file=None, data_dir=tmp / "setup", database_url=url, base_url="http://bench",
        oidc_issuer="", storage_backend="fs",
    )  # fmt: skip
    app = create_app(settings)
    rng = random.Random(15)
    start = datetime.now(UTC) - timedelta(days=365 * YEARS)
    with TestClient(app) as client:
        db: Database = app.state.db
        region = make_region(app, client, db, tmp)
        people = write(
            tmp / "PS_LibreAcces_Personne_activite_202612020000.txt",
            *(line(n, site=site) for n, site in [(1, CHU), (2, CLINIC)]),
            *(line(n, site=site) for n, site, _role in PROFESSIONALS),
        )
        assert run(db, people).error is None
        with db.transaction() as session:
            accounts_service.create_user(
                session, username="dr.chu", display_name="Dr CHU", password=PASSWORD,
                roles=["professional"], rpps=DOCTOR_AT_CHU,
            )  # fmt: skip
        browser = TestClient(app)
        log_in(browser, "dr.chu")
        made = make_circle(region, browser, name="Suivi greffe rénale")
        assert made.status_code == 201, made.text
        team_id, name = made.json()["id"], made.json()["name"]
        maker = Reader("user:dr.chu", "Dr CHU", "user", DOCTOR_AT_CHU, frozenset({CHU}))
        team = _members(db, team_id, maker)
        readers = _readers(db, team)
        began = time.perf_counter()
        _documents(region, rng, args.documents, start)
        _messages(db, team, readers, rng, args.messages, start)
        _tasks(db, team, readers, rng, args.tasks, start)
        print(
            f"history made in {time.perf_counter() - began:.0f} s: {args.documents} documents, "
            f"{args.messages} messages, {args.tasks} tasks, {len(readers) + len(CARERS)} members"
        )
        statements = _statements(browser, f"/coordination/{team_id}")
    return team_id, name, browser.cookies["enrs_session"], statements


def _statements(browser: TestClient, path: str) -> int:
    """The SQL statements one render runs (every engine of the process), in-process."""
    browser.get(path).raise_for_status()  # warm: the first render loads templates
    counted = [0]

    def count(*_args: Any) -> None:
        counted[0] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        browser.get(path).raise_for_status()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return counted[0]


def _measure(
    base_url: str, cookie: str, path: str, renders: int, concurrency: int, check: Any
) -> tuple[list[float], float, int]:
    """``renders`` GETs of ``path`` (10 more first, not counted) from ``concurrency`` clients:
    each one's latency, the elapsed time, the last page's size."""
    sizes = [0]

    def one(http: httpx.Client) -> float:
        started = time.perf_counter()
        answer = http.get(path)
        took = time.perf_counter() - started
        if answer.status_code != 200:
            sys.exit(f"{path}: {answer.status_code} {answer.text[:300]}")
        check(answer.text)
        sizes[0] = len(answer.content)
        return took

    def client() -> httpx.Client:
        return httpx.Client(base_url=base_url, cookies={"enrs_session": cookie}, timeout=30)

    with client() as http:
        for _ in range(10):
            one(http)
    share = [renders // concurrency + (i < renders % concurrency) for i in range(concurrency)]

    def worker(count: int) -> list[float]:
        with client() as http:
            return [one(http) for _ in range(count)]

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        found = [t for part in pool.map(worker, share) for t in part]
    return found, time.perf_counter() - began, sizes[0]


def _ms(values: list[float]) -> list[float]:
    return [v / 1000 for v in percentiles([round(t * 1_000_000) for t in values], (50, 95, 100))]


def _file_check(name: str, args: argparse.Namespace) -> Any:
    listed = re.compile(r'<li data-id="')

    def check(page: str) -> None:
        if name not in page or "Tâches en cours" not in page:
            sys.exit("the coordination file does not show the circle")
        shown = len(listed.findall(page))
        if not 0 < shown <= args.messages:
            sys.exit(f"the coordination file shows {shown} messages")

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--renders", type=int, default=200, help="measured renders of each page")
    add("--concurrency", type=int, default=1, help="clients sending them at once")
    add("--workers", type=int, default=1, help="HTTP workers of enrs serve")
    add("--documents", type=int, default=200)
    add("--messages", type=int, default=2000)
    add("--tasks", type=int, default=500)
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--database-url", help="an existing, empty database (default: SQLite)")
    db.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL database")
    add("--pg-admin-url", default=PG_ADMIN_URL, help="PostgreSQL server for --postgres")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-file-")))
        if args.database_url:
            url = args.database_url
        elif args.postgres:
            url = stack.enter_context(temporary_postgres(args.pg_admin_url, "enrs_file"))
        else:
            url = f"sqlite:///{tmp / 'enrs.db'}"
        kind = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
        team, name, cookie, statements = _setup(tmp, url, args)
        server = stack.enter_context(
            live_server(
                data_dir=tmp / "var", database_url=url, workers=args.workers, start_timeout=180
            )
        )
        sampler = stack.enter_context(ProcTreeSampler(server.process.pid))
        print(
            f"{kind}: {args.renders} renders per page from {args.concurrency} client(s), "
            f"{args.workers} HTTP worker(s)"
        )
        print(
            "| page | renders | per second | p50 ms | p95 ms | max ms | p95 ÷ baseline "
            "| server CPU ms per render | KB |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        rows = []
        for label, path, check in (
            ("baseline: GET / (portal home)", "/", lambda page: None),
            ("GET /coordination/{circle}", f"/coordination/{team}", _file_check(name, args)),
        ):
            cpu = sum(c for _rss, c in sampler.snapshot().values())
            try:
                found, elapsed, size = _measure(
                    server.base_url, cookie, path, args.renders, args.concurrency, check
                )
            except BaseException:
                print(server.log()[-4000:], file=sys.stderr)
                raise
            cpu = sum(c for _rss, c in sampler.snapshot().values()) - cpu
            p50, p95, top = _ms(found)
            rows.append(p95)
            print(
                f"| {label} | {len(found)} | {len(found) / elapsed:,.1f} | {p50:.1f} | "
                f"{p95:.1f} | {top:.1f} | {p95 / rows[0]:.2f} | "
                f"{cpu * 1000 / (len(found) + 10):.1f} | {size / 1024:.0f} |"
            )
        print(f"SQL statements of one render of the file (in-process): {statements}")
        print(f"peak RSS of the server process tree: {sampler.overall_peak_rss / 2**20:.0f} MB")
        verdict = "met" if rows[1] <= GOAL_P95_MS else "MISSED"
        print(f"goal p95 ≤ {GOAL_P95_MS:.0f} ms: {verdict} ({rows[1]:.1f} ms)")


if __name__ == "__main__":
    main()
