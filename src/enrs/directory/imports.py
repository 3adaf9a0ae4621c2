"""``enrs directory import FILE…``: the national files loaded into the directory.

For each file (or each member of a zip, read as it is):

1. its kind is recognised from its first lines (:mod:`.national`), else it is refused;
2. its lines are read one by one (bounded memory) and staged in batches, each batch its own
   short transaction, so the platform keeps writing meanwhile; a malformed line is reported
   with its number and why, and skipped; a line outside ``departments`` is left out;
3. the stage is applied in **one** transaction (:func:`.repository.apply`): new, changed and
   gone entries; the directory before stays as it was until the new extraction is whole. A
   file that cannot be read to its end (a wrong header, a line cut short at the end of the
   file, a broken zip) applies nothing; nor does an extraction that would make more than
   ``removal_limit`` of the national entries inactive, unless allowed.

Only one import runs at a time on a database (:meth:`~enrs.kit.db.Database.sole`). Each run
is recorded in ``directory_import`` with its summary."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import update

from enrs.directory import repository
from enrs.directory.models import Import
from enrs.directory.national import FileError, FileKind, LineDecoder, LineError, recognise
from enrs.kit.db import Database, prepare_bulk, utcnow

BATCH = 20_000
REPORTED = 100  # rejected lines listed in the summary (all are counted)
REMOVAL_LIMIT = 0.2


@dataclass(frozen=True)
class Source:
    """A file to import: a plain file, or a member of a zip."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]


def sources(path: Path) -> list[Source]:
    """The files of ``path``: itself, or the members of a zip."""
    if not zipfile.is_zipfile(path):
        return [Source(path.name, path.stat().st_size, lambda: open(path, "rb"))]
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]

    def opener(member: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
        def open_member() -> IO[bytes]:
            with zipfile.ZipFile(path) as archive:  # the member keeps the file open
                return io.BufferedReader(archive.open(member), 1 << 20)  # type: ignore[type-var]

        return open_member

    return [Source(f"{path.name}:{m.filename}", m.file_size, opener(m)) for m in members]


@dataclass
class Outcome:
    """What an import did with one file."""

    file: str
    kind: str = ""
    lines: int = 0
    left_out: int = 0  # lines outside the departments asked for
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)  # the first REPORTED ones
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None
    import_id: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lines": self.lines,
            "left_out": self.left_out,
            "rejected": self.rejected,
            "rejections": self.rejections,
            "notes": self.notes,
            "counts": self.counts,
        }


class Progress:
    """Where the reading of a file is (bytes), for a progress bar; nothing by default."""

    def start(self, name: str, total: int) -> None:
        """A file begins."""

    def advance(self, done: int) -> None:
        """``done`` more bytes were read."""

    def finish(self) -> None:
        """The file is read."""


@dataclass
class _Batches:
    conn_db: Database
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, target: str, row: dict[str, Any]) -> None:
        batch = self.rows.setdefault(target, [])
        batch.append(row)
        if len(batch) >= BATCH:
            self.flush(target)

    def flush(self, target: str | None = None) -> None:
        for name in [target] if target else list(self.rows):
            batch = self.rows.get(name)
            if batch:
                with self.conn_db.connect(write=True) as conn, conn.begin():
                    prepare_bulk(conn)
                    repository.stage(conn, name, batch)
                self.rows[name] = []


def import_file(
    db: Database,
    source: Source,
    *,
    departments: frozenset[str] | None = None,
    removal_limit: float | None = REMOVAL_LIMIT,
    progress: Progress | None = None,
) -> Outcome:
    """Import one file (see the module); its :class:`Outcome`, with ``error`` set when
    nothing of it was applied."""
    outcome = Outcome(source.name)
    with _sole(db), _recorded(db, outcome):
        try:
            with source.open() as raw:
                kind = _read(db, raw, source, outcome, departments, progress or Progress())
            with db.connect(write=True) as conn, conn.begin():
                prepare_bulk(conn)
                now = utcnow()
                for target in kind.targets:
                    outcome.counts[target] = repository.apply(
                        conn, target, now, removal_limit=removal_limit
                    )
                repository.clear_stage(conn, kind.targets)
        except (FileError, repository.MassRemoval, zipfile.BadZipFile, OSError, EOFError) as exc:
            outcome.error = str(exc) or type(exc).__name__
    return outcome


def _read(
    db: Database,
    raw: IO[bytes],
    source: Source,
    outcome: Outcome,
    departments: frozenset[str] | None,
    progress: Progress,
) -> FileKind:
    first = raw.readline()
    second = raw.readline()
    heads = [h.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n") for h in (first, second)]
    kind = recognise(heads)
    outcome.kind = kind.name
    decoder = LineDecoder(kind.encoding)
    try:
        reader = kind.reader(decoder.decode(first, 1).lstrip("\ufeff").rstrip("\r\n"))
    except LineError as exc:
        raise FileError(f"line 1: {exc}") from None
    with db.connect(write=True) as conn, conn.begin():
        repository.clear_stage(conn, kind.targets)
    batches = _Batches(db)
    progress.start(source.name, source.size)
    read = len(first)
    for number, line in enumerate(_lines(second, raw), start=2):
        read += len(line)
        if number % 4096 == 0:
            progress.advance(read)
            read = 0
        if not line.strip():
            continue
        outcome.lines += 1
        try:
            text = decoder.decode(line, number).rstrip("\r\n")
            rows = reader.rows(text.split(kind.delimiter), departments)
        except LineError as exc:
            if not line.endswith(b"\n"):
                raise FileError(f"line {number}: the file ends in the middle of a line") from None
            outcome.rejected += 1
            if len(outcome.rejections) < REPORTED:
                outcome.rejections.append(f"line {number}: {exc}")
            continue
        if not rows:
            outcome.left_out += 1
        for target, row in rows:
            batches.add(target, row)
    batches.flush()
    progress.advance(read)
    progress.finish()
    outcome.notes.extend(decoder.notes)
    return kind


def _lines(pending: bytes, raw: IO[bytes]) -> Iterator[bytes]:
    if pending:
        yield pending
    yield from raw


@contextmanager
def _sole(db: Database) -> Iterator[None]:
    with db.sole("directory-import", threading.Event(), every=1.0):
        yield


@contextmanager
def _recorded(db: Database, outcome: Outcome) -> Iterator[None]:
    """The run in ``directory_import``: running, then done or failed with its summary."""
    with db.transaction() as session:
        run = Import(kind="", file_name=outcome.file, status="running")
        session.add(run)
        session.flush()
        outcome.import_id = run.id
    try:
        yield
    except BaseException as exc:
        outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with db.transaction() as session:
            values = {
                "kind": outcome.kind,
                "status": "failed" if outcome.error else "done",
                "finished_at": utcnow(),
                "lines": outcome.lines,
                "rejected": outcome.rejected,
                "summary": json.dumps(outcome.summary(), ensure_ascii=False),
                "error": outcome.error,
            }
            session.execute(update(Import).where(Import.id == outcome.import_id).values(values))
