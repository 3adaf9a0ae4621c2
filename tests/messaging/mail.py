"""The operator's mail servers for the tests: Postfix and Dovecot (Debian's, installed by
`make test`) run by ``enrs messaging serve`` on free ports, with their configuration, queue
and store in a folder of their own; a small region (a doctor of the CHU, the CHU) in the
directory, for the mailboxes to be bound to."""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from enrs.kit.db import Database
from enrs.messaging import config
from tests.directory.test_import import finess, line, rpps, run, structure, write
from tests.support.live_server import enrs_command, free_port

DOMAIN = "mss.enrs.test"
CHU = finess(1)
DOCTOR, OTHER_DOCTOR = rpps(1), rpps(2)
PASSWORD = "Correct-horse-42!"


@dataclass(frozen=True)
class MailServers:
    env: dict[str, str]
    mail_dir: Path
    smtp_port: int
    imap_port: int
    mx_port: int
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)  # the running one last

    @property
    def tls(self) -> ssl.SSLContext:
        """A client context that trusts the servers' (self-signed) certificate."""
        return ssl.create_default_context(cafile=str(self.mail_dir / "tls" / "cert.pem"))

    def submit(self, login: str, msg: EmailMessage) -> None:
        """``msg`` submitted by ``login`` (its password, after STARTTLS) with Python's smtplib."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=self.tls)
            smtp.login(login, PASSWORD)
            smtp.send_message(msg)

    def inbox(self, login: str, *, expected: int, wait: float = 20) -> list[bytes]:
        """The raw messages of ``login``'s INBOX (its password) read with Python's imaplib,
        once ``expected`` are in or the wait is over."""
        deadline = time.monotonic() + wait
        while True:
            with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30) as imap:
                imap.starttls(ssl_context=self.tls)
                imap.login(login, PASSWORD)
                imap.select("INBOX", readonly=True)
                _, data = imap.search(None, "ALL")
                numbers = data[0].split() if data and data[0] else []
                if len(numbers) >= expected or time.monotonic() > deadline:
                    raws = []
                    for number in numbers:
                        _, parts = imap.fetch(number, "(BODY.PEEK[])")
                        raw = parts[0][1]  # type: ignore[index]
                        assert isinstance(raw, bytes)
                        raws.append(raw)
                    return raws
            time.sleep(0.2)

    def messages(self, login: str, *, expected: int, wait: float = 20) -> list[EmailMessage]:
        """:meth:`inbox`, each message parsed."""
        return [parsed(raw) for raw in self.inbox(login, expected=expected, wait=wait)]

    def enrs(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            enrs_command(*args), env=self.env, input=stdin, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """Of the running ``enrs messaging serve`` (the servers are in its process tree)."""
        return self.procs[-1].pid

    def stop(self) -> None:
        """Stop ``enrs messaging serve`` (Postfix's queue stays on disk)."""
        proc = self.procs[-1]
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start(self) -> None:
        """Start ``enrs messaging serve`` (again), and wait for its ports."""
        with self.log.open("ab") as out:
            self.procs.append(
                subprocess.Popen(enrs_command("messaging", "serve"), env=self.env, stdout=out,
                                 stderr=out)
            )  # fmt: skip
        deadline = time.monotonic() + 60
        for port in (self.smtp_port, self.imap_port, self.mx_port):
            _wait_for(port, deadline, self.log)


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def prepare_directory(database_url: str, tmp_path: Path) -> None:
    """Two doctors (one at the CHU) and the CHU in the directory."""
    db = Database(database_url)
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, site=CHU),
        line(2, site=CHU),
    )
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    text = "finess;etalab;95;2024-01-18\n" + structure(CHU)
    structures.write_bytes(text.encode("cp1252"))
    assert run(db, people).error is None and run(db, structures).error is None
    db.dispose()


def _wait_for(port: int, deadline: float, log: Path) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def mail_servers(
    database_url: str, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[MailServers]:
    missing = config.missing_programs()
    assert not missing, f"install {', '.join(missing)} (make test-deps does)"
    assert os.geteuid() == 0, "Postfix and Dovecot start as root"
    # Their unprivileged users must reach the folder: not under pytest's 0700 tmp root.
    mail_dir = Path(tempfile.mkdtemp(prefix="enrs-mail-", dir="/tmp"))
    os.chmod(mail_dir, 0o755)  # noqa: S103 - the servers' own users work under it
    smtp_port, imap_port, mx_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(
        ENRS_DATA_DIR=str(tmp_path / "var"),
        ENRS_DATABASE_URL=database_url,
        ENRS_MAIL_DIR=str(mail_dir),
        ENRS_MAIL_DOMAIN=DOMAIN,
        ENRS_SMTP_PORT=str(smtp_port),
        ENRS_IMAP_PORT=str(imap_port),
        ENRS_MX_PORT=str(mx_port),
        ENRS_LOG_LEVEL="info",
    )
    env.update(extra_env or {})
    log = tmp_path / "mail.log"
    servers = MailServers(env, mail_dir, smtp_port, imap_port, mx_port, log)
    try:
        servers.start()
        yield servers
    finally:
        if servers.procs:
            servers.stop()
        subprocess.run(
            [config.program("postfix"), "-c", str(mail_dir / "postfix"), "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(mail_dir, ignore_errors=True)
