"""Who the identity server notifies (:mod:`.notify`): a facility or a service subscribes with
its MLLP listener (HL7 v2 ADT) or its FHIR rest-hook URL (PMIR message Bundles).

``enrs notifications add NAME --mllp HOST:PORT --authority OID`` (or ``--url URL``); the admin
reads the queues on the portal's *Notifications* page or ``GET /api/admin/notifications``."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from enrs.identity import domains, xref
from enrs.identity.config import IdentityConfig
from enrs.identity.notify import IdentityRenderer
from enrs.kit.db import Database
from enrs.kit.errors import BadRequest
from enrs.kit.listeners import Listener
from enrs.kit.outbound import queue
from enrs.kit.outbound.dispatcher import Dispatcher, Pace
from enrs.kit.outbound.queue import Destination
from enrs.kit.outbound.routing import ByService
from enrs.settings import Settings

FORMAT_OF = {"mllp": "hl7v2", "http": "fhir"}


def subscribe(
    session: Session,
    config: IdentityConfig,
    *,
    name: str,
    transport: str,
    endpoint: str,
    authority: str | None = None,
    wanted: Sequence[str] = (),
    application: str = "",
    facility: str = "",
    headers: dict[str, str] | None = None,
    owner: str | None = None,
    reason: str = "",
) -> Destination:
    """A new destination for the identity server's notifications. ``authority``: the
    facility's registered domain (it is told about the patients it holds); none: a service,
    told about every patient. ``wanted``: the identifier domains its messages carry (default:
    its own and the RRI; every domain it may see when it has no authority). ``owner``: the
    system client that made it (a FHIR Subscription), the only one that reads or ends it."""
    if transport not in FORMAT_OF:
        raise BadRequest(f"unknown transport {transport!r} (mllp or http)")
    if authority is not None:
        authority = domains.check_oid(authority)
        domains.require(session, {authority})
    carried = [domains.check_oid(d) for d in wanted]
    for oid in carried:
        if not xref.known_domain(session, config, oid):
            raise BadRequest(f"{oid} is not a domain of this server (enrs identity domains add)")
    if not carried and authority is not None:
        carried = [authority, config.rri_authority]
    for label, value in (("application", application), ("facility", facility)):
        if set(value) & set("|^~\\&\r\n"):
            raise BadRequest(f"the receiving {label} has no HL7 delimiter")
    selector = {
        "authority": authority,
        "domains": carried,
        "format": FORMAT_OF[transport],
        "application": application,
        "facility": facility,
    }
    if owner is not None:
        selector |= {"owner": owner, "reason": reason}
    return queue.add_destination(
        session,
        name=name,
        transport=transport,
        endpoint=endpoint,
        selector=selector,
        headers=headers,
    )


def platform_dispatcher(db: Database, settings: Settings, pace: Pace = Pace()) -> Dispatcher:
    """The outbound queue's dispatcher for the whole platform: the identity server's
    destinations and the care circles' subscriptions (each rendered by its service), and the
    portal's notifications of the care circles (:mod:`enrs.coordination.notify`), the reading
    reports sent back to the requesting sites (:mod:`enrs.imaging.reading_oru`), and, when
    the mail servers run with the platform, those notifications by MSSanté mail
    (:mod:`enrs.coordination.notify_mail`)."""
    # here: coordination and messaging import identity, not back
    from enrs.coordination import notify, notify_mail
    from enrs.imaging import reading_oru
    from enrs.messaging import servers as mail_servers

    renderer = ByService(
        {
            "identity": IdentityRenderer(IdentityConfig.from_settings(settings), settings.base_url),
            notify.SERVICE: notify.CoordinationRenderer(settings.fhir_base),
            reading_oru.SERVICE: reading_oru.ReadingRenderer(ZoneInfo(settings.timezone)),
        },
        default="identity",
    )
    mail, _why_not = mail_servers.enabled(settings)
    jobs = [notify_mail.MailJob(settings)] if mail else []
    return Dispatcher(db, renderer, pace, consumers=[notify.Inbox()], jobs=jobs)


def run_notifications(settings: Settings) -> None:
    """The ``notifications`` listener of ``enrs serve``: the outbound queue's dispatcher for the
    identity server's events and the care circles' (their subscriptions, the portal's
    notifications and, with the mail servers, their mails: :mod:`enrs.coordination.notify`),
    until SIGTERM."""
    logging.basicConfig(level=settings.log_level.upper())
    db = Database(settings.database_url)
    db.start_checkpoints()
    dispatcher = platform_dispatcher(db, settings)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop())
    signal.signal(signal.SIGINT, lambda *_: dispatcher.stop())
    try:
        dispatcher.run()
    finally:
        db.dispose()


LISTENER = Listener(
    "notifications",
    lambda s: (
        "notifications (identity: HL7 v2 over MLLP, FHIR rest-hook; care circles: "
        "portal, FHIR rest-hook, MSSanté mail) from the event outbox"
    ),
    run_notifications,
)
