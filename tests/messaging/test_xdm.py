"""Reading IHE XDM archives (issue 14): ours and another vendor's (SOAP-wrapped metadata, an
``SS000001`` folder, upper-case names, a split URI) read back with their metadata; every
hostile or broken archive refused with a clear reason and the MSSanté code 906, whatever its
headers claim."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from enrs.documents import xds
from enrs.messaging import xdm
from enrs.messaging.xdm import XdmError, read_xdm
from tests.documents.test_dmp_adapter import PDF, make_document


def _zip(*members: tuple[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def _metadata(doc: xds.XdsDocument, uri: str, *, soap: bool = False) -> bytes:
    request = xds.submit_objects_request(doc, uri=uri)
    if soap:
        envelope = etree.Element(f"{{{xds.SOAP}}}Envelope", nsmap={"soap": xds.SOAP})
        body = etree.SubElement(envelope, f"{{{xds.SOAP}}}Body")
        provide = etree.SubElement(body, f"{{{xds.XDSB}}}ProvideAndRegisterDocumentSetRequest")
        provide.append(request)
        request = envelope
    return bytes(etree.tostring(request, xml_declaration=True, encoding="UTF-8"))


def _refused(data: bytes, words: str) -> None:
    with pytest.raises(XdmError) as refused:
        read_xdm(data)
    assert words in refused.value.message and refused.value.code == "906", refused.value.message


def test_our_archive_read_back() -> None:
    doc = make_document()
    archive = read_xdm(xds.xdm_package(doc))
    [document] = archive.documents
    assert document.content == PDF and document.mime_type == "application/pdf"
    assert document.name == "IHE_XDM/SUBSET01/DOC0001.PDF"
    entry = document.metadata
    assert entry.unique_id == doc.unique_id and entry.entry_uuid == doc.entry_uuid
    assert entry.patient == (doc.patient_ins, doc.patient_ins_oid)
    assert entry.type_code is not None and entry.type_code.code == doc.type_code.code
    assert entry.title == doc.title and entry.size == len(PDF)
    assert entry.authors and entry.authors[0].startswith(f"8{doc.author.rpps}")
    assert archive.submission_set.unique_id == doc.submission_unique_id
    assert doc.submission_unique_id in archive.readme


def test_another_vendors_archive() -> None:
    doc = make_document()
    metadata = _metadata(doc, "DOC0001.PDF", soap=True)
    # The URI in the split long form ("1|…", "2|…").
    split = b"<rim:Value>2|01.PDF</rim:Value><rim:Value>1|DOC00</rim:Value>"
    metadata = metadata.replace(b"<rim:Value>DOC0001.PDF</rim:Value>", split)
    assert split in metadata
    data = _zip(
        ("README.TXT", b"Envoye par un autre editeur"),
        ("ihe_xdm/SS000001/metadata.xml", metadata),
        ("IHE_XDM/SS000001/DOC0001.PDF", PDF),
    )
    [document] = read_xdm(data).documents
    assert document.content == PDF and document.name == "IHE_XDM/SS000001/DOC0001.PDF"


def test_broken_and_hostile_archives_are_refused() -> None:
    doc = make_document()
    good = _metadata(doc, "DOC0001.PDF")
    _refused(b"PK\x03\x04 not really", "not a ZIP archive")
    _refused(_zip(("README.TXT", b"x")), "no IHE_XDM/<subset>/METADATA.XML")
    _refused(_zip(("IHE_XDM/S/METADATA.XML", b"<a><b></a>")), "not well-formed")
    entities = b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'
    _refused(_zip(("IHE_XDM/S/METADATA.XML", entities)), "DTD")
    _refused(_zip(("IHE_XDM/S/METADATA.XML", b"<a/>")), "no ebRIM SubmitObjectsRequest")
    _refused(_zip(("IHE_XDM/S/METADATA.XML", good)), "which the archive lacks")
    for name in ("../evil.txt", "/etc/passwd", "IHE_XDM\\S\\X", "C:/x", "IHE_XDM/../../x"):
        _refused(_zip(("IHE_XDM/S/METADATA.XML", good), (name, b"x")), "outside the archive")
    twice = _zip(("IHE_XDM/S/METADATA.XML", good), ("IHE_XDM/S/DOC0001.PDF", PDF),
                 ("ihe_xdm/s/doc0001.pdf", PDF))  # fmt: skip
    _refused(twice, "twice")
    _refused(_zip(("IHE_XDM/S/METADATA.XML", good), ("IHE_XDM/S/DOC0001.PDF", PDF + b"x")),
             "the metadata says")  # fmt: skip
    other = PDF.replace(b"1 0 obj", b"2 0 obj")
    _refused(_zip(("IHE_XDM/S/METADATA.XML", good), ("IHE_XDM/S/DOC0001.PDF", other)), "SHA-1")
    many = [(f"F{i}.TXT", b"") for i in range(xdm.MAX_MEMBERS + 1)]
    _refused(_zip(*many), "members")


def test_a_zip_bomb_is_stopped_whatever_its_headers_say() -> None:
    doc = make_document(content=b"\x00" * (2 * 1024 * 1024))
    bomb = xds.xdm_package(doc)  # 2 MB of zeros deflate over 1000:1
    _refused(bomb, "compressed beyond")
    # A header that lies about the size: the read stops at the limit all the same.
    big = b"%PDF" + bytes(range(256)) * 4096 * 60  # 60 MB, incompressible enough
    data = _zip(("IHE_XDM/S/METADATA.XML", _metadata(make_document(content=big), "DOC0001.PDF")),
                ("IHE_XDM/S/DOC0001.PDF", big), method=zipfile.ZIP_STORED)  # fmt: skip
    _refused(data, "exceeds the limit")


def test_an_encrypted_member_is_refused() -> None:
    data = bytearray(_zip(("IHE_XDM/S/METADATA.XML", b"<a/>"), method=zipfile.ZIP_STORED))
    # Set the "encrypted" flag in the local and central headers.
    for signature in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(signature)
        flag_at = at + (6 if signature == b"PK\x03\x04" else 8)
        data[flag_at] |= 0x1
    _refused(bytes(data), "encrypted")


def test_sizes_hash_unchecked_when_absent() -> None:
    doc = make_document()
    metadata = _metadata(doc, "DOC0001.PDF")
    tree = etree.fromstring(metadata)
    for slot in tree.iter(f"{{{xds.RIM}}}Slot"):
        if slot.get("name") in ("size", "hash"):
            slot.getparent().remove(slot)
    data = _zip(("IHE_XDM/S/METADATA.XML", etree.tostring(tree)), ("IHE_XDM/S/DOC0001.PDF", PDF))
    [document] = read_xdm(data).documents
    assert document.metadata.size is None and document.metadata.sha1 is None
    assert document.content == PDF


def _submission() -> xdm.XdmSubmission:
    return xdm.XdmSubmission(
        "1.2.250.1.999.1.1.9.77", "Envoi MSSanté", datetime(2026, 2, 3, tzinfo=UTC)
    )


def test_build_xdm_of_several_documents_reads_back() -> None:
    cda = (Path(__file__).parents[1] / "documents" / "data" / "n3_structured.xml").read_bytes()
    letter = make_document(content=cda, number=1, mime_type="text/xml", title="Lettre")
    pdf = make_document(number=2)
    data = xdm.build_xdm([letter, pdf], _submission(), sender="dr.un@mss.enrs.test",
                         organisation="CH de Brive", software="ENRS 1.0")  # fmt: skip
    archive = read_xdm(data)
    assert [d.name for d in archive.documents] == [
        "IHE_XDM/SUBSET01/DOC0001.XML",
        "IHE_XDM/SUBSET01/DOC0002.PDF",
    ]
    assert [d.content for d in archive.documents] == [cda, PDF]
    assert [d.metadata.entry_uuid for d in archive.documents] == [letter.entry_uuid, pdf.entry_uuid]
    assert archive.documents[0].metadata.sha1 == letter.sha1_hex
    assert archive.documents[1].metadata.uri == "DOC0002.PDF"
    assert archive.submission_set.unique_id == "1.2.250.1.999.1.1.9.77"
    assert archive.submission_set.title == "Envoi MSSanté"
    for words in ("dr.un@mss.enrs.test", "CH de Brive", "ENRS 1.0", "DOC0002.PDF", "INDEX.HTM"):
        assert words in archive.readme
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        index = z.read("INDEX.HTM")
        metadata = etree.fromstring(z.read("IHE_XDM/SUBSET01/METADATA.XML"))
    assert b'href="IHE_XDM/SUBSET01/DOC0002.PDF"' in index and b'href="README.TXT"' in index
    members = metadata.findall(f".//{{{xds.RIM}}}Association")
    assert sorted(a.get("targetObject") for a in members) == sorted(
        [letter.entry_uuid, pdf.entry_uuid]
    )


def test_build_xdm_refuses_two_patients_and_bad_metadata() -> None:
    other = make_document(number=2, patient_ins="2850763123456")
    with pytest.raises(xds.InvalidXdsDocument, match="several patients"):
        xdm.build_xdm([make_document(), other], _submission(), sender="a@b.example",
                      organisation="o", software="s")  # fmt: skip
    with pytest.raises(xds.InvalidXdsDocument):
        xdm.build_xdm([make_document(number=2, entry_uuid="not-a-uuid")], _submission(),
                      sender="a@b.example", organisation="o", software="s")  # fmt: skip
    with pytest.raises(ValueError, match="at least one document"):
        xdm.build_xdm([], _submission(), sender="a@b.example", organisation="o", software="s")


def test_a_deprecated_entry_is_a_deletion_without_a_file() -> None:
    doc = make_document()
    deprecated = _metadata(doc, "DOC0001.PDF").replace(
        b"<rim:ExtrinsicObject ", f'<rim:ExtrinsicObject status="{xds.STATUS_DEPRECATED}" '.encode()
    )
    archive = read_xdm(_zip(("IHE_XDM/SUBSET01/METADATA.XML", deprecated)))  # no DOC0001.PDF
    assert archive.documents == ()
    [deletion] = archive.deletions
    assert deletion.deprecated and deletion.unique_id == doc.unique_id
    assert deletion.patient == (doc.patient_ins, doc.patient_ins_oid)
    nameless = deprecated.replace(f'value="{doc.unique_id}"'.encode(), b'value=""')
    _refused(_zip(("IHE_XDM/SUBSET01/METADATA.XML", nameless)), "Deprecated DocumentEntry")
