"""Mail end to end: issue 14's figure "messages/s accepted and delivered end to end
(submission → policy → delivery → visible over IMAP) for 5 KB and 1 MB messages, next to the
same Postfix/Dovecot without the ENRS plug-ins in the same run".

    .venv/bin/python -m bench.messaging_e2e [--small 1000] [--large 60] [--concurrency 4]
        [--postgres] [--json F]

``enrs messaging serve`` runs Debian's Postfix and Dovecot (as root; ``make test-deps``
installs them) on free ports with a new database (SQLite, or a temporary PostgreSQL one).
A doctor's PER mailbox sends to an ORG mailbox, from ``--concurrency`` SMTP clients (each
one connection: STARTTLS, login, then one message after the other), the messages built
before the clock starts. A run ends when the recipient's INBOX shows them all over IMAP
(``STATUS INBOX (MESSAGES)`` polled every 20 ms).

Two setups, alternated in the same run on the same servers and disk:
- ENRS: as configured, every recipient decided by the ENRS policy service (the database
  asked: may this login send as this address, is the recipient an active mailbox, is the
  domain in the trust space) and every message counted at its end (indicators);
- plain: the same Postfix and Dovecot with the policy service taken out of
  ``smtpd_recipient_restrictions`` and ``smtpd_end_of_data_restrictions`` (``postconf -e``,
  ``postfix reload``): what the mail servers cost by themselves.
Printed: messages/s end to end, submission p50/p95 ms per message, peak RSS of the mail
process tree (policy service, Postfix, Dovecot), and the ENRS/plain ratio.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import json
import os
import random
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path

from tests.messaging.mail import (
    CHU,
    DOCTOR,
    DOMAIN,
    PASSWORD,
    MailServers,
    mail_servers,
    prepare_directory,
)

from bench._load import ProcTreeSampler, percentiles
from bench.documents_search import PG_ADMIN_URL
from bench.http_baseline import say
from bench.identity_bulk import pg_database
from enrs.kit.migrate import upgrade_head
from enrs.messaging import config

SENDER = f"dr.bench@{DOMAIN}"
POLICY_PARAMETERS = ("smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions")
PLAIN = {
    "smtpd_recipient_restrictions": "reject_non_fqdn_recipient, reject_non_fqdn_sender",
    "smtpd_end_of_data_restrictions": "",
}


def _postconf(mail: MailServers, *args: str) -> str:
    done = subprocess.run(
        [config.program("postconf"), "-c", str(mail.mail_dir / "postfix"), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def _switch(mail: MailServers, values: dict[str, str]) -> None:
    """Set Postfix parameters and reload it (new smtpd processes take them)."""
    _postconf(mail, "-e", *(f"{name}={value}" for name, value in values.items()))
    subprocess.run(
        [config.program("postfix"), "-c", str(mail.mail_dir / "postfix"), "reload"],
        capture_output=True, check=True,
    )  # fmt: skip
    time.sleep(1.5)  # the master restarts its idle smtpd processes


def message(to: str, size: int, n: int, rng: random.Random) -> bytes:
    """A message of about ``size`` bytes: a text body of base64 (incompressible) lines."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, to, f"Compte rendu {n}"
    body = base64.encodebytes(rng.randbytes(size * 3 // 4)).decode("ascii")
    msg.set_content(body)
    return msg.as_bytes()


def _inbox_count(mail: MailServers, login: str) -> int:
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        imap.login(login, PASSWORD)
        _, data = imap.status("INBOX", "(MESSAGES)")
        raw = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        return int(raw.rsplit("MESSAGES", 1)[1].strip(" )"))


def run(
    mail: MailServers, to: str, messages: list[bytes], concurrency: int, sampler: ProcTreeSampler
) -> dict[str, float]:
    """Submit ``messages`` to ``to``; the figures once the last one is visible over IMAP."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shares = [messages[i::concurrency] for i in range(concurrency)]

    def client(share: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=120) as smtp:
            smtp.starttls(context=mail.tls)
            smtp.login(SENDER, PASSWORD)
            for raw in share:
                t0 = time.perf_counter()
                try:
                    smtp.sendmail(SENDER, [to], raw)
                except smtplib.SMTPException:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)

    sampler.reset_peak()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = time.perf_counter() - start
    deadline = time.monotonic() + 300
    while (seen := _inbox_count(mail, to)) < len(messages) - errors[0]:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen} of {len(messages)} messages delivered to {to}")
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    p50, p95 = percentiles([round(v * 1000) for v in latencies], (50, 95))
    return {
        "messages": len(messages),
        "errors": errors[0],
        "per_s": len(messages) / elapsed,
        "submitted_per_s": len(messages) / submitted,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "peak_rss_mb": sampler.peak_rss / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--small", type=int, default=1000, help="5 KB messages per setup")
    add("--large", type=int, default=60, help="1 MB messages per setup")
    add("--concurrency", type=int, default=4)
    add("--seed", type=int, default=0)
    add("--postgres", action="store_true")
    add("--pg-admin-url", default=PG_ADMIN_URL)
    add("--json", type=Path)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-mailbench-")))
        url = (
            stack.enter_context(pg_database(args.pg_admin_url))
            if args.postgres
            else f"sqlite:///{tmp / 'enrs.db'}"
        )
        upgrade_head(url)
        prepare_directory(url, tmp)
        mail = stack.enter_context(mail_servers(url, tmp))
        plan = [("5 KB", 5_000, args.small), ("1 MB", 1_000_000, args.large)]
        boxes = [(SENDER, "--type", "PER", "--rpps", DOCTOR)]
        for label, _, _ in plan:
            for setup in ("enrs", "plain"):
                name = f"{setup}-{label.replace(' ', '').lower()}@{DOMAIN}"
                boxes.append((name, "--type", "ORG", "--finess", CHU))
        for box in boxes:
            done = mail.enrs(
                "messaging", "mailbox", "add", *box, "--password-stdin", stdin=PASSWORD
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr)
        original = {name: _postconf(mail, "-h", name).strip() for name in POLICY_PARAMETERS}
        sampler = stack.enter_context(ProcTreeSampler(mail.pid))
        for label, size, count in plan:
            for setup, values in (("ENRS", original), ("plain", PLAIN)):
                _switch(mail, values)
                to = f"{setup.lower()}-{label.replace(' ', '').lower()}@{DOMAIN}"
                messages = [message(to, size, n, rng) for n in range(count)]
                say(f"{setup} {label}: {count} messages from {args.concurrency} clients")
                rows[f"{setup} {label}"] = run(mail, to, messages, args.concurrency, sampler)
        _switch(mail, original)
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(f"Mail end to end ({kind}; concurrency {args.concurrency}; load {_load()})")
    print(f"{'setup':<14}{'msgs':>6}{'err':>5}{'msg/s':>9}{'submit/s':>10}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'peak MB':>9}")  # fmt: skip
    for name, row in rows.items():
        print(
            f"{name:<14}{row['messages']:>6.0f}{row['errors']:>5.0f}{row['per_s']:>9.1f}"
            f"{row['submitted_per_s']:>10.1f}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}"
            f"{row['peak_rss_mb']:>9.0f}"
        )
    for label in ("5 KB", "1 MB"):
        ratio = rows[f"ENRS {label}"]["per_s"] / rows[f"plain {label}"]["per_s"]
        print(f"ratio ENRS/plain {label}: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
