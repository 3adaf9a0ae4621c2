"""Publication of the operator's mailboxes to the national directory (issue 14): each mailbox
as the ``telecom`` (AS Mailbox MSS, with the MSSanté extensions) of its Practitioner or
Organization, sent by FHIR Patch, kept in sync with what changes, healed after a failure;
against a stand-in for the national write API (the national side is outside the platform)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.db import Database
from enrs.messaging import publication, service
from enrs.messaging.models import Mailbox
from enrs.messaging.service import NewMailbox
from enrs.settings import Settings
from tests.messaging.mail import CHU, DOCTOR, DOMAIN, OTHER_DOCTOR, prepare_directory
from tests.support.live_server import enrs_command
from tests.support.national_directory import API_KEY, national_directory

ME, OTHER, SERVICE = f"dr.un@{DOMAIN}", f"dr.deux@{DOMAIN}", f"cardio@{DOMAIN}"
DOCTOR_ID, CHU_ID = f"{RPPS_SYSTEM}|8{DOCTOR}", f"{FINESS_SYSTEM}|1{CHU}"
PHONE = {"system": "phone", "value": "0596000000"}


def _settings(url: str, database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "var", database_url=database_url,
        mss_directory_url=url, mss_directory_api_key=SecretStr(API_KEY),
    )  # fmt: skip


def _mailboxes(db: Database) -> None:
    with db.transaction() as session:
        for new in (
            NewMailbox(ME, "PER", rpps=DOCTOR),
            NewMailbox(SERVICE, "ORG", finess=CHU, description="Cardiologie", liste_rouge=True),
        ):
            service.add_mailbox(session, new, domain=DOMAIN)


def _metadata(point: dict[str, object]) -> dict[str, object]:
    [email_type, metadata] = point["extension"]  # type: ignore[misc]
    assert email_type["valueCoding"]["code"] == "MSSANTE"
    assert metadata["url"] == publication.METADATA
    return {
        e["url"]: next(v for k, v in e.items() if k.startswith("value"))
        for e in metadata["extension"]
    }


def test_mailboxes_published_and_kept_in_sync(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    _mailboxes(db)
    with national_directory() as national:
        national.add("Practitioner", DOCTOR_ID, PHONE)
        national.add("Organization", CHU_ID)
        settings = _settings(national.url, database_url, tmp_path)

        done = publication.publish(settings, db)
        assert done is not None and sorted(done.sent) == [SERVICE, ME] and not done.failed
        [phone, mine] = national.telecom("Practitioner", DOCTOR_ID)
        assert phone == PHONE and mine["value"] == ME and mine["system"] == "email"
        per = _metadata(mine)
        assert per["type"] == {"coding": [{"system": publication.TRE_R257, "code": "PER"}]}
        assert per["listeRouge"] is False and "description" not in per
        [org] = national.telecom("Organization", CHU_ID)
        assert _metadata(org)["listeRouge"] is True
        assert _metadata(org)["description"] == "Cardiologie"

        # In sync: nothing sent again.
        sent = len(national.patches)
        assert publication.publish(settings, db) == publication.Published()
        assert len(national.patches) == sent

        # A description changed, a mailbox suspended: one patch each, the rest untouched.
        with db.transaction() as session:
            session.execute(
                sa.update(Mailbox).where(Mailbox.address == SERVICE).values(description="Cardio")
            )
            service.set_status(session, ME, "suspended")
        done = publication.publish(settings, db)
        assert done is not None and sorted(done.sent) == [SERVICE, ME]
        assert national.telecom("Practitioner", DOCTOR_ID) == [PHONE]
        [org] = national.telecom("Organization", CHU_ID)
        assert _metadata(org)["description"] == "Cardio"
    db.dispose()


def test_a_failed_publication_is_retried_until_it_lands(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    _mailboxes(db)
    with db.transaction() as session:
        service.add_mailbox(session, NewMailbox(OTHER, "PER", rpps=OTHER_DOCTOR), domain=DOMAIN)
    with national_directory() as national:
        url = national.url
        national.add("Practitioner", DOCTOR_ID)
        national.add("Organization", CHU_ID)
        national.add("Organization", CHU_ID)  # two resources answer this identifier
        settings = _settings(url, database_url, tmp_path)
        done = publication.publish(settings, db)
        assert done is not None and done.sent == [ME]
        assert sorted(done.failed) == [
            f"{SERVICE}: 412 several resources match",
            f"{OTHER}: 404 no such resource",
        ]
        wrong_key = Settings(**{**settings.model_dump(), "mss_directory_api_key": SecretStr("x")})
        refused = publication.publish(wrong_key, db)
        assert refused is not None and not refused.sent and len(refused.failed) == 2
    # The directory away: nothing lost, nothing marked published.
    down = publication.publish(settings, db)
    assert down is not None and not down.sent
    assert sorted(down.failed) == [f"{SERVICE}: ConnectError", f"{OTHER}: ConnectError"]
    with national_directory() as national:
        national.add("Organization", CHU_ID)
        national.add("Practitioner", f"{RPPS_SYSTEM}|8{OTHER_DOCTOR}")
        again = _settings(national.url, database_url, tmp_path)
        done = publication.publish(again, db)
        assert done is not None and sorted(done.sent) == [SERVICE, OTHER] and not done.failed
    db.dispose()


def test_what_cannot_be_published_is_said(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    with db.transaction() as session:
        box = Mailbox(address=f"ccas@{DOMAIN}", kind="ORG", finess="S00000001", status="active")
        session.add(box)
    with national_directory() as national:
        done = publication.publish(_settings(national.url, database_url, tmp_path), db)
        assert done is not None and not done.sent and not national.patches
        assert done.skipped == [f"ccas@{DOMAIN}: bound to S00000001, a structure without FINESS"]
    db.dispose()


def test_the_command_needs_the_directory_url(tmp_path: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(tmp_path / "var"), ENRS_DATABASE_URL=database_url)
    done = subprocess.run(
        enrs_command("messaging", "publish"), env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "ENRS_MSS_DIRECTORY_URL is not set" in done.stderr
