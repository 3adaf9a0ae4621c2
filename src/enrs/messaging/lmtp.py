"""ENRS's LMTP server (RFC 2033, with ``aiosmtpd``): Postfix hands it the mail of the
applicative (APP) mailboxes (its ``transport`` map: :func:`.config.write_transport_map`).

One reply per recipient after DATA, as LMTP wants:

- ``250`` only once the mail's integration is committed (its documents filed, the MDMs
  queued, in one transaction) — or once a mail that can never be integrated (an
  :class:`~enrs.messaging.applicative.IntegrationError`) was answered with the error mail or
  the MDN: Postfix forgets it, the sender has the reason;
- ``451`` when something may work later (the database unreachable, the answer not queued):
  nothing was filed, Postfix keeps the mail and tries again;
- ``550`` for a recipient that is not an active APP mailbox (the policy service keeps them
  out; a map not yet regenerated could let one through).

The facility software being down is no reason to refuse: its MDMs wait in the outbound queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from sqlalchemy.orm import Session

from enrs.kit.db import Database
from enrs.messaging import applicative, service
from enrs.messaging.applicative import IntegrationError, Received
from enrs.messaging.models import Mailbox

log = logging.getLogger(__name__)

# Files a mail's IHE_XDM archive for the mailbox's structure and queues its MDMs, in the
# given transaction; raises IntegrationError for a mail that can never be integrated.
Filer = Callable[[Session, Mailbox, Received, EmailMessage, bytes], None]


@dataclass(frozen=True)
class Intake:
    db: Database
    postfix_dir: str
    filer: Filer

    def __call__(self, received: Received) -> str:
        """Integrate one mail for one recipient; the LMTP reply (see the module)."""
        original = applicative.open_message(received.raw)
        error: IntegrationError | None = None
        try:
            with self.db.transaction() as session:
                box = service.mailbox(session, received.recipient)
                if box is None or box.kind != "APP" or box.status != "active":
                    return f"550 5.1.1 <{received.recipient}>: not an applicative mailbox here"
                self.filer(session, box, received, original, applicative.xdm_archive(original))
        except IntegrationError as exc:
            error = exc
            log.info("mail %s for %s: %s", original.get("Message-ID"), received.recipient, exc)
        reply = applicative.answer(
            original, mailbox=received.recipient, return_path=received.mail_from, error=error
        )
        if reply is not None:
            try:
                service.send_local(self.postfix_dir, *reply)
            except OSError:
                if error is not None:  # nothing filed: the sender must learn why, later
                    raise
                log.exception("the MDN for %s was not sent", original.get("Message-ID"))
        return f"250 2.0.0 <{received.recipient}> " + (
            f"refused ({error.code})" if error else "integrated"
        )


class LmtpHandler:
    """The ``aiosmtpd`` handler: every accepted recipient gets its own reply after DATA."""

    def __init__(self, intake: Callable[[Received], str]) -> None:
        self.intake = intake

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
        replies = []
        for recipient in envelope.rcpt_tos:
            received = Received(envelope.mail_from or "", recipient.lower(), data)
            try:
                replies.append(await asyncio.to_thread(self.intake, received))
            except Exception:
                log.exception("LMTP: the mail for %s is deferred", recipient)
                replies.append(f"451 4.3.0 <{recipient}>: cannot integrate now, try again later")
        return "\r\n".join(replies)


async def serve(
    socket_path: Path,
    intake: Callable[[Received], str],
    stop: asyncio.Event,
    owner: tuple[int, int] | None = None,
) -> None:
    """The LMTP server on a unix socket (owned by Postfix's user) until ``stop``."""
    loop = asyncio.get_running_loop()
    handler = LmtpHandler(intake)
    # The socket is bound and listening under a temporary name, then renamed: a
    # client never finds the path before the server accepts on it.
    pending = socket_path.with_name(f".{socket_path.name}.{os.getpid()}")
    pending.unlink(missing_ok=True)
    server = await loop.create_unix_server(
        lambda: LMTP(handler, hostname="enrs-lmtp", ident="ENRS LMTP"), path=str(pending)
    )
    if owner is not None:
        os.chown(pending, *owner)
    os.chmod(pending, 0o600)
    os.replace(pending, socket_path)
    async with server:
        await stop.wait()
    socket_path.unlink(missing_ok=True)
