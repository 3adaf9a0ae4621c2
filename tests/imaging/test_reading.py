"""Teleradiology and second reading (issue 16) through the portal and the service: a
reading asked by the CHU for an archived study, claimed, reported, signed and filed in the
patient's record; two radiologists claiming at once; the screening double reading (blind,
never the same reader twice, a third reading on discordance); bad input refused with nothing
changed; every page and change in the audit trail with the patient."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.documents.access import reader_of
from enrs.imaging import manifest, reading
from enrs.imaging import reading_repository as repository
from enrs.imaging.reading_models import Reading, ReadingRequest
from enrs.imaging.report_models import StudyDocument
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.kit.security.principal import Principal
from enrs.settings import Settings
from tests.conftest import Factory
from tests.imaging.conftest import Archived, ct_dataset, write
from tests.imaging.reading_world import (
    CHU,
    NIGHT,
    RADIOLOGISTS,
    SCREENING,
    Radiology,
    make_radiology,
)
from tests.support.portal import csrf_of


@pytest.fixture
def radiology(
    app: FastAPI, client: TestClient, db: Database, factory: Factory, archive: Archived,
    tmp_path: Path,
) -> Radiology:  # fmt: skip
    return make_radiology(app, db, factory, archive, tmp_path)


def _ask(chu: TestClient, study_uid: str, **form: str) -> str:
    csrf = csrf_of(chu.get("/lectures").text)
    data = {"etude": study_uid, "groupe": NIGHT, "type_lecture": "teleradiology",
            "priorite": "urgent", "site": CHU, "question": "Embolie ?", "csrf": csrf}  # fmt: skip
    answer = chu.post("/lectures", data=data | form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"].rsplit("/", 1)[1]


def _readings(db: Database, request_id: str) -> dict[str, Reading]:
    with db.transaction(write=False) as session:
        asked = repository.request(session, request_id)
        assert asked is not None
        return {r.step: r for r in repository.readings(session, asked.id)}


def _request(db: Database, request_id: str) -> ReadingRequest:
    with db.transaction(write=False) as session:
        found = repository.request(session, request_id)
        assert found is not None
        return found


def _act(
    portal: TestClient, request_id: str, step: str, action: str, db: Database, **form: str
) -> int:
    """Post ``action`` on the reading ``step`` at its current version; the status."""
    current = _readings(db, request_id)[step]
    csrf = csrf_of(portal.get(f"/lectures/{request_id}").text)
    data = {"action": action, "version": str(current.version), "csrf": csrf} | form
    answer = portal.post(f"/lectures/{request_id}/{current.resource_id}", data=data,
                         follow_redirects=False)  # fmt: skip
    return answer.status_code


def test_a_teleradiology_reading_claimed_reported_signed_and_filed(radiology: Radiology) -> None:
    db = radiology.db
    chu, dr_a, dr_b = (radiology.portal(u) for u in ("dr.chu", "dr.a", "dr.b"))
    request_id = _ask(chu, radiology.study("TDM THORAX INJECTE"))
    # The manifest listener's first round: nothing due (no report yet).
    settings = radiology.app.state.settings.model_copy(update={"imaging_manifest_quiet_minutes": 0})
    watch = manifest.Watch()
    assert manifest.run_round(db, radiology.archive.storage, settings, watch).manifests == 0

    worklist = dr_a.get("/lectures").text
    assert "TDM THORAX INJECTE" in worklist and "Prendre" in worklist and "urgente" in worklist
    assert _act(dr_a, request_id, "report", "prendre", db) == 303
    assert "TDM THORAX INJECTE" not in dr_b.get("/lectures").text  # taken: off the others' list
    assert "prise par vous" in dr_a.get("/lectures").text
    assert _act(dr_b, request_id, "report", "signer", db, conclusion="Pas d'embolie") == 409

    signed = _act(
        dr_a, request_id, "report", "signer", db, conclusion="Absence de signe embolique."
    )
    assert signed == 303
    report = _readings(db, request_id)["report"]
    assert (report.state, report.reader_rpps, report.conclusion) == (
        "signed", RADIOLOGISTS["dr.a"], "Absence de signe embolique."
    )  # fmt: skip
    assert report.reader_name == "Dr.A" and report.signed_at is not None
    asked = _request(db, request_id)
    assert asked.state == "done" and asked.document_id is not None
    assert reading.turnaround(asked) == asked.completed_at - asked.requested_at  # type: ignore[operator]

    # Signed: it never changes (neither signed again nor released), and the page says so.
    again = _act(dr_a, request_id, "report", "signer", db, conclusion="Autre chose")
    assert again == 409 and _act(dr_a, request_id, "report", "rendre", db) == 409
    assert _readings(db, request_id)["report"].conclusion == "Absence de signe embolique."

    # The CHU follows it: done, its turnaround, the report in the patient's record.
    mine = chu.get("/lectures").text
    assert "signé" in mine and "délai de lecture" in mine
    page = chu.get(f"/lectures/{request_id}").text
    assert "Absence de signe embolique." in page and f"RPPS {RADIOLOGISTS['dr.a']}" in page
    href = f"/dossiers/{radiology.rri}/documents/{asked.document_id}"
    assert href in page
    content = chu.get(href + "/contenu")
    assert content.status_code == 200, content.text
    text = content.content.decode()
    assert (
        "Absence de signe embolique." in text
        and f"Signé par Dr.A (RPPS {RADIOLOGISTS['dr.a']})" in text
    )
    assert "Question clinique : Embolie ?" in text and "Délai de lecture" in text

    with db.transaction(write=False) as session:
        rows = session.scalars(select(AuditRecord).where(
            AuditRecord.patient_ref == f"Patient/{radiology.rri}")).all()  # fmt: skip
    refs = {(r.interaction, r.entity_ref, r.outcome) for r in rows}
    assert ("create", f"ServiceRequest/{request_id}", "0") in refs
    assert ("update", f"DiagnosticReport/{report.resource_id}", "0") in refs  # claim, sign
    assert ("update", f"DiagnosticReport/{report.resource_id}", "4") in refs  # refused ones
    assert ("read", f"ServiceRequest/{request_id}", "0") in refs
    assert ("create", f"DocumentReference/{asked.document_id}", "0") in refs
    assert any(r.interaction == "search-type" and r.entity_ref is None for r in rows)  # lists

    # The signed report is the study's: the listener's next round builds its KOS manifest,
    # for the DMP feed.
    done = manifest.run_round(db, radiology.archive.storage, settings, watch)
    assert (done.manifests, done.failed) == (1, 0)
    with db.transaction(write=False) as session:
        kinds = session.execute(
            select(StudyDocument.kind, StudyDocument.document_id)
            .where(StudyDocument.study_id == asked.study_id)
            .order_by(StudyDocument.id)
        ).all()
    assert [k for k, _ in kinds] == ["report", "manifest"] and kinds[0][1] == asked.document_id


def _principal(db: Database, username: str) -> Principal:
    from enrs.accounts import service as accounts_service

    with db.transaction(write=False) as session:
        return accounts_service.user_principal(accounts_service.get_user(session, username))


def test_two_radiologists_claiming_at_once_one_wins(radiology: Radiology) -> None:
    db = radiology.db
    request_id = _ask(radiology.portal("dr.chu"), radiology.study())
    target = _readings(db, request_id)["report"]
    users = {name: _principal(db, name) for name in ("dr.a", "dr.b")}
    start, outcomes = threading.Barrier(2), {}

    def claim(name: str) -> None:
        start.wait()
        try:
            with db.transaction() as session:
                reader = reader_of(session, users[name])
                reading.claim(session, reader, target.resource_id, target.version)
            outcomes[name] = "claimed"
        except reading.ReadingChanged as exc:
            outcomes[name] = exc.message

    threads = [threading.Thread(target=claim, args=(n,)) for n in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes.values())[0] == "claimed", outcomes
    winner = next(n for n, o in outcomes.items() if o == "claimed")
    loser = next(o for o in outcomes.values() if o != "claimed")
    assert "changed in the meantime" in loser or "already taken" in loser
    after = _readings(db, request_id)["report"]
    assert after.reader_name == winner.title() and after.version == target.version + 1

    # Through the portal: the page's stale version is refused, in French, nothing changed.
    late = radiology.portal("dr.c")
    csrf = csrf_of(late.get(f"/lectures/{request_id}").text)
    answer = late.post(
        f"/lectures/{request_id}/{target.resource_id}",
        data={"action": "prendre", "version": str(target.version), "csrf": csrf},
        headers={"Accept": "text/html"},
    )
    assert answer.status_code == 409 and "prise ou modifiée entre-temps" in answer.text
    assert _readings(db, request_id)["report"].reader_name == winner.title()


def test_screening_double_reading_blind_distinct_readers_and_discordance(
    radiology: Radiology,
) -> None:
    db = radiology.db
    chu = radiology.portal("dr.chu")
    dr_a, dr_b, dr_c = (radiology.portal(u) for u in ("dr.a", "dr.b", "dr.c"))
    request_id = _ask(chu, radiology.study("MAMMOGRAPHIE DEPISTAGE"), groupe=SCREENING,
                      type_lecture="screening", priorite="routine")  # fmt: skip
    assert set(_readings(db, request_id)) == {"first", "second"}

    assert _act(dr_a, request_id, "first", "prendre", db) == 303
    assert "MAMMOGRAPHIE DEPISTAGE" not in {  # the second reading stays off dr.a's list
        line for line in dr_a.get("/lectures").text.splitlines() if "Prendre" in line
    }
    second = dr_a.get(f"/lectures/{request_id}").text.split('class="lecture-second"')[1]
    assert "Prendre" not in second.split("</li>")[0]  # not offered to the first reader
    assert _act(dr_a, request_id, "second", "prendre", db) == 403  # the same reader: refused
    assert _readings(db, request_id)["second"].state == "waiting"
    missing = _act(dr_a, request_id, "first", "signer", db, conclusion="Seins denses, RAS")
    assert missing == 422  # a screening reading gives its assessment
    assert _act(dr_a, request_id, "first", "signer", db, conclusion="RAS lecture A",
                classification="1") == 303  # fmt: skip

    # The second reader does not see the first's result until both are signed.
    assert _act(dr_b, request_id, "second", "prendre", db) == 303
    page = dr_b.get(f"/lectures/{request_id}").text
    assert "RAS lecture A" not in page and 'class="classification"' not in page
    assert "Résultat masqué" in page
    assert "RAS lecture A" not in chu.get(f"/lectures/{request_id}").text
    assert "RAS lecture A" in dr_a.get(f"/lectures/{request_id}").text  # their own
    assert _act(dr_b, request_id, "second", "signer", db, conclusion="Opacité suspecte QSE",
                classification="4") == 303  # fmt: skip

    # Discordant: a third reading, by neither of the first two; it sees both.
    assert _request(db, request_id).state == "discordant"
    assert set(_readings(db, request_id)) == {"first", "second", "third"}
    assert _act(dr_b, request_id, "third", "prendre", db) == 403
    assert _act(dr_a, request_id, "third", "prendre", db) == 403
    assert _act(dr_c, request_id, "third", "prendre", db) == 303
    page = dr_c.get(f"/lectures/{request_id}").text
    assert "RAS lecture A" in page and "Opacité suspecte QSE" in page
    assert _act(dr_c, request_id, "third", "signer", db, conclusion="Opacité : bilan",
                classification="4") == 303  # fmt: skip
    asked = _request(db, request_id)
    assert asked.state == "done" and asked.document_id is not None
    text = chu.get(f"/dossiers/{radiology.rri}/documents/{asked.document_id}/contenu").text
    for part in (
        "Première lecture",
        "RAS lecture A",
        "ACR 1",
        "Deuxième lecture",
        "ACR 4",
        "Troisième lecture (discordance)",
        "Opacité : bilan",
        f"RPPS {RADIOLOGISTS['dr.c']}",
    ):
        assert part in text, part  # fmt: skip


def test_a_concordant_screening_is_done_after_two_readings(radiology: Radiology) -> None:
    db = radiology.db
    request_id = _ask(radiology.portal("dr.chu"), radiology.study("MAMMOGRAPHIE"),
                      groupe=SCREENING, type_lecture="screening")  # fmt: skip
    for user, step in (("dr.b", "second"), ("dr.c", "first")):
        portal = radiology.portal(user)
        assert _act(portal, request_id, step, "prendre", db) == 303
        assert _act(portal, request_id, step, "signer", db, conclusion=f"Normal ({user})",
                    classification="2") == 303  # fmt: skip
    asked = _request(db, request_id)
    assert asked.state == "done" and asked.document_id is not None
    assert set(_readings(db, request_id)) == {"first", "second"}


def test_bad_input_is_refused_and_nothing_changes(radiology: Radiology, tmp_path: Path) -> None:
    db = radiology.db
    chu, dr_a = radiology.portal("dr.chu"), radiology.portal("dr.a")
    study = radiology.study()
    csrf = csrf_of(chu.get("/lectures").text)
    base = {"etude": study, "groupe": NIGHT, "type_lecture": "teleradiology",
            "priorite": "urgent", "site": CHU, "csrf": csrf}  # fmt: skip
    cases = {
        "unknown study": ({"etude": "1.2.3.4"}, 404),
        "unknown group": ({"groupe": "Personne"}, 404),
        "bad kind": ({"type_lecture": "lecture"}, 422),
        "not my site": ({"site": "970000099"}, 403),
        "bad csrf": ({"csrf": "x"}, 403),
    }
    for case, (change, status) in cases.items():
        assert chu.post("/lectures", data=base | change).status_code == status, case
    unknown = ct_dataset(patient_id="IPP-404", issuer="CHU")  # no regional patient
    radiology.archive.storescu(write(unknown, tmp_path / "unknown.dcm"))
    unresolved = chu.post("/lectures", data=base | {"etude": unknown.StudyInstanceUID})
    assert unresolved.status_code == 422 and "not attached" in unresolved.text
    with db.transaction(write=False) as session:
        assert session.scalars(select(ReadingRequest)).all() == []

    request_id = _ask(chu, study)
    assert _act(chu, request_id, "report", "prendre", db) == 403  # not a reader of the group
    assert _act(dr_a, request_id, "report", "signer", db, conclusion="x") == 409  # unclaimed
    assert _act(dr_a, request_id, "report", "prendre", db) == 303
    assert _act(dr_a, request_id, "report", "signer", db, conclusion="   ") == 422
    assert _act(dr_a, request_id, "report", "voler", db) == 422
    held = _readings(db, request_id)["report"]
    assert (held.state, held.conclusion, held.version) == ("claimed", None, 2)
    assert _act(dr_a, request_id, "report", "rendre", db) == 303
    assert _readings(db, request_id)["report"].state == "waiting"
    outsider_rpps = "00000000009"
    radiology_factory_user(radiology, "dr.x", outsider_rpps)
    outsider = radiology.portal("dr.x")
    assert outsider.get(f"/lectures/{request_id}").status_code == 403
    with db.transaction(write=False) as session:
        denied = session.scalars(select(AuditRecord).where(
            AuditRecord.entity_ref == f"ServiceRequest/{request_id}",
            AuditRecord.outcome != "0")).all()  # fmt: skip
    assert denied and all(r.patient_ref == f"Patient/{radiology.rri}" for r in denied)


def radiology_factory_user(radiology: Radiology, username: str, rpps: str) -> None:
    Factory(radiology.db, TestClient(radiology.app)).user(username, rpps=rpps)


def test_reading_groups_from_the_command_line(settings: Settings, db: Database) -> None:
    from tests.support.live_server import run_enrs as _enrs

    added = _enrs(settings, "imaging", "reading", "group", "add", "Urgences Sud",
                  "--member", "10000000033", "--member", "10000000044")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "Urgences Sud\t10000000033,10000000044"
    more = _enrs(settings, "imaging", "reading", "group", "add", "Urgences Sud",
                 "--member", "10000000055", "--member", "10000000033")  # fmt: skip
    assert more.stdout.strip() == "Urgences Sud\t10000000033,10000000044,10000000055"
    bad = _enrs(settings, "imaging", "reading", "group", "add", "X", "--member", "12AB")
    assert bad.returncode == 1 and "'12AB' is not an RPPS number" in bad.stderr
    listed = _enrs(settings, "imaging", "reading", "group", "list")
    assert listed.stdout.splitlines() == ["Urgences Sud\t10000000033,10000000044,10000000055"]
    with db.transaction(write=False) as session:
        assert [g.name for g, _ in reading.groups(session)] == ["Urgences Sud"]


def test_overdue_readings_come_first_and_are_flagged(radiology: Radiology) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from enrs.kit.db import utcnow

    chu = radiology.portal("dr.chu")
    later = _ask(chu, radiology.study("IRM GENOU"), priorite="routine")
    late = _ask(chu, radiology.study("RADIO BASSIN"), priorite="routine")
    with radiology.db.transaction() as session:
        session.execute(
            update(ReadingRequest)
            .where(ReadingRequest.resource_id == late)
            .values(due_at=utcnow() - timedelta(minutes=5))
        )
    page = radiology.portal("dr.b").get("/lectures").text
    assert page.index("RADIO BASSIN") < page.index("IRM GENOU")
    item = page.split(f'/lectures/{late}"')[1].split("</li>")[0]
    assert "en retard" in item
    assert "en retard" not in page.split(f'/lectures/{later}"')[1].split("</li>")[0]
    assert "en retard" in chu.get(f"/lectures/{late}").text
