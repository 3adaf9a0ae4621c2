"""Import of a national-size directory extraction: issue 12's figure "2,500,000 activity lines
(generated in the real format) in ≤ 5 minutes on this 2-core machine with peak memory
≤ 1 GiB, on SQLite and PostgreSQL".

    .venv/bin/python -m bench.directory_import [--activities 2500000] [--postgres]
        [--keep-database PATH] [--json F]

1. The files: ``bench/directory_data.py`` seed 0 (the activity file, the FINESS file) and the
   next day's extraction (seed 1 of seed 0, 2 % of the professionals changed, 1 % new,
   0.5 % gone), cached under the temp dir by size.
2. A fresh database: SQLite (a file, as ``make run`` has it) or, with ``--postgres``, a
   temporary database on the local server; migrated.
3. ``enrs directory import --quiet FILE`` run as a user would, one process per step: the
   FINESS file, the activity file (first import), the same file again (nothing to change), the
   next day's file. Each step timed, its process tree's peak RSS sampled every 0.1 s, its
   summary read back from ``directory_import``; the next day's counts are checked against
   what the generator says it changed.
   With ``--departments 971,972,973,974``, every step keeps only those departments (a
   region's import: the whole national file is read, a few per cent of it applied).
4. Baseline in the same run: reading the activity file and splitting its lines in Python,
   no database (the floor any importer written in Python pays): each step's ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, select, text
from tests.support.live_server import enrs_command

from bench import directory_data
from bench._load import ProcTreeSampler
from bench.http_baseline import PG_ADMIN_URL, temporary_postgres
from enrs.directory.models import Import
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head

MB = 1024 * 1024


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def files(activities: int) -> tuple[directory_data.Manifest, directory_data.Manifest]:
    """The first extraction and the next day's, generated once per size (cached)."""
    root = Path(tempfile.gettempdir()) / f"enrs-directory-{activities}"
    first, second = root / "day1", root / "day2"
    marker = root / "done.json"
    if not marker.exists():
        say(f"generating {activities} activity lines in {root} …")
        started = time.perf_counter()
        a = directory_data.generate(first, activities, seed=0)
        b = directory_data.generate(second, activities, seed=1, extraction_of=0, changes=0.02)
        marker.write_text(json.dumps([a.as_dict(), b.as_dict()]))
        say(f"  generated in {time.perf_counter() - started:.0f} s")
    a_dict, b_dict = json.loads(marker.read_text())
    return _manifest(a_dict), _manifest(b_dict)


def _manifest(data: dict[str, Any]) -> directory_data.Manifest:
    man = directory_data.Manifest(Path(data["outdir"]), data["seed"], data["extraction_time"])
    man.paths = {k: Path(v) for k, v in data["paths"].items()}
    man.activities, man.professionals = data["activities"], data["professionals"]
    man.diff = directory_data.Diff(**data["diff"]) if data.get("diff") else None
    return man


def baseline(path: Path) -> tuple[float, int]:
    """Seconds to read and split the lines of ``path`` (bytes → str → fields), and lines."""
    started = time.perf_counter()
    lines = 0
    with open(path, "rb") as fh:
        for raw in fh:
            raw.decode("utf-8").rstrip("\n").split("|")
            lines += 1
    return time.perf_counter() - started, lines - 1


@contextmanager
def database(postgres: bool, keep: str | None) -> Iterator[str]:
    if postgres and keep:  # a database of that name, made again, kept afterwards
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{keep}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{keep}"'))
        admin.dispose()
        url = make_url(PG_ADMIN_URL).set(database=keep).render_as_string(hide_password=False)
        upgrade_head(url)
        yield url
        return
    if postgres:
        with temporary_postgres(PG_ADMIN_URL, prefix="enrs_dir") as url:
            upgrade_head(url)
            yield url
        return
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="enrs-dir-db-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "enrs.db"
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    upgrade_head(url)
    yield url


def step(url: str, path: Path, data_dir: Path, *extra: str) -> dict[str, Any]:
    """``enrs directory import`` of ``path``: seconds, peak RSS, the run's summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env |= {"ENRS_DATABASE_URL": url, "ENRS_DATA_DIR": str(data_dir)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        enrs_command("directory", "import", "--quiet", *extra, str(path)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with ProcTreeSampler(proc.pid, interval=0.1) as sampler:
        out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"import of {path} failed:\n{out}\n{err}")
    db = Database(url)
    try:
        with db.transaction(write=False) as session:
            run = session.scalars(select(Import).order_by(Import.id.desc()).limit(1)).one()
            summary = json.loads(run.summary or "{}")
    finally:
        db.dispose()
    return {
        "file": path.name,
        "seconds": seconds,
        "peak_rss_mb": sampler.overall_peak_rss / MB,
        "lines": summary.get("lines", 0),
        "rejected": summary.get("rejected", 0),
        "counts": summary.get("counts", {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activities", type=int, default=2_500_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument(
        "--keep-database",
        help="keep the database: SQLite, in this folder; PostgreSQL, under this name",
    )
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--first-only", action="store_true", help="FINESS and first import only")
    parser.add_argument("--departments", help="import only these departments (a region)")
    args = parser.parse_args(argv)
    day1, day2 = files(args.activities)
    activity = "activities"
    floor, lines = baseline(day1.paths[activity])
    say(f"baseline: {lines} lines read and split in {floor:.1f} s")
    results: list[dict[str, Any]] = []
    with database(args.postgres, args.keep_database) as url, tempfile.TemporaryDirectory() as d:
        data_dir = Path(d)
        region = ("--departments", args.departments) if args.departments else ()
        plan = [
            ("FINESS", day1.paths["finess"], region),
            ("activities, first import", day1.paths[activity], region),
            ("activities, same file again", day1.paths[activity], region),
            ("activities, next day (2 % changed)", day2.paths[activity], region),
        ]
        for label, path, extra in plan[:2] if args.first_only else plan:
            say(f"{label}: {path.name} …")
            result = step(url, path, data_dir, *extra)
            result["step"] = label
            results.append(result)
    print(f"{'step':38} {'lines':>9} {'s':>7} {'lines/s':>9} {'peak MB':>8} {'/ baseline':>10}")
    label = "baseline: read + split (no database)"
    print(f"{label:38} {lines:9} {floor:7.1f} {lines / floor:9.0f}")
    for r in results:
        ratio = r["seconds"] / floor
        rate = r["lines"] / r["seconds"] if r["seconds"] else 0
        print(
            f"{r['step']:38} {r['lines']:9} {r['seconds']:7.1f} {rate:9.0f} "
            f"{r['peak_rss_mb']:8.0f} {ratio:10.1f}"
        )
        for target, counts in r["counts"].items():
            print(f"    {target}: {counts}")
    if day2.diff is not None:
        d2 = day2.diff
        print(
            f"generator's next day: professionals new {d2.professionals_new}, "
            f"changed {d2.professionals_changed}, gone {d2.professionals_gone}; activities "
            f"added {d2.activities_added}, modified {d2.activities_modified}, "
            f"removed {d2.activities_removed}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": [floor, lines], "steps": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
