"""Reading an HL7 CDA R2 document as the French CI-SIS profiles it ("Structuration minimale
des documents de santé"): the header a repository compares with the metadata a facility
submitted, and the body, either a level 1 document (a PDF or text in a ``nonXMLBody``) or a
level 3 one (a ``structuredBody`` of sections; :mod:`enrs.documents.cda_html` renders it).

Lenient in, strict out: what the profile makes optional may be absent (the field is then
``None``), a malformed optional value is dropped and named in ``CdaDocument.warnings``; a
missing or malformed required element (``id``, ``code``, ``effectiveTime``,
``confidentialityCode``, ``recordTarget/patientRole/id``, an ``author``, the body) is a
:class:`CdaError` whose message names it.

The XML is read with entity expansion, DTD loading and network access off (``lxml`` >= 6;
``huge_tree`` off, so libxml2's limits on depth and on a text node's size, 10 MB, hold); a
DOCTYPE that declares entities or names an external DTD is refused, so no entity is ever
expanded and no file or URL is read.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from lxml import etree

from enrs.kit.errors import PayloadTooLarge, Unprocessable

HL7_NS = "urn:hl7-org:v3"
_NS = {"h": HL7_NS}

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIA_TEST_OID = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIA_TEST_OID})
RPPS_OID = "1.2.250.1.71.4.2.1"  # idNatPs: "8" + RPPS (or "0" + ADELI)
STRUCTURE_OID = "1.2.250.1.71.4.2.2"  # idNatSt: "1" + FINESS, "3" + SIRET …
CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"

Representation = Literal["nonXMLBody", "structuredBody"]


class CdaError(Unprocessable):
    """The document is not a CDA R2 document this platform can read; the message says why."""

    issue_code = "invalid"


@dataclass(frozen=True)
class Code:
    """A coded value (HL7 CE/CV): ``code`` in the code system ``system_oid``."""

    code: str
    system_oid: str
    display: str | None = None


@dataclass(frozen=True)
class InstanceId:
    """An HL7 II: ``root`` (an OID or UUID) alone, or with an ``extension`` inside it."""

    root: str
    extension: str | None = None

    @property
    def unique_id(self) -> str:
        """The XDS uniqueId this id makes: ``root``, or ``root^extension``."""
        return self.root + (f"^{self.extension}" if self.extension else "")


@dataclass(frozen=True)
class CdaAuthor:
    """One ``author/assignedAuthor`` (a person, or a device when ``family`` is None)."""

    ids: tuple[InstanceId, ...]
    family: str | None
    given: str | None
    time: datetime | None
    organization_ids: tuple[InstanceId, ...]
    organization_name: str | None
    specialty: Code | None  # assignedAuthor/code: profession or specialty (TRE_G15, TRE_R38…)

    @property
    def rpps(self) -> str | None:
        """The RPPS number of an idNatPs ``8`` + RPPS identifier, if the author has one."""
        for ident in self.ids:
            if ident.root == RPPS_OID and ident.extension and ident.extension[0] == "8":
                return ident.extension[1:]
        return None


@dataclass(frozen=True)
class CdaDocument:
    """What the header of a CDA R2 document says, and its body when it is not structured."""

    document_id: InstanceId
    set_id: InstanceId | None
    version: int | None
    type_code: Code
    title: str | None
    effective_time: datetime  # aware when the CDA gives an offset
    confidentiality: Code
    language: str | None
    patient_ids: tuple[InstanceId, ...]
    patient_family: str | None  # the birth name (qualifier BR) when the CDA gives one
    patient_given: tuple[str, ...]  # the birth certificate's given names
    patient_birth_date: date | None
    patient_gender: str | None  # administrativeGenderCode: M, F or U
    authors: tuple[CdaAuthor, ...]
    custodian_ids: tuple[InstanceId, ...]
    service_start: datetime | None  # the main act's documentationOf/serviceEvent/effectiveTime
    service_stop: datetime | None
    practice_setting: Code | None  # standardIndustryClassCode of the main act's performer
    facility_type: Code | None  # componentOf/encompassingEncounter/location/healthCareFacility
    body_kind: Representation
    body_media_type: str | None
    body: bytes | None  # a nonXMLBody's content, decoded
    template_ids: tuple[str, ...] = field(default=())  # ClinicalDocument/templateId@root
    # relatedDocument[@typeCode=RPLC]/parentDocument/id: the version this one replaces
    replaces: InstanceId | None = None
    warnings: tuple[str, ...] = field(default=())  # what was tolerated, for the submitter

    @property
    def ins(self) -> InstanceId | None:
        """The patient's INS (INS-NIR or INS-NIA, or their test roots), if the CDA gives it."""
        return next((i for i in self.patient_ids if i.root in INS_OIDS and i.extension), None)


# --- reading ------------------------------------------------------------------------------


def parse_cda(data: bytes, *, max_bytes: int | None = None) -> CdaDocument:
    """Read a CDA R2 document (CI-SIS level 1 or 3).

    Raises :class:`CdaError` (422) when it does not parse, is not a ``ClinicalDocument`` of
    the ``urn:hl7-org:v3`` namespace, declares entities, lacks a required element or holds a
    ``nonXMLBody`` that does not decode; :class:`PayloadTooLarge` (413) past ``max_bytes``.
    """
    return parse_cda_tree(data, max_bytes=max_bytes)[0]


def parse_cda_tree(data: bytes, *, max_bytes: int | None = None) -> tuple[CdaDocument, Any]:
    """:func:`parse_cda`, with the ``ClinicalDocument`` element (lxml) for a renderer."""
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLarge(f"the CDA has {len(data)} bytes; at most {max_bytes} are accepted")
    root = _parse_xml(data)
    return _Header(root).document(), root


_MAX_TEXT = 10_000_000  # libxml2's XML_MAX_TEXT_LENGTH without huge_tree: a PDF of ~7.5 MB


def _parser() -> Any:
    # One parser per call: an lxml parser is not shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        dtd_validation=False,
        load_dtd=False,
    )


def _parse_xml(data: bytes) -> Any:
    if not data.strip():
        raise CdaError("the CDA does not parse: the document is empty")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        reason = exc.msg
        if "Text node too long" in reason:
            reason = f"a text node is longer than {_MAX_TEXT:,} characters (a base64 body included)"
        raise CdaError(f"the CDA does not parse: line {exc.lineno}: {reason}") from None
    info = root.getroottree().docinfo
    dtd = info.internalDTD
    if dtd is not None and any(True for _ in dtd.entities()):
        raise CdaError("the CDA's DOCTYPE declares entities: refused")
    if info.system_url or info.public_id:
        raise CdaError("the CDA's DOCTYPE names an external DTD: refused")
    if any(True for _ in root.iter(etree.Entity)):
        raise CdaError("the CDA uses an entity reference: refused")
    if root.tag != f"{{{HL7_NS}}}ClinicalDocument":
        qname = etree.QName(root)
        if qname.localname == "ClinicalDocument":
            where = (
                f"in the namespace {qname.namespace!r}" if qname.namespace else "in no namespace"
            )
            raise CdaError(
                f"not a CDA R2 ClinicalDocument: its root is {where}, {HL7_NS} is required"
            )
        where = f"{{{qname.namespace}}}{qname.localname}" if qname.namespace else qname.localname
        raise CdaError(f"not a CDA R2 ClinicalDocument (the root element is {where})")
    return root


# --- values -------------------------------------------------------------------------------

_TS = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})(?P<d>\d{2})"
    r"(?:(?P<h>\d{2})(?:(?P<mi>\d{2})(?:(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?)?)?)?"
    r"(?P<z>[+-]\d{4})?"
)


class TimestampError(ValueError):
    """An HL7 TS that is malformed, or coarser than a day."""


def parse_ts(value: str) -> datetime:
    """An HL7 TS ``YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ]`` as a datetime, aware when it has an
    offset. Raises :class:`TimestampError` for anything else (a year or month is too coarse)."""
    text = value.strip()
    match = _TS.fullmatch(text)
    if match is None:
        raise TimestampError(f"{value!r} is not an HL7 TS to the day at least")
    part = match.groupdict()
    tz: timezone | None = None
    if part["z"]:
        hours, minutes = int(part["z"][1:3]), int(part["z"][3:5])
        if hours > 14 or minutes > 59:
            raise TimestampError(f"{value!r} has an impossible offset")
        sign = -1 if part["z"][0] == "-" else 1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return datetime(
            int(part["y"]),
            int(part["mo"]),
            int(part["d"]),
            int(part["h"] or 0),
            int(part["mi"] or 0),
            int(part["s"] or 0),
            int((part["f"] or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        raise TimestampError(f"{value!r} is not a date") from None


def _attr(el: Any, name: str) -> str | None:
    if el is None:
        return None
    value = el.get(name)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _text(el: Any) -> str | None:
    if el is None:
        return None
    text = " ".join("".join(el.itertext()).split())
    return text or None


def _present(el: Any) -> bool:
    """The element exists and is not a null (``nullFlavor``)."""
    return el is not None and el.get("nullFlavor") is None


_ROOT: Any = object()  # "from the document's root", as opposed to "from an absent element"


_REPLACED_PARENT = "h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id"


class _Header:
    """Reads the header of one ``ClinicalDocument``, gathering what it tolerated."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.warnings: list[str] = []

    def find(self, path: str, el: Any = _ROOT) -> Any:
        """The first match of ``path`` under ``el`` (the root by default); None under None."""
        base = self.root if el is _ROOT else el
        return None if base is None else base.find(path, _NS)

    def findall(self, path: str, el: Any = _ROOT) -> list[Any]:
        base = self.root if el is _ROOT else el
        return [] if base is None else list(base.findall(path, _NS))

    def ids(self, el: Any, path: str) -> tuple[InstanceId, ...]:
        found = []
        for ident in self.findall(path, el):
            root = _attr(ident, "root")
            if root is None:
                if ident.get("nullFlavor") is None:
                    self.warnings.append(f"an id without root in {self.where(ident)} is ignored")
                continue
            found.append(InstanceId(root, _attr(ident, "extension")))
        return tuple(found)

    def code(self, el: Any, *, default_system: str | None = None) -> Code | None:
        if not _present(el):
            return None
        value = _attr(el, "code")
        system = _attr(el, "codeSystem") or default_system
        if value is None or system is None:
            if value is not None:
                self.warnings.append(f"{self.where(el)} {value} has no codeSystem: ignored")
            return None
        return Code(value, system, _attr(el, "displayName"))

    def ts(self, el: Any) -> datetime | None:
        """An optional timestamp: a malformed one is dropped, with a warning."""
        value = _attr(el, "value") if _present(el) else None
        if value is None:
            return None
        try:
            return parse_ts(value)
        except TimestampError as exc:
            self.warnings.append(f"{self.where(el)}: {exc}: ignored")
            return None

    def where(self, el: Any) -> str:
        names = []
        while el is not None and el is not self.root:
            names.append(etree.QName(el).localname)
            el = el.getparent()
        return "/".join(reversed(names)) or "ClinicalDocument"

    # -- the parts ---------------------------------------------------------------------

    def document(self) -> CdaDocument:
        ids = self.ids(self.root, "h:id")
        if not ids:
            raise CdaError("the CDA has no id (ClinicalDocument/id@root)")
        type_code = self.code(self.find("h:code"))
        if type_code is None:
            raise CdaError("the CDA has no code (ClinicalDocument/code@code and @codeSystem)")
        confidentiality = self.code(
            self.find("h:confidentialityCode"), default_system=CONFIDENTIALITY_OID
        )
        if confidentiality is None:
            raise CdaError("the CDA has no confidentialityCode")
        set_ids = self.ids(self.root, "h:setId")
        patient = self.patient()
        service_start, service_stop, practice_setting = self.main_act()
        body_kind, media_type, body = self.body()
        return CdaDocument(
            document_id=ids[0],
            set_id=set_ids[0] if set_ids else None,
            version=self.version(),
            type_code=type_code,
            title=_text(self.find("h:title")),
            effective_time=self.effective_time(),
            confidentiality=confidentiality,
            language=_attr(self.find("h:languageCode"), "code"),
            patient_ids=patient.ids,
            patient_family=patient.family,
            patient_given=patient.given,
            patient_birth_date=patient.birth_date,
            patient_gender=patient.gender,
            authors=self.authors(),
            custodian_ids=self.ids(
                self.root,
                "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id",
            ),
            service_start=service_start,
            service_stop=service_stop,
            practice_setting=practice_setting,
            facility_type=self.code(
                self.find(
                    "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code"
                )
            ),
            template_ids=tuple(
                root for t in self.findall("h:templateId") if (root := _attr(t, "root"))
            ),
            body_kind=body_kind,
            body_media_type=media_type,
            body=body,
            replaces=next(iter(self.ids(self.root, _REPLACED_PARENT)), None),
            warnings=tuple(self.warnings),
        )

    def effective_time(self) -> datetime:
        value = _attr(self.find("h:effectiveTime"), "value")
        if value is None:
            raise CdaError("the CDA has no effectiveTime@value")
        try:
            return parse_ts(value)
        except TimestampError as exc:
            raise CdaError(f"the CDA's effectiveTime: {exc}") from None

    def version(self) -> int | None:
        value = _attr(self.find("h:versionNumber"), "value")
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()):
            self.warnings.append(f"versionNumber {value!r} is not an integer: ignored")
            return None
        return int(value)

    def patient(self) -> _Patient:
        targets = [t for t in self.findall("h:recordTarget") if _present(t)]
        if len(targets) > 1:
            raise CdaError(f"the CDA has {len(targets)} recordTarget patients; one is expected")
        role = self.find("h:patientRole", targets[0]) if targets else None
        ids = self.ids(role, "h:id")
        if not ids:
            raise CdaError("the CDA has no recordTarget patient id (recordTarget/patientRole/id)")
        person = self.find("h:patient", role)
        if person is None:
            return _Patient(ids, None, (), None, None)
        birth = self.find("h:birthTime", person)
        birth_date = None
        birth_value = _attr(birth, "value") if _present(birth) else None
        if birth_value is not None:
            try:
                birth_date = parse_ts(birth_value).date()
            except TimestampError as exc:
                self.warnings.append(f"recordTarget birthTime: {exc}: ignored")
        family, given = _birth_name(self.findall("h:name", person))
        gender = _attr(self.find("h:administrativeGenderCode", person), "code")
        return _Patient(ids, family, given, birth_date, gender)

    def authors(self) -> tuple[CdaAuthor, ...]:
        found = []
        for author in self.findall("h:author"):
            assigned = self.find("h:assignedAuthor", author)
            if not _present(author) or not _present(assigned):
                self.warnings.append("an author without assignedAuthor is ignored")
                continue
            family, given = _person_name(self.find("h:assignedPerson/h:name", assigned))
            organization = self.find("h:representedOrganization", assigned)
            found.append(
                CdaAuthor(
                    ids=self.ids(assigned, "h:id"),
                    family=family,
                    given=given,
                    time=self.ts(self.find("h:time", author)),
                    organization_ids=self.ids(organization, "h:id"),
                    organization_name=_text(self.find("h:name", organization)),
                    specialty=self.code(self.find("h:code", assigned)),
                )
            )
        if not found:
            raise CdaError("the CDA has no author (author/assignedAuthor)")
        return tuple(found)

    def main_act(self) -> tuple[datetime | None, datetime | None, Code | None]:
        """The main act (CI-SIS: the first ``documentationOf/serviceEvent``, the one with a
        performer): its effective time and its performer's practice setting. Older
        documents carried the practice setting on the author's organization: read there
        when the main act has none."""
        events = [e for e in self.findall("h:documentationOf/h:serviceEvent") if _present(e)]
        main = next((e for e in events if self.find("h:performer", e) is not None), None)
        if main is None and events:
            main = events[0]
        start = stop = None
        setting = None
        if main is not None:
            when = self.find("h:effectiveTime", main)
            if _present(when) and _attr(when, "value") is not None:
                start = stop = self.ts(when)
            elif when is not None:
                start = self.ts(self.find("h:low", when))
                stop = self.ts(self.find("h:high", when))
            setting = self.code(
                self.find(
                    "h:performer/h:assignedEntity/h:representedOrganization"
                    "/h:standardIndustryClassCode",
                    main,
                )
            )
        if setting is None:
            setting = self.code(
                self.find(
                    "h:author/h:assignedAuthor/h:representedOrganization"
                    "/h:standardIndustryClassCode"
                )
            )
            if setting is not None:
                self.warnings.append(
                    "the practice setting is read from the author's organization: the main "
                    "act's performer has none"
                )
        return start, stop, setting

    def body(self) -> tuple[Representation, str | None, bytes | None]:
        component = self.find("h:component")
        if self.find("h:structuredBody", component) is not None:
            return "structuredBody", None, None
        text = self.find("h:nonXMLBody/h:text", component)
        if text is None:
            raise CdaError("the CDA has no body (component/nonXMLBody/text or structuredBody)")
        media_type = _attr(text, "mediaType") or "text/plain"
        if _attr(text, "compression"):
            raise CdaError(
                f"the nonXMLBody is compressed ({_attr(text, 'compression')}): not supported"
            )
        reference = _attr(self.find("h:reference", text), "value")
        if reference is not None:
            self.warnings.append("the nonXMLBody refers to a content outside the CDA: not read")
            return "nonXMLBody", media_type, None
        raw = "".join(text.itertext())
        if (_attr(text, "representation") or "TXT") == "B64":
            content, repaired = _b64(raw)
            if repaired:
                self.warnings.append("the nonXMLBody's base64 lacked its final padding: added")
        else:
            content = raw.strip().encode("utf-8")
        if not content:
            raise CdaError("the nonXMLBody text is empty")
        if media_type == "application/pdf" and not content.startswith(b"%PDF-"):
            self.warnings.append("the nonXMLBody is declared application/pdf but is no PDF")
        return "nonXMLBody", media_type, content


@dataclass(frozen=True)
class _Patient:
    ids: tuple[InstanceId, ...]
    family: str | None
    given: tuple[str, ...]
    birth_date: date | None
    gender: str | None


def _qualified(parts: list[Any], qualifier: str | None) -> Iterator[str]:
    for part in parts:
        text = _text(part)
        if text is not None and _attr(part, "qualifier") == qualifier:
            yield text


def _birth_name(names: list[Any]) -> tuple[str | None, tuple[str, ...]]:
    """The patient's birth name and given names. CI-SIS (INS) writes one ``name`` whose
    ``family qualifier="BR"`` is the birth name, whose unqualified ``given`` holds the birth
    certificate's given names, ``given qualifier="BR"`` the first of them, and ``CL`` the
    names in use; other documents write plain ``family`` and ``given``."""
    families: list[Any] = []
    givens: list[Any] = []
    for name in names:
        families += name.findall("h:family", _NS)
        givens += name.findall("h:given", _NS)
    family = next(_qualified(families, "BR"), None) or next(_qualified(families, None), None)
    if family is None:
        family = next((t for t in (_text(f) for f in families) if t), None)
    given = tuple(_qualified(givens, None)) or tuple(_qualified(givens, "BR"))
    if not given:
        given = tuple(t for t in (_text(g) for g in givens) if t)
    return family, given


def _person_name(name: Any) -> tuple[str | None, str | None]:
    """A professional's family name and given names (joined) from an HL7 PN."""
    if name is None:
        return None, None
    family = next((t for t in (_text(f) for f in name.findall("h:family", _NS)) if t), None)
    givens = [t for t in (_text(g) for g in name.findall("h:given", _NS)) if t]
    return family, " ".join(givens) or None


def _b64(raw: str) -> tuple[bytes, bool]:
    """Base64 decoded, whitespace ignored; a missing final padding (a frequent slip) is
    repaired, and the second value says so."""
    compact = "".join(raw.split())
    repaired = "=" not in compact and len(compact) % 4 in (2, 3)
    if repaired:
        compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True), repaired
    except (binascii.Error, ValueError):
        raise CdaError("the nonXMLBody text is not valid base64") from None
