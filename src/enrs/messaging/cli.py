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
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def trust_list(path: str) -> None:
    """Import the national MSSanté trust list (the signed XML as published): its signature
    checked against ENRS_MAIL_TRUST_CA, then the trust space replaced by its domains. A list
    that does not verify changes nothing."""
    from pathlib import Path

    from enrs.kit.db import Database
    from enrs.messaging import service
    from enrs.messaging.trustlist import TrustListError, parse_trust_list

    settings = Settings()
    if settings.mail_trust_ca is None:
        raise click.ClickException(
            "ENRS_MAIL_TRUST_CA is not set: the certificates the list's signature is checked by"
        )
    try:
        listed = parse_trust_list(Path(path).read_bytes(), [settings.mail_trust_ca.read_bytes()])
    except TrustListError as exc:
        raise click.ClickException(f"the trust list is refused: {exc.message}") from None
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            change = service.replace_trust_space(session, listed)
    finally:
        db.dispose()
    for warning in listed.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"trust space of {listed.generated:%Y-%m-%d %H:%M}: {len(listed.domains)} domain(s),"
        f" {change.added} added, {change.removed} removed, {change.kept} kept"
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
