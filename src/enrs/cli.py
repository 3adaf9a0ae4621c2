"""The ``enrs`` command: serve, migrate, users, clients, audit, keys, identity, demo; the
services' own groups (``directory``) are added from their ``cli`` modules."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from enrs.kit.errors import EnrsError
from enrs.settings import PLACEHOLDER_OID_ROOT, Settings, redacted_url

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from enrs.accounts.service import Registration


def _settings() -> Settings:
    return Settings()


class _Commands(click.Group):
    """The command group: what a user got wrong (an unknown user, a bad scope, a short
    password, an existing name), a database that cannot be reached or bad settings print
    ``Error: …`` and exit with status 1, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EnrsError as exc:
            raise click.ClickException(exc.message) from None
        except OperationalError as exc:
            reason = " ".join(str(exc.orig if exc.orig is not None else exc).split())
            raise click.ClickException(f"the database cannot be used: {reason}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"ENRS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise click.ClickException(f"invalid settings: {problems}") from None


@click.group(cls=_Commands)
@click.version_option(package_name="enrs")
def main() -> None:
    """ENRS - Espace Numérique Régional de Santé."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@main.command()
@click.option("--host", help="HTTP listen address (ENRS_HTTP_HOST)")
@click.option("--port", type=int, help="HTTP port (ENRS_HTTP_PORT)")
@click.option("--workers", type=int, help="HTTP worker processes (ENRS_HTTP_WORKERS)")
@click.option(
    "--dev",
    is_flag=True,
    help="Development mode (ENRS_DEV): placeholder OID root, test INS and open /docs allowed",
)
def serve(host: str | None, port: int | None, workers: int | None, dev: bool) -> None:
    """Start every listener of the platform: HTTP (the API, FHIR, the portal), the HL7 v2
    MLLP listener (ENRS_MLLP_PORT, 0 disables it) and the imaging archive's DICOM listener
    (ENRS_DICOM_PORT, 0 disables it).

    A production start (without --dev) refuses the placeholder OID root, and a PostgreSQL
    server that may lose acknowledged commits (fsync or full_page_writes off): exit status 2."""
    from enrs.app import listeners
    from enrs.kit.listeners import supervise

    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"ENRS_HTTP_{name}"] = str(value)
    if dev:
        os.environ["ENRS_DEV"] = "true"  # the listeners' processes read their settings again
    settings = _settings()
    if settings.oid_root == PLACEHOLDER_OID_ROOT:
        if not settings.dev:
            click.echo(
                f"error: ENRS_OID_ROOT is the placeholder {PLACEHOLDER_OID_ROOT}: set the "
                "region's registered OID arc (identifiers given out carry it), or start with "
                "--dev for development",
                err=True,
            )
            sys.exit(2)
        click.echo(
            f"warning: ENRS_OID_ROOT is the placeholder {PLACEHOLDER_OID_ROOT} (development "
            "mode); set the region's registered OID arc before real identities are stored",
            err=True,
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_ports(settings)
    _check_durability(settings)
    _prepare_keys(settings)
    sys.exit(supervise(listeners(settings), settings))


def _check_ports(settings: Settings) -> None:
    """Refuse to start (``Error: …``, status 1) when a listener's port is already taken,
    before any listener starts."""
    wanted = [("ENRS_HTTP_PORT", settings.http_host, settings.http_port)]
    if settings.mllp_port:
        wanted.append(("ENRS_MLLP_PORT", settings.mllp_host, settings.mllp_port))
    if settings.dicom_port:
        wanted.append(("ENRS_DICOM_PORT", settings.dicom_host, settings.dicom_port))
    from enrs.messaging import servers as mail_servers

    if mail_servers.enabled(settings)[0]:
        wanted.append(("ENRS_SMTP_PORT", settings.mail_host, settings.smtp_port))
        wanted.append(("ENRS_IMAP_PORT", settings.mail_host, settings.imap_port))
        if settings.mx_port:
            wanted.append(("ENRS_MX_PORT", settings.mail_host, settings.mx_port))
    for name, host, port in wanted:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise click.ClickException(f"cannot listen on {host}: {exc.strerror}") from None
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
                raise click.ClickException(
                    f"port {port} on {host} is already in use ({name}): stop what listens "
                    f"there or choose another port"
                ) from None


def _check_durability(settings: Settings) -> None:
    """A production start refuses a database where an acknowledged commit may be lost
    (PostgreSQL with fsync or full_page_writes off): exit status 2; --dev warns. A server
    that keeps no statistics (autovacuum off) is only warned about."""
    from enrs.kit.db import Database, durability_problems, statistics_problems

    db = Database(settings.database_url)
    try:
        problems = durability_problems(db.engine)
        stale = statistics_problems(db.engine)
    finally:
        db.dispose()
    for problem in stale:
        click.echo(f"warning: {problem}", err=True)
    for problem in problems:
        level = "warning" if settings.dev else "error"
        click.echo(f"{level}: {problem}", err=True)
    if problems and not settings.dev:
        sys.exit(2)


def _prepare_keys(settings: Settings) -> None:
    from enrs.kit.security.keys import KeyRing
    from enrs.kit.storage import open_storage

    KeyRing(settings.keys_path / "signing", settings.signing_alg).load()
    open_storage(settings).check()


@main.command()
def migrate() -> None:
    """Bring the database schema to the latest revision."""
    from enrs.kit.migrate import upgrade_head

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_head(settings.database_url)
    click.echo(f"database at head: {redacted_url(settings.database_url)}")


@main.group()
def users() -> None:
    """Local user accounts."""


@users.command("create")
@click.argument("username")
@click.option("--name", "display_name", required=True, help="Display name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="admin, identitovigilance, professional, social, auditor (repeatable)",
)
@click.option("--rpps", help="RPPS number (11 digits), to log in through the external provider")
@click.option("--email")
@click.option("--password", help="Password (prompted when omitted; ENRS_NEW_PASSWORD also read)")
@click.option("--no-password", is_flag=True, help="External login only")
@click.option("--totp", is_flag=True, help="Enrol a TOTP second factor and print its URI")
def users_create(
    username: str,
    display_name: str,
    roles: tuple[str, ...],
    rpps: str | None,
    email: str | None,
    password: str | None,
    no_password: bool,
    totp: bool,
) -> None:
    """Create a user account."""
    from enrs.accounts import service
    from enrs.kit.db import Database
    from enrs.kit.security.totp import provisioning_uri

    if not no_password and password is None:
        password = os.environ.get("ENRS_NEW_PASSWORD") or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )
    db = Database(_settings().database_url)
    with db.transaction() as session:
        user = service.create_user(
            session,
            username=username,
            display_name=display_name,
            password=None if no_password else password,
            roles=list(roles),
            rpps=rpps,
            email=email,
            with_totp=totp,
        )
        out = {"id": user.id, "username": user.username, "roles": user.roles.split()}
        if user.totp_secret:
            out["totp_uri"] = provisioning_uri(user.totp_secret, user.username)
    db.dispose()
    click.echo(json.dumps(out))


@users.command("list")
def users_list() -> None:
    """List user accounts."""
    from enrs.accounts import repository
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    with db.transaction() as session:
        for u in repository.list_users(session):
            locked = " locked" if u.locked_until else ""
            state = "" if u.active else " disabled"
            click.echo(f"{u.username}\t{u.display_name}\t{u.roles}\t{u.rpps or '-'}{locked}{state}")
    db.dispose()


@users.command("unlock")
@click.argument("username")
def users_unlock(username: str) -> None:
    """Clear a user's lock-out."""
    from enrs.accounts import service
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    with db.transaction() as session:
        service.unlock_user(session, username)
    db.dispose()
    click.echo(f"{username} unlocked")


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Disable a user: no more logins or token refreshes; their portal sessions end at once.
    Access tokens already given to an application acting for them last until they expire."""
    _set_user_active(username, False)
    click.echo(f"{username} disabled")


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Enable a disabled user again."""
    _set_user_active(username, True)
    click.echo(f"{username} enabled")


def _set_user_active(username: str, active: bool) -> None:
    from enrs.accounts import service
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    try:
        with db.transaction() as session:
            service.set_user_active(session, username, active)
    finally:
        db.dispose()


@main.group()
def clients() -> None:
    """System clients (client_credentials), applications, HL7 v2 (MLLP) senders."""


@clients.command("create")
@click.argument("name")
@click.option("--scope", help='SMART scopes, e.g. "system/Patient.rs" (MLLP sender: optional)')
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="Register an application acting for people (authorization code + PKCE)",
)
@click.option("--public", is_flag=True, help="Application without a secret (mobile, browser)")
@click.option(
    "--mllp-sender", "sender_oid", help="Register an HL7 v2 sender known by this MSH-4 OID"
)
@click.option(
    "--authority",
    "authorities",
    multiple=True,
    help="Assigning authority OID whose identities it may write (repeatable)",
)
@click.option(
    "--finess",
    help="The member facility (FINESS) it belongs to: it writes the domains that facility owns",
)
def clients_create(
    name: str,
    scope: str | None,
    redirect_uris: tuple[str, ...],
    public: bool,
    sender_oid: str | None,
    authorities: tuple[str, ...],
    finess: str | None,
) -> None:
    """Register a client or an MLLP sender; prints it as JSON (with a client's secret).

    Without --redirect-uri: a system client (client_credentials, system/ scopes) of the
    facility --finess, writing only the identities of the domains that facility owns (enrs
    identity domains add --finess / --owner) and of its --authority. With it: an application
    acting for a person (user/ scopes, openid). With --mllp-sender: a facility's HL7 v2
    sender (no secret; default scope system/Patient.crus), writing likewise."""
    from enrs.accounts import service
    from enrs.identity import domains
    from enrs.kit.db import Database

    settings = _settings()
    bound = [a.strip() for a in authorities]
    db = Database(settings.database_url)
    with db.transaction() as session:
        domains.require(session, set(bound))
        if sender_oid is not None:
            if redirect_uris or public:
                raise click.UsageError("an MLLP sender takes no --redirect-uri or --public")
            sender = service.create_mllp_sender(
                session,
                name=name,
                sender_oid=sender_oid,
                authorities=bound,
                scope=scope or service.DEFAULT_SENDER_SCOPE,
                finess=finess,
            )
            out = _registration_json(session, service.registration(session, sender.sender_oid))
        else:
            if scope is None:
                raise click.UsageError("a client needs --scope")
            client, secret = service.create_client(
                session,
                name=name,
                scope=scope,
                redirect_uris=list(redirect_uris),
                public=public,
                authorities=bound,
                finess=finess,
            )
            out = {"client_id": client.client_id, "scope": client.scope}
            if secret is not None:
                out["client_secret"] = secret
            if redirect_uris:
                out["redirect_uris"] = " ".join(redirect_uris)
            if bound or finess:
                reg = _registration_json(session, service.registration(session, client.client_id))
                out["authorities"] = reg["authorities"]
            if finess:
                out["finess"] = finess
    db.dispose()
    click.echo(json.dumps(out))


def _registration_json(session: Session, reg: Registration) -> dict[str, str]:
    key = "mllp_sender" if reg.kind == "mllp" else "client_id"
    return {
        key: reg.key,
        "kind": reg.kind,
        "name": reg.name,
        "scope": reg.scope,
        "authorities": " ".join(_writes(session, reg)),
        "finess": reg.finess or "",
        "active": "yes" if reg.active else "no",
    }


def _writes(session: Session, reg: Registration) -> list[str]:
    """The domains ``reg`` writes: bound by name, and its facility's."""
    from enrs.identity import domains

    owned = {d.oid for d in domains.owned_by(session, reg.finess)} if reg.finess else set()
    return sorted(set(reg.authorities) | owned)


@clients.command("list")
def clients_list() -> None:
    """List clients and MLLP senders: kind, id (client_id or MSH-4 OID), name, scope,
    the domains it writes, its facility (FINESS), active."""
    from enrs.accounts import service
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    with db.transaction() as session:
        for reg in service.list_registrations(session):
            authorities = " ".join(_writes(session, reg)) or "-"
            state = "active" if reg.active else "revoked"
            click.echo(
                f"{reg.kind}\t{reg.key}\t{reg.name}\t{reg.scope}\t{authorities}\t"
                f"{reg.finess or '-'}\t{state}"
            )
    db.dispose()


@clients.command("attach")
@click.argument("key")
@click.option("--finess", required=True, help="The member facility (FINESS) it belongs to")
def clients_attach(key: str, finess: str) -> None:
    """Make a system client (client_id) or MLLP sender (MSH-4 OID) a feeder of the facility
    --finess: it then writes the domains that facility owns."""
    from enrs.accounts import service
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    with db.transaction() as session:
        out = _registration_json(session, service.attach_facility(session, key, finess))
    db.dispose()
    click.echo(json.dumps(out))


@clients.command("revoke")
@click.argument("key")
def clients_revoke(key: str) -> None:
    """Deactivate a client (by client_id: no new token, writes refused at once) or an MLLP
    sender (by MSH-4 OID: its messages refused within 5 s, the listeners' cache)."""
    from enrs.accounts import service
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    with db.transaction() as session:
        out = _registration_json(session, service.revoke(session, key))
    db.dispose()
    click.echo(json.dumps(out))


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the hash chain; exit 1 at the first altered or missing record."""
    from enrs.kit.audit import verify_chain
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    report = verify_chain(db)
    db.dispose()
    if report.ok:
        click.echo(f"audit trail intact: {report.checked} records verified")
        return
    click.echo(
        f"audit trail BROKEN at record {report.first_bad_seq}: {report.problem} "
        f"({report.checked} records verified before it)",
        err=True,
    )
    sys.exit(1)


@main.group()
def keys() -> None:
    """Encryption and signing keys."""


@keys.command("rotate")
def keys_rotate() -> None:
    """New blob master key; re-wrap every object's data key with it."""
    from enrs.kit.storage import open_storage

    report = open_storage(_settings()).rotate_master_key()
    out = dataclasses.asdict(report)
    out["stale_key_ids"] = sorted(report.stale_key_ids)
    click.echo(json.dumps(out))
    if report.failed:
        sys.exit(1)


@keys.command("rotate-signing")
def keys_rotate_signing() -> None:
    """New token signing key; older keys keep verifying the tokens they signed."""
    from enrs.kit.security.keys import KeyRing

    settings = _settings()
    key = KeyRing(settings.keys_path / "signing", settings.signing_alg).rotate()
    click.echo(json.dumps({"kid": key.kid, "alg": key.alg}))


@main.group()
def identity() -> None:
    """Bulk jobs of the regional identity server."""


@identity.command("train")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file to write (default: <data dir>/identity-models/model-<version>.json)",
)
@click.option(
    "--base",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Model to start from (default: ENRS_IDENTITY_MODEL, else the built-in model)",
)
@click.option("--max-pairs", type=float, default=5e6, show_default=True, help="Pairs for u")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--memory-limit", help="DuckDB memory limit, e.g. 4GB")
def identity_train(
    output: Path | None, base: Path | None, max_pairs: float, seed: int, memory_limit: str | None
) -> None:
    """Estimate the matching model's m and u on the registry (Splink) into a new model file."""
    from enrs.identity.train import TooFewIdentities, train_command

    try:
        for line in train_command(
            _settings(),
            output=output,
            base=base,
            max_pairs=max_pairs,
            seed=seed,
            memory_limit=memory_limit,
        ):
            click.echo(line)
    except TooFewIdentities as exc:
        raise click.ClickException(str(exc)) from exc


@identity.group("domains")
def identity_domains() -> None:
    """The assigning authorities (identifier domains) identities are written and queried in."""


@identity_domains.command("add")
@click.argument("oid", required=False)
@click.option("--finess", help="The domain of a FINESS-numbered facility (its PAM-FR OID)")
@click.option("--namespace", help="Its HL7 v2 namespace (CX-4.1, MSH-4.1), e.g. CHFDF")
@click.option("--name", "label", help="The facility as the cell reads it")
@click.option("--owner", help="The member facility (FINESS) owning it (default: --finess)")
def identity_domains_add(
    oid: str | None,
    finess: str | None,
    namespace: str | None,
    label: str | None,
    owner: str | None,
) -> None:
    """Register a domain (OID, or --finess N), or set a registered one's namespace, name or
    owner. The feeders of its owner write it (enrs clients create --finess); a feeder may
    also be bound to it by name (enrs clients create --authority)."""
    from enrs.identity import domains
    from enrs.identity.auth import finess_authority
    from enrs.identity.config import IdentityConfig
    from enrs.kit.db import Database

    if (oid is None) == (finess is None):
        raise click.UsageError("give the domain's OID or --finess, not both")
    settings = _settings()
    config = IdentityConfig.from_settings(settings)
    value = oid if oid is not None else finess_authority(str(finess), config)
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            domain = domains.add(
                session, config, value, namespace=namespace, name=label, owner=owner or finess
            )
            out = {
                "oid": domain.oid,
                "namespace": domain.namespace,
                "name": domain.name,
                "finess": domain.finess,
            }
    finally:
        db.dispose()
    click.echo(json.dumps(out, ensure_ascii=False))


@identity_domains.command("list")
def identity_domains_list() -> None:
    """The registered domains: OID, namespace, name, owner (FINESS)."""
    from enrs.identity import repository
    from enrs.kit.db import Database

    db = Database(_settings().database_url)
    try:
        with db.transaction(write=False) as session:
            for d in repository.domains(session):
                click.echo(f"{d.oid}\t{d.namespace or '-'}\t{d.name or '-'}\t{d.finess or '-'}")
    finally:
        db.dispose()


@identity.command("dedup")
@click.option("--dry-run", is_flag=True, help="Report the candidates, create no task")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON")
@click.option("--memory-limit", help="DuckDB memory limit, e.g. 4GB")
@click.option("--threads", type=int, help="DuckDB threads (default: every core)")
def identity_dedup(
    dry_run: bool, as_json: bool, memory_limit: str | None, threads: int | None
) -> None:
    """Scan the whole registry for duplicates and add them to the cell's queue."""
    from enrs.identity.dedup import dedup_command

    for line in dedup_command(
        _settings(), dry_run=dry_run, as_json=as_json, memory_limit=memory_limit, threads=threads
    ):
        click.echo(line)


@main.group()
def notifications() -> None:
    """Who is told of links, merges and identifier changes (HL7 v2 over MLLP, FHIR rest-hook)."""


@notifications.command("add")
@click.argument("name")
@click.option("--mllp", "mllp", metavar="HOST:PORT", help="Send HL7 v2 ADT to this MLLP listener")
@click.option("--url", metavar="URL", help="POST FHIR message Bundles to this URL (rest-hook)")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="HTTP header")
@click.option("--authority", help="The facility's registered domain (OID): its patients only")
@click.option("--finess", help="The facility's domain by its FINESS number")
@click.option("--domain", "wanted", multiple=True, metavar="OID", help="Identifiers to carry")
@click.option("--application", default="", help="MSH-5, the receiving application")
@click.option("--facility", default="", help="MSH-6, the receiving facility")
def notifications_add(
    name: str,
    mllp: str | None,
    url: str | None,
    headers: tuple[str, ...],
    authority: str | None,
    finess: str | None,
    wanted: tuple[str, ...],
    application: str,
    facility: str,
) -> None:
    """Subscribe a facility (--authority or --finess: told about the patients it holds, with
    its own identifiers and the RRI) or a service (neither: every patient) from now on."""
    from enrs.identity import subscriptions
    from enrs.identity.auth import finess_authority
    from enrs.identity.config import IdentityConfig
    from enrs.kit.db import Database

    if (mllp is None) == (url is None):
        raise click.UsageError("give --mllp HOST:PORT or --url URL")
    if authority and finess:
        raise click.UsageError("give --authority or --finess, not both")
    parsed = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise click.UsageError(f"--header {header!r}: write 'Name: value'")
        parsed[key.strip()] = value.strip()
    settings = _settings()
    config = IdentityConfig.from_settings(settings)
    if finess:
        authority = finess_authority(finess, config)
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            dest = subscriptions.subscribe(
                session,
                config,
                name=name,
                transport="mllp" if mllp else "http",
                endpoint=str(mllp or url),
                authority=authority,
                wanted=wanted,
                application=application,
                facility=facility,
                headers=parsed or None,
            )
    finally:
        db.dispose()
    click.echo(json.dumps({"name": dest.name, "endpoint": dest.endpoint, **dest.selector}))


@notifications.command("list")
def notifications_list() -> None:
    """Each destination and its queue: waiting, sent, refused, the last error."""
    from enrs.kit.db import Database
    from enrs.kit.outbound.queue import statuses

    db = Database(_settings().database_url)
    try:
        with db.transaction(write=False) as session:
            found = statuses(session)
    finally:
        db.dispose()
    for d in found:
        state = "active" if d.active else "stopped"
        line = f"{d.name}\t{d.transport} {d.endpoint}\t{state}\tpending {d.pending}"
        line += f"\tsent {d.sent}\trejected {d.rejected}"
        if d.head_error:
            line += f"\tfailing ({d.head_attempts} attempts): {d.head_error}"
        click.echo(line)


@notifications.command("retry")
@click.argument("name")
def notifications_retry(name: str) -> None:
    """Try a destination's queue again now, without waiting for the back-off."""
    from enrs.kit.db import Database
    from enrs.kit.outbound.queue import retry_now

    db = Database(_settings().database_url)
    try:
        with db.transaction() as session:
            waiting = retry_now(session, name)
    finally:
        db.dispose()
    click.echo(f"{name}: {waiting} message(s) waiting, due now")


@notifications.command("stop")
@click.argument("name")
def notifications_stop(name: str) -> None:
    """Stop notifying a destination (its queue is kept; `start` resumes with new events)."""
    _set_destination(name, False)


@notifications.command("start")
@click.argument("name")
def notifications_start(name: str) -> None:
    """Notify a stopped destination again, from the events committed from now on."""
    _set_destination(name, True)


def _set_destination(name: str, active: bool) -> None:
    from enrs.kit.db import Database
    from enrs.kit.outbound.queue import set_active

    db = Database(_settings().database_url)
    try:
        with db.transaction() as session:
            set_active(session, name, active)
    finally:
        db.dispose()
    click.echo(f"{name}: {'started' if active else 'stopped'}")


@main.group()
def demo() -> None:
    """Demo data."""


@demo.command("load")
def demo_load() -> None:
    """Load the demo accounts (idempotent) and print them."""
    from enrs.demo import load_demo

    for line in load_demo(_settings()):
        click.echo(line)


def _register_services() -> None:
    from enrs.directory.cli import directory
    from enrs.documents.cli import documents
    from enrs.imaging.cli import imaging
    from enrs.messaging.cli import messaging

    main.add_command(directory)
    main.add_command(documents)
    main.add_command(imaging)
    main.add_command(messaging)


_register_services()

if __name__ == "__main__":
    main()
