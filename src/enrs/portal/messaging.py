"""The webmail pages (``/messagerie``, French UI): a mailbox's inbox and sent folder, search,
a message read (text, attachments, headers), reply and compose. The mailboxes a professional
opens are those of :func:`enrs.messaging.service.visible_mailboxes`; any other gives 404.
Every page that touches a mailbox is audited (``Communication``, ``Mailbox/<address>``)."""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.kit.errors import Forbidden, NotFound
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.messaging import mss, service, webmail
from enrs.messaging.service import Visible
from enrs.portal import messaging_documents as record
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _render
from enrs.settings import Settings

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
# All attachments of one message, in bytes: under ENRS_MAX_BODY_BYTES (10 MB by default),
# so that the page, not the body limit, answers.
MAX_ATTACHMENTS = 8 * 1024 * 1024
FOLDER_LABELS = {"reception": "Boîte de réception", "envoyes": "Envoyés"}
_TAGS = re.compile(r"<[^>]+>")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _zone(request: Request) -> ZoneInfo:
    return ZoneInfo(_settings(request).timezone)


def _audit(request: Request, user: Principal, interaction: str, address: str) -> None:
    action = {"create": "C", "read": "R"}.get(interaction, "E")
    entry = new_entry(request, "rest", interaction, action=action, resource_type="Communication")
    set_agent(entry, user)
    entry.entity_ref = f"Mailbox/{address}"


def _box(request: Request, session: Session, user: Principal, address: str, act: str) -> Visible:
    """The mailbox ``address`` if this professional may open it (audited either way)."""
    _audit(request, user, act, address)
    box = service.visible_mailbox(session, user.rpps, address)
    if box is None:
        raise NotFound("cette boîte aux lettres n'existe pas ou ne vous est pas ouverte")
    return box


def _folder(dossier: str) -> str:
    if dossier not in webmail.FOLDERS:
        raise NotFound(f"dossier inconnu : {dossier}")
    return webmail.FOLDERS[dossier]


def _unavailable(request: Request, reason: str) -> HTMLResponse:
    return _render(request, "messagerie_indisponible.html", status=503, reason=reason, csrf=None)


def _common(request: Request, session: Session, user: Principal) -> dict[str, Any]:
    return {
        "boxes": service.visible_mailboxes(session, user.rpps),
        "csrf": accounts_service.session_csrf(session, user),
        "tz": _zone(request),
        "folders": FOLDER_LABELS,
        "max_mo": MAX_ATTACHMENTS // (1024 * 1024),
    }


@router.get("/messagerie")
def webmail_home(
    request: Request, user: PortalUser, session: DbSession, boite: str = ""
) -> Response:
    """The mailbox chosen (``boite``) or the professional's first one, or why there is none."""
    if (reason := webmail.unavailable_reason(_settings(request))) is not None:
        return _unavailable(request, reason)
    boxes = service.visible_mailboxes(session, user.rpps)
    if not boxes:
        return _render(request, "messagerie_aucune.html", **_common(request, session, user))
    chosen = boite.strip().lower() or boxes[0].address
    return RedirectResponse(f"/messagerie/{quote(chosen)}/reception", status_code=303)


@router.get("/messagerie/document/{doc_id}")
def send_document(request: Request, doc_id: str, user: PortalUser, session: DbSession) -> Response:
    """From a document's page: the compose form of the professional's first mailbox they may
    send from, with the document attached."""
    boxes = [box for box in service.visible_mailboxes(session, user.rpps) if box.may_send]
    if not boxes:
        return _render(request, "messagerie_aucune.html", **_common(request, session, user))
    target = f"/messagerie/{quote(boxes[0].address)}/ecrire?document={quote(doc_id)}"
    return RedirectResponse(target, status_code=303)


@router.get("/messagerie/{address}/ecrire")
def compose_page(
    request: Request,
    address: str,
    user: PortalUser,
    session: DbSession,
    repondre: str = "",
    dossier: str = "reception",
    document: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The compose form; with ``repondre`` (a message's UID) a reply to it; with ``document``
    (ids of the patient's record) those documents attached as an IHE_XDM.zip."""
    if (reason := webmail.unavailable_reason(_settings(request))) is not None:
        return _unavailable(request, reason)
    box = _box(request, session, user, address, "read")
    draft = {"a": "", "cc": "", "objet": "", "corps": "", "in_reply_to": "", "references": ""}
    if repondre:
        original = webmail.read_message(_settings(request), box.address, _folder(dossier), repondre)
        if original is None:
            raise NotFound("message introuvable")
        draft = _reply_draft(original)
    try:
        picked = record.chosen(request, session, user, document or [])
    except record.DocumentsRefused as exc:
        return _render(
            request, "messagerie_ecrire.html", status=403, box=box, draft=draft, error=str(exc),
            picked=None, **_common(request, session, user),
        )  # fmt: skip
    if picked is not None and not draft["objet"]:
        draft["objet"] = record.subject(picked)
    return _render(
        request, "messagerie_ecrire.html", box=box, draft=draft, error="", picked=picked,
        **_common(request, session, user),
    )  # fmt: skip


def _reply_draft(original: EmailMessage) -> dict[str, str]:
    subject = str(original.get("Subject", ""))
    if not subject.lower().startswith(("re:", "re :")):
        subject = f"RE: {subject}"
    message_id = str(original.get("Message-ID", "")).strip()
    references = " ".join(
        part for part in (str(original.get("References", "")).strip(), message_id) if part
    )
    quoted = "\n".join(f"> {line}" for line in _text_of(original).splitlines())
    return {
        "a": str(original.get("Reply-To") or original.get("From", "")),
        "cc": "",
        "objet": subject,
        "corps": f"\n\n{original.get('From', '')} a écrit :\n{quoted}\n",
        "in_reply_to": message_id,
        "references": references,
    }


def _text_of(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    text = str(body.get_content())
    if body.get_content_subtype() == "html":
        text = _TAGS.sub("", text)
    return text


def _addresses(value: str) -> list[str]:
    found = [addr for _, addr in getaddresses([value.replace(";", ",")]) if addr]
    for addr in found:
        try:
            service.normalise_address(addr)
        except service.InvalidMailbox:
            raise ValueError(f"adresse invalide : {addr}") from None
    return found


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _attachments(files: list[UploadFile]) -> list[tuple[str, str, bytes]]:
    total, found = 0, []
    for upload in files:
        if not upload.filename:
            continue
        data = upload.file.read(MAX_ATTACHMENTS + 1)
        total += len(data)
        if total > MAX_ATTACHMENTS:
            raise ValueError(
                f"pièces jointes trop volumineuses : {MAX_ATTACHMENTS // (1024 * 1024)} Mo au plus"
            )
        found.append((upload.filename, upload.content_type or "application/octet-stream", data))
    return found


@router.post("/messagerie/{address}/ecrire")
def send_message(
    request: Request,
    address: str,
    user: PortalUser,
    session: DbSession,
    a: Annotated[str, Form()] = "",
    cc: Annotated[str, Form()] = "",
    objet: Annotated[str, Form()] = "",
    corps: Annotated[str, Form()] = "",
    accuse: Annotated[str, Form()] = "",
    in_reply_to: Annotated[str, Form()] = "",
    references: Annotated[str, Form()] = "",
    pieces: Annotated[list[UploadFile] | None, File()] = None,
    document: Annotated[list[str] | None, Form()] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Send as ``address`` (SMTP submission as the master user on the professional's own
    mailbox; Postfix's policy checks the delegation), copied to Sent."""
    settings = _settings(request)
    if (reason := webmail.unavailable_reason(settings)) is not None:
        return _unavailable(request, reason)
    box = _box(request, session, user, address, "create")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    if not box.may_send:
        raise Forbidden("vous pouvez lire cette boîte mais pas envoyer en son nom")
    draft = {"a": a, "cc": cc, "objet": objet, "corps": corps}
    draft |= {"in_reply_to": in_reply_to, "references": references}
    picked = None
    try:
        to, copies = _addresses(a), _addresses(cc)
        if not to:
            raise ValueError("indiquez au moins un destinataire")
        files = _attachments(pieces or [])
        picked = record.chosen(request, session, user, document or [])
        xdm = None
        if picked is not None:
            xdm = record.archive(
                settings,
                request.app.state.storage,
                session,
                picked,
                sender=box.address,
                organisation=box.description or box.address,
            )
    except ValueError as exc:  # DocumentsRefused included
        return _render(
            request, "messagerie_ecrire.html", status=422, box=box, draft=draft, error=str(exc),
            picked=picked, **_common(request, session, user),
        )  # fmt: skip
    msg = mss.compose(
        sender=box.address,
        to=to,
        cc=copies,
        subject_line=_one_line(objet),
        body=corps,
        attachments=[mss.Attachment(name, kind, data) for name, kind, data in files],
        xdm=xdm,
        in_reply_to=_one_line(in_reply_to) or None,
        references=_one_line(references).split(),
        read_receipt=bool(accuse),
    )
    request.state.audit[-1].detail = f"to={','.join(to + copies)} message-id={msg['Message-ID']}"
    try:
        partly = webmail.send(settings, box.through or box.address, msg)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(
            f"{k} ({v[1].decode(errors='replace')})" for k, v in exc.recipients.items()
        )
        return _render(
            request, "messagerie_ecrire.html", status=422, box=box, draft=draft,
            error=f"destinataire refusé : {refused}", picked=picked,
            **_common(request, session, user),
        )  # fmt: skip
    except webmail.MailUnavailable as exc:
        return _unavailable(request, str(exc))
    done = f"message=envoye&refuses={quote(','.join(partly))}" if partly else "message=envoye"
    return RedirectResponse(f"/messagerie/{quote(box.address)}/envoyes?{done}", status_code=303)


@router.get("/messagerie/{address}/{dossier}")
def folder_page(
    request: Request,
    address: str,
    dossier: str,
    user: PortalUser,
    session: DbSession,
    q: str = "",
    message: str = "",
    refuses: str = "",
) -> Response:
    """A folder's messages, newest first (unread in bold), or a search in it."""
    settings = _settings(request)
    if (reason := webmail.unavailable_reason(settings)) is not None:
        return _unavailable(request, reason)
    box = _box(request, session, user, address, "search-type" if q else "read")
    folder = _folder(dossier)
    try:
        found = webmail.list_messages(settings, box.address, folder, q.strip() or None)
    except webmail.MailUnavailable as exc:
        return _unavailable(request, str(exc))
    return _render(
        request, "messagerie.html", box=box, dossier=dossier, messages=found, q=q,
        message=message, refused=refuses, **_common(request, session, user),
    )  # fmt: skip


def _parts(msg: EmailMessage) -> list[tuple[int, str, str, int]]:
    """The attachments: index, file name, type, size."""
    found = []
    for index, part in enumerate(msg.iter_attachments()):
        if not isinstance(part, EmailMessage):
            continue
        data = part.get_payload(decode=True)
        size = len(data) if isinstance(data, bytes) else 0
        name = part.get_filename() or f"piece-{index + 1}"
        found.append((index, name, part.get_content_type(), size))
    return found


@router.get("/messagerie/{address}/{dossier}/{uid}")
def message_page(
    request: Request, address: str, dossier: str, uid: str, user: PortalUser, session: DbSession
) -> Response:
    """One message: headers summary, text, attachments (it is marked read)."""
    settings = _settings(request)
    if (reason := webmail.unavailable_reason(settings)) is not None:
        return _unavailable(request, reason)
    box = _box(request, session, user, address, "read")
    request.state.audit[-1].detail = f"{dossier}/{uid}"
    msg = webmail.read_message(settings, box.address, _folder(dossier), uid)
    if msg is None:
        raise NotFound("message introuvable")
    headers = [
        (label, str(msg.get(name)))
        for label, name in (
            ("De", "From"), ("À", "To"), ("Cc", "Cc"), ("Date", "Date"),
            ("Objet", "Subject"), ("Identifiant", "Message-ID"), ("En réponse à", "In-Reply-To"),
            ("Accusé de lecture demandé à", "Disposition-Notification-To"),
        )
        if msg.get(name)
    ]  # fmt: skip
    receipt = None  # a read receipt asked for: "asked", or "sent" once it was
    if msg.get("Disposition-Notification-To") and dossier == "reception":
        sent = webmail.has_flag(settings, box.address, _folder(dossier), uid, webmail.MDN_SENT)
        receipt = "sent" if sent else "asked"
    return _render(
        request, "messagerie_message.html", box=box, dossier=dossier, uid=uid, headers=headers,
        subject=str(msg.get("Subject", "")) or "(sans objet)", text=_text_of(msg),
        parts=_parts(msg), receipt=receipt, **_common(request, session, user),
    )  # fmt: skip


@router.post("/messagerie/{address}/{dossier}/{uid}/accuse")
def send_read_receipt(
    request: Request,
    address: str,
    dossier: str,
    uid: str,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The professional sends the read receipt a message asks for (RFC 8098, by hand:
    ``manual-action/MDN-sent-manually; displayed``), once: the message keeps ``$MDNSent``."""
    settings = _settings(request)
    if (reason := webmail.unavailable_reason(settings)) is not None:
        return _unavailable(request, reason)
    box = _box(request, session, user, address, "create")
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")
    if not box.may_send:
        raise Forbidden("vous pouvez lire cette boîte mais pas répondre en son nom")
    folder = _folder(dossier)
    original = webmail.read_message(settings, box.address, folder, uid)
    if original is None:
        raise NotFound("message introuvable")
    receipt = mss.read_receipt(original, mailbox=box.address)
    if receipt is None:
        raise NotFound("ce message ne demande pas d'accusé de lecture")
    if not webmail.has_flag(settings, box.address, folder, uid, webmail.MDN_SENT):
        request.state.audit[-1].detail = f"read receipt for {dossier}/{uid}"
        try:
            webmail.send(settings, box.through or box.address, receipt)
        except webmail.MailUnavailable as exc:
            return _unavailable(request, str(exc))
        webmail.add_flag(settings, box.address, folder, uid, webmail.MDN_SENT)
    target = f"/messagerie/{quote(box.address)}/{quote(dossier)}/{quote(uid)}"
    return RedirectResponse(target, status_code=303)


@router.get("/messagerie/{address}/{dossier}/{uid}/pieces/{index}")
def attachment(
    request: Request,
    address: str,
    dossier: str,
    uid: str,
    index: int,
    user: PortalUser,
    session: DbSession,
) -> Response:
    """An attachment, downloaded (never shown inline: it comes from outside)."""
    settings = _settings(request)
    if (reason := webmail.unavailable_reason(settings)) is not None:
        return _unavailable(request, reason)
    box = _box(request, session, user, address, "read")
    request.state.audit[-1].detail = f"{dossier}/{uid} attachment {index}"
    msg = webmail.read_message(settings, box.address, _folder(dossier), uid)
    parts = [p for p in msg.iter_attachments() if isinstance(p, EmailMessage)] if msg else []
    if not 0 <= index < len(parts):
        raise NotFound("pièce jointe introuvable")
    part = parts[index]
    data = part.get_payload(decode=True)
    name = part.get_filename() or f"piece-{index + 1}"
    return Response(
        data if isinstance(data, bytes) else b"",
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
        },
    )
