"""The portal's webmail (``/messagerie``): a real IMAP/SMTP client of Debian's Dovecot and
Postfix acting for the logged-in professional through Dovecot's master user; which mailboxes a
professional sees; and the pages in a real browser (Chromium), on a phone too."""

from __future__ import annotations

import imaplib
import smtplib
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text

from enrs.accounts import service as accounts_service
from enrs.kit.db import Database
from enrs.messaging import service, webmail
from enrs.settings import Settings
from tests.messaging.mail import (
    CHU,
    DOCTOR,
    DOMAIN,
    OTHER_DOCTOR,
    PASSWORD,
    MailServers,
    prepare_directory,
)
from tests.support.browser import wait_for_query
from tests.support.live_server import LiveServer, live_server

ME = f"dr.un@{DOMAIN}"
CABINET = f"cabinet.un@{DOMAIN}"
SERVICE = f"cardiologie.chu@{DOMAIN}"
SECRETARIAT = f"secretariat.chu@{DOMAIN}"
OTHER = f"dr.deux@{DOMAIN}"


def _mailboxes(mail: MailServers) -> None:
    for args in (
        (ME, "--type", "PER", "--rpps", DOCTOR),
        (CABINET, "--type", "CAB", "--rpps", DOCTOR),
        (SERVICE, "--type", "ORG", "--finess", CHU, "--description", "Cardiologie"),
        (SECRETARIAT, "--type", "ORG", "--finess", CHU),
        (OTHER, "--type", "PER", "--rpps", OTHER_DOCTOR),
    ):
        done = mail.enrs("messaging", "mailbox", "add", *args, "--password-stdin", stdin=PASSWORD)
        assert done.returncode == 0, done.stderr


def _settings(mail: MailServers) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=Path(mail.env["ENRS_DATA_DIR"]),
        database_url=mail.env["ENRS_DATABASE_URL"],
        mail_dir=mail.mail_dir,
        mail_domain=DOMAIN,
        smtp_port=mail.smtp_port,
        imap_port=mail.imap_port,
    )


def _message(sender: str, to: str, subject: str, body: str = "Compte rendu joint.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


def test_the_master_user_acts_for_a_mailbox_and_the_policy_sees_the_mailbox(
    mail: MailServers,
) -> None:
    _mailboxes(mail)
    settings = _settings(mail)
    secret = mail.mail_dir / "dovecot" / "master-secret"
    info = secret.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0
    assert len(secret.read_text().strip()) >= 40
    # The webmail sends as the doctor with the master secret: delivered, copied to Sent.
    webmail.send(settings, ME, _message(ME, OTHER, "Par le webmail"))
    [raw] = mail.inbox(OTHER, expected=1)
    assert b"Par le webmail" in raw
    assert [s.subject for s in webmail.list_messages(settings, ME, "Sent")] == ["Par le webmail"]
    # Postfix's policy sees the real mailbox, not the master: no sending as another one.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        webmail.send(settings, ME, _message(SERVICE, OTHER, "usurpation"))
    [(code, reason)] = refused.value.recipients.values()
    assert code == 553 and f"<{ME}> may not send as <{SERVICE}>" in reason.decode()
    # A wrong master secret is refused by Dovecot.
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(webmail.master_login(ME), "not-the-secret")


def test_which_mailboxes_a_professional_sees(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    with db.transaction() as session:
        for address, kind, rpps, finess in (
            (ME, "PER", DOCTOR, None),
            (CABINET, "CAB", DOCTOR, None),
            (OTHER, "PER", OTHER_DOCTOR, None),
            (SERVICE, "ORG", None, CHU),
            (SECRETARIAT, "ORG", None, CHU),
            (f"logiciel.chu@{DOMAIN}", "APP", None, CHU),
        ):
            new = service.NewMailbox(address, kind, rpps=rpps, finess=finess)
            service.add_mailbox(session, new, domain=DOMAIN)
        service.delegate(session, SERVICE, ME, may_send=False)
        service.delegate(session, SERVICE, CABINET, may_send=True)  # the widest one counts
        service.delegate(session, SECRETARIAT, ME, may_send=False)
        service.delegate(session, f"logiciel.chu@{DOMAIN}", OTHER, may_send=True)
    with db.transaction(write=False) as session:
        seen = {v.address: (v.kind, v.may_send, v.through) for v in
                service.visible_mailboxes(session, DOCTOR)}  # fmt: skip
        assert seen == {
            ME: ("PER", True, None),
            CABINET: ("CAB", True, None),
            SERVICE: ("ORG", True, CABINET),
            SECRETARIAT: ("ORG", False, ME),
        }
        assert [v.address for v in service.visible_mailboxes(session, OTHER_DOCTOR)] == [
            OTHER,
            f"logiciel.chu@{DOMAIN}",
        ]
        assert service.visible_mailboxes(session, None) == []
        assert service.visible_mailbox(session, DOCTOR, OTHER.upper()) is None
    with db.transaction() as session:
        service.set_status(session, SECRETARIAT, "suspended")
        service.set_status(session, CABINET, "suspended")
    with db.transaction(write=False) as session:
        # A suspended mailbox is not shown, nor what is delegated to it only.
        seen = {v.address: v.may_send for v in service.visible_mailboxes(session, DOCTOR)}
        assert seen == {ME: True, SERVICE: False}
    db.dispose()


def _users(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        for username, rpps in (("drun", DOCTOR), ("drdeux", OTHER_DOCTOR)):
            accounts_service.create_user(
                session, username=username, display_name=username.title(), password=PASSWORD,
                roles=["professional"], rpps=rpps,
            )  # fmt: skip
    db.dispose()


@contextmanager
def _web(mail: MailServers, tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    env = {
        "ENRS_MAIL_DIR": str(mail.mail_dir),
        "ENRS_MAIL_DOMAIN": DOMAIN,
        "ENRS_SMTP_PORT": str(mail.smtp_port),
        "ENRS_IMAP_PORT": str(mail.imap_port),
    }
    with live_server(data_dir=tmp_path / "web", database_url=database_url, extra_env=env) as web:
        yield web


def _log_in(page: Page, web: LiveServer, username: str) -> None:
    page.goto(web.base_url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(web.base_url + "/")


def _header_of(raw: bytes, name: str) -> str:
    return str(webmail.parse(raw).get(name, ""))


@pytest.mark.browser
def test_read_reply_compose_search_in_the_browser(
    mail: MailServers, browser: Browser, tmp_path: Path, database_url: str
) -> None:
    _mailboxes(mail)
    _users(database_url)
    mail.submit(OTHER, _message(OTHER, ME, "Avis cardiologique", "Patient stable, ECG normal."))
    [original] = mail.inbox(ME, expected=1)
    with _web(mail, tmp_path, database_url) as web:
        page = browser.new_page()
        _log_in(page, web, "drun")
        page.click(".services >> text=Messagerie")
        page.wait_for_url(f"**/messagerie/{ME.replace('@', '%40')}/reception")
        row = page.locator("ul.mails li")
        assert row.count() == 1 and "non-lu" in (row.get_attribute("class") or "")
        assert OTHER in row.inner_text() and "Avis cardiologique" in row.inner_text()
        # (each assertion after a click waits for its page: the click returns before it)
        row.locator("a").click()
        expect(page.locator("h1#objet")).to_have_text("Avis cardiologique")
        expect(page.locator("#texte")).to_contain_text("ECG normal")
        expect(page.locator("dl.headers")).to_contain_text(OTHER)
        page.click("#repondre")
        expect(page.locator("input#objet")).to_have_value("RE: Avis cardiologique")
        page.fill("#corps", "Merci, je le revois dans un mois.")
        page.click("#envoyer")
        page.wait_for_selector("#envoye")
        [reply] = mail.inbox(OTHER, expected=1)
        assert _header_of(reply, "In-Reply-To") == _header_of(original, "Message-ID") != ""
        assert _header_of(original, "Message-ID") in _header_of(reply, "References")
        assert _header_of(reply, "From") == ME and _header_of(reply, "X-MSS-NIL") == "ENRS"
        assert "Disposition-Notification-To" not in webmail.parse(reply)

        # Read now; the search finds it by subject, sender and body, not otherwise.
        page.goto(f"{web.base_url}/messagerie/{ME}/reception")
        assert "non-lu" not in (page.locator("ul.mails li").get_attribute("class") or "")
        for words, found in (("cardiologique", 1), ("dr.deux", 1), ("ECG", 1), ("radiologie", 0)):
            page.fill("#q", words)
            page.click("form[role=search] button")
            wait_for_query(page, q=words)
            assert page.locator("ul.mails li").count() == found, words
        expect(page.locator("#vide")).to_contain_text("Aucun message ne correspond")

        # Compose with an attachment and a read receipt asked for.
        page.click("#ecrire")
        page.fill("#a", OTHER)
        page.fill("#objet", "Compte rendu opératoire")
        page.fill("#corps", "Ci-joint le compte rendu.")
        page.set_input_files(
            "#pieces",
            files=[{"name": "cr.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 cr"}],
        )
        page.check("#accuse")
        page.click("#envoyer")
        page.wait_for_selector("#envoye")
        expect(page.locator("ul.mails li")).to_have_count(2)  # the Sent folder, by IMAP APPEND
        sent = mail.inbox(OTHER, expected=2)[1]
        parsed = webmail.parse(sent)
        assert parsed["Disposition-Notification-To"] == ME
        [attached] = list(parsed.iter_attachments())
        assert attached.get_filename() == "cr.pdf"
        assert attached.get_payload(decode=True) == b"%PDF-1.4 cr"

        # The received attachment downloads from the message page.
        mail.submit(OTHER, _with_attachment(OTHER, ME))
        mail.inbox(ME, expected=2)
        page.goto(f"{web.base_url}/messagerie/{ME}/reception")
        page.locator("ul.mails li a").first.click()
        with page.expect_download() as download:
            page.click("#pieces a")
        assert Path(download.value.path()).read_bytes() == b"resultat: 4.2 mmol/L"
        assert download.value.suggested_filename == "bilan sanguin.txt"

        # A recipient Postfix refuses: said on the form, in French, the draft kept.
        page.click("#ecrire")
        page.fill("#a", f"personne@{DOMAIN}")
        page.fill("#objet", "Brouillon gardé")
        page.click("#envoyer")
        expect(page.locator("#erreur")).to_contain_text("destinataire refusé")
        expect(page.locator("input#objet")).to_have_value("Brouillon gardé")
        page.fill("#a", f"{OTHER}, personne@{DOMAIN}")  # one accepted, one refused
        page.click("#envoyer")
        expect(page.locator("#refuses")).to_contain_text(f"personne@{DOMAIN}")

        # Too large an attachment: refused, in French, nothing sent.
        page.click("#ecrire")
        page.fill("#a", OTHER)
        page.set_input_files(
            "#pieces",
            files=[{"name": "gros.bin", "mimeType": "application/octet-stream",
                    "buffer": b"x" * (8 * 1024 * 1024 + 1)}],
        )  # fmt: skip
        page.click("#envoyer")
        expect(page.locator("#erreur")).to_contain_text("trop volumineuses")
        assert len(mail.inbox(OTHER, expected=4, wait=2)) == 3


def _with_attachment(sender: str, to: str) -> EmailMessage:
    msg = _message(sender, to, "Bilan")
    msg.add_attachment(b"resultat: 4.2 mmol/L", maintype="text", subtype="plain",
                       filename="bilan sanguin.txt")  # fmt: skip
    return msg


@pytest.mark.browser
def test_another_mailbox_is_closed_audited_and_the_inbox_fits_a_phone(
    mail: MailServers, browser: Browser, tmp_path: Path, database_url: str
) -> None:
    _mailboxes(mail)
    _users(database_url)
    assert mail.enrs("messaging", "mailbox", "delegate", SERVICE, ME).returncode == 0
    long_subject = "Demande d'avis concernant un patient hospitalisé en cardiologie " * 3
    mail.submit(OTHER, _message(OTHER, ME, long_subject.strip()))
    mail.inbox(ME, expected=1)
    with _web(mail, tmp_path, database_url) as web:
        context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
        page = context.new_page()
        _log_in(page, web, "drun")
        page.goto(f"{web.base_url}/messagerie/{ME}/reception")
        assert page.locator("ul.mails li").count() == 1
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], widths
        page.screenshot(path=str(tmp_path / "inbox-phone.png"), full_page=True)

        # The other doctor's mailbox, by changing the URL: closed, and audited.
        for url in (f"/messagerie/{OTHER}/reception", f"/messagerie/{OTHER}/reception/1"):
            answer = page.goto(web.base_url + url)
            assert answer is not None and answer.status == 404
        # The delegated service mailbox: read, but no sending (read-only delegation).
        page.goto(f"{web.base_url}/messagerie/{SERVICE}/reception")
        assert page.locator("#ecrire").count() == 0
        assert "lecture seule" in page.locator("#boite").inner_text()
        page.select_option("#boite", ME)  # the mailbox chooser
        page.click("#ouvrir")
        page.wait_for_url(f"**/messagerie/{ME.replace('@', '%40')}/reception")
        page.goto(f"{web.base_url}/messagerie/{SERVICE}/reception")
        csrf = page.locator("input[name=csrf]").first.input_value()
        answer = page.request.post(
            f"{web.base_url}/messagerie/{SERVICE}/ecrire",
            multipart={"a": OTHER, "objet": "x", "corps": "x", "csrf": csrf},
        )
        assert answer.status == 403
        context.close()
    db = Database(database_url)
    with db.transaction(write=False) as session:
        rows = session.execute(
            text("SELECT entity_ref, outcome FROM audit_record WHERE entity_ref LIKE 'Mailbox/%'")
        ).all()
    db.dispose()
    assert (f"Mailbox/{OTHER}", "4") in {(r[0], r[1]) for r in rows}, rows
    assert (f"Mailbox/{ME}", "0") in {(r[0], r[1]) for r in rows}
    assert (f"Mailbox/{SERVICE}", "4") in {(r[0], r[1]) for r in rows}


@pytest.mark.browser
def test_without_mail_servers_the_page_says_so(
    browser: Browser, tmp_path: Path, database_url: str
) -> None:
    prepare_directory(database_url, tmp_path)
    _users(database_url)
    with live_server(data_dir=tmp_path / "web", database_url=database_url) as web:
        page = browser.new_page()
        _log_in(page, web, "drun")
        answer = page.goto(web.base_url + "/messagerie")
        assert answer is not None and answer.status == 503
        shown = page.locator("#indisponible").inner_text()
        assert "ne sont pas en service" in shown and "ENRS_MAIL_SERVERS=on" in shown


CHU_DOMAIN = "1.2.250.1.999.1.1"  # the CHU's IPP authority
CLINIC_DOMAIN = "1.2.250.1.999.2.1"  # a clinic's, for a patient the CHU does not have in care
CLINIC = "330000019"


def _records(database_url: str, data_dir: Path) -> tuple[str, str, str]:
    """A patient the CHU has in care with a qualified INS, another without one, and a letter
    in each one's record filed by the CHU's doctor; a third patient, in the care of a clinic
    only, with a letter of the clinic's; returns the three documents' ids."""
    from datetime import UTC, date, datetime

    from enrs.documents import service as documents_service
    from enrs.documents.access import Reader
    from enrs.documents.upload import Upload, file_upload
    from enrs.identity import domains
    from enrs.identity import service as identity_service
    from enrs.identity.config import IdentityConfig
    from enrs.identity.matching.engine import matcher_for
    from enrs.kit.storage import open_storage
    from tests.support.identities import person

    settings = Settings(_env_file=None, data_dir=data_dir, database_url=database_url)
    config = IdentityConfig.from_settings(settings)
    storage, matcher = open_storage(settings), matcher_for(None)
    ins = "2610497209123"
    ins = f"{ins}{97 - int(ins) % 97:02d}"
    db = Database(database_url)
    ids = []
    with db.transaction() as session:
        domains.add(session, config, CHU_DOMAIN, namespace="CHU", owner=CHU)
        domains.add(session, config, CLINIC_DOMAIN, namespace="CLIN", owner=CLINIC)
        for domain, ipp, extra in (
            (CHU_DOMAIN, "800001", {"ins": ins, "status": "QUAL"}),
            (CHU_DOMAIN, "800002", {"birth_name": "BERNARD", "given_names": ["Lucie"],
                                    "birth_date": date(1975, 2, 3)}),
            (CLINIC_DOMAIN, "900003", {"birth_name": "LEFEBVRE", "given_names": ["Paul"],
                                       "birth_date": date(1950, 6, 7), "sex": "M"}),
        ):  # fmt: skip
            fed = identity_service.feed(
                session, matcher, person(domain, ipp, **extra), actor="test", config=config
            )
            patient = documents_service.resolve_patient(session, config, ("rri", fed.rri))
            structure = CHU if domain == CHU_DOMAIN else CLINIC
            reader = Reader(f"user:author{ipp}", "author", "user", None, frozenset({structure}))
            upload = Upload(
                b"%PDF-1.4 lettre de liaison " + ipp.encode(), "application/pdf", "11488-4",
                "Compte rendu de consultation", datetime(2026, 12, 2, tzinfo=UTC), "SA01",
                "ETABLISSEMENT",
            )  # fmt: skip
            ids.append(
                file_upload(
                    session,
                    storage,
                    config,
                    reader,
                    patient,
                    upload,
                    oid_root=settings.oid_root,
                    max_bytes=settings.max_document_bytes,
                )
            )
    db.dispose()
    return ids[0], ids[1], ids[2]


@pytest.mark.browser
def test_a_document_of_the_record_is_sent_as_an_ihe_xdm(
    mail: MailServers, browser: Browser, tmp_path: Path, database_url: str
) -> None:
    _mailboxes(mail)
    _users(database_url)
    qualified, unqualified, elsewhere = _records(database_url, tmp_path / "web")
    with _web(mail, tmp_path, database_url) as web:
        page = browser.new_page()
        _log_in(page, web, "drun")
        # From the document's page to the compose form, the document attached.
        rri = page.request.get(f"{web.base_url}/messagerie/document/{qualified}", max_redirects=0)
        assert rri.status == 303 and f"document={qualified}" in rri.headers["location"]
        page.goto(web.base_url + rri.headers["location"])
        assert "Compte rendu de consultation" in page.locator("#documents-joints").inner_text()
        assert page.input_value("#objet").startswith("XDM/1.0/DDM+Compte rendu de consultation")
        page.fill("#a", OTHER)
        page.fill("#corps", "Ci-joint le compte rendu de votre patient.")
        page.click("#envoyer")
        page.wait_for_selector("#envoye")
        [sent] = mail.inbox(OTHER, expected=1)
        parsed = webmail.parse(sent)
        [archive] = [a for a in parsed.iter_attachments() if a.get_filename() == "IHE_XDM.ZIP"]
        from enrs.messaging.xdm import read_xdm

        read = read_xdm(archive.get_payload(decode=True))
        [document] = read.documents
        assert document.content == b"%PDF-1.4 lettre de liaison 800001"
        assert document.metadata.patient is not None and document.metadata.patient[0].startswith(
            "26104972091"
        )
        assert parsed["X-MSS-NIL"] == "ENRS"

        # Refused, nothing sent: a patient without a qualified INS, two patients at once, a
        # document that does not exist.
        csrf = page.locator("input[name=csrf]").first.input_value()
        for documents, reason in (
            ([unqualified], "pas qualifiée"),
            ([qualified, unqualified], "un seul patient"),
            (["00000000-0000-4000-8000-000000000000"], "existe pas"),
            ([elsewhere], "pas accès"),
        ):
            fields = [("a", OTHER), ("objet", "x"), ("corps", "x"), ("csrf", csrf)]
            answer = page.request.post(
                f"{web.base_url}/messagerie/{ME}/ecrire",
                data=urlencode([*fields, *(("document", d) for d in documents)]),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert answer.status == 422 and reason in answer.text(), (documents, answer.text())
        assert len(mail.inbox(OTHER, expected=2, wait=2)) == 1
    db = Database(database_url)
    with db.transaction(write=False) as session:
        reads = session.execute(
            text(
                "SELECT entity_ref, outcome FROM audit_record WHERE entity_ref = :ref"
                " AND interaction = 'read'"
            ),
            {"ref": f"DocumentReference/{qualified}"},
        ).all()
    db.dispose()
    # read for the compose page and for the message (success), and within the refused
    # two-patient message (recorded as failed with it)
    assert sorted(outcome for _, outcome in reads) == ["0", "0", "4"]


@pytest.mark.browser
def test_a_read_receipt_asked_for_is_sent_by_hand_once(
    mail: MailServers, browser: Browser, tmp_path: Path, database_url: str
) -> None:
    _mailboxes(mail)
    _users(database_url)
    asking = _message(OTHER, ME, "Résultats à confirmer")
    asking["Disposition-Notification-To"] = OTHER
    asking["Message-ID"] = f"<accuse.{time.monotonic_ns()}@{DOMAIN}>"
    mail.submit(OTHER, asking)
    mail.submit(OTHER, _message(OTHER, ME, "Sans accusé"))
    mail.inbox(ME, expected=2)
    with _web(mail, tmp_path, database_url) as web:
        page = browser.new_page()
        _log_in(page, web, "drun")
        page.goto(f"{web.base_url}/messagerie/{ME}/reception")
        page.click("ul.mails >> text=Sans accusé")
        expect(page.locator("h1#objet")).to_contain_text("Sans accusé")  # the message's page
        assert page.locator("#accuse-lecture").count() == 0  # nothing asked, nothing offered
        page.goto(f"{web.base_url}/messagerie/{ME}/reception")
        page.click("ul.mails >> text=Résultats à confirmer")
        expect(page.locator("#accuse-lecture")).to_contain_text("accusé de lecture")
        message_url = page.url
        page.click("#envoyer-accuse")
        page.wait_for_selector("#accuse-envoye")
        assert page.locator("#accuse-lecture").count() == 0
        csrf = page.locator("input[name=csrf]").first.input_value()
        again = page.request.post(message_url + "/accuse", form={"csrf": csrf})
        assert again.ok  # answered, not sent twice
    [receipt] = mail.inbox(OTHER, expected=2, wait=3)
    report = webmail.parse(receipt)
    assert report.get_content_type() == "multipart/report"
    assert report["To"] == OTHER and report["From"] == ME
    fields = [
        part
        for part in report.walk()
        if part.get_content_type() == "message/disposition-notification"
    ]
    text_of = fields[0].as_string()
    assert "manual-action/MDN-sent-manually; displayed" in text_of
    assert asking["Message-ID"] in text_of
