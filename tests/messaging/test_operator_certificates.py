"""The sending operator's certificate (issue 14): another operator delivers for a domain of
the trust space only from a server whose certificate the IGC-Santé CAs (here a test CA,
``ENRS_MAIL_PEER_CA``) verify and whose CN is the one of the operator DN the trust list gives
for that domain — with Debian's Postfix verifying, the ENRS policy service comparing."""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from sqlalchemy.orm import Session

from enrs.kit.db import Database
from enrs.messaging import config, policy
from enrs.messaging.models import TrustedDomain
from enrs.settings import Settings
from tests.messaging.mail import (
    DOCTOR,
    DOMAIN,
    PASSWORD,
    MailServers,
    mail_servers,
    prepare_directory,
)
from tests.messaging.test_mail_servers import _subjects
from tests.support.trust_list import Pki, make_pki

ME = f"dr.un@{DOMAIN}"
HOSPITAL_DN = "CN=mta.hopital.example,O=ENRS test,C=FR"
CLINIC_DN = "C=FR, O=Clinique, CN=mx.clinique.example"  # the X.500 order, as some lists write


def _pem(pki: Pki, folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(pki.signer_cert.public_bytes(Encoding.PEM))
    key.write_bytes(pki.signer_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return cert, key


@pytest.fixture
def igc() -> Pki:
    """The trusted CA and the hospital operator's MTA certificate it issued."""
    return make_pki("mta.hopital.example")


@pytest.fixture
def peers(database_url: str, tmp_path: Path, igc: Pki) -> Iterator[MailServers]:
    prepare_directory(database_url, tmp_path)
    ca = tmp_path / "igc-sante.pem"
    ca.write_bytes(igc.ca_cert.public_bytes(Encoding.PEM))
    db = Database(database_url)
    with db.transaction() as session:
        session.add(TrustedDomain(name="hopital.example", operator_dn=HOSPITAL_DN))
        session.add(TrustedDomain(name="clinique.example", operator_dn=CLINIC_DN))
        session.add(TrustedDomain(name="manuel.example", operator_dn=""))
    db.dispose()
    with mail_servers(database_url, tmp_path, {"ENRS_MAIL_PEER_CA": str(ca)}) as servers:
        done = servers.enrs(
            "messaging", "mailbox", "add", ME, "--type", "PER", "--rpps", DOCTOR,
            "--password-stdin", stdin=PASSWORD,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield servers


def _deliver(
    mail: MailServers, sender: str, subject: str, client: tuple[Path, Path] | None
) -> dict[str, tuple[int, bytes]]:
    context = mail.tls
    if client is not None:
        context.load_cert_chain(*client)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ME, subject
    msg.set_content("Avis.")
    with smtplib.SMTP("127.0.0.1", mail.mx_port, timeout=30) as smtp:
        smtp.starttls(context=context)
        return smtp.send_message(msg)


def _refusal(mail: MailServers, sender: str, client: tuple[Path, Path] | None) -> str:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _deliver(mail, sender, "refusé", client)
    [(code, reason)] = refused.value.recipients.values()
    return f"{code} {reason.decode()}"


def test_another_operator_delivers_with_the_certificate_the_list_names(
    peers: MailServers, igc: Pki, tmp_path: Path
) -> None:
    hospital = _pem(igc, tmp_path, "hospital")
    assert _deliver(peers, "dr.x@hopital.example", "Avis de cardiologie", hospital) == {}
    assert _subjects(peers, ME, expected=1) == ["Avis de cardiologie"]

    no_certificate = _refusal(peers, "dr.x@hopital.example", None)
    assert no_certificate.startswith("550 5.7.1") and "verified certificate" in no_certificate
    # The same name, from a CA that is not the IGC-Santé: Postfix does not verify it.
    forged = _pem(make_pki("mta.hopital.example"), tmp_path, "forged")
    assert "verified certificate" in _refusal(peers, "dr.x@hopital.example", forged)
    # A real operator's certificate, for a domain the list gives to another operator.
    wrong = _refusal(peers, "dr.y@clinique.example", hospital)
    assert "is not the one of clinique.example's operator" in wrong
    # A domain added by hand without a DN is not checked.
    assert _deliver(peers, "dr.z@manuel.example", "Sans DN", None) == {}
    assert _subjects(peers, ME, expected=2) == ["Avis de cardiologie", "Sans DN"]


def test_the_rule_reads_the_dn_in_either_order(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        session.add(TrustedDomain(name="clinique.example", operator_dn=CLINIC_DN))
    with db.transaction(write=False) as session:
        assert _refusal_for(session, "MX.Clinique.example") is None
        assert "is not the one" in (_refusal_for(session, "mx.clinique.example.evil") or "")
        assert "verified certificate" in (_refusal_for(session, "") or "")
    db.dispose()


def _refusal_for(session: Session, subject: str) -> str | None:
    request = {"ccert_subject": subject} if subject else {}
    return policy.operator_refusal(session, "Clinique.example", request)


def test_a_peer_ca_file_without_certificates_stops_the_configuration(
    tmp_path: Path, database_url: str
) -> None:
    bad = tmp_path / "igc-sante.pem"
    bad.write_text("not a certificate\n")
    mail_dir = Path(tempfile.mkdtemp(prefix="enrs-mail-", dir="/tmp"))
    os.chmod(mail_dir, 0o755)  # noqa: S103 - as the mail fixture does
    try:
        settings = Settings(
            _env_file=None, data_dir=tmp_path / "var", database_url=database_url,
            mail_dir=mail_dir, mail_peer_ca=bad,
        )  # fmt: skip
        with pytest.raises(config.MailSetupError, match="holds no PEM certificate"):
            config.write_config(settings)
    finally:
        shutil.rmtree(mail_dir, ignore_errors=True)
