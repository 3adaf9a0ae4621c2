"""``enrs directory …``: the regional directory from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from enrs.directory import imports
from enrs.directory.national import parse_departments
from enrs.settings import Settings

SHOWN = 10  # rejected lines printed per file (the summary in the database keeps 100)


class _Bar(imports.Progress):
    """A progress bar on standard error, by bytes read (when it is a terminal)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, name: str, total: int) -> None:
        self._bar = click.progressbar(length=total, label=name, file=sys.stderr)
        self._bar.__enter__()

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.group()
def directory() -> None:
    """The regional directory of professionals (RPPS) and structures (FINESS)."""


@directory.command("import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--departments", help="Keep only these departments, e.g. 971,972,973,974")
@click.option(
    "--allow-removals",
    is_flag=True,
    help=f"Apply an extraction that makes over {imports.REMOVAL_LIMIT:.0%} of the entries inactive",
)
@click.option("--quiet", is_flag=True, help="No progress bar")
def directory_import(
    files: tuple[Path, ...], departments: str | None, allow_removals: bool, quiet: bool
) -> None:
    """Load national extractions (Annuaire Santé activity file, FINESS establishments; zipped
    or not): new, changed and gone entries applied whole or not at all, each file's summary
    printed; exit status 1 if a file could not be applied."""
    from enrs.kit.db import Database

    try:
        wanted = parse_departments(departments) if departments else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--departments") from None
    db = Database(Settings().database_url)
    failed = 0
    try:
        for path in files:
            for source in imports.sources(path):
                outcome = imports.import_file(
                    db,
                    source,
                    departments=wanted,
                    removal_limit=None if allow_removals else imports.REMOVAL_LIMIT,
                    progress=imports.Progress() if quiet else _Bar(),
                )
                _report(outcome)
                failed += outcome.error is not None
    finally:
        db.dispose()
    if failed:
        raise click.ClickException(f"{failed} file(s) not applied")


def _report(outcome: imports.Outcome) -> None:
    click.echo(f"{outcome.file}: {outcome.kind or 'unknown kind'}, {outcome.lines} lines")
    if outcome.left_out:
        click.echo(f"  {outcome.left_out} lines outside the departments asked for")
    for note in outcome.notes:
        click.echo(f"  note: {note}")
    if outcome.rejected:
        click.echo(f"  {outcome.rejected} lines rejected:")
        for line in outcome.rejections[:SHOWN]:
            click.echo(f"    {line}")
        if outcome.rejected > SHOWN:
            click.echo(f"    … (import {outcome.import_id} lists the first {imports.REPORTED})")
    for target, counts in outcome.counts.items():
        figures = ", ".join(f"{n} {what}" for what, n in counts.items())
        click.echo(f"  {target.removeprefix('directory_')}: {figures}")
    if outcome.error:
        click.echo(f"  Error: {outcome.error}; nothing of this file was applied", err=True)
