"""The regional team's mailbox pages (issue 14): mailboxes created from the directory by an
admin, suspended and reactivated, delegated; refusals shown on the page; admins only, audited."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.messaging import service
from tests.conftest import Factory
from tests.messaging.mail import CHU, DOCTOR, prepare_directory
from tests.support.portal import csrf_of, log_in

DOMAIN = "enrs.localhost"  # the settings' default mail domain


def test_an_admin_manages_the_mailboxes(
    client: TestClient, factory: Factory, db: Database, database_url: str, tmp_path: Path
) -> None:
    prepare_directory(database_url, tmp_path)
    factory.user("root", roles=("admin",))
    factory.user("alice")
    log_in(client, "alice")
    assert client.get("/admin/messagerie").status_code == 403
    form = {"address": f"dr.un@{DOMAIN}", "kind": "PER", "rpps": DOCTOR, "csrf": "x"}
    assert client.post("/admin/messagerie/bal", data=form).status_code == 403
    client.cookies.clear()
    log_in(client, "root")

    # From the professional's card, the form comes pre-filled.
    card = html.unescape(client.get(f"/annuaire/ps/8{DOCTOR}").text)
    assert f'href="/admin/messagerie?type=PER&rpps={DOCTOR}"' in card
    page = client.get(f"/admin/messagerie?type=PER&rpps={DOCTOR}")
    assert page.status_code == 200 and f'value="{DOCTOR}"' in page.text
    csrf = csrf_of(client.get("/account").text)
    made = client.post("/admin/messagerie/bal", data={**form, "csrf": csrf}, follow_redirects=False)
    assert made.status_code == 303
    service_box = {"address": f"cardio@{DOMAIN}", "kind": "ORG", "finess": CHU,
                   "description": "Cardiologie", "csrf": csrf}  # fmt: skip
    assert client.post("/admin/messagerie/bal", data=service_box).status_code == 200

    # Refusals are shown with the form as filled; nothing is created.
    unknown = client.post(
        "/admin/messagerie/bal",
        data={"address": f"dr.x@{DOMAIN}", "kind": "PER", "rpps": "10000000000", "csrf": csrf},
    )
    assert unknown.status_code == 422
    assert "RPPS 10000000000 is not in the directory" in html.unescape(unknown.text)
    again = client.post("/admin/messagerie/bal", data={**form, "csrf": csrf})
    assert again.status_code == 409 and "exists" in again.text
    forged = client.post("/admin/messagerie/bal", data={**form, "address": "a@b.example"})
    assert forged.status_code == 403  # no CSRF token

    delegated = client.post(
        f"/admin/messagerie/bal/cardio@{DOMAIN}/delegation",
        data={"delegate": f"dr.un@{DOMAIN}", "may_send": "1", "csrf": csrf},
    )
    assert delegated.status_code == 200 and "Délégation enregistrée" in html.unescape(
        delegated.text
    )
    suspended = client.post(
        f"/admin/messagerie/bal/dr.un@{DOMAIN}/statut", data={"status": "suspended", "csrf": csrf}
    )
    assert "suspendue" in html.unescape(suspended.text)
    listed = html.unescape(client.get("/admin/messagerie").text)
    assert 'name="status" value="active"' in listed and "Réactiver" in listed
    with db.transaction(write=False) as session:
        boxes = {b.address: b for b in service.mailboxes(session)}
        assert sorted(boxes) == [f"cardio@{DOMAIN}", f"dr.un@{DOMAIN}"]
        assert boxes[f"dr.un@{DOMAIN}"].status == "suspended"
        assert not service.may_send_as(session, f"dr.un@{DOMAIN}", f"cardio@{DOMAIN}")  # suspended
        trail = session.execute(
            select(AuditRecord.interaction, AuditRecord.entity_ref, AuditRecord.outcome).where(
                AuditRecord.resource_type == "MailBox"
            )
        ).all()
    assert ("create", f"MailBox/dr.un@{DOMAIN}", "0") in trail
    assert ("update", f"MailBox/dr.un@{DOMAIN}", "0") in trail
    assert any(i == "create" and o != "0" for i, _, o in trail)  # the refusals, recorded
