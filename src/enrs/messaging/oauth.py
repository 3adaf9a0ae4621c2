"""Mailbox logins with an ENRS access token (OAuth 2, SASL ``XOAUTH2`` / ``OAUTHBEARER``):
the same identity as the portal — a Pro Santé Connect login ends in an ENRS identity too.

Dovecot's ``oauth2`` passdb sends the token the mail client presents to the ENRS token
introspection endpoint (RFC 7662, ``POST /oauth/introspect``, ``introspection_mode = post``),
authenticated as a system client of its own (``mail_introspection_client``: created when the
mail configuration is written, its secret in a file only root and Dovecot read). The answer
is ``active`` for a valid token of a person and, when the token holds the ``mail`` scope and
the person's RPPS has an active personal mailbox (PER, else CAB), ``username`` = that
mailbox: Dovecot logs the client in only when it is the mailbox the client named. So a
token opens its owner's own mailbox, never another's. Dovecot 2.3 compares one attribute and
does not expand variables in the introspection URL, so a mailbox delegated to the person (an
ORG mailbox) is not opened with a token: it is read with its own password, or in the
portal's webmail. Postfix's submission authenticates through Dovecot, so SMTP ``AUTH
XOAUTH2`` works the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.accounts import repository as accounts_repository
from enrs.accounts import service as accounts_service
from enrs.kit.security.scopes import ScopeSet
from enrs.messaging.models import Mailbox
from enrs.settings import Settings

MAIL_SCOPE = "mail"  # the scope a mail client asks for (with openid)
INTROSPECT_SCOPE = "introspect"
CLIENT_NAME = "Dovecot (MSSanté) — introspection des jetons"


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str


def introspection_url(settings: Settings) -> str:
    """Where Dovecot introspects tokens: ``ENRS_MAIL_INTROSPECTION_URL``, else this
    platform's HTTP listener on the loopback."""
    if settings.mail_introspection_url:
        return settings.mail_introspection_url
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - listening everywhere: ask the loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}/oauth/introspect"


def ensure_client(session: Session, saved: Path) -> Credentials:
    """The introspection client whose credentials ``saved`` keeps (root only); made, or made
    again, when that file is missing or names a client that is gone or inactive."""
    if saved.exists():
        known = json.loads(saved.read_text())
        client = accounts_repository.client_by_client_id(session, known.get("client_id", ""))
        if client is not None and client.active:
            return Credentials(known["client_id"], known["client_secret"])
    client, secret = accounts_service.create_client(
        session, name=CLIENT_NAME, scope=INTROSPECT_SCOPE
    )
    assert secret is not None
    saved.parent.mkdir(parents=True, exist_ok=True)
    aside = saved.with_name(f".{saved.name}.new")
    aside.write_text(json.dumps({"client_id": client.client_id, "client_secret": secret}))
    os.chmod(aside, 0o600)
    os.replace(aside, saved)
    return Credentials(client.client_id, secret)


def may_introspect(session: Session, client_id: str, client_secret: str) -> bool:
    """The client is active, confidential and holds the ``introspect`` scope."""
    client = accounts_service.authenticate_client(session, client_id, client_secret)
    return client is not None and INTROSPECT_SCOPE in ScopeSet.parse(client.scope).other


def personal_mailbox(session: Session, rpps: str) -> Mailbox | None:
    """The active personal (PER, else CAB) mailbox of the professional ``rpps``."""
    boxes = session.scalars(
        sa.select(Mailbox)
        .where(Mailbox.rpps == rpps, Mailbox.status == "active", Mailbox.kind.in_(("PER", "CAB")))
        .order_by(Mailbox.kind.desc(), Mailbox.id)  # PER before CAB
    ).all()
    return boxes[0] if boxes else None


def introspection(session: Session, claims: dict[str, Any]) -> dict[str, Any]:
    """RFC 7662's answer for a verified token's ``claims`` (see the module)."""
    answer: dict[str, Any] = {
        "active": True,
        "sub": claims["sub"],
        "scope": claims.get("scope", ""),
        "client_id": claims.get("client_id"),
        "exp": claims["exp"],
        "iat": claims.get("iat"),
        "iss": claims.get("iss"),
        "token_type": "Bearer",
    }
    if claims.get("enrs_kind") != "user":
        client = accounts_repository.client_by_client_id(session, str(claims.get("client_id")))
        return answer if client is not None and client.active else {"active": False}
    user = accounts_repository.user_by_id(session, str(claims["sub"]))
    if user is None or not user.active:
        return {"active": False}
    if MAIL_SCOPE in ScopeSet.parse(str(claims.get("scope", ""))).other and user.rpps:
        box = personal_mailbox(session, user.rpps)
        if box is not None:
            answer["username"] = box.address
    return answer
