"""``enrs documents …``: the document repository's jobs from the command line."""

from __future__ import annotations

import click

from enrs.settings import Settings


@click.group()
def documents() -> None:
    """The regional document repository (MHD, the DMP feed, retention)."""


@documents.command("dmp-send")
def dmp_send() -> None:
    """Send the documents waiting for the DMP now (one round; ``enrs serve`` does it every
    ENRS_DMP_INTERVAL seconds when ENRS_DMP_URL is set)."""
    from enrs.documents import dmp_feed
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    if not settings.dmp_url:
        raise click.ClickException("ENRS_DMP_URL is not set: no DMP to send to")
    db = Database(settings.database_url)
    try:
        with dmp_feed.adapter_for(settings) as adapter:
            tally = dmp_feed.send_due(
                db, open_storage(settings), adapter, source_id=dmp_feed.repository_oid(settings)
            )
    finally:
        db.dispose()
    click.echo(
        f"sent {tally.sent}, to retry {tally.retried}, refused {tally.refused}, "
        f"held (no qualified INS) {tally.held}, "
        f"skipped (opposition, withdrawn, replaced) {tally.skipped}"
    )


@documents.command("retention")
@click.option("--years", type=int, help="Retention period (default ENRS_DOCUMENT_RETENTION_YEARS)")
@click.option("--dry-run", is_flag=True, help="Count the documents past the period only")
def retention(years: int | None, dry_run: bool) -> None:
    """Delete the records past their retention period (R.1112-7: the period after the patient's
    last document, at least until their 28th birthday; 10 years after a death that came less
    than 10 years after the last document), each deletion audited."""
    from enrs.documents import retention as job
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    period = years if years is not None else settings.document_retention_years
    db = Database(settings.database_url)
    try:
        done = job.purge(db, open_storage(settings), years=period, dry_run=dry_run)
    finally:
        db.dispose()
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {done.documents} document(s) of records past their period "
        f"(last document before {job.cutoff(period):%Y-%m-%d}, or a death)"
    )
    if done.contents_left:
        click.echo(f"{done.contents_left} content(s) could not be deleted (see the log)", err=True)


@documents.command("sweep")
@click.option("--hours", type=float, default=1.0, show_default=True, help="Grace period")
@click.option("--dry-run", is_flag=True, help="Count the orphan contents only")
def sweep(hours: float, dry_run: bool) -> None:
    """Remove stored contents that no document names (left by a crash mid-filing), older than
    the grace period; each removal audited."""
    from datetime import timedelta

    from enrs.documents import retention as job
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    db = Database(settings.database_url)
    try:
        done = job.sweep(db, open_storage(settings), grace=timedelta(hours=hours), dry_run=dry_run)
    finally:
        db.dispose()
    click.echo(f"{'would remove' if dry_run else 'removed'} {done.orphans} orphan content(s)")
    if done.failed:
        click.echo(f"{done.failed} content(s) could not be deleted (see the log)", err=True)
