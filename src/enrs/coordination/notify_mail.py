"""The care circles' notifications by MSSanté mail (issue 15): a professional who chose it on
the portal's ``/notifications`` page also receives their notifications (:mod:`.notify`) as
secure mail, through the platform's own MSSanté operator (:mod:`enrs.messaging`).

**The choice** (``coordination_notification_mail``, one row per RPPS; none: no mail, the
default): an address that is the professional's own — an active personal (PER) or practice
(CAB) mailbox of this operator bound to their RPPS, or a personal mailbox the national
directory lists for their RPPS — and in the MSSanté trust space (the operator's domain or a
domain of the national trust list); anything else is refused (:class:`MailRefused`, in
French for the portal). Only the notifications written after the choice are mailed.

**The mail job** (:class:`MailJob`, run by the ``notifications`` listener's dispatcher after
each round, when the mail servers run with the platform): every :data:`MAIL_EVERY` seconds,
for each professional who chose mail, their notifications not yet mailed — those of a circle
they are still a current member of — go in one mail (at most :data:`MAX_PER_MAIL`; the rest
at the next pass), handed to the local Postfix (its ``sendmail``). Only once Postfix took it
are they marked mailed (``mailed_at``), in one transaction with the mail's audit entries. A
Postfix that is stopped (``postfix status``) or refuses the hand-off leaves them unmailed:
they go in the next pass. An address no longer the professional's (a mailbox suspended, a
domain gone from the trust space) gets nothing; their notifications wait (:func:`checked_address`
again at each pass). Delivery is **at least once**: a crash between the hand-off and that
commit mails them again at the next pass.

**The mail**: from :func:`sender_address`, ``X-MSS-NIL`` and a ``Message-ID`` of the sender's
domain (:func:`enrs.messaging.mss.compose`) and ``Auto-Submitted: auto-generated`` (RFC 3834:
no auto-reply to it), subject and body in French: each notification's label, the patient's
birth name, first given name and birth date (a secure space: allowed, kept to that), when, and
the link to the coordination file on the portal. Nothing of the task, document or message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Exists

from enrs.accounts import service as accounts_service
from enrs.coordination import circle
from enrs.coordination.auth import SOCIAL_NOTIFICATIONS, kinds_for_roles
from enrs.coordination.models import CareTeam, Member
from enrs.coordination.notify import LABELS
from enrs.coordination.notify_models import Notification, NotificationMail
from enrs.directory import service as directory_service
from enrs.identity import service as identity_service
from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, utcnow
from enrs.kit.errors import Unprocessable
from enrs.messaging import mss
from enrs.messaging import service as messaging_service
from enrs.settings import Settings

log = logging.getLogger(__name__)

MAIL_EVERY = 15.0  # seconds between two passes
MAX_PER_MAIL = 50  # notifications in one mail; the others wait for the next pass
MAX_PER_PASS = 2000  # notifications read by one pass
HOLD_MOST = 3600.0  # seconds, the longest wait after refusals of a professional's mail
AGENT = "coordination-notifications-mail"


class MailRefused(Unprocessable):
    """An address a professional may not receive their notifications at (French message)."""


def sender_address(settings: Settings) -> str:
    """The platform's sender: ``ENRS_NOTIFICATIONS_MAIL_FROM``, else
    ``ne-pas-repondre@<the operator's domain>``."""
    return settings.notifications_mail_from or f"ne-pas-repondre@{settings.mail_domain.lower()}"


# -- the professional's choice --------------------------------------------------------------


def own_addresses(session: Session, rpps: str) -> list[str]:
    """The MSSanté addresses that are the professional's own: their active PER and CAB
    mailboxes of this operator, then the personal mailboxes the national directory lists for
    their RPPS."""
    mine = [
        v.address
        for v in messaging_service.visible_mailboxes(session, rpps)
        if v.through is None and v.kind in ("PER", "CAB")
    ]
    card = directory_service.professional_card(session, f"8{rpps}")
    listed = [b.address.lower() for b in card.mailboxes if b.kind == "PER"] if card else []
    return list(dict.fromkeys(mine + listed))


def checked_address(session: Session, rpps: str, address: str, own_domain: str) -> str:
    """``address`` normalised, if the professional may receive notifications there; else
    :class:`MailRefused` saying why."""
    try:
        value = messaging_service.normalise_address(address)
    except messaging_service.InvalidMailbox:
        shown = address.strip()[:256]
        raise MailRefused(f"« {shown} » n'est pas une adresse de messagerie") from None
    domain = messaging_service.domain_of(value)
    if not messaging_service.in_trust_space(session, domain, own_domain):
        raise MailRefused(
            f"{value} n'est pas une adresse de l'espace de confiance MSSanté : les notifications"
            " ne sont envoyées qu'à une messagerie sécurisée de santé"
        )
    if value not in own_addresses(session, rpps):
        raise MailRefused(f"{value} n'est pas l'une de vos boîtes aux lettres MSSanté")
    return value


def mail_choice(session: Session, rpps: str) -> NotificationMail | None:
    return session.get(NotificationMail, rpps)


def choose_mail(session: Session, rpps: str, address: str, own_domain: str) -> NotificationMail:
    """The professional receives their notifications at ``address`` from now on (checked:
    :func:`checked_address`); changing the address keeps what is still to be mailed."""
    value = checked_address(session, rpps, address, own_domain)
    row = session.get(NotificationMail, rpps)
    if row is None:
        row = NotificationMail(rpps=rpps, address=value, since=utcnow())
        session.add(row)
    row.address = value
    session.flush()
    return row


def stop_mail(session: Session, rpps: str) -> bool:
    """No more mail for the professional; whether they had chosen it."""
    done = session.execute(delete(NotificationMail).where(NotificationMail.rpps == rpps))
    return bool(done.rowcount)  # type: ignore[attr-defined]


# -- the mail job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A notification to mail, with what the mail says of it."""

    id: int
    kind: str
    patient_rri: str
    team: str | None
    created_at: datetime


@dataclass(frozen=True)
class Batch:
    """One professional's mail of a pass."""

    rpps: str
    address: str
    items: tuple[Item, ...]


def _still_member() -> Exists:
    """The notification's professional is a current member of its circle, still active."""
    return exists(
        select(Member.id)
        .join(CareTeam, CareTeam.id == Member.team_id)
        .where(
            CareTeam.resource_id == Notification.team,
            CareTeam.status == circle.ACTIVE,
            Member.rpps == Notification.rpps,
            circle.current_clause(utcnow()),
        )
    )


def pending(session: Session) -> list[Batch]:
    """What a pass mails: per professional who chose mail, their notifications written since
    and not mailed yet, of circles they are still in, of the kinds they are shown
    (:func:`enrs.coordination.auth.kinds_for_roles`: a social worker's tasks and mentions
    only), oldest first (:data:`MAX_PER_MAIL`)."""
    chosen = session.scalars(select(NotificationMail.rpps)).all()
    everything = [
        rpps
        for rpps in chosen
        if kinds_for_roles(accounts_service.roles_of_professional(session, rpps)) is None
    ]
    stmt = (
        select(NotificationMail.rpps, NotificationMail.address, Notification)
        .join(Notification, Notification.rpps == NotificationMail.rpps)
        .where(
            Notification.mailed_at.is_(None),
            Notification.created_at >= NotificationMail.since,
            or_(
                NotificationMail.rpps.in_(everything),
                Notification.kind.in_(sorted(SOCIAL_NOTIFICATIONS)),
            ),
            _still_member(),
        )
        .order_by(Notification.id)
        .limit(MAX_PER_PASS)
    )
    found: dict[str, tuple[str, list[Item]]] = {}
    for rpps, address, n in session.execute(stmt):
        _, items = found.setdefault(rpps, (address, []))
        if len(items) < MAX_PER_MAIL:
            items.append(Item(n.id, n.kind, n.patient_rri, n.team, n.created_at))
    return [Batch(rpps, address, tuple(items)) for rpps, (address, items) in found.items()]


def _patient_line(session: Session, rri: str) -> str:
    patient = identity_service.patient_by_rri(session, rri)
    name = identity_service.patient_name(session, patient.id) if patient else None
    if name is None:
        return f"patient {rri}"
    born = f", né(e) le {name.birth_date:%d/%m/%Y}" if name.birth_date else ""
    return f"{name.family.upper()} {name.given}{born}".strip()


def compose_mail(session: Session, batch: Batch, settings: Settings) -> Message:
    """The French mail of ``batch`` (see the module)."""
    zone = ZoneInfo(settings.timezone)
    labels = list(dict.fromkeys(LABELS.get(i.kind, i.kind) for i in batch.items))
    if len(batch.items) == 1:
        subject = f"[ENRS] {labels[0]} : {_patient_line(session, batch.items[0].patient_rri)}"
    else:
        subject = f"[ENRS] {len(batch.items)} nouvelles notifications de coordination"
    lines = [
        "Bonjour,",
        "",
        "Nouvelles notifications de vos cercles de soins :"
        if len(batch.items) > 1
        else "Nouvelle notification de vos cercles de soins :",
        "",
    ]
    patients: dict[str, str] = {}
    for item in batch.items:
        who = patients.get(item.patient_rri) or _patient_line(session, item.patient_rri)
        patients[item.patient_rri] = who
        when = item.created_at.astimezone(zone).strftime("%d/%m/%Y %H:%M")
        lines.append(f"- {LABELS.get(item.kind, item.kind)} ({when})")
        lines.append(f"  Patient : {who}")
        if item.team:
            link = f"{settings.base_url}/coordination/{item.team}"
            lines.append(f"  Dossier de coordination : {link}")
        lines.append("")
    lines += [
        f"Toutes vos notifications : {settings.base_url}/notifications",
        "",
        "Ce message est envoyé automatiquement par l'espace régional de santé ; n'y répondez pas.",
        "Pour ne plus recevoir vos notifications par messagerie sécurisée, rendez-vous sur la"
        " page des notifications.",
    ]
    mail = mss.compose(
        sender=sender_address(settings),
        to=[batch.address],
        subject_line=subject[:200],
        body="\n".join(lines) + "\n",
    )
    mail["Auto-Submitted"] = "auto-generated"
    return mail


@dataclass(frozen=True)
class Postfix:
    """The hand-off to the operator's Postfix of this installation."""

    postfix_dir: str
    timeout: float = 30.0  # seconds for ``sendmail`` to take a mail

    def ready(self) -> bool:
        return messaging_service.postfix_running(self.postfix_dir)

    def send(self, message: Message, envelope_from: str) -> None:
        messaging_service.send_local(self.postfix_dir, message, envelope_from, timeout=self.timeout)

    @classmethod
    def of(cls, settings: Settings) -> Postfix:
        return cls(str((settings.mail_path / "postfix").resolve()))


@dataclass(frozen=True)
class PassResult:
    mailed: int  # mails Postfix took
    notifications: int  # notifications marked mailed
    failed: int  # mails Postfix did not take (their notifications left for the next pass)
    postfix_down: bool = False
    refused: tuple[str, ...] = ()  # the RPPS whose mail Postfix refused
    sent: tuple[str, ...] = ()  # the RPPS whose mail Postfix took


def _audit(batch: Batch, message: Message, refused: str | None) -> list[AuditEntry]:
    return [
        AuditEntry(
            category="notification",
            interaction="mss-mail",
            action="E",
            outcome=Outcome.SUCCESS if refused is None else Outcome.SERIOUS_FAILURE,
            outcome_desc=refused[:1000] if refused else None,
            agent_kind="system",
            agent_id=AGENT,
            agent_name=f"MSSanté {message['From']}"[:256],
            patient_ref=f"Patient/{item.patient_rri}",
            resource_type="Patient",
            entity_ref=f"Notification/{item.id}",
            request_id=str(message["Message-ID"] or "")[:64] or None,
            detail=f"{item.kind} rpps {batch.rpps} to {batch.address}"[:1000],
        )
        for item in batch.items
    ]


def mail_pass(
    db: Database,
    settings: Settings,
    postfix: Postfix | None = None,
    held: Container[str] = (),
) -> PassResult:
    """One pass of the mail job (see the module): at least once, never before Postfix took
    the mail; a mail Postfix refused is audited as such and its notifications wait. ``held``:
    the RPPS not to mail this time (their last mail was refused: :class:`MailJob`)."""
    postfix = postfix or Postfix.of(settings)
    mails = []
    with db.transaction(write=False) as session:
        for batch in pending(session):
            if batch.rpps in held:
                continue
            try:  # the mailbox suspended, the domain out of the trust space since: no mail
                checked_address(session, batch.rpps, batch.address, settings.mail_domain)
            except MailRefused as exc:
                log.warning("notifications by mail for RPPS %s: %s", batch.rpps, exc.message)
                continue
            mails.append((batch, compose_mail(session, batch, settings)))
    if not mails:
        return PassResult(0, 0, 0)
    if not postfix.ready():
        log.warning("notifications by mail: Postfix is not running; %d mail(s) wait", len(mails))
        return PassResult(0, 0, len(mails), postfix_down=True)
    envelope = sender_address(settings)
    marked = 0
    refused: list[str] = []
    sent: list[str] = []
    for batch, message in mails:
        try:
            postfix.send(message, envelope)
        except OSError as exc:
            refused.append(batch.rpps)
            log.warning("notifications by mail to %s: %s; retried later", batch.address, exc)
            with db.transaction() as session:
                append_entries(session.connection(), _audit(batch, message, str(exc)))
            continue
        sent.append(batch.rpps)
        with db.transaction() as session:
            ids = [item.id for item in batch.items]
            done = session.execute(
                update(Notification)
                .where(and_(Notification.id.in_(ids), Notification.mailed_at.is_(None)))
                .values(mailed_at=utcnow())
            )
            marked += int(done.rowcount or 0)  # type: ignore[attr-defined]
            append_entries(session.connection(), _audit(batch, message, None))
    return PassResult(len(sent), marked, len(refused), refused=tuple(refused), sent=tuple(sent))


class MailJob:
    """The dispatcher's job that runs :func:`mail_pass` every :data:`MAIL_EVERY` seconds; a
    professional whose mail Postfix refused waits longer before the next try (doubling, up to
    :data:`HOLD_MOST` seconds), so a refusal that lasts does not write an audit entry every
    pass."""

    def __init__(
        self,
        settings: Settings,
        every: float = MAIL_EVERY,
        clock: Callable[[], float] = time.monotonic,
        postfix: Postfix | None = None,
    ) -> None:
        self.settings, self.every, self.clock = settings, every, clock
        self.postfix = postfix or Postfix.of(settings)
        self.next_at = 0.0
        self.holds: dict[str, tuple[float, float]] = {}  # RPPS -> (until, last delay)

    def __call__(self, db: Database) -> None:
        now = self.clock()
        if now < self.next_at:
            return
        self.next_at = now + self.every
        held = {rpps for rpps, (until, _delay) in self.holds.items() if until > now}
        done = mail_pass(db, self.settings, self.postfix, held=held)
        for rpps in done.sent:
            self.holds.pop(rpps, None)
        for rpps in done.refused:
            delay = min(self.holds.get(rpps, (0.0, self.every / 2))[1] * 2, HOLD_MOST)
            self.holds[rpps] = (now + delay, delay)
