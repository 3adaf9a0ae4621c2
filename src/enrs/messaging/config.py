"""The Postfix and Dovecot configuration of this installation, written by ``enrs messaging
config`` and at every start of the ``mail`` listener, under ``ENRS_MAIL_DIR``:

- ``postfix/``: ``main.cf``, ``master.cf`` and the ``mailboxes`` map (hash, built by
  ``postmap``): submission (``ENRS_SMTP_PORT``: STARTTLS required, SASL login through Dovecot)
  and inter-operator SMTP (``ENRS_MX_PORT``: TLS, the client certificate asked for); every
  recipient is decided by the ENRS policy service (Postfix SMTP access policy delegation, on a
  unix socket); mail for the operator's domain is handed to Dovecot by LMTP;
- ``dovecot/``: ``dovecot.conf``, and the ``passwd`` (logins with a password) and ``users``
  (every active mailbox) files, which Dovecot reads again when they change; the portal
  webmail's master user (``master-secret``, random, and its hash in ``master-users``);
- ``spool/`` (Postfix's queue), ``postfix-data/``, ``run/`` (sockets), ``store/`` (the
  mailboxes, Maildir, owned by ``ENRS_MAIL_USER``), ``log/``, ``tls/`` (a self-signed pair when
  ``ENRS_MAIL_TLS_CERT`` is unset).

The maps are *generated* from the database (:func:`write_maps`, run after every change of a
mailbox): the servers never read ENRS's tables, and a map is replaced whole (written aside,
then renamed), so a server never reads half of one.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from sqlalchemy.orm import Session

from enrs.kit.db import Database
from enrs.kit.security.passwords import hash_password
from enrs.kit.tls import self_signed
from enrs.messaging import service
from enrs.messaging.models import Mailbox
from enrs.messaging.oauth import Credentials, ensure_client, introspection_url
from enrs.settings import Settings


class MailSetupError(Exception):
    """The mail servers cannot be configured or started here (missing package, user, rights)."""


@dataclass(frozen=True)
class Layout:
    """Where everything of the mail servers lives, from the settings."""

    root: Path

    @property
    def postfix(self) -> Path:
        return self.root / "postfix"

    @property
    def dovecot(self) -> Path:
        return self.root / "dovecot"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def postfix_data(self) -> Path:
        return self.root / "postfix-data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def policy_socket(self) -> Path:
        return self.run / "policy"

    @property
    def oauth2_conf(self) -> Path:
        return self.dovecot / "oauth2.conf.ext"

    @property
    def introspection_client(self) -> Path:
        return self.dovecot / "introspection-client.json"

    @property
    def lmtp_socket(self) -> Path:
        """ENRS's LMTP server, for the applicative mailboxes (:mod:`enrs.messaging.lmtp`)."""
        return self.run / "enrs-lmtp"

    @property
    def dovecot_conf(self) -> Path:
        return self.dovecot / "dovecot.conf"

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        return cls(settings.mail_path.resolve())


def tls_pair(settings: Settings, layout: Layout) -> tuple[Path, Path]:
    """The servers' certificate and key: the configured files, or a self-signed pair made
    once under ``tls/`` for development."""
    if settings.mail_tls_cert and settings.mail_tls_key:
        return settings.mail_tls_cert.resolve(), settings.mail_tls_key.resolve()
    cert, key = layout.root / "tls" / "cert.pem", layout.root / "tls" / "key.pem"
    if not cert.exists() or not key.exists():
        self_signed(cert, key, [settings.mail_domain, "localhost", settings.mail_host])
    return cert, key


def _ids(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise MailSetupError(
            f"the system user {name!r} does not exist (create it: useradd --system {name})"
        ) from None
    return entry.pw_uid, entry.pw_gid


def program(name: str) -> str:
    """The path of a server program (Debian puts them in /usr/sbin, not always on PATH)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=search) or name


def missing_programs() -> list[str]:
    """The server programs this machine lacks (Debian packages postfix, dovecot-imapd,
    dovecot-lmtpd)."""
    wanted = {"postfix": "postfix", "postmap": "postfix", "dovecot": "dovecot-core"}
    missing = [package for name, package in wanted.items() if not shutil.which(program(name))]
    for module, package in (("imap", "dovecot-imapd"), ("lmtp", "dovecot-lmtpd")):
        if not Path(f"/usr/lib/dovecot/{module}").exists():
            missing.append(package)
    return sorted(set(missing))


def dovecot_version() -> tuple[int, int]:
    """Dovecot's major and minor version (``dovecot --version``: ``2.3.19.1 (…)``)."""
    done = subprocess.run(
        [program("dovecot"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.match(r"(\d+)\.(\d+)", done.stdout.strip())
    if done.returncode != 0 or match is None:
        raise MailSetupError(f"cannot tell Dovecot's version: {done.stderr.strip() or done.stdout}")
    return int(match.group(1)), int(match.group(2))


def check_dovecot_version(version: tuple[int, int]) -> None:
    """The configuration written here is Dovecot 2.3's; 2.4 changed the format (settings
    renamed, ``dovecot_config_version`` required): refused with a clear message rather than
    started with a configuration it would misread."""
    if version[0] != 2 or version[1] != 3:
        raise MailSetupError(
            f"Dovecot {version[0]}.{version[1]} is installed; ENRS writes Dovecot 2.3's"
            " configuration (Debian 12's dovecot-core) — 2.4 changed the format and is not"
            " supported yet"
        )


def _reachable(path: Path) -> None:
    """Postfix and Dovecot work as unprivileged users: every parent must be searchable."""
    for parent in path.parents:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            raise MailSetupError(
                f"{parent} is not searchable by other users: the mail servers' users cannot"
                f" reach {path} (chmod o+x {parent}, or set ENRS_MAIL_DIR elsewhere)"
            )


def write_config(settings: Settings, introspection: Credentials | None = None) -> Layout:
    """Write both servers' configuration and make their folders (as root: the servers' own
    users own their parts). With ``introspection`` (the credentials of the client Dovecot
    introspects tokens with, :mod:`.oauth`), mailboxes also accept OAuth 2 logins."""
    if problems := missing_programs():
        raise MailSetupError(f"not installed: {', '.join(problems)} (apt-get install them)")
    if os.geteuid() != 0:
        raise MailSetupError("Postfix and Dovecot are started as root (they drop privileges)")
    check_dovecot_version(dovecot_version())
    layout = Layout.of(settings)
    for folder in (layout.postfix, layout.dovecot, layout.spool, layout.run, layout.log):
        folder.mkdir(parents=True, exist_ok=True)
    _reachable(layout.root)
    os.chmod(layout.root, 0o755)  # noqa: S103 - the servers' own users work under it
    postfix_uid, postfix_gid = _ids("postfix")
    mail_uid, mail_gid = _ids(settings.mail_user)
    layout.postfix_data.mkdir(exist_ok=True)
    os.chown(layout.postfix_data, postfix_uid, postfix_gid)
    layout.store.mkdir(exist_ok=True)
    os.chown(layout.store, mail_uid, mail_gid)
    os.chmod(layout.store, 0o700)
    cert, key = tls_pair(settings, layout)
    _write_peer_ca(settings, layout)
    _write(layout.postfix / "main.cf", main_cf(settings, layout, cert, key))
    _write(layout.postfix / "master.cf", master_cf(settings, layout))
    if introspection is not None:
        _write(layout.oauth2_conf, oauth2_conf(settings, introspection), 0o640, "dovecot")
    else:
        layout.oauth2_conf.unlink(missing_ok=True)
    _write(
        layout.dovecot_conf, dovecot_conf(settings, layout, cert, key, introspection is not None)
    )
    write_master_user(layout)
    return layout


def configure(settings: Settings, db: Database) -> Layout:
    """:func:`write_config` with OAuth 2 logins: the introspection client made (or kept)."""
    layout = Layout.of(settings)
    with db.transaction() as session:
        client = ensure_client(session, layout.introspection_client)
    return write_config(settings, client)


def peer_ca(layout: Layout) -> Path:
    """The other operators' CAs, as Postfix reads them (a copy of ``ENRS_MAIL_PEER_CA``)."""
    return layout.root / "tls" / "peer-ca.pem"


def _write_peer_ca(settings: Settings, layout: Layout) -> None:
    if settings.mail_peer_ca is None:
        peer_ca(layout).unlink(missing_ok=True)
        return
    try:
        text = settings.mail_peer_ca.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MailSetupError(
            f"ENRS_MAIL_PEER_CA: cannot read {settings.mail_peer_ca}: {exc}"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise MailSetupError(f"ENRS_MAIL_PEER_CA: {settings.mail_peer_ca} holds no PEM certificate")
    peer_ca(layout).parent.mkdir(exist_ok=True)
    _write(peer_ca(layout), text)


def _write(path: Path, text: str, mode: int = 0o644, group: str | None = None) -> None:
    """Replace ``path`` whole: written aside, then renamed over it."""
    aside = path.with_name(f".{path.name}.new")
    aside.write_text(text, encoding="utf-8")
    os.chmod(aside, mode)
    if group is not None:
        os.chown(aside, 0, grp.getgrnam(group).gr_gid)
    os.replace(aside, path)


def main_cf(settings: Settings, layout: Layout, cert: Path, key: Path) -> str:
    domain = settings.mail_domain.lower()
    return f"""# Written by `enrs messaging config`: changes here are overwritten.
compatibility_level = 3.6
queue_directory = {layout.spool}
data_directory = {layout.postfix_data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {layout.log}/postfix.log
maillog_file_prefixes = {layout.log}
myhostname = {domain}
mydomain = {domain}
myorigin = $mydomain
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = {settings.mail_host}
inet_protocols = {"ipv6" if ":" in settings.mail_host else "ipv4"}
smtputf8_enable = no
# The operator's mailboxes: Dovecot by LMTP
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = hash:{layout.postfix}/mailboxes
virtual_transport = lmtp:unix:{layout.run}/lmtp
# ... except the applicative (APP) mailboxes: ENRS's LMTP server (write_transport_map)
transport_maps = hash:{layout.postfix}/transport
# TLS: the server's certificate; other operators are reached over TLS only
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_received_header = yes
smtp_tls_security_level = encrypt
smtp_tls_cert_file = {cert}
smtp_tls_key_file = {key}
# Logins: Dovecot's authentication (passwords; Pro Santé Connect tokens)
smtpd_sasl_type = dovecot
smtpd_sasl_path = {layout.run}/auth-postfix
smtpd_sasl_auth_enable = no
# Every recipient decided by ENRS (SMTP access policy delegation)
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
    reject_non_fqdn_recipient,
    reject_non_fqdn_sender,
    check_policy_service unix:{layout.policy_socket}
# … and every message counted once accepted (the operator's indicators)
smtpd_end_of_data_restrictions = check_policy_service unix:{layout.policy_socket}
smtpd_policy_service_default_action = 451 4.3.5 the operator's policy service is unavailable
"""


_INTERNAL = """pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def master_cf(settings: Settings, layout: Layout) -> str:
    host = settings.mail_host
    lines = [
        "# Written by `enrs messaging config`: changes here are overwritten.",
        "# Submission: STARTTLS required, then a login; only logged-in clients send.",
        f"{host}:{settings.smtp_port} inet n       -       n       -       -       smtpd",
        "  -o syslog_name=postfix/submission",
        "  -o smtpd_tls_security_level=encrypt",
        "  -o smtpd_sasl_auth_enable=yes",
        "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject",
    ]
    if settings.mx_port:
        lines += [
            "# Inter-operator SMTP: TLS, the sending operator's certificate asked for.",
            f"{host}:{settings.mx_port} inet n       -       n       -       -       smtpd",
            "  -o syslog_name=postfix/mx",
            "  -o smtpd_tls_ask_ccert=yes",
        ]
        if settings.mail_peer_ca is not None:  # their certificates verified by these CAs
            lines.append(f"  -o smtpd_tls_CAfile={peer_ca(layout)}")
    return "\n".join(lines) + "\n" + _INTERNAL


def oauth2_conf(settings: Settings, client: Credentials) -> str:
    """Dovecot's oauth2 passdb: tokens introspected by ENRS (RFC 7662, POST), the login
    name compared with the ``username`` ENRS answers (:mod:`.oauth`)."""
    url = urlsplit(introspection_url(settings))
    auth = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}@"
    with_auth = url._replace(netloc=auth + url.netloc).geturl()
    return f"""# Written by `enrs messaging config`: changes here are overwritten.
introspection_mode = post
introspection_url = {with_auth}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 10000
tls_ca_cert_file = /etc/ssl/certs/ca-certificates.crt
"""


def dovecot_conf(
    settings: Settings, layout: Layout, cert: Path, key: Path, oauth2: bool = False
) -> str:
    user = settings.mail_user
    return f"""# Written by `enrs messaging config`: changes here are overwritten.
base_dir = {layout.run}/dovecot
state_dir = {layout.run}/dovecot-state
protocols = imap lmtp
listen = {settings.mail_host}
log_path = {layout.log}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login{" xoauth2 oauthbearer" if oauth2 else ""}
mail_location = maildir:{layout.store}/%d/%n
mail_uid = {user}
mail_gid = {user}
first_valid_uid = 1
{master_passdb(layout)}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=ARGON2ID username_format=%Lu {layout.dovecot}/passwd
}}{_oauth2_passdb(layout) if oauth2 else ""}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {layout.dovecot}/users
  default_fields = uid={user} gid={user} home={layout.store}/%Ld/%Ln
}}
{quota_conf(settings)}
service imap-login {{
  inet_listener imap {{
    port = {settings.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener {layout.run}/lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service auth {{
  unix_listener {layout.run}/auth-postfix {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{settings.mail_domain.lower()}
}}
"""


def quota_conf(settings: Settings) -> str:
    """Dovecot's quota of each mailbox (``ENRS_MAIL_QUOTA``): LMTP refuses a message that
    would exceed it at ``RCPT`` (``552 5.2.2``), so Postfix returns it to its sender with that
    reason; IMAP clients see the quota (``GETQUOTAROOT``)."""
    if settings.mail_quota == "0":
        return "# no quota (ENRS_MAIL_QUOTA=0)"
    return f"""mail_plugins = $mail_plugins quota
lmtp_rcpt_check_quota = yes
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage={settings.mail_quota}
  quota_exceeded_message = this mailbox is over its quota ({settings.mail_quota})
}}"""


def _oauth2_passdb(layout: Layout) -> str:
    """Token logins: to one's own mailbox (the login name is the token's ``username``), or,
    as ``<mailbox>*<own address>``, to a mailbox one is an active delegate of: the token is
    checked as a master login (its ``username`` the address after ``*``), then the
    ``delegations`` map must hold ``<mailbox>*<own address>`` (no password is checked there:
    Dovecot skips it after a master login)."""
    return f"""
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  master = yes
  result_success = continue
  args = {layout.oauth2_conf}
}}
passdb {{
  driver = passwd-file
  mechanisms = xoauth2 oauthbearer
  skip = unauthenticated
  result_failure = return-fail
  result_internalfail = return-fail
  args = username_format=%Lu*%L{{master_user}} {layout.dovecot}/delegations
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {layout.oauth2_conf}
}}"""


MASTER_LOGIN = "webmail"  # the portal's webmail logs in as ``<mailbox>*webmail``


def master_passdb(layout: Layout) -> str:
    """Dovecot's *master user* passdb (``master = yes``): the portal's webmail acts for a
    logged-in professional as ``<mailbox>*webmail`` with a secret of its own, never theirs.
    The mailbox must still be in the ``users`` userdb (an active mailbox)."""
    return f"""auth_master_user_separator = *
passdb {{
  driver = passwd-file
  master = yes
  args = scheme=ARGON2ID {layout.dovecot}/master-users
}}"""


def write_master_user(layout: Layout) -> None:
    """The webmail's master secret (``dovecot/master-secret``, made once, random) and its
    hash for Dovecot (``dovecot/master-users``), both 0640 root:dovecot."""
    secret_file = master_secret_path(layout)
    if not secret_file.exists():
        _write(secret_file, secrets.token_urlsafe(32) + "\n", 0o640, "dovecot")
    secret = secret_file.read_text(encoding="utf-8").strip()
    hashed = hash_password(secret)
    _write(
        layout.dovecot / "master-users", f"{MASTER_LOGIN}:{{ARGON2ID}}{hashed}\n", 0o640, "dovecot"
    )


def master_secret_path(layout: Layout) -> Path:
    return layout.dovecot / "master-secret"


def write_maps(settings: Settings, session: Session) -> None:
    """The maps from the mailboxes: Postfix's ``mailboxes`` (active ones), Dovecot's
    ``users`` (active ones) and ``passwd`` (active ones with a password). A suspended mailbox
    is in none: no login, no new mail; its mail stays in the store."""
    layout = Layout.of(settings)
    active = [box for box in service.mailboxes(session) if box.status == "active"]
    _write(
        layout.postfix / "mailboxes",
        "".join(f"{box.address} OK\n" for box in active),
    )
    postmap = subprocess.run(
        [program("postmap"), "-c", str(layout.postfix), f"hash:{layout.postfix}/mailboxes"],
        capture_output=True,
        text=True,
        check=False,
    )
    if postmap.returncode != 0:
        raise MailSetupError(f"postmap failed: {postmap.stderr.strip()}")
    write_transport_map(layout, active)
    _write(
        layout.dovecot / "users",
        "".join(f"{box.address}:::::::\n" for box in active),
        0o640,
        "dovecot",
    )
    _write(
        layout.dovecot / "passwd",
        "".join(
            f"{box.address}:{{ARGON2ID}}{box.password_hash}::::::\n"
            for box in active
            if box.password_hash
        ),
        0o640,
        "dovecot",
    )
    _write(
        layout.dovecot / "delegations",
        "".join(
            f"{mailbox}*{delegate}:::::::\n"
            for mailbox, delegate in service.active_delegations(session)
        ),
        0o640,
        "dovecot",
    )


def write_transport_map(layout: Layout, active: Sequence[Mailbox]) -> None:
    """Postfix's ``transport`` map: each active applicative (APP) mailbox's mail goes to
    ENRS's LMTP server, which integrates it (:mod:`enrs.messaging.lmtp`)."""
    _write(
        layout.postfix / "transport",
        "".join(
            f"{box.address} lmtp:unix:{layout.lmtp_socket}\n" for box in active if box.kind == "APP"
        ),
    )
    postmap = subprocess.run(
        [program("postmap"), "-c", str(layout.postfix), f"hash:{layout.postfix}/transport"],
        capture_output=True,
        text=True,
        check=False,
    )
    if postmap.returncode != 0:
        raise MailSetupError(f"postmap failed: {postmap.stderr.strip()}")


def configured(settings: Settings) -> bool:
    """The mail servers' configuration exists (``enrs messaging config`` ran, or the
    listener did)."""
    return (Layout.of(settings).postfix / "main.cf").exists()
