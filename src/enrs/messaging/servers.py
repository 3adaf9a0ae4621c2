"""The ``mail`` listener of ``enrs serve`` (and ``enrs messaging serve``): writes the
configuration and the maps, serves the policy service, and runs Postfix (``postfix start-fg``)
and Dovecot (``dovecot -F``) as its children; when one of them stops, the listener stops (and
with it the platform, like every listener); on SIGTERM it stops both servers cleanly (the
queue stays on disk: what was accepted is delivered at the next start).

While they run, the listener keeps them in step with the database: every
:data:`FOLLOW_EVERY` seconds mailboxes follow the directory (:mod:`.follow`), and every
:data:`MAPS_EVERY` seconds, when a mailbox changed (created, suspended, a new password…), the
maps are written again (Postfix and Dovecot notice a changed map file by themselves); every
:data:`PUBLISH_EVERY` seconds what changed is published to the national directory, when
``ENRS_MSS_DIRECTORY_URL`` is set (:mod:`.publication`); and every
``ENRS_MAIL_TRUST_LIST_EVERY`` seconds (the first time at start), when
``ENRS_MAIL_TRUST_LIST_URL`` is set, the national trust list is fetched again
(:mod:`.trustlist_refresh`: a list refused or unreachable keeps the trust space in force)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import subprocess
import threading

import sqlalchemy as sa

from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import matcher_for
from enrs.kit.db import Database
from enrs.kit.listeners import Listener
from enrs.kit.storage import open_storage
from enrs.messaging import (
    applicative,
    config,
    follow,
    lmtp,
    policy,
    publication,
    trustlist_refresh,
)
from enrs.messaging.models import Delegation, Mailbox
from enrs.settings import Settings

log = logging.getLogger(__name__)

FOLLOW_EVERY = 60.0
MAPS_EVERY = 2.0
PUBLISH_EVERY = 30.0


def _mailboxes_stamp(db: Database) -> tuple[int, str, int, str]:
    """What the maps are made of: the mailboxes and the delegations (a token login to a
    delegated mailbox is in Dovecot's ``delegations`` map)."""
    with db.transaction(write=False) as session:
        count, last = session.execute(
            sa.select(sa.func.count(Mailbox.id), sa.func.max(Mailbox.updated_at))
        ).one()
        delegations, newest = session.execute(
            sa.select(sa.func.count(Delegation.id), sa.func.max(Delegation.created_at))
        ).one()
    return int(count), str(last), int(delegations), str(newest)


def _follow(db: Database) -> None:
    with db.transaction() as session:
        changed = follow.follow_directory(session)
    for address in changed.made_inactive:
        log.info("mail: %s inactive (no longer active in the directory)", address)
    for address in changed.made_active:
        log.info("mail: %s active again (active in the directory)", address)


class _Keeper:
    """The maps kept in step with the mailboxes (see the module)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.stamp = _mailboxes_stamp(db)
        self.next_follow = 0.0
        self.next_maps = 0.0
        self.next_publication = 0.0
        self.next_trust_list = 0.0

    def tick(self, now: float) -> None:
        if now >= self.next_follow:
            self.next_follow = now + FOLLOW_EVERY
            _follow(self.db)
        if now >= self.next_maps:
            self.next_maps = now + MAPS_EVERY
            stamp = _mailboxes_stamp(self.db)
            if stamp != self.stamp:
                with self.db.transaction(write=False) as session:
                    config.write_maps(self.settings, session)
                self.stamp = stamp
                log.info("mail: maps written again (%d mailboxes)", stamp[0])
        if self.settings.mss_directory_url and now >= self.next_publication:
            self.next_publication = now + PUBLISH_EVERY
            publication.publish(self.settings, self.db)
        if self.settings.mail_trust_list_url and now >= self.next_trust_list:
            self.next_trust_list = now + self.settings.mail_trust_list_every
            self._refresh_trust_list()

    def _refresh_trust_list(self) -> None:
        """A failure is recorded and logged by the refresh; anything else (the database
        away) is logged here, and tried again at the next turn, the listener serving on."""
        try:
            trustlist_refresh.refresh_trust_list(self.db, self.settings)
        except Exception:
            log.exception("mail: the trust list could not be refreshed; retried later")


def enabled(settings: Settings) -> tuple[bool, str]:
    """Whether ``enrs serve`` starts the mail servers, and why not."""
    if settings.mail_servers == "off":
        return False, "ENRS_MAIL_SERVERS=off"
    missing = config.missing_programs()
    if missing:
        return False, f"not installed: {', '.join(missing)}"
    if os.geteuid() != 0:
        return False, "Postfix and Dovecot need root to start"
    try:
        config.check_dovecot_version(config.dovecot_version())
    except config.MailSetupError as exc:
        return False, str(exc)
    return True, ""


def describe(settings: Settings) -> str:
    return (
        f"Postfix and Dovecot for @{settings.mail_domain}: submission {settings.mail_host}:"
        f"{settings.smtp_port}, IMAP {settings.imap_port}"
        + (f", inter-operator SMTP {settings.mx_port}" if settings.mx_port else "")
    )


def _postfix_stop(layout: config.Layout) -> None:
    subprocess.run(
        [config.program("postfix"), "-c", str(layout.postfix), "stop"],
        capture_output=True,
        check=False,
    )


async def _supervise(settings: Settings, db: Database, layout: config.Layout) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    postfix_user = pwd.getpwnam("postfix")
    server = policy.PolicyServer(
        layout.policy_socket, policy.database_decider(db, settings.mail_domain)
    )
    serving = asyncio.create_task(server.run(stop, (postfix_user.pw_uid, postfix_user.pw_gid)))
    while not layout.policy_socket.exists():
        if serving.done():
            serving.result()  # raises what stopped it
        await asyncio.sleep(0.05)
    integrating, couriers = _applicative(
        settings, db, layout, stop, (postfix_user.pw_uid, postfix_user.pw_gid)
    )
    children = {
        "dovecot": subprocess.Popen(
            [config.program("dovecot"), "-F", "-c", str(layout.dovecot_conf)]
        ),
        "postfix": subprocess.Popen(
            [config.program("postfix"), "-c", str(layout.postfix), "start-fg"]
        ),
    }
    code = 0
    keeper = _Keeper(settings, db)
    try:
        while not stop.is_set():
            dead = [name for name, child in children.items() if child.poll() is not None]
            if integrating.done():
                dead.append("the LMTP server of the applicative mailboxes")
            if dead:
                log.error("mail: %s stopped (see %s)", ", ".join(dead), layout.log)
                code = 1
                break
            try:
                await asyncio.to_thread(keeper.tick, loop.time())
            except Exception:  # the database away for a while: the servers keep serving
                log.exception("mail: cannot bring the maps up to date; retried")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        _postfix_stop(layout)
        children["dovecot"].terminate()
        for child in children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        stop.set()
        await serving
        await integrating
        couriers.join(timeout=30)
    return code


def _applicative(
    settings: Settings,
    db: Database,
    layout: config.Layout,
    stop: asyncio.Event,
    owner: tuple[int, int],
) -> tuple[asyncio.Task[None], threading.Thread]:
    """The applicative mailboxes: the LMTP server Postfix hands their mail to, and the
    thread that delivers their software's MDMs (both stop with ``stop``)."""
    filer = applicative.XdmFiler(
        IdentityConfig.from_settings(settings),
        open_storage(settings),
        matcher=matcher_for(settings.identity_model),
    )
    intake = lmtp.Intake(db, str(layout.postfix), filer)
    integrating = asyncio.create_task(lmtp.serve(layout.lmtp_socket, intake, stop, owner))
    halt = threading.Event()
    asyncio.get_running_loop().create_task(_relay(stop, halt))
    couriers = threading.Thread(
        target=applicative.deliver_software_queues, args=(db, halt), name="mss-app-mdm"
    )
    couriers.start()
    return integrating, couriers


async def _relay(stop: asyncio.Event, halt: threading.Event) -> None:
    await stop.wait()
    halt.set()


def serve(settings: Settings) -> int:
    """Configure, then run the mail servers until SIGTERM; the exit code."""
    db = Database(settings.database_url)
    try:
        layout = config.configure(settings, db)
        with db.transaction(write=False) as session:
            config.write_maps(settings, session)
        _postfix_stop(layout)  # a master left by a killed run holds the queue's lock
        return asyncio.run(_supervise(settings, db, layout))
    finally:
        db.dispose()


def run(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper())
    raise SystemExit(serve(settings))


LISTENER = Listener("mail", describe, run)
