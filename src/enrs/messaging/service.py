"""The operator's rules on mailboxes: creation (type, binding to the directory), passwords,
suspension, delegation, and the questions the mail servers ask through the policy service
(may this login send as that address? does this recipient exist?)."""

from __future__ import annotations

import contextlib
import email.policy
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import parseaddr

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.directory import service as directory_service
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, NotFound, Unprocessable
from enrs.kit.security.passwords import check_password_policy, hash_password
from enrs.messaging.follow import bound_active
from enrs.messaging.models import MAILBOX_TYPES, Delegation, Mailbox, TrustedDomain
from enrs.messaging.trustlist import TrustList, dns_name, normalise_domain

# RFC 5321 local part as MSSanté operators issue it (dot-atom, no quoted strings) and a DNS name.
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


class InvalidMailbox(Unprocessable):
    """A mailbox that breaks a rule of the operator (address, type, binding)."""


def normalise_address(address: str) -> str:
    """``address`` in lower case, checked: a dot-atom local part and a DNS domain."""
    value = address.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not _LOCAL.match(local) or len(local) > 64 or len(value) > 254:
        raise InvalidMailbox(f"{address!r} is not a mail address")
    if not is_domain(domain):
        raise InvalidMailbox(f"{address!r}: {domain!r} is not a domain name")
    return value


def is_domain(name: str) -> bool:
    return dns_name(name) is not None


def domain_of(address: str) -> str:
    return normalise_domain(address.rpartition("@")[2])


def in_trust_space(session: Session, domain: str, own: str) -> bool:
    """``domain`` is the operator's own (``own``) or a domain of the MSSanté trust space."""
    domain = normalise_domain(domain)
    if domain == normalise_domain(own):
        return True
    return session.get(TrustedDomain, domain) is not None


def send_local(
    postfix_dir: str, message: Message, envelope_from: str, *, timeout: float = 60.0
) -> None:
    """Hand ``message`` to the local Postfix (its ``sendmail``, this installation's
    configuration): queued at once, delivered or relayed by Postfix. Raises ``OSError``
    when Postfix did not take it, or did not answer in ``timeout`` seconds (its drop folder
    unusable: ``sendmail`` and its ``postdrop`` are then ended, so that no copy is queued
    afterwards behind the caller's back)."""
    from enrs.messaging.config import program  # the configuration imports this module

    recipients = [parseaddr(str(message["To"] or ""))[1].strip().lower()]
    command = [program("sendmail"), "-C", postfix_dir, "-i", "-f", envelope_from, "--"]
    with subprocess.Popen(
        [*command, *recipients],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: postdrop included
    ) as proc:
        try:
            _out, err = proc.communicate(message.as_bytes(policy=email.policy.SMTP), timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise OSError(f"sendmail did not answer in {timeout:g} s") from None
    if proc.returncode != 0:
        raise OSError(f"sendmail failed: {err.decode(errors='replace').strip()}")


def postfix_running(postfix_dir: str) -> bool:
    """Whether the local Postfix of this configuration runs (``postfix status``): mail
    handed to a stopped one would wait in its drop folder, unseen, until it starts."""
    from enrs.messaging.config import program

    try:
        done = subprocess.run(
            [program("postfix"), "-c", postfix_dir, "status"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass(frozen=True)
class NewMailbox:
    address: str
    kind: str
    rpps: str | None = None
    finess: str | None = None
    description: str = ""
    liste_rouge: bool = False
    password: str | None = None


def add_mailbox(session: Session, new: NewMailbox, *, domain: str) -> Mailbox:
    """Create a mailbox of the operator's ``domain``: a personal (PER) or cabinet (CAB) one is
    bound to a professional of the directory (RPPS), an organisational (ORG) or applicative
    (APP) one to a structure (FINESS)."""
    address = normalise_address(new.address)
    if domain_of(address) != domain.lower():
        raise InvalidMailbox(f"{address}: this operator's mailboxes are under @{domain}")
    kind = new.kind.upper()
    if kind not in MAILBOX_TYPES:
        raise InvalidMailbox(f"type {new.kind!r}: one of {', '.join(MAILBOX_TYPES)}")
    rpps, finess = (new.rpps or None), (new.finess or None)
    if kind in ("PER", "CAB"):
        if rpps is None:
            raise InvalidMailbox(f"a {kind} mailbox is bound to a professional: give --rpps")
        if directory_service.professional_card(session, f"8{rpps}") is None:
            raise InvalidMailbox(f"RPPS {rpps} is not in the directory")
    if kind in ("ORG", "APP") and finess is None:
        raise InvalidMailbox(f"an {kind} mailbox is bound to a structure: give --finess")
    if finess is not None and directory_service.structure_page(session, finess, limit=0) is None:
        raise InvalidMailbox(f"FINESS {finess} is not in the directory")
    if session.scalar(sa.select(Mailbox.id).where(Mailbox.address == address)) is not None:
        raise Conflict(f"the mailbox {address} exists")
    mailbox = Mailbox(
        address=address,
        kind=kind,
        rpps=rpps,
        finess=finess,
        description=new.description[:256],
        liste_rouge=new.liste_rouge,
        password_hash=_hashed(new.password),
        status="active",
    )
    session.add(mailbox)
    session.flush()
    return mailbox


def _hashed(password: str | None) -> str | None:
    if password is None:
        return None
    try:
        check_password_policy(password)
    except ValueError as exc:
        raise InvalidMailbox(str(exc)) from None
    return hash_password(password)


def mailbox(session: Session, address: str) -> Mailbox | None:
    return session.scalar(sa.select(Mailbox).where(Mailbox.address == address.strip().lower()))


def existing(session: Session, address: str) -> Mailbox:
    found = mailbox(session, address)
    if found is None:
        raise NotFound(f"no mailbox {address}")
    return found


def mailboxes(session: Session) -> Sequence[Mailbox]:
    return session.scalars(sa.select(Mailbox).order_by(Mailbox.address)).all()


def set_password(session: Session, address: str, password: str) -> Mailbox:
    box = existing(session, address)
    box.password_hash, box.updated_at = _hashed(password), utcnow()
    return box


def set_status(session: Session, address: str, status: str) -> Mailbox:
    """``suspended``: no new mail, no login; the mail is kept. ``active`` again, unless its
    professional or structure is no longer active in the directory (see :mod:`.follow`)."""
    if status not in ("active", "suspended"):
        raise InvalidMailbox(f"status {status!r}: active or suspended")
    box = existing(session, address)
    if status == "active" and not bound_active(session, box):
        whom = f"RPPS {box.rpps}" if box.kind in ("PER", "CAB") else f"FINESS {box.finess}"
        raise InvalidMailbox(f"{box.address}: {whom} is not active in the directory")
    box.status, box.updated_at = status, utcnow()
    return box


def delegate(session: Session, address: str, to: str, *, may_send: bool) -> Delegation:
    """``to`` (a mailbox of the operator) may read ``address``, and send as it if ``may_send``."""
    box = existing(session, address)
    reader = existing(session, to)
    row = session.scalar(
        sa.select(Delegation).where(
            Delegation.mailbox_id == box.id, Delegation.delegate == reader.address
        )
    )
    if row is None:
        row = Delegation(mailbox_id=box.id, delegate=reader.address)
        session.add(row)
    row.may_send = may_send
    session.flush()
    return row


def delegations_by_mailbox(session: Session) -> dict[int, list[Delegation]]:
    """Every delegation, by the id of the mailbox it opens."""
    found: dict[int, list[Delegation]] = {}
    for row in session.scalars(sa.select(Delegation).order_by(Delegation.delegate)):
        found.setdefault(row.mailbox_id, []).append(row)
    return found


def active_delegations(session: Session) -> list[tuple[str, str]]:
    """``(mailbox, delegate)`` of every delegation whose two mailboxes are active: who may
    open which mailbox with their own token (Dovecot's ``delegations`` map)."""
    delegate_box = sa.orm.aliased(Mailbox)
    rows = session.execute(
        sa.select(Mailbox.address, Delegation.delegate)
        .join(Delegation, Delegation.mailbox_id == Mailbox.id)
        .join(delegate_box, delegate_box.address == Delegation.delegate)
        .where(Mailbox.status == "active", delegate_box.status == "active")
        .order_by(Mailbox.address, Delegation.delegate)
    ).all()
    return [(row[0], row[1]) for row in rows]


def may_send_as(session: Session, login: str, sender: str) -> bool:
    """An authenticated ``login`` sends as ``sender``: its own active mailbox, or one that
    delegates sending to it while both are active."""
    login, sender = login.strip().lower(), sender.strip().lower()
    box = mailbox(session, sender)
    if box is None or box.status != "active":
        return False
    if login == sender:
        return True
    own = mailbox(session, login)
    if own is None or own.status != "active":  # a suspended delegate sends for no one
        return False
    return (
        session.scalar(
            sa.select(Delegation.id).where(
                Delegation.mailbox_id == box.id,
                Delegation.delegate == login,
                Delegation.may_send.is_(True),
            )
        )
        is not None
    )


@dataclass(frozen=True)
class TrustSpaceChange:
    added: int
    removed: int
    kept: int


def replace_trust_space(session: Session, listed: TrustList) -> TrustSpaceChange:
    """The trust space becomes the verified national list: its domains added or updated,
    the domains no longer listed removed (mail to or from them refused from now on)."""
    now = utcnow()
    current = {row.name: row for row in session.scalars(sa.select(TrustedDomain))}
    names = set()
    for domain in listed.domains:
        names.add(domain.name)
        row = current.get(domain.name) or TrustedDomain(name=domain.name)
        row.description = (domain.description or "")[:512]
        row.operator_dn = (domain.operator_dn or "")[:1024]
        row.updated = domain.updated.isoformat() if domain.updated else ""
        row.imported_at = now
        session.add(row)
    gone = set(current) - names
    if gone:
        session.execute(sa.delete(TrustedDomain).where(TrustedDomain.name.in_(gone)))
    session.flush()
    return TrustSpaceChange(len(names - set(current)), len(gone), len(names & set(current)))


@dataclass(frozen=True)
class Visible:
    """A mailbox a professional opens in the webmail, and whether they may send as it."""

    address: str
    kind: str
    description: str
    may_send: bool
    through: str | None  # the professional's own mailbox a delegation is given to


def visible_mailboxes(session: Session, rpps: str | None) -> list[Visible]:
    """The mailboxes the professional with ``rpps`` sees in the webmail: their active PER and
    CAB mailboxes (bound to their RPPS), and the active ORG and APP mailboxes delegated to one
    of those (sending only when the delegation says ``may_send``). No RPPS: none."""
    if not rpps:
        return []
    own = session.scalars(
        sa.select(Mailbox)
        .where(
            Mailbox.rpps == rpps,
            Mailbox.kind.in_(("PER", "CAB")),
            Mailbox.status == "active",
        )
        .order_by(Mailbox.kind.desc(), Mailbox.address)
    ).all()
    seen = [Visible(b.address, b.kind, b.description, True, None) for b in own]
    if not own:
        return seen
    delegated = session.execute(
        sa.select(Mailbox, Delegation)
        .join(Delegation, Delegation.mailbox_id == Mailbox.id)
        .where(
            Delegation.delegate.in_([b.address for b in own]),
            Mailbox.kind.in_(("ORG", "APP")),
            Mailbox.status == "active",
        )
        .order_by(Mailbox.address, Delegation.may_send.desc())
    ).all()
    for box, row in delegated:
        if any(v.address == box.address for v in seen):
            continue
        seen.append(Visible(box.address, box.kind, box.description, row.may_send, row.delegate))
    return seen


def visible_mailbox(session: Session, rpps: str | None, address: str) -> Visible | None:
    """One of :func:`visible_mailboxes`, or None when the professional may not open it."""
    wanted = address.strip().lower()
    return next((v for v in visible_mailboxes(session, rpps) if v.address == wanted), None)
