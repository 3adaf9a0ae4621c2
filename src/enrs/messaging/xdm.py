"""Reading an IHE XDM archive (ITI-32 "ZIP over e-mail", the ``IHE_XDM.ZIP`` of MSSanté
messages) that another vendor built, safely.

An archive holds ``README.TXT`` and ``INDEX.HTM`` at its root and, per submission set, a
folder ``IHE_XDM/<SUBSET>/`` (``SUBSET01``, ``SS000001``… — any name) with ``METADATA.XML``
(an ebRIM 3.0 ``SubmitObjectsRequest``; some senders wrap it in the SOAP envelope of a
``ProvideAndRegisterDocumentSetRequest``) and the documents its DocumentEntries name by their
``URI`` slot, relative to the folder. Names are compared case-insensitively (ISO 9660 media
write them upper case). :func:`build_xdm` builds one from the same metadata objects as the
DMP's ITI-41 (:class:`enrs.documents.xds.XdsDocument`); :func:`enrs.documents.xds.xdm_package`
is its one-document form.

The archive comes from outside, so nothing in it is trusted: :func:`read_xdm` refuses with an
:class:`XdmError` (MSSanté integration code ``906``) an archive that is not a ZIP, a member
whose name leaves the archive (``..``, absolute, a drive, a backslash), duplicated or
encrypted members, too many members, a member or a total over the size limits or compressed
beyond :data:`MAX_RATIO` (read with bounded reads, whatever the headers claim), a
METADATA.XML that does not parse (no DTD, entities or network), a document the metadata names
but the archive lacks, or whose size or SHA-1 differs from the metadata's.

A DocumentEntry whose ebRIM ``status`` is ``urn:oasis:names:tc:ebxml-regrep:StatusType:
Deprecated`` is read as the sender's request to delete the version it sent earlier with that
``XDSDocumentEntry.uniqueId`` (our reading of the standards: ITI-32 has no deletion of its
own; Deprecated is the status an XDS registry gives a withdrawn document, ITI-57). It needs no
document file: :attr:`XdmArchive.deletions` holds its metadata only, and a file it names is
not read (ignored). It must give its uniqueId.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from enrs.documents import xds

MAX_MEMBERS = 200
MAX_MEMBER_BYTES = 50 * 1024 * 1024
MAX_TOTAL_BYTES = 100 * 1024 * 1024
MAX_RATIO = 100  # uncompressed / compressed, for members over RATIO_FROM bytes
RATIO_FROM = 1024 * 1024
MAX_METADATA_BYTES = 5 * 1024 * 1024
_CHUNK = 64 * 1024
_METADATA = re.compile(r"^IHE_XDM/([^/]+)/METADATA\.XML$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


class XdmError(ValueError):
    """An archive that cannot be read; ``code`` is the MSSanté integration error code."""

    def __init__(self, message: str, code: str = "906") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class XdmCode:
    code: str
    scheme: str
    display: str


@dataclass(frozen=True)
class XdmEntry:
    """A DocumentEntry's metadata as the sender wrote it."""

    entry_uuid: str
    unique_id: str
    patient_id: str  # a CX: "value^^^&OID&ISO"
    source_patient_id: str
    title: str
    mime_type: str
    creation_time: str
    class_code: XdmCode | None
    type_code: XdmCode | None
    format_code: XdmCode | None
    confidentiality: tuple[XdmCode, ...]
    authors: tuple[str, ...]  # authorPerson XCNs
    uri: str
    size: int | None
    sha1: str | None
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    healthcare_facility_type: XdmCode | None = None
    practice_setting: XdmCode | None = None
    status: str = ""  # the ebRIM status attribute, when the sender wrote one

    @property
    def deprecated(self) -> bool:
        """Whether the entry asks to delete the version its uniqueId names (see the module)."""
        return self.status == xds.STATUS_DEPRECATED

    @property
    def patient(self) -> tuple[str, str] | None:
        """``(value, OID)`` of the patient identifier, when it reads as a CX."""
        return parse_cx(self.patient_id)


@dataclass(frozen=True)
class XdmSubmissionSet:
    unique_id: str
    source_id: str
    patient_id: str
    title: str
    submission_time: str
    authors: tuple[str, ...]


@dataclass(frozen=True)
class XdmDocument:
    name: str  # the member's path in the archive
    mime_type: str
    content: bytes
    metadata: XdmEntry


@dataclass(frozen=True)
class XdmArchive:
    submission_sets: tuple[XdmSubmissionSet, ...]
    documents: tuple[XdmDocument, ...]
    readme: str
    deletions: tuple[XdmEntry, ...] = ()  # Deprecated entries: versions to delete

    @property
    def submission_set(self) -> XdmSubmissionSet:
        return self.submission_sets[0]


def parse_cx(value: str) -> tuple[str, str] | None:
    """``(id, authority OID)`` of an HL7 v2 CX ``id^^^&OID&ISO``; None when it is not one."""
    parts = value.split("^")
    if len(parts) < 4 or not parts[0]:
        return None
    authority = parts[3].split("&")
    if len(authority) < 2 or not authority[1]:
        return None
    return parts[0], authority[1]


# --- the ZIP --------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise XdmError(f"the archive holds a member named {name!r}, outside the archive")
    if any(part in ("..", ".") for part in name.split("/")):
        raise XdmError(f"the archive holds a member named {name!r}, outside the archive")
    return name


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's files by upper-cased name, checked (names, count, encryption)."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise XdmError(f"the archive holds {len(infos)} members; at most {MAX_MEMBERS}")
    found: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _safe_name(info.filename)
        if info.flag_bits & 0x1:
            raise XdmError(f"the archive's member {name!r} is encrypted")
        if info.is_dir():
            continue
        key = name.upper()
        if key in found:
            raise XdmError(f"the archive holds {name!r} twice")
        found[key] = info
    return found


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_TOTAL_BYTES


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, limit: int) -> bytes:
    """The member's bytes, read in chunks and stopped at the limits whatever its header says."""
    cap = min(limit, budget.left)
    out = bytearray()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                out += chunk
                if len(out) > cap:
                    what = "the archive's total" if cap == budget.left else "a member's"
                    raise XdmError(
                        f"{info.filename!r}: {what} size exceeds the limit"
                        f" ({min(limit, MAX_TOTAL_BYTES)} bytes)"
                    )
                if len(out) > RATIO_FROM and len(out) > MAX_RATIO * max(info.compress_size, 1):
                    raise XdmError(f"{info.filename!r} is compressed beyond {MAX_RATIO}:1")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, XdmError):
            raise
        raise XdmError(f"{info.filename!r} does not decompress: {exc}") from None
    except NotImplementedError as exc:
        raise XdmError(f"{info.filename!r}: {exc}") from None
    budget.left -= len(out)
    return bytes(out)


# --- METADATA.XML ---------------------------------------------------------------------------


def _parser() -> Any:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _rim(tag: str) -> str:
    return f"{{{xds.RIM}}}{tag}"


def _slots(element: Any) -> dict[str, tuple[str, ...]]:
    slots: dict[str, tuple[str, ...]] = {}
    for slot in element.findall(_rim("Slot")):
        values = tuple((v.text or "").strip() for v in slot.iter(_rim("Value")))
        slots[slot.get("name", "")] = values
    return slots


def _localized(element: Any, tag: str) -> str:
    found = element.find(f"{_rim(tag)}/{_rim('LocalizedString')}")
    return "" if found is None else found.get("value", "")


def _external_id(element: Any, scheme: str) -> str:
    for ident in element.findall(_rim("ExternalIdentifier")):
        if ident.get("identificationScheme") == scheme:
            return str(ident.get("value", ""))
    return ""


def _classifications(element: Any, scheme: str) -> list[Any]:
    return [
        c
        for c in element.findall(_rim("Classification"))
        if c.get("classificationScheme") == scheme
    ]


def _code(element: Any, scheme: str) -> tuple[XdmCode, ...]:
    codes = []
    for c in _classifications(element, scheme):
        coding = _slots(c).get("codingScheme", ("",))
        codes.append(XdmCode(c.get("nodeRepresentation", ""), coding[0], _localized(c, "Name")))
    return tuple(codes)


def _first(codes: tuple[XdmCode, ...]) -> XdmCode | None:
    return codes[0] if codes else None


def _authors(element: Any, scheme: str) -> tuple[str, ...]:
    found: list[str] = []
    for c in _classifications(element, scheme):
        found.extend(v for v in _slots(c).get("authorPerson", ()) if v)
    return tuple(found)


def _uri(slots: dict[str, tuple[str, ...]]) -> str:
    """The ``URI`` slot: one value, or the long form split as ``1|…``, ``2|…``."""
    values = slots.get("URI", ())
    if len(values) == 1 and "|" not in values[0][:4]:
        return values[0]
    parts = []
    for value in values:
        number, bar, text = value.partition("|")
        if not bar or not number.isdigit():
            return values[0] if values else ""
        parts.append((int(number), text))
    return "".join(text for _, text in sorted(parts))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        raise XdmError(f"the metadata gives a size {value!r} that is not a number") from None


def _entry(element: Any) -> XdmEntry:
    slots = _slots(element)

    def slot(name: str) -> str:
        return slots.get(name, ("",))[0] if slots.get(name) else ""

    return XdmEntry(
        entry_uuid=element.get("id", ""),
        unique_id=_external_id(element, xds.DE_UNIQUE_ID),
        patient_id=_external_id(element, xds.DE_PATIENT_ID),
        source_patient_id=slot("sourcePatientId"),
        title=_localized(element, "Name"),
        mime_type=element.get("mimeType", ""),
        creation_time=slot("creationTime"),
        class_code=_first(_code(element, xds.DE_CLASS_CODE)),
        type_code=_first(_code(element, xds.DE_TYPE_CODE)),
        format_code=_first(_code(element, xds.DE_FORMAT_CODE)),
        confidentiality=_code(element, xds.DE_CONFIDENTIALITY_CODE),
        authors=_authors(element, xds.DE_AUTHOR),
        uri=_uri(slots),
        size=_int(slot("size")),
        sha1=slot("hash").lower() or None,
        slots=slots,
        healthcare_facility_type=_first(_code(element, xds.DE_HEALTHCARE_FACILITY_TYPE_CODE)),
        practice_setting=_first(_code(element, xds.DE_PRACTICE_SETTING_CODE)),
        status=element.get("status", "").strip(),
    )


def _submission_set(package: Any) -> XdmSubmissionSet:
    slots = _slots(package)
    return XdmSubmissionSet(
        unique_id=_external_id(package, xds.SS_UNIQUE_ID),
        source_id=_external_id(package, xds.SS_SOURCE_ID),
        patient_id=_external_id(package, xds.SS_PATIENT_ID),
        title=_localized(package, "Name"),
        submission_time=(slots.get("submissionTime") or ("",))[0],
        authors=_authors(package, xds.SS_AUTHOR),
    )


def _metadata(data: bytes, where: str) -> tuple[XdmSubmissionSet | None, list[XdmEntry]]:
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XdmError(f"{where} is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise XdmError(f"{where} declares a DTD; it is refused")
    request = root if root.tag == f"{{{xds.LCM}}}SubmitObjectsRequest" else None
    if request is None:
        request = next(root.iter(f"{{{xds.LCM}}}SubmitObjectsRequest"), None)
    if request is None:
        raise XdmError(f"{where} holds no ebRIM SubmitObjectsRequest")
    entries = [
        _entry(e)
        for e in request.iter(_rim("ExtrinsicObject"))
        if e.get("objectType") in (xds.DOCUMENT_ENTRY_STABLE, None)
    ]
    packages = list(request.iter(_rim("RegistryPackage")))
    submission = next(
        (_submission_set(p) for p in packages if _external_id(p, xds.SS_UNIQUE_ID)), None
    )
    return submission, entries


# --- the archive ----------------------------------------------------------------------------


def read_xdm(data: bytes) -> XdmArchive:
    """The submission sets and documents of the XDM archive ``data`` (see the module)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise XdmError(f"the IHE_XDM attachment is not a ZIP archive: {exc}") from None
    with archive:
        members = _members(archive)
        budget = _Budget()
        subsets = sorted(
            (match.group(0), match.group(1))
            for key in members
            if (match := _METADATA.match(members[key].filename))
        )
        if not subsets:
            raise XdmError("the archive has no IHE_XDM/<subset>/METADATA.XML")
        readme_info = members.get("README.TXT")
        readme = ""
        if readme_info is not None:
            readme = _read(archive, readme_info, budget, MAX_METADATA_BYTES).decode(
                "utf-8", "replace"
            )
        sets: list[XdmSubmissionSet] = []
        documents: list[XdmDocument] = []
        deletions: list[XdmEntry] = []
        for path, subset in subsets:
            info = members[path.upper()]
            submission, entries = _metadata(_read(archive, info, budget, MAX_METADATA_BYTES), path)
            if submission is not None:
                sets.append(submission)
            if not entries:
                raise XdmError(f"{path} names no document")
            for entry in entries:
                if entry.deprecated:  # a deletion: its file, if any, is not read
                    if not entry.unique_id:
                        raise XdmError(f"{path}: a Deprecated DocumentEntry has no uniqueId")
                    deletions.append(entry)
                else:
                    documents.append(_document(archive, members, budget, subset, entry))
    if not sets:
        raise XdmError("the archive's metadata has no submission set")
    return XdmArchive(tuple(sets), tuple(documents), readme, tuple(deletions))


def _document(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    budget: _Budget,
    subset: str,
    entry: XdmEntry,
) -> XdmDocument:
    if not entry.uri:
        raise XdmError(f"the document {entry.unique_id or entry.entry_uuid} has no URI slot")
    name = _safe_name(f"IHE_XDM/{subset}/{entry.uri}")
    info = members.get(name.upper())
    if info is None:
        raise XdmError(f"the metadata names {entry.uri!r}, which the archive lacks")
    content = _read(archive, info, budget, MAX_MEMBER_BYTES)
    if entry.size is not None and entry.size != len(content):
        raise XdmError(
            f"{info.filename!r} has {len(content)} bytes; the metadata says {entry.size}"
        )
    if entry.sha1 is not None and hashlib.sha1(content).hexdigest() != entry.sha1:  # noqa: S324
        raise XdmError(f"{info.filename!r} does not match the SHA-1 of the metadata")
    return XdmDocument(info.filename, entry.mime_type, content, entry)


# --- building -------------------------------------------------------------------------------

SUBSET = "IHE_XDM/SUBSET01"


@dataclass(frozen=True)
class XdmSubmission:
    """The SubmissionSet's own metadata; its sourceId, author, contentTypeCode and patient are
    those of the first document."""

    unique_id: str  # OID
    title: str
    submission_time: datetime


def _file_name(doc: xds.XdsDocument, number: int) -> str:
    return f"DOC{number:04d}.{xds.XDM_EXTENSIONS.get(doc.mime_type, 'BIN')}"


def _build_readme(
    names: Sequence[tuple[str, str]], submission: XdmSubmission, sender: str,
    organisation: str, software: str,
) -> bytes:  # fmt: skip
    lines = [
        "IHE XDM - Cross-Enterprise Document Media Interchange (ITI-32, ZIP over e-mail)",
        "",
        f"Sender: {sender}",
        f"Organisation: {organisation}",
        f"Software: {software}",
        f"Submission set: {submission.unique_id}, {xds.xds_time(submission.submission_time)} UTC",
        "",
        "Instructions: open INDEX.HTM in a web browser to list the documents; the XDS",
        "metadata of each document is in METADATA.XML, beside the documents.",
        "",
        "Contents:",
        "  README.TXT",
        "  INDEX.HTM",
        "  IHE_XDM/",
        "    SUBSET01/",
        "      METADATA.XML",
        *(f"      {name}  {title}" for name, title in names),
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _build_index(names: Sequence[tuple[str, str]], organisation: str) -> bytes:
    xhtml = "http://www.w3.org/1999/xhtml"
    html = etree.Element(f"{{{xhtml}}}html", nsmap={None: xhtml})
    head = etree.SubElement(html, f"{{{xhtml}}}head")
    etree.SubElement(head, f"{{{xhtml}}}title").text = "IHE XDM"
    body = etree.SubElement(html, f"{{{xhtml}}}body")
    etree.SubElement(body, f"{{{xhtml}}}h1").text = organisation
    items = etree.SubElement(body, f"{{{xhtml}}}ul")
    links = [("README.TXT", "README.TXT")]
    links += [(f"{SUBSET}/{name}", title) for name, title in names]
    for href, text in links:
        link = etree.SubElement(etree.SubElement(items, f"{{{xhtml}}}li"), f"{{{xhtml}}}a")
        link.set("href", href)
        link.text = text
    return bytes(etree.tostring(html, xml_declaration=True, encoding="UTF-8"))


def build_xdm(
    documents: Sequence[xds.XdsDocument],
    submission_set: XdmSubmission,
    *,
    sender: str,
    organisation: str,
    software: str,
) -> bytes:
    """An IHE XDM archive of ``documents`` (one patient): ``README.TXT`` (sender,
    organisation, software, instructions, tree), ``INDEX.HTM``, ``IHE_XDM/SUBSET01/METADATA.XML``
    (the ITI-41 ebRIM builders: a DocumentEntry per document with its ``URI``, ``size`` and
    ``hash`` slots, one HasMember each) and ``DOC0001.XML``, ``DOC0002.PDF``…

    Raises :class:`enrs.documents.xds.InvalidXdsDocument` (nothing built) for metadata that
    cannot be emitted or documents of several patients; the archive is read back by
    :func:`read_xdm` with the same limits a receiver applies, so what is sent can be read."""
    if not documents:
        raise ValueError("an XDM archive holds at least one document")
    names = [_file_name(doc, n) for n, doc in enumerate(documents, start=1)]
    submission = replace(
        documents[0],
        submission_unique_id=submission_set.unique_id,
        title=submission_set.title,
        submission_time=submission_set.submission_time,
    )
    metadata = etree.tostring(
        xds.submit_objects_request_of_set(submission, documents, names),
        xml_declaration=True,
        encoding="UTF-8",
    )
    listed = [(name, doc.title) for name, doc in zip(names, documents, strict=True)]
    stamp = submission_set.submission_time.astimezone(UTC).timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        members = [
            ("README.TXT", _build_readme(listed, submission_set, sender, organisation, software)),
            ("INDEX.HTM", _build_index(listed, organisation)),
            (f"{SUBSET}/METADATA.XML", bytes(metadata)),
            *(
                (f"{SUBSET}/{name}", doc.content)
                for name, doc in zip(names, documents, strict=True)
            ),
        ]
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    built = buffer.getvalue()
    read_xdm(built)  # what a receiver would refuse is not sent
    return built
