"""The MSSanté rules on what a message carries (issue 14): the subject convention, the
``X-MSS-*`` headers computed from the attached CDA documents, one patient per message."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import date
from pathlib import Path

import pytest

from enrs.documents import xds
from enrs.documents.cda import parse_cda
from enrs.messaging import mss
from enrs.messaging.mss import Attachment, MessageError
from enrs.messaging.xdm import read_xdm
from tests.documents.test_dmp_adapter import PDF, make_document

DATA = Path(__file__).parents[1] / "documents" / "data"
BIOLOGY, LETTER = (DATA / "n1_pdf.xml").read_bytes(), (DATA / "n3_structured.xml").read_bytes()


def _xdm(cda: bytes) -> bytes:
    doc = make_document(content=cda)
    return xds.xdm_package(dataclasses.replace(doc, mime_type="text/xml"))


def test_the_subject_convention() -> None:
    born = date(1975, 11, 2)
    assert mss.subject("Lettre de liaison", "Dupont-Hélène", "Jean Pierre", born) == (
        "XDM/1.0/DDM+Lettre de liaison DUPONT-HELENE Jean 02/11/1975"
    )
    long = "Compte rendu d'examens biologiques du service de biochimie"
    assert mss.subject(long, "Legrand", "Camille", born).startswith(f"XDM/1.0/DDM+{long[:40]} ")
    assert mss.subject(3, "Lœwy", "Ève", born) == "XDM/1.0/DDM+3 documents LŒWY Ève 02/11/1975"


def test_headers_from_the_cda_documents() -> None:
    letter = parse_cda(LETTER)
    assert mss.codes_and_ins([letter]) == ("34133-9", "O")
    unqualified = dataclasses.replace(letter, patient_birth_date=None)
    assert mss.codes_and_ins([letter, unqualified]) == ("34133-9,34133-9", "N")
    assert mss.codes_and_ins([]) is None
    with pytest.raises(MessageError, match="one patient per message"):
        mss.codes_and_ins([letter, parse_cda(BIOLOGY)])
    # Without INS, the patients are told apart by birth name and birth date.
    anonymous = dataclasses.replace(letter, patient_ids=())
    assert mss.codes_and_ins([anonymous, anonymous]) == ("34133-9,34133-9", "N")
    someone_else = dataclasses.replace(anonymous, patient_family="Autre")
    with pytest.raises(MessageError, match="one patient per message"):
        mss.codes_and_ins([anonymous, someone_else])


def test_a_message_with_an_xdm_archive() -> None:
    archive = _xdm(LETTER)
    msg = mss.compose(
        sender="dr.un@mss.enrs.test",
        to=["cardio@chu.example"],
        cc=["dr.deux@mss.enrs.test"],
        subject_line=mss.subject("Lettre de liaison", "Dupont", "Jean", date(1975, 11, 2)),
        body="Bonjour, ci-joint la lettre de liaison.",
        attachments=[Attachment("ordonnance.pdf", "application/pdf", PDF)],
        xdm=archive,
        in_reply_to="<a@chu.example>",
        references=["<0@chu.example>"],
        read_receipt=True,
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["X-MSS-NIL"] == mss.SOFTWARE_NIL
    assert (parsed["X-MSS-CODECDA"], parsed["X-MSS-INS"]) == ("34133-9", "O")
    assert parsed["Disposition-Notification-To"] == "dr.un@mss.enrs.test"
    assert parsed["References"] == "<0@chu.example> <a@chu.example>"
    assert parsed["Message-ID"].endswith("@mss.enrs.test>")
    files = {part.get_filename(): part.get_content() for part in parsed.iter_attachments()}
    assert files["ordonnance.pdf"] == PDF
    assert read_xdm(files[mss.XDM_NAME]).documents[0].content == LETTER


def test_without_cda_no_cda_headers_and_bad_cda_refused() -> None:
    plain = mss.compose(sender="a@b.example", to=["c@d.example"], subject_line="x", body="y",
                        xdm=xds.xdm_package(make_document()))  # fmt: skip
    assert plain["X-MSS-NIL"] and plain["X-MSS-CODECDA"] is None and plain["X-MSS-INS"] is None
    with pytest.raises(MessageError, match="does not parse"):
        mss.compose(sender="a@b.example", to=["c@d.example"], subject_line="x", body="y",
                    xdm=_xdm(b"<ClinicalDocument>"))  # fmt: skip
    with pytest.raises(MessageError, match="not a ZIP"):
        mss.compose(sender="a@b.example", to=["c@d.example"], subject_line="x", body="y",
                    xdm=b"not a zip")  # fmt: skip
    with pytest.raises(MessageError, match="at least one recipient"):
        mss.compose(sender="a@b.example", to=[], subject_line="x", body="y")


def test_read_a_composed_message_back() -> None:
    msg = mss.compose(
        sender="Dr Un <dr.un@mss.enrs.test>",
        to=["b@chu.example", "c@chu.example"],
        cc=["d@chu.example"],
        subject_line="XDM/1.0/DDM+Lettre DUPONT Jean 02/11/1975",
        body="Bonjour,\nci-joint la lettre.",
        attachments=[Attachment("ordonnance.pdf", "application/pdf", PDF)],
        xdm=_xdm(LETTER),
    )
    read = mss.read_message(msg.as_bytes())
    assert read.sender == "dr.un@mss.enrs.test"
    assert (read.to, read.cc) == (("b@chu.example", "c@chu.example"), ("d@chu.example",))
    assert read.subject == "XDM/1.0/DDM+Lettre DUPONT Jean 02/11/1975"
    assert read.text.startswith("Bonjour,\nci-joint")
    assert [a.filename for a in read.attachments] == ["ordonnance.pdf", mss.XDM_NAME]
    assert read.attachments[0].data == PDF
    assert read.xdm is not None and read.xdm.documents[0].content == LETTER


def test_read_refuses_malformed_messages() -> None:
    with pytest.raises(MessageError, match="From"):
        mss.read_message(b"To: a@b.example\r\nSubject: x\r\n\r\nhello\r\n")
    # a multipart without its boundary parameter: a parser defect
    broken = (
        b"From: a@b.example\r\nTo: c@d.example\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhello\r\n--x--\r\n"
    )
    with pytest.raises(MessageError, match="malformed MIME"):
        mss.read_message(broken)
    bad_zip = mss.compose(sender="a@b.example", to=["c@d.example"], subject_line="x", body="y")
    bad_zip.add_attachment(b"not a zip", maintype="application", subtype="zip",
                           filename=mss.XDM_NAME)  # fmt: skip
    with pytest.raises(MessageError, match=r"not a ZIP.*code 906"):
        mss.read_message(bad_zip.as_bytes())
    with pytest.raises(MessageError, match="not an e-mail address"):
        mss.read_message(b"From: a@b.example\r\nTo: nobody\r\n\r\nhello\r\n")


def test_compose_refuses_header_injection_and_bad_addresses() -> None:
    with pytest.raises(MessageError, match="line break"):
        mss.compose(sender="a@b.example", to=["c@d.example"], subject_line="x\r\nBcc: e@f.example",
                    body="y")  # fmt: skip
    with pytest.raises(MessageError, match="not an e-mail address"):
        mss.compose(sender="a@b.example", to=["nobody"], subject_line="x", body="y")
    with pytest.raises(MessageError, match="not an e-mail address"):
        mss.compose(sender="", to=["c@d.example"], subject_line="x", body="y")
