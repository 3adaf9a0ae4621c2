"""All SQL of the accounts service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from enrs.accounts.models import (
    Client,
    ClientAuthority,
    MllpSender,
    MllpSenderAuthority,
    OidcLoginState,
    User,
    WebSession,
)


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def user_by_id(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def user_by_rpps(session: Session, rpps: str) -> User | None:
    return session.scalar(select(User).where(User.rpps == rpps))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def client_by_client_id(session: Session, client_id: str) -> Client | None:
    return session.scalar(select(Client).where(Client.client_id == client_id))


def list_clients(session: Session, finess: str | None = None) -> list[Client]:
    stmt = select(Client).order_by(Client.name, Client.client_id)
    if finess is not None:
        stmt = stmt.where(Client.finess == finess)
    return list(session.scalars(stmt))


def client_authorities(session: Session, client_pk: str) -> list[str]:
    rows = select(ClientAuthority.authority).where(ClientAuthority.client_id == client_pk)
    return list(session.scalars(rows.order_by(ClientAuthority.authority)))


def add_client_authorities(session: Session, client_pk: str, authorities: set[str]) -> None:
    for authority in sorted(authorities - set(client_authorities(session, client_pk))):
        session.add(ClientAuthority(client_id=client_pk, authority=authority))


def mllp_sender_by_oid(session: Session, sender_oid: str) -> MllpSender | None:
    return session.scalar(select(MllpSender).where(MllpSender.sender_oid == sender_oid))


def sender_authorities(session: Session, sender_pk: str) -> list[str]:
    rows = select(MllpSenderAuthority.authority).where(MllpSenderAuthority.sender_id == sender_pk)
    return list(session.scalars(rows.order_by(MllpSenderAuthority.authority)))


def add_sender_authorities(session: Session, sender_pk: str, authorities: set[str]) -> None:
    for authority in sorted(authorities - set(sender_authorities(session, sender_pk))):
        session.add(MllpSenderAuthority(sender_id=sender_pk, authority=authority))


def list_mllp_senders(session: Session, finess: str | None = None) -> list[MllpSender]:
    stmt = select(MllpSender).order_by(MllpSender.name, MllpSender.sender_oid)
    if finess is not None:
        stmt = stmt.where(MllpSender.finess == finess)
    return list(session.scalars(stmt))


def live_session(
    session: Session, session_id: str, now: datetime
) -> tuple[WebSession, User] | None:
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(
            WebSession.id == session_id,
            WebSession.revoked_at.is_(None),
            WebSession.expires_at > now,
            User.active.is_(True),
        )
    ).first()
    return None if row is None else (row[0], row[1])


def web_session(session: Session, session_id: str) -> WebSession | None:
    return session.get(WebSession, session_id)


def pop_oidc_state(session: Session, state: str) -> OidcLoginState | None:
    row = session.get(OidcLoginState, state)
    if row is not None:
        session.delete(row)
        session.flush()
    return row


def purge_oidc_states(session: Session, before: datetime) -> None:
    session.execute(delete(OidcLoginState).where(OidcLoginState.created_at < before))
