"""The cell's queue as FHIR Task (search, read) and its decisions as operations ($decide,
$undo): the workbench's rules, only for the identitovigilance role and clients given the
Task scopes, every call audited."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import Factory
from tests.identity.test_workbench import CHU, CLINIC, _doubtful_pair, _pair
from tests.support.portal import log_in

from enrs.identity.models import SourceIdentity
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database

FHIR_JSON = "application/fhir+json"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _params(**values: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": k, kind: v} for k, (kind, v) in values.items()],
    }


def _op(client: TestClient, token: str, task_id: str, op: str, body: dict[str, Any]) -> Any:
    headers = {**_auth(token), "Content-Type": FHIR_JSON}
    return client.post(f"/fhir/Task/{task_id}/${op}", json=body, headers=headers)


def test_tasks_are_searched_read_and_decided(
    client: TestClient, factory: Factory, db: Database
) -> None:
    first = _doubtful_pair(db)  # the douteuse identity is the clinic's
    _pair(db, "MARTIN", douteuse_at=CHU, born=date(1960, 3, 4))
    token = factory.token("system/Task.rus")
    search = client.get("/fhir/Task", params={"status": "requested"}, headers=_auth(token))
    assert search.status_code == 200, search.text
    assert search.json()["total"] == 2
    found = {
        (name, value): client.get("/fhir/Task", params={name: value}, headers=_auth(token)).json()[
            "total"
        ]
        for name, value in (
            ("code", "potential-duplicate"),
            ("code", "potential-collision"),
            ("facility", f"urn:oid:{CLINIC}"),
            ("facility", CHU),
            ("authored-on", f"ge{date.today().isoformat()}"),
            ("authored-on", "lt2000-01-01"),
            ("status", "completed"),
        )
    }
    assert list(found.values()) == [2, 0, 1, 1, 2, 0, 0]

    task = client.get(f"/fhir/Task/{first}", headers=_auth(token)).json()
    assert task["resourceType"] == "Task" and task["status"] == "requested"
    assert task["intent"] == "proposal"
    assert task["code"]["coding"][0]["code"] == "potential-duplicate"
    with db.transaction() as session:
        received = session.scalar(select(SourceIdentity).where(SourceIdentity.ipp == "20"))
        assert received is not None
    assert task["focus"] == {"reference": f"Patient/{received.id}"}
    by_focus = client.get(
        "/fhir/Task", params={"focus": f"Patient/{received.id}"}, headers=_auth(token)
    )
    assert by_focus.json()["total"] == 1
    inputs = {i["type"]["text"]: i for i in task["input"]}
    assert inputs["other-patient"]["valueReference"]["reference"].startswith("Patient/")
    assert 0 < inputs["probability"]["valueDecimal"] <= 1
    assert inputs["level-name"]["valueString"] == "exact"

    no_reason = _op(client, token, str(first), "decide", _params(decision=("valueCode", "LINK")))
    assert no_reason.status_code == 400 and "reason" in no_reason.text
    wrong_kind = _op(
        client, token, str(first), "decide",
        _params(decision=("valueCode", "UNLINK"), reason=("valueString", "x")),
    )  # fmt: skip
    assert wrong_kind.status_code == 400
    decided = _op(
        client, token, str(first), "decide",
        _params(decision=("valueCode", "LINK"), reason=("valueString", "pièce vérifiée")),
    )  # fmt: skip
    assert decided.status_code == 200, decided.text
    done = decided.json()
    assert done["status"] == "completed" and done["output"][0]["valueCode"] == "LINK"
    assert done["statusReason"]["text"] == "pièce vérifiée"
    with db.transaction() as session:
        linked = session.scalar(select(SourceIdentity).where(SourceIdentity.ipp == "20"))
        other = session.scalar(select(SourceIdentity).where(SourceIdentity.ipp == "10"))
        assert linked is not None and other is not None
        assert linked.patient_id == other.patient_id  # the decision applied
    again = _op(
        client, token, str(first), "decide",
        _params(decision=("valueCode", "LINK"), reason=("valueString", "again")),
    )  # fmt: skip
    assert again.status_code == 409
    completed = client.get("/fhir/Task", params={"status": "completed"}, headers=_auth(token))
    assert completed.json()["total"] == 1
    undone = _op(client, token, str(first), "undo", _params(reason=("valueString", "erreur")))
    assert undone.status_code == 200 and undone.json()["status"] == "requested"
    apart = _op(
        client, token, str(first), "decide",
        _params(decision=("valueCode", "KEEP_APART"), reason=("valueString", "jumelles")),
    )  # fmt: skip
    assert apart.json()["status"] == "rejected"
    with db.transaction() as session:
        audited = list(
            session.scalars(
                select(AuditRecord.interaction).where(AuditRecord.entity_ref == f"Task/{first}")
            )
        )
    assert audited.count("update") == 6 and "read" in audited  # refusals audited too


def test_only_the_cell_and_clients_given_the_scope(
    client: TestClient, factory: Factory, db: Database
) -> None:
    task_id = _doubtful_pair(db)
    assert client.get("/fhir/Task").status_code == 401
    patients_only = factory.token("system/Patient.rs")
    assert client.get("/fhir/Task", headers=_auth(patients_only)).status_code == 403
    reader = factory.token("system/Task.rs")
    assert client.get(f"/fhir/Task/{task_id}", headers=_auth(reader)).status_code == 200
    body = _params(decision=("valueCode", "LINK"), reason=("valueString", "x"))
    assert _op(client, reader, str(task_id), "decide", body).status_code == 403
    assert client.get("/fhir/Task/999999", headers=_auth(reader)).status_code == 404
    for username, roles, expected in (
        ("pro", ("professional",), 403),
        ("cell", ("identitovigilance",), 200),
    ):
        factory.user(username, roles=roles)
        log_in(client, username)
        assert client.get(f"/fhir/Task/{task_id}").status_code == expected
        client.cookies.clear()
