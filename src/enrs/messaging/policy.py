"""The operator's rules at the SMTP door: a Postfix *SMTP access policy delegation* server
(Postfix's SMTPD_POLICY_README: a request is ``name=value`` lines ended by an empty line, the
answer one ``action=…`` line and an empty line; a connection carries many requests).

Postfix asks at each ``RCPT TO`` (``check_policy_service`` in ``smtpd_recipient_restrictions``);
:func:`decide` answers from the database:

- a logged-in client (submission) sends only as its own active mailbox or as one that
  delegates sending to it (``553 5.7.1``), to a mailbox of the operator or to a domain of
  the MSSanté trust space (``550 5.7.1`` "not in the trust space");
- a client that is not logged in (another operator, port ``ENRS_MX_PORT``) sends from a
  domain of the trust space (``550 5.7.1``), never from the operator's own domain (a forged
  sender: ``553 5.7.1``), with the certificate of the operator the trust list names for that
  domain (``550 5.7.1``, :func:`operator_refusal`);
- a recipient of the operator's domain is an active mailbox (``550 5.1.1`` unknown,
  ``550 5.2.1`` suspended);
- a patient (``…@patient.mssante.fr``, Mon espace santé) writes only to a mailbox that wrote
  to them first (``550 5.7.1``): only professionals write first to a patient. The addresses
  each mailbox wrote to are remembered at the end of each message, with the counts.

At the end of each message (``smtpd_end_of_data_restrictions``) the service counts it for the
operator's indicators (written by a thread of their own, never holding the message) and
answers ``DUNNO``.

Anything else is left to Postfix (``DUNNO``: relaying by a client that is not logged in is
refused by ``smtpd_relay_restrictions`` before this). A failure to decide is a temporary
refusal (``451 4.3.5``): the sender's server retries, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from enrs.kit.db import Database, utcnow
from enrs.messaging import indicators, service
from enrs.messaging.models import TrustedDomain
from enrs.messaging.service import domain_of
from enrs.messaging.trustlist import common_names, normalise_domain, same_value

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # a policy request is a few hundred bytes; more is not Postfix
DEFER = "DEFER_IF_PERMIT 4.3.5 the operator's policy service cannot decide now"
# SMTP replies are ASCII: the texts below are written without accents.


def trusted(session: Session, domain: str, own: str) -> bool:
    """``domain`` is the operator's own or a domain of the MSSanté trust space."""
    return service.in_trust_space(session, domain, own)


def operator_refusal(session: Session, domain: str, request: dict[str, str]) -> str | None:
    """Why the sending server may not deliver for ``domain`` (None: it may). The trust list
    names the certificate of each domain's operator (its DN); Postfix verifies the client's
    certificate against the IGC-Santé CAs (``ENRS_MAIL_PEER_CA``) and passes the verified
    certificate's CN (``ccert_subject``), which must be the CN of that DN. A domain listed
    without a DN (added by hand) is not checked."""
    listed = session.get(TrustedDomain, normalise_domain(domain))
    if listed is None or not listed.operator_dn:
        return None
    names = common_names(listed.operator_dn)
    presented = request.get("ccert_subject", "").strip()
    if not presented:
        return f"550 5.7.1 mail from {domain} comes from its operator's verified certificate"
    if not any(same_value(presented, name) for name in names):
        return (
            f"550 5.7.1 the certificate {presented[:64]!r} is not the one of {domain}'s"
            " operator in the MSSante trust space"
        )
    return None


def decide(session: Session, own_domain: str, request: dict[str, str]) -> str:
    """The action for one policy request (see the module's documentation)."""
    if request.get("protocol_state", "").upper() != "RCPT":
        return "DUNNO"
    own = own_domain.lower()
    sender = request.get("sender", "").strip().lower()
    recipient = request.get("recipient", "").strip().lower()
    login = request.get("sasl_username", "").strip().lower()
    if login:
        if not sender:
            return "553 5.7.1 a logged-in client sends from its own address"
        if not service.may_send_as(session, login, sender):
            return f"553 5.7.1 <{login}> may not send as <{sender}>"
    elif sender:
        sender_domain = domain_of(sender)
        if sender_domain == own:
            return f"553 5.7.1 mail from @{own} is sent by a logged-in client"
        if not trusted(session, sender_domain, own):
            return f"550 5.7.1 {sender_domain} is not in the MSSante trust space"
        if refusal := operator_refusal(session, sender_domain, request):
            return refusal
    if domain_of(recipient) == own:
        box = service.mailbox(session, recipient)
        if box is None:
            return f"550 5.1.1 <{recipient}>: no such mailbox here"
        if box.status != "active":
            return f"550 5.2.1 <{recipient}>: this mailbox is {box.status}"
        patient = not login and domain_of(sender) == indicators.PATIENT_DOMAIN
        if patient and not indicators.may_answer(session, sender, recipient):
            return (
                f"550 5.7.1 <{recipient}> has not written to {sender}: a patient answers"
                " the professionals who wrote to them first"
            )
        return "DUNNO"
    if login and not trusted(session, domain_of(recipient), own):
        return f"550 5.7.1 {domain_of(recipient)} is not in the MSSante trust space"
    return "DUNNO"


def parse_request(block: bytes) -> dict[str, str]:
    request = {}
    for line in block.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            request[name.strip()] = value
    return request


class PolicyServer:
    """The policy service on a unix socket, deciding with ``decider`` (a blocking function,
    run in a worker thread: it reads the database)."""

    def __init__(self, socket_path: Path, decider: Callable[[dict[str, str]], str]) -> None:
        self.socket_path = socket_path
        self.decider = decider

    async def _answer(self, request: dict[str, str]) -> str:
        try:
            return await asyncio.to_thread(self.decider, request)
        except Exception:
            log.exception("policy: cannot decide for %s", request.get("recipient"))
            return DEFER

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    block = await reader.readuntil(b"\n\n")
                except asyncio.IncompleteReadError:
                    return  # Postfix closed the connection
                except asyncio.LimitOverrunError:
                    log.warning("policy: a request larger than %d bytes, closed", MAX_REQUEST)
                    return
                request = parse_request(block)
                action = await self._answer(request)
                log.info(
                    "policy: %s -> %s (%s): %s",
                    request.get("sender"),
                    request.get("recipient"),
                    request.get("sasl_username") or request.get("client_address"),
                    action,
                )
                writer.write(f"action={action}\n\n".encode())
                await writer.drain()
        finally:
            writer.close()

    async def run(self, stop: asyncio.Event, owner: tuple[int, int] | None = None) -> None:
        self.socket_path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=MAX_REQUEST
        )
        if owner is not None:
            os.chown(self.socket_path, *owner)
        os.chmod(self.socket_path, 0o600)
        async with server:
            await stop.wait()


def database_decider(db: Database, own_domain: str) -> Callable[[dict[str, str]], str]:
    """Decide each recipient from the database, and count each message Postfix accepted
    (the operator's indicators, :mod:`enrs.messaging.indicators`)."""
    tally = indicators.Tally()
    recorder = indicators.Recorder(db)

    def decider(request: dict[str, str]) -> str:
        state = request.get("protocol_state", "").upper()
        if state == "END-OF-MESSAGE":
            ended = tally.ended(request.get("instance", ""))
            if ended is not None:
                recorder.add(*ended, when=utcnow())
            return "DUNNO"
        with db.transaction(write=False) as session:
            action = decide(session, own_domain, request)
        if state == "RCPT" and action == "DUNNO":
            tally.accepted(
                request.get("instance", ""), request.get("sender", ""), request.get("recipient", "")
            )
        return action

    return decider
