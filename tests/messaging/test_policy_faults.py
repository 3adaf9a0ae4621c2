"""ENRS unable to decide (issue 14, faults): with the database away the policy service answers
a temporary refusal (``4.3.5``; Postfix answers ``451`` the same way when it cannot reach the
service at all, ``smtpd_policy_service_default_action``) — the sending client or operator
keeps the message and retries; nothing is accepted without the operator's rules."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

from enrs.kit.db import Database
from enrs.messaging import policy
from tests.messaging.mail import DOMAIN

ME = f"dr.un@{DOMAIN}"


def _message(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ME, ME, subject
    msg.set_content("Compte rendu.")
    return msg


def test_a_database_away_makes_the_policy_service_defer(tmp_path: Path) -> None:
    socket_path = tmp_path / "policy"
    away = Database("postgresql+psycopg://enrs@127.0.0.1:1/enrs?connect_timeout=2")
    server = policy.PolicyServer(socket_path, policy.database_decider(away, DOMAIN))

    async def ask() -> bytes:
        stop = asyncio.Event()
        serving = asyncio.create_task(server.run(stop))
        while not socket_path.exists():
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        lines = ["request=smtpd_access_policy", "protocol_state=RCPT", f"sender={ME}"]
        lines += [f"recipient={ME}", f"sasl_username={ME}"]
        writer.write(("\n".join(lines) + "\n\n").encode())
        answer = await reader.readuntil(b"\n\n")
        writer.close()
        stop.set()
        await serving
        return answer

    assert asyncio.run(ask()) == f"action={policy.DEFER}\n\n".encode()
    away.dispose()
