"""``enrs messaging …``: the operator's mailboxes and the mail servers' configuration."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import click

from enrs.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from enrs.messaging import trustlist_refresh


@click.group()
def messaging() -> None:
    """The MSSanté messaging service (mailboxes, trust space, Postfix and Dovecot)."""


@messaging.group()
def mailbox() -> None:
    """The operator's mailboxes (BAL)."""


def _refresh_maps(settings: Settings) -> None:
    """Regenerate the servers' maps after a change, when this installation has them."""
    from enrs.kit.db import Database
    from enrs.messaging import config

    if not config.configured(settings):
        return
    db = Database(settings.database_url)
    try:
        with db.transaction(write=False) as session:
            config.write_maps(settings, session)
    except (config.MailSetupError, OSError) as exc:
        click.echo(f"warning: the mail servers' maps were not updated: {exc}", err=True)
    finally:
        db.dispose()


def _password(from_stdin: bool) -> str | None:
    if not from_stdin:
        return None
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@mailbox.command("add")
@click.argument("address")
@click.option("--type", "kind", required=True, type=click.Choice(["PER", "ORG", "APP", "CAB"]))
@click.option("--rpps", help="The professional's RPPS number (PER, CAB)")
@click.option("--finess", help="The structure's FINESS number (ORG, APP; PER optional)")
@click.option("--description", default="", help="Description (service, purpose)")
@click.option("--liste-rouge", is_flag=True, help="Not published in the national directory")
@click.option("--password-stdin", is_flag=True, help="Read a login password from stdin")
@click.option("--mllp", help="APP: the facility software's MLLP listener (HOST:PORT) for MDMs")
def mailbox_add(
    address: str,
    kind: str,
    rpps: str | None,
    finess: str | None,
    description: str,
    liste_rouge: bool,
    password_stdin: bool,
    mllp: str | None,
) -> None:
    """Create a mailbox of the operator's domain (ENRS_MAIL_DOMAIN)."""
    from enrs.kit.db import Database
    from enrs.kit.errors import EnrsError
    from enrs.messaging import applicative, service

    settings = Settings()
    new = service.NewMailbox(
        address, kind, rpps, finess, description, liste_rouge, _password(password_stdin)
    )
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            created = service.add_mailbox(session, new, domain=settings.mail_domain)
            if mllp is not None:
                applicative.set_software(session, created.address, mllp)
            line = f"{created.address} {created.kind} created"
    except EnrsError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        db.dispose()
    _refresh_maps(settings)
    click.echo(line)


@mailbox.command("list")
def mailbox_list() -> None:
    """Every mailbox: address, type, RPPS / FINESS, status."""
    from enrs.kit.db import Database
    from enrs.messaging import service

    settings = Settings()
    db = Database(settings.database_url)
    try:
        with db.transaction(write=False) as session:
            for box in service.mailboxes(session):
                bound = f"RPPS {box.rpps}" if box.rpps else f"FINESS {box.finess or '-'}"
                flags = " liste-rouge" if box.liste_rouge else ""
                click.echo(f"{box.address}\t{box.kind}\t{bound}\t{box.status}{flags}")
    finally:
        db.dispose()


@mailbox.command("password")
@click.argument("address")
def mailbox_password(address: str) -> None:
    """Set a mailbox's login password, read from stdin."""
    _change(lambda s, service: service.set_password(s, address, _password(True) or ""))


@mailbox.command("suspend")
@click.argument("address")
def mailbox_suspend(address: str) -> None:
    """Suspend a mailbox: no login, no new mail; its mail is kept."""
    _change(lambda s, service: service.set_status(s, address, "suspended"))


@mailbox.command("activate")
@click.argument("address")
def mailbox_activate(address: str) -> None:
    """Activate a suspended mailbox again."""
    _change(lambda s, service: service.set_status(s, address, "active"))


@mailbox.command("delegate")
@click.argument("address")
@click.argument("delegate")
@click.option("--send", is_flag=True, help="May also send as the mailbox")
def mailbox_delegate(address: str, delegate: str, send: bool) -> None:
    """Let DELEGATE (a mailbox) read ADDRESS, and send as it with --send."""
    _change(lambda s, service: service.delegate(s, address, delegate, may_send=send))


def _change(action: Callable[[Session, ModuleType], object]) -> None:
    from enrs.kit.db import Database
    from enrs.kit.errors import EnrsError
    from enrs.messaging import service

    settings = Settings()
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            action(session, service)
    except EnrsError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        db.dispose()
    _refresh_maps(settings)
    click.echo("done")


@messaging.command("config")
def write_config() -> None:
    """Write the Postfix and Dovecot configuration of this installation (ENRS_MAIL_DIR) and
    their maps."""
    from enrs.kit.db import Database
    from enrs.messaging import config

    settings = Settings()
    db = Database(settings.database_url)
    try:
        layout = config.configure(settings, db)
    except config.MailSetupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()
    _refresh_maps(settings)
    click.echo(f"Postfix: {layout.postfix}/main.cf, master.cf")
    click.echo(f"Dovecot: {layout.dovecot_conf}")


@messaging.command("serve")
def serve() -> None:
    """Run the mail servers (Postfix, Dovecot, the policy service) in the foreground, as
    ``enrs serve`` does with its other listeners."""
    from enrs.messaging import config, servers

    settings = Settings()
    try:
        sys.exit(servers.serve(settings))
    except config.MailSetupError as exc:
        raise click.ClickException(str(exc)) from None


@messaging.command("trust-list")
@click.argument("path", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--refresh", is_flag=True, help="Fetch the list from ENRS_MAIL_TRUST_LIST_URL now")
@click.option("--status", "show", is_flag=True, help="The list in force and the last attempt")
def trust_list(path: str | None, refresh: bool, show: bool) -> None:
    """Import the national MSSanté trust list (the signed XML as published) from PATH, or
    from ENRS_MAIL_TRUST_LIST_URL with --refresh: its signature checked against
    ENRS_MAIL_TRUST_CA, then the trust space replaced by its domains. A list that does not
    verify, or is older than the list in force, changes nothing (exit code 1)."""
    from pathlib import Path

    from enrs.kit.db import Database
    from enrs.messaging import trustlist_refresh

    if [bool(path), refresh, show].count(True) != 1:
        raise click.UsageError("give one of PATH, --refresh or --status")
    settings = Settings()
    if refresh and not settings.mail_trust_list_url:
        raise click.ClickException("ENRS_MAIL_TRUST_LIST_URL is not set: nowhere to fetch from")
    db = Database(settings.database_url)
    try:
        if show:
            _trust_list_status(trustlist_refresh.status(db))
            return
        if refresh:
            attempt = trustlist_refresh.refresh_trust_list(db, settings)
        else:
            assert path is not None
            source = str(Path(path).resolve())
            data = Path(path).read_bytes()
            attempt = trustlist_refresh.import_trust_list(db, settings, data, source)
    finally:
        db.dispose()
    if attempt.outcome == trustlist_refresh.UNREACHABLE:
        raise click.ClickException(f"the trust list cannot be fetched: {attempt.detail}")
    if not attempt.imported or attempt.listed is None:
        raise click.ClickException(f"the trust list is refused: {attempt.detail}")
    for warning in attempt.listed.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"trust space of {attempt.listed.generated:%Y-%m-%d %H:%M}: {attempt.detail}")


def _trust_list_status(state: trustlist_refresh.Status) -> None:
    if state.generated is None:
        click.echo(
            f"in force: {state.domains} domain(s), of a list imported before its date was kept"
        )
    else:
        click.echo(
            f"in force: the list generated {state.generated:%Y-%m-%d %H:%M %Z},"
            f" {state.domains} domain(s), imported {state.imported_at:%Y-%m-%d %H:%M %Z}"
            f" from {state.source}"
        )
    if state.attempted_at is None:
        click.echo("last attempt: none")
    else:
        click.echo(
            f"last attempt: {state.attempted_at:%Y-%m-%d %H:%M:%S %Z}, {state.outcome}:"
            f" {state.detail}"
        )


def _month(value: str | None) -> str | None:
    import re

    if value is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise click.BadParameter(f"{value!r}: a month as YYYY-MM")
    return value


@messaging.command("indicators")
@click.option("--since", help="First month (YYYY-MM)")
@click.option("--until", help="Last month (YYYY-MM)")
def indicators_csv(since: str | None, until: str | None) -> None:
    """The operator's indicators as CSV on stdout: per month and mailbox type, the messages
    sent and received and the mailboxes that sent or received one."""
    from enrs.kit.db import Database
    from enrs.messaging import indicators

    since, until = _month(since), _month(until)
    db = Database(Settings().database_url)
    try:
        with db.transaction(write=False) as session:
            rows = indicators.report(session, since, until)
    finally:
        db.dispose()
    click.echo(indicators.to_csv(rows), nl=False)


@messaging.command("publish")
def publish_now() -> None:
    """Publish to the national directory (ENRS_MSS_DIRECTORY_URL) the mailboxes that changed
    since they were last published; the mail service does it every 30 seconds."""
    from enrs.kit.db import Database
    from enrs.messaging import publication

    settings = Settings()
    if not settings.mss_directory_url:
        raise click.ClickException("ENRS_MSS_DIRECTORY_URL is not set: nowhere to publish")
    db = Database(settings.database_url)
    try:
        done = publication.publish(settings, db)
    finally:
        db.dispose()
    assert done is not None
    for address in done.sent:
        click.echo(f"published: {address}")
    for line in done.skipped:
        click.echo(f"not publishable: {line}")
    for line in done.failed:
        click.echo(f"failed (retried next time): {line}", err=True)
    if done.failed:
        sys.exit(1)
