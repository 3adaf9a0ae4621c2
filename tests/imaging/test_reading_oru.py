"""The signed report sent back to the requesting site as an ORU^R01 over MLLP, through the
outbound queue's dispatcher (as ``enrs serve``'s notifications listener runs it), to the
``hl7`` package's MLLP server: only the requesting site's endpoint gets it, acknowledged,
audited with the patient."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.imaging import reading_oru
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.kit.errors import BadRequest
from enrs.kit.outbound.models import OutboundMessage
from enrs.settings import Settings
from tests.conftest import Factory
from tests.coordination.test_subscription import dispatching
from tests.imaging.conftest import Archived
from tests.imaging.reading_world import CHU, IPP, PRACTICE, RADIOLOGISTS, Radiology, make_radiology
from tests.imaging.test_reading import _act, _ask, _request
from tests.support.live_server import run_enrs as _enrs
from tests.support.receivers import MllpReceiver
from tests.support.waiting import wait_until


@pytest.fixture
def radiology(
    app: FastAPI, client: TestClient, db: Database, factory: Factory, archive: Archived,
    tmp_path: Path,
) -> Radiology:  # fmt: skip
    return make_radiology(app, db, factory, archive, tmp_path)


def test_the_signed_report_goes_back_to_the_requesting_site(
    radiology: Radiology, settings: Settings
) -> None:
    db = radiology.db
    chu_ris = MllpReceiver(encoding="utf-8").start()
    other = MllpReceiver(encoding="utf-8").start()
    try:
        added = _enrs(settings, "imaging", "reading", "site", "add", CHU,
                      "--mllp", f"127.0.0.1:{chu_ris.port}", "--application", "RIS")  # fmt: skip
        assert added.returncode == 0, added.stderr
        with db.transaction() as session:
            reading_oru.add_site(session, PRACTICE, endpoint=f"127.0.0.1:{other.port}")
        request_id = _ask(radiology.portal("dr.chu"), radiology.study("TDM ABDOMEN"))
        dr_a = radiology.portal("dr.a")
        assert _act(dr_a, request_id, "report", "prendre", db) == 303
        assert _act(dr_a, request_id, "report", "signer", db,
                    conclusion="Appendicite.\nPas de perforation | ni abcès.") == 303  # fmt: skip
        with dispatching(db, settings):
            assert wait_until(lambda: chu_ris.messages(), timeout=30)
            assert wait_until(lambda: _sent(db), timeout=30)
        [message] = chu_ris.messages()
        assert other.messages() == []
    finally:
        chu_ris.stop()
        other.stop()

    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(message.segment("MSH")[5]) == "RIS" and str(message.segment("MSH")[6]) == CHU
    pid = str(message.segment("PID")[3])
    assert pid.startswith(f"{IPP}^^^") and f"{radiology.rri}^^^ENRS^PI" in pid
    obr = message.segment("OBR")
    asked = _request(db, request_id)
    assert str(obr[2]) == f"{request_id}^ENRS" and str(obr[25]) == "F"
    assert str(obr[32]).startswith(RADIOLOGISTS["dr.a"])
    lines = [message.unescape(str(s[5])) for s in message.segments("OBX")]
    text = "\n".join(lines)
    assert "Appendicite.\nPas de perforation | ni abcès." in text and "TDM ABDOMEN" in text
    assert all(str(s[2]) == "TX" and str(s[11]) == "F" for s in message.segments("OBX"))
    with db.transaction(write=False) as session:
        [row] = session.scalars(select(OutboundMessage)).all()
        assert row.status == "sent" and row.patient_ref == f"Patient/{radiology.rri}"
        sent = session.scalars(select(AuditRecord).where(
            AuditRecord.patient_ref == f"Patient/{radiology.rri}",
            AuditRecord.interaction == "ORU^R01")).all()  # fmt: skip
    assert sent and asked.state == "done"


def _sent(db: Database) -> bool:
    with db.transaction(write=False) as session:
        return [m.status for m in session.scalars(select(OutboundMessage))] == ["sent"]


def test_a_site_endpoint_is_checked(radiology: Radiology) -> None:
    with radiology.db.transaction() as session, pytest.raises(BadRequest):
        reading_oru.add_site(session, CHU, endpoint="nowhere")
    with radiology.db.transaction() as session:
        reading_oru.add_site(session, CHU, endpoint="127.0.0.1:2575")
