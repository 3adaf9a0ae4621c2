"""Mailboxes follow the directory: a personal (PER) or cabinet (CAB) mailbox lives while its
professional (RPPS) is active in the directory, an organisational (ORG) or applicative (APP)
one while its structure (FINESS) is. When the directory's import makes the professional or
the structure inactive, the mailbox becomes ``inactive``: no login, no new mail (senders get
``550 5.2.1``), the mail already received kept in the store. When they are active again, so
is the mailbox. A mailbox the admin suspended stays suspended either way.

The mail service applies this at start and then every minute (:mod:`enrs.messaging.servers`),
so a directory import reaches Postfix and Dovecot within a minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.directory.models import Professional, Structure
from enrs.kit.db import utcnow
from enrs.messaging.models import Mailbox


def active_rpps(session: Session, numbers: set[str]) -> set[str]:
    """The RPPS numbers among ``numbers`` of professionals active in the directory."""
    if not numbers:
        return set()
    ids = {f"8{n}" for n in numbers}
    found = session.scalars(
        sa.select(Professional.id_nat_ps).where(
            Professional.id_nat_ps.in_(ids), Professional.active.is_(True)
        )
    )
    return {value[1:] for value in found}


def active_finess(session: Session, numbers: set[str]) -> set[str]:
    """The FINESS numbers among ``numbers`` of structures (an establishment, or the legal
    entity of one) active in the directory."""
    if not numbers:
        return set()
    found = session.execute(
        sa.select(Structure.finess, Structure.finess_ej).where(
            sa.or_(Structure.finess.in_(numbers), Structure.finess_ej.in_(numbers)),
            Structure.active.is_(True),
        )
    )
    return {value for row in found for value in row if value in numbers}


def bound_active(session: Session, box: Mailbox) -> bool:
    """The professional or structure ``box`` is bound to is active in the directory."""
    if box.kind in ("PER", "CAB"):
        return box.rpps is not None and bool(active_rpps(session, {box.rpps}))
    return box.finess is not None and bool(active_finess(session, {box.finess}))


@dataclass(frozen=True)
class Followed:
    made_inactive: list[str]
    made_active: list[str]


def follow_directory(session: Session) -> Followed:
    """Make mailboxes ``inactive`` or ``active`` again as their directory entries are."""
    boxes = list(session.scalars(sa.select(Mailbox).where(Mailbox.status != "suspended")))
    people = active_rpps(session, {b.rpps for b in boxes if b.kind in ("PER", "CAB") and b.rpps})
    places = active_finess(
        session, {b.finess for b in boxes if b.kind in ("ORG", "APP") and b.finess}
    )
    now = utcnow()
    inactive, active = [], []
    for box in boxes:
        alive = box.rpps in people if box.kind in ("PER", "CAB") else box.finess in places
        if box.status == "active" and not alive:
            box.status, box.updated_at = "inactive", now
            inactive.append(box.address)
        elif box.status == "inactive" and alive:
            box.status, box.updated_at = "active", now
            active.append(box.address)
    session.flush()
    return Followed(inactive, active)
