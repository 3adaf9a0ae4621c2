"""Chat attachments (issue 15): a file sent with a message is filed as a document in the
patient's record — the repository's metadata, encrypted storage, audit and read rule — in the
same transaction as the message, which refers to it; the circle's members open it, others do
not; a wrong type, a too large file or a content type lying about the bytes is refused with
nothing stored."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enrs.accounts import service as accounts_service
from enrs.coordination import chat, service
from enrs.coordination.chat_attachments import Attachment, Record
from enrs.coordination.chat_models import Message
from enrs.documents.access import reader_of
from enrs.documents.models import DocumentEntry
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.settings import Settings
from tests.conftest import Factory
from tests.coordination.circles import operation
from tests.coordination.conftest import logged_in
from tests.coordination.test_chat import _post
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, FHIR_JSON, Region, pdf

LIMIT = 64 * 1024


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The tests' settings with a small attachment limit."""
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "var",
        database_url=database_url,
        base_url="http://testserver",
        oidc_issuer="",
        storage_backend="fs",
        chat_attachment_max_bytes=LIMIT,
    )


def png() -> bytes:
    """A valid 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


JPEG = (Path(__file__).parent / "data" / "plaie.jpg").read_bytes()  # a photo from a phone


def attached(content: bytes, content_type: str, title: str = "plaie.jpg") -> dict[str, Any]:
    data = base64.b64encode(content).decode()
    return {"contentAttachment": {"contentType": content_type, "data": data, "title": title}}


def send(browser: TestClient, team: str, *payload: dict[str, Any]) -> Any:
    body = {
        "resourceType": "Communication",
        "about": [{"reference": f"CareTeam/{team}"}],
        "payload": list(payload),
    }
    return browser.post("/fhir/Communication", json=body, headers={"Content-Type": FHIR_JSON})


def counts(db: Database) -> tuple[int, int]:
    with db.transaction(write=False) as session:
        messages = session.scalar(select(func.count(Message.id))) or 0
        documents = session.scalar(select(func.count(DocumentEntry.id))) or 0
    return messages, documents


def blobs(settings: Settings) -> list[Path]:
    root = settings.storage_dir
    assert root is not None
    found = root.rglob("*") if root.exists() else []
    return sorted(p for p in found if p.is_file() and ".locks" not in p.parts)


def test_a_file_sent_in_the_chat_is_filed_in_the_record_and_members_open_it(
    region: Region,
    factory: Factory,
    db: Database,
    circle: tuple[str, TestClient, TestClient],
) -> None:
    team, chu, other = circle
    report = pdf("Bilan infirmier")
    posted = send(
        other,
        team,
        {"contentString": "Bilan de ce matin"},
        attached(report, "application/pdf", "bilan <b>.pdf"),
    )
    assert posted.status_code == 201, posted.text
    text, reference = posted.json()["payload"]
    assert text == {"contentString": "Bilan de ce matin"}
    doc_id = reference["contentReference"]["reference"].removeprefix("DocumentReference/")
    assert reference["contentReference"]["display"] == "bilan <b>.pdf"

    # Filed as the repository files a professional's upload: its metadata, author, audit.
    with db.transaction(write=False) as session:
        entry = session.scalar(select(DocumentEntry).where(DocumentEntry.resource_id == doc_id))
        assert entry is not None
        assert (entry.mime_type, entry.type_code, entry.title) == (
            "application/pdf",
            "11488-4",
            "bilan <b>.pdf",
        )
        assert entry.author_rpps == DOCTOR_ELSEWHERE and entry.status == "current"
        filing = session.scalars(
            select(AuditRecord).where(AuditRecord.entity_ref == f"DocumentReference/{doc_id}")
        ).all()
    assert [(r.interaction, r.patient_ref) for r in filing] == [("create", f"Patient/{region.rri}")]
    stored = blobs(region.app.state.settings)
    assert stored and not any(report in p.read_bytes() for p in stored)  # encrypted at rest

    # The circle's members open it (the repository's read rule: the circle is a care relation).
    content = f"/dossiers/{region.rri}/documents/{doc_id}/contenu"
    for member in (chu, other):
        opened = member.get(content)
        assert opened.status_code == 200 and opened.content == report
    history = chu.get(f"/fhir/Communication?about=CareTeam/{team}").json()
    assert history["entry"][0]["resource"]["payload"][1] == reference

    # A professional outside the circle, with no other care relationship, does not.
    stranger = logged_in(region, factory, "dr.autre", DOCTOR_AT_CHU[:-1] + "9")
    assert stranger.get(content).status_code == 403

    # A file alone (no text) is a message too; a photo is filed as an illustration.
    alone = send(chu, team, attached(JPEG, "image/jpeg"))
    assert alone.status_code == 201, alone.text
    assert list(alone.json()["payload"][0]) == ["contentReference"]
    with db.transaction(write=False) as session:
        reader = reader_of(session, _principal(region, "dr.chu"))
        found = chat.history(session, reader, service.team_by_id(session, team))
        last = chat.message_json(*found[-1])
        assert last["text"] == "" and last["attachment"]["label"] == "JPEG"
        assert last["attachment"]["title"] == "plaie.jpg"
        image = session.scalar(
            select(DocumentEntry).where(DocumentEntry.resource_id == last["attachment"]["document"])
        )
        assert image is not None and image.type_code == "52040-3"
    photo = f"/dossiers/{region.rri}/documents/{image.resource_id}/contenu"
    assert other.get(photo).content == JPEG

    # Removed from the circle: the documents of others are closed to them at once (what they
    # filed themselves stays theirs: the repository's author rule).
    member = next(
        p["id"]
        for p in chu.get(f"/fhir/CareTeam/{team}").json()["participant"]
        if p["member"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    )
    assert operation(chu, team, "remove", participant=member).status_code == 200
    assert other.get(photo).status_code == 403
    assert other.get(content).status_code == 200


def _principal(region: Region, username: str) -> Any:
    with region.db.transaction(write=False) as session:
        return accounts_service.user_principal(accounts_service.get_user(session, username))


@pytest.mark.parametrize(
    ("part", "status", "said"),
    [
        (attached(b"plain text", "text/plain", "note.txt"), 422, "a PDF or JPEG file"),
        (attached(b"<html><script>x</script>", "text/html"), 422, "a PDF or JPEG file"),
        (attached(png(), "image/png", "capture.png"), 422, "send it as JPEG or PDF"),
        (attached(png(), "application/pdf", "faux.pdf"), 422, "not application/pdf"),
        (attached(JPEG, "application/pdf", "faux.pdf"), 422, "not application/pdf"),
        (attached(pdf(), "image/jpeg", "faux.jpg"), 422, "not image/jpeg"),
        (attached(b"%PDF-" + b"0" * LIMIT, "application/pdf"), 413, f"at most {LIMIT} bytes"),
        ({"contentAttachment": {"contentType": "application/pdf", "data": "%%%"}}, 422, "base64"),
        (
            {"contentAttachment": {"contentType": "application/pdf", "url": "http://x/a.pdf"}},
            422,
            "data",
        ),
        (
            {
                "contentAttachment": {
                    **attached(pdf(), "application/pdf")["contentAttachment"],
                    "size": 3,
                }
            },
            422,
            "size",
        ),
        ({"contentAttachment": {"contentType": "application/pdf", "data": ""}}, 422, "data"),
    ],
)
def test_a_bad_file_is_refused_and_nothing_is_stored(
    region: Region,
    db: Database,
    circle: tuple[str, TestClient, TestClient],
    part: dict[str, Any],
    status: int,
    said: str,
) -> None:
    team, chu, _ = circle
    before, stored = counts(db), blobs(region.app.state.settings)
    refused = send(chu, team, {"contentString": "Voici le compte rendu"}, part)
    assert refused.status_code == status, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert said in outcome["issue"][0]["diagnostics"]
    assert counts(db) == before
    assert blobs(region.app.state.settings) == stored


def test_payload_shapes_that_are_refused(circle: tuple[str, TestClient, TestClient]) -> None:
    team, chu, _ = circle
    two = attached(pdf(), "application/pdf")
    assert send(chu, team, two, two).status_code == 422
    assert send(chu, team, {"contentString": "a"}, {"contentString": "b"}).status_code == 422
    ref = {"contentReference": {"reference": "DocumentReference/x"}}
    assert send(chu, team, ref).status_code == 422
    assert send(chu, team).status_code == 422
    assert _post(chu, team, "Texte seul").json()["payload"] == [{"contentString": "Texte seul"}]


def test_a_non_member_cannot_file_through_the_chat(
    region: Region, factory: Factory, db: Database, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, _, _ = circle
    stranger = logged_in(region, factory, "dr.autre", DOCTOR_AT_CHU[:-1] + "9")
    before = counts(db)
    refused = send(stranger, team, attached(pdf(), "application/pdf"))
    assert refused.status_code == 403
    assert counts(db) == before


def test_the_message_and_its_document_are_one_transaction(
    region: Region, db: Database, circle: tuple[str, TestClient, TestClient]
) -> None:
    """A failure after the filing (here: the request's transaction rolled back) leaves neither
    the message, nor the document, nor its content."""
    team, _, _ = circle
    app = region.app
    settings = app.state.settings
    record = _record(app)
    before, stored = counts(db), blobs(settings)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.transaction() as session:
        reader = reader_of(session, _principal(region, "dr.chu"))
        team_row = service.team_by_id(session, team)
        message, _ = chat.post(
            session,
            reader,
            team_row,
            "",
            attachment=Attachment(pdf(), "application/pdf", "cr.pdf"),
            record=record,
        )
        assert message.document_id is not None
        assert len(blobs(settings)) > len(stored)  # written, before the commit
        raise Boom
    assert counts(db) == before
    assert blobs(settings) == stored


def _record(app: Any) -> Record:
    return Record(app.state.storage, app.state.identity_config, app.state.settings.oid_root, LIMIT)


def test_the_live_feed_shows_the_attachment_as_a_link_not_as_html(
    region: Region, db: Database, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    with db.transaction(write=False) as session:
        cursor = chat.latest_event(session)
    hostile = '<img src=x onerror="alert(1)">.pdf'
    assert send(chu, team, attached(pdf(), "application/pdf", hostile)).status_code == 201
    with db.transaction(write=False) as session:
        reader = reader_of(session, _principal(region, "dr.clinique"))
        events, _ = chat.live_page(session, reader, cursor)
    (event,) = [e for e in events if e.kind == "message"]
    attachment = event.data["attachment"]
    assert attachment["title"] == hostile and attachment["contentType"] == "application/pdf"
    assert attachment["label"] == "PDF" and attachment["document"]
    # The coordination file shows it as an escaped link to the document's page.
    page = other.get(f"/coordination/{team}")
    assert page.status_code == 200
    href = f'href="/dossiers/{region.rri}/documents/{attachment["document"]}"'
    assert href in page.text
    assert "&lt;img src=x onerror=" in page.text and "<img src=x" not in page.text
