"""``enrs imaging reading …``: the reading groups of teleradiology and second reading."""

from __future__ import annotations

import click

from enrs.settings import Settings


@click.group()
def reading() -> None:
    """Teleradiology and second reading: the reading groups."""


@reading.group()
def group() -> None:
    """The reading groups and the radiologists (RPPS) who read for each."""


@group.command("add")
@click.argument("name")
@click.option("--member", "members", multiple=True, help="RPPS of a radiologist (repeatable)")
def group_add(name: str, members: tuple[str, ...]) -> None:
    """Register the reading group NAME, or add members to it."""
    from enrs.imaging import reading as service
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction() as session:
            found = service.add_group(session, name, list(members))
            line = _line(
                found.name, [m for g, ms in service.groups(session) if g.id == found.id for m in ms]
            )
    finally:
        db.dispose()
    click.echo(line)


@group.command("list")
def group_list() -> None:
    """The reading groups and their members."""
    from enrs.imaging import reading as service
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction(write=False) as session:
            for found, members in service.groups(session):
                click.echo(_line(found.name, members))
    finally:
        db.dispose()


def _line(name: str, members: list[str]) -> str:
    return f"{name}\t{','.join(members) or '-'}"


@reading.group()
def site() -> None:
    """The requesting sites' HL7 v2 endpoints (their reports sent back as ORU^R01)."""


@site.command("add")
@click.argument("finess")
@click.option("--mllp", "endpoint", required=True, help="HOST:PORT of the site's MLLP listener")
@click.option("--application", default="", help="MSH-5, the receiving application")
@click.option("--facility", default="", help="MSH-6, the receiving facility (default: FINESS)")
def site_add(finess: str, endpoint: str, application: str, facility: str) -> None:
    """Send the reports of the site FINESS's done requests to its MLLP listener (ORU^R01)."""
    from enrs.imaging import reading_oru
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction() as session:
            added = reading_oru.add_site(
                session, finess, endpoint=endpoint, application=application, facility=facility
            )
    finally:
        db.dispose()
    click.echo(f"{added.name}\t{added.endpoint}")
