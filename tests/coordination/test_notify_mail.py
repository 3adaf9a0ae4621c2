"""The care circles' notifications by MSSanté mail: a professional chooses it on the portal
for one of their own mailboxes (an address outside the trust space, or not theirs, refused),
and the mail job hands each pass's mail to the operator's real Postfix, read back from Dovecot
over IMAP; nothing for who did not choose it, nothing about a circle one has left, nothing lost
and nothing doubled while Postfix is down."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.coordination import notify_mail
from enrs.coordination.notify_models import Notification, NotificationMail
from enrs.identity.subscriptions import platform_dispatcher
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.messaging import service
from enrs.messaging.models import TrustedDomain
from enrs.messaging.service import NewMailbox
from enrs.settings import Settings
from tests.coordination.circles import doctor, operation
from tests.coordination.test_notify import drain, member_id, post_task, say, task
from tests.directory.test_import import MAILBOX_COLUMNS, person, ps_file, run
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, Region
from tests.messaging.mail import DOMAIN, PASSWORD, MailServers, mail_servers

Circle = tuple[str, TestClient, TestClient]
MINE = f"dr.clinique@{DOMAIN}"  # the clinic's doctor's (DOCTOR_ELSEWHERE)
CHU_DOCTORS = f"dr.chu@{DOMAIN}"  # the CHU's doctor's (DOCTOR_AT_CHU)
SENDER = f"ne-pas-repondre@{DOMAIN}"
MINE_ELSEWHERE = "dr.clinique@medecin.mssante.fr"  # listed by the national directory
CHU_ELSEWHERE = "dr.chu@medecin.mssante.fr"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The platform's settings, its MSSanté operator's domain the mail servers'."""
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "var",
        database_url=database_url,
        base_url="http://testserver",
        oidc_issuer="",
        storage_backend="fs",
        mail_domain=DOMAIN,
    )


def mailboxes(db: Database) -> None:
    """A personal mailbox of this operator for each doctor of the circle."""
    with db.transaction() as session:
        for address, rpps in ((MINE, DOCTOR_ELSEWHERE), (CHU_DOCTORS, DOCTOR_AT_CHU)):
            new = NewMailbox(address, "PER", rpps=rpps, password=PASSWORD)
            service.add_mailbox(session, new, domain=DOMAIN)


def job_settings(settings: Settings, mail: MailServers) -> Settings:
    """What the ``notifications`` listener of ``enrs serve`` reads: the same, and where the
    mail servers' configuration is."""
    return settings.model_copy(update={"mail_dir": mail.mail_dir})


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def choose(browser: TestClient, address: str) -> httpx.Response:
    token = csrf(browser.get("/notifications").text)
    return browser.post(
        "/notifications/messagerie", data={"csrf": token, "address": address, "action": "activer"}
    )


def unmailed(db: Database, rpps: str) -> list[str | None]:
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(Notification).where(Notification.rpps == rpps).order_by(Notification.id)
        )
        return [n.focus for n in rows if n.mailed_at is None]


def mail_audit(db: Database) -> list[tuple[str, str | None, str | None]]:
    """``(outcome, entity, patient)`` of the audit entries of the notifications' mails."""
    stmt = (
        select(AuditRecord)
        .where(AuditRecord.category == "notification", AuditRecord.interaction == "mss-mail")
        .order_by(AuditRecord.seq)
    )
    with db.transaction(write=False) as session:
        return [(r.outcome, r.entity_ref, r.patient_ref) for r in session.scalars(stmt)]


def test_a_task_is_mailed_to_its_owner_who_chose_it_and_no_one_else(
    region: Region, circle: Circle, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    team, chu, other = circle
    mailboxes(region.db)
    say(chu, team, "Avant le choix", DOCTOR_ELSEWHERE)  # notified before the choice: not mailed
    drain(region.db)
    chosen = choose(other, MINE)
    assert chosen.status_code == 200 and MINE in chosen.text
    made = post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    post_task(other, task(region, team, {"owner": doctor(DOCTOR_AT_CHU)}))  # did not choose mail
    drain(region.db)
    with mail_servers(database_url, tmp_path) as mail:  # the mailboxes in their maps
        # One round of the `notifications` listener's dispatcher: its mail job runs.
        dispatcher = platform_dispatcher(region.db, job_settings(settings, mail))
        dispatcher.step()
        [received] = mail.messages(MINE, expected=1)
        assert notify_mail.mail_pass(region.db, job_settings(settings, mail)).mailed == 0
        assert len(mail.messages(MINE, expected=2, wait=2)) == 1  # nothing mailed twice
        assert mail.messages(CHU_DOCTORS, expected=1, wait=2) == []
    assert received["From"] == SENDER and received["To"] == MINE
    assert received["X-MSS-NIL"] == "ENRS" and received["Auto-Submitted"] == "auto-generated"
    assert received["Message-ID"].endswith(f"@{DOMAIN}>")
    subject = str(received["Subject"])
    assert subject == "[ENRS] Tâche qui vous est attribuée : JOSEPH Marie-Line, né(e) le 09/04/1961"
    body = received.get_body(preferencelist=("plain",))
    assert body is not None
    text = str(body.get_content())
    assert f"http://testserver/coordination/{team}" in text
    assert "Pansement" not in text and "Avant le choix" not in text  # no content, no mention
    assert "Vous êtes mentionné(e)" not in text  # the mention came before the choice
    assert unmailed(region.db, DOCTOR_ELSEWHERE) == [
        f"Communication/{_mention_id(region.db)}"
    ]  # the mention, left as it was
    assert unmailed(region.db, DOCTOR_AT_CHU) == [f"Task/{_chu_task(region.db)}"]
    mailed = _id_of(region.db, f"Task/{made['id']}")
    assert mail_audit(region.db) == [("0", f"Notification/{mailed}", f"Patient/{region.rri}")]


def _mention_id(db: Database) -> str:
    with db.transaction(write=False) as session:
        focus = session.scalar(select(Notification.focus).where(Notification.kind == "mention"))
    assert focus is not None
    return focus.removeprefix("Communication/")


def _chu_task(db: Database) -> str:
    with db.transaction(write=False) as session:
        focus = session.scalar(select(Notification.focus).where(Notification.rpps == DOCTOR_AT_CHU))
    assert focus is not None
    return focus.removeprefix("Task/")


def _id_of(db: Database, focus: str) -> int:
    with db.transaction(write=False) as session:
        found = session.scalar(select(Notification.id).where(Notification.focus == focus))
    assert found is not None
    return found


def test_while_postfix_is_down_nothing_is_lost_and_then_it_is_mailed_once(
    region: Region, circle: Circle, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    team, chu, other = circle
    mailboxes(region.db)
    assert choose(other, MINE).status_code == 200
    with mail_servers(database_url, tmp_path) as mail:  # the mailboxes in their maps
        mail.stop()  # Postfix and Dovecot stopped
        post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
        say(chu, team, "Pouvez-vous passer ?", DOCTOR_ELSEWHERE)
        drain(region.db)
        down = notify_mail.mail_pass(region.db, job_settings(settings, mail))
        assert down.postfix_down and (down.mailed, down.notifications) == (0, 0)
        assert len(unmailed(region.db, DOCTOR_ELSEWHERE)) == 2
        mail.start()
        back = notify_mail.mail_pass(region.db, job_settings(settings, mail))
        assert (back.mailed, back.notifications, back.failed) == (1, 2, 0)  # one mail, both
        again = notify_mail.mail_pass(region.db, job_settings(settings, mail))
        assert (again.mailed, again.notifications) == (0, 0)
        received = mail.messages(MINE, expected=1)
        time.sleep(1)  # a second mail would be delivered by now
        assert len(mail.messages(MINE, expected=2, wait=1)) == 1
    [both] = received
    assert str(both["Subject"]) == "[ENRS] 2 nouvelles notifications de coordination"
    body = both.get_body(preferencelist=("plain",))
    assert body is not None
    text = str(body.get_content())
    assert "Tâche qui vous est attribuée" in text and "Vous êtes mentionné(e)" in text
    assert text.count("JOSEPH Marie-Line, né(e) le 09/04/1961") == 2
    assert "Pouvez-vous passer" not in text
    assert unmailed(region.db, DOCTOR_ELSEWHERE) == []


def test_no_mail_to_a_mailbox_suspended_nor_about_a_circle_one_has_left(
    region: Region, circle: Circle, settings: Settings
) -> None:
    team, chu, other = circle
    mailboxes(region.db)
    assert choose(other, MINE).status_code == 200
    made = post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    drain(region.db)
    with region.db.transaction(write=False) as session:
        [batch] = notify_mail.pending(session)
    assert (batch.rpps, batch.address) == (DOCTOR_ELSEWHERE, MINE)
    assert [i.kind for i in batch.items] == ["task-assigned"]
    # The mailbox suspended: nothing is handed to any Postfix.
    with region.db.transaction() as session:
        service.set_status(session, MINE, "suspended")
    assert notify_mail.mail_pass(region.db, settings) == notify_mail.PassResult(0, 0, 0)
    # Active again, but no Postfix runs for this data folder: the mail waits.
    with region.db.transaction() as session:
        service.set_status(session, MINE, "active")
    waiting = notify_mail.mail_pass(region.db, settings)
    assert waiting.postfix_down and (waiting.mailed, waiting.failed) == (0, 1)
    # Removed from the circle: nothing about it is mailed any more.
    gone = str(member_id(chu, team, DOCTOR_ELSEWHERE))
    assert operation(chu, team, "remove", participant=gone).status_code == 200
    with region.db.transaction(write=False) as session:
        assert notify_mail.pending(session) == []
    assert notify_mail.mail_pass(region.db, settings) == notify_mail.PassResult(0, 0, 0)
    assert unmailed(region.db, DOCTOR_ELSEWHERE) == [f"Task/{made['id']}"]


def national_directory(db: Database, tmp_path: Path) -> None:
    """The national directory's MSSanté extraction: a personal mailbox at another operator
    for each doctor of the circle."""
    rows = [
        person(n) | {"Type de BAL": "PER", "Adresse BAL": address, "Type Identifiant PP": "8"}
        for n, address in ((1, CHU_ELSEWHERE), (2, MINE_ELSEWHERE))
    ]
    path = tmp_path / "Extraction_Correspondance_MSSante_202612010000.txt"
    assert run(db, ps_file(path, MAILBOX_COLUMNS, *rows)).error is None


def test_the_portal_form_turns_mail_on_and_off_and_refuses_other_addresses(
    region: Region, circle: Circle, tmp_path: Path
) -> None:
    _team, _chu, other = circle
    mailboxes(region.db)
    national_directory(region.db, tmp_path)
    with region.db.transaction() as session:
        for domain in ("chu-ailleurs.example", "medecin.mssante.fr"):
            session.add(TrustedDomain(name=domain, description="", operator_dn=""))
    page = other.get("/notifications")
    assert "Recevez aussi vos notifications par messagerie sécurisée" in page.text  # off
    assert f'<option value="{MINE}">' in page.text and CHU_DOCTORS not in page.text
    token = csrf(page.text)
    refused = {
        "dr.clinique@gmail.com": "n'est pas une adresse de l'espace de confiance MSSanté",
        CHU_DOCTORS: "n'est pas l'une de vos boîtes aux lettres MSSanté",
        "dr.clinique@chu-ailleurs.example": "n'est pas l'une de vos boîtes aux lettres MSSanté",
        CHU_ELSEWHERE: "n'est pas l'une de vos boîtes aux lettres MSSanté",
        "pas une adresse": "n'est pas une adresse de messagerie",
    }
    for address, why in refused.items():
        answer = other.post("/notifications/messagerie", data={"csrf": token, "address": address})
        assert answer.status_code == 422, address
        assert why in answer.text.replace("&#39;", "'"), answer.text
    forged = other.post("/notifications/messagerie", data={"csrf": "faux", "address": MINE})
    assert forged.status_code == 403
    with region.db.transaction(write=False) as session:
        assert session.scalars(select(NotificationMail)).all() == []
    on = other.post("/notifications/messagerie", data={"csrf": token, "address": MINE.upper()})
    assert on.status_code == 200  # followed the redirect to the page
    assert f"aussi envoyées à <strong>{MINE}</strong>" in on.text
    with region.db.transaction(write=False) as session:
        row = session.get(NotificationMail, DOCTOR_ELSEWHERE)
        assert row is not None and row.address == MINE
    # Their personal mailbox at another operator of the trust space, as the directory lists it.
    moved = other.post("/notifications/messagerie", data={"csrf": token, "address": MINE_ELSEWHERE})
    assert f"aussi envoyées à <strong>{MINE_ELSEWHERE}</strong>" in moved.text
    off = other.post("/notifications/messagerie", data={"csrf": token, "action": "arreter"})
    assert off.status_code == 200
    assert "Recevez aussi vos notifications par messagerie sécurisée" in off.text
    with region.db.transaction(write=False) as session:
        assert session.get(NotificationMail, DOCTOR_ELSEWHERE) is None


def test_the_mail_job_runs_only_with_the_mail_servers(region: Region, settings: Settings) -> None:
    with_mail = platform_dispatcher(region.db, settings)
    assert [type(job) for job in with_mail.jobs] == [notify_mail.MailJob]  # root, installed
    off = settings.model_copy(update={"mail_servers": "off"})
    assert platform_dispatcher(region.db, off).jobs == ()


def test_a_mail_postfix_refuses_is_audited_and_tried_again_ever_later(
    region: Region, circle: Circle, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    team, chu, other = circle
    mailboxes(region.db)
    assert choose(other, MINE).status_code == 200
    post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    drain(region.db)
    now = [1000.0]
    with mail_servers(database_url, tmp_path) as mail:
        wedged = notify_mail.Postfix(str(mail.mail_dir / "postfix"), timeout=2)
        job = notify_mail.MailJob(
            job_settings(settings, mail), every=15, clock=lambda: now[0], postfix=wedged
        )
        drop = mail.mail_dir / "spool" / "maildrop"
        # Postfix runs, but its drop folder is gone: its sendmail never takes the mail.
        drop.rename(drop.with_name("maildrop.away"))
        try:
            job(region.db)  # refused: audited, kept
            now[0] += 15
            job(region.db)  # refused again: the wait doubles (30 s)
            now[0] += 15
            job(region.db)  # held: not even tried
            assert [o for o, _, _ in mail_audit(region.db)] == ["8", "8"]
            assert len(unmailed(region.db, DOCTOR_ELSEWHERE)) == 1
        finally:
            drop.with_name("maildrop.away").rename(drop)
        now[0] += 15
        job(region.db)  # taken
        # Taken, but Postfix may be slow to pick it up: a pickup that failed while the drop
        # folder was away is restarted only after the master's 60 s throttle (one CI run
        # found the mail undelivered after 20 s).
        assert len(mail.messages(MINE, expected=1, wait=90)) == 1
        # No copy of the refused tries was left to be queued behind the job's back.
        assert len(mail.messages(MINE, expected=2, wait=3)) == 1
    assert [o for o, _, _ in mail_audit(region.db)] == ["8", "8", "0"]
    assert unmailed(region.db, DOCTOR_ELSEWHERE) == [] and job.holds == {}
