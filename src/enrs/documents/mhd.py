"""Reading an IHE MHD ITI-65 *Provide Document Bundle* (as PDSm profiles it for France) into
what the repository stores, checking everything that can be checked without the database:
the Bundle's shape, each ``DocumentReference``'s metadata codes against the French value
sets, each ``Binary`` against its ``contentType``, size and SHA-1 hash, and a CDA document's
header against the submitted metadata (a mismatch is an error, never a silent choice).

Errors are :class:`enrs.kit.errors.EnrsError` subclasses whose message names the entry and
the element (``entry[2] DocumentReference.content[0].attachment.hash: …``): the endpoint
answers them as an OperationOutcome and nothing of the Bundle is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from enrs.documents import cda
from enrs.documents.terminology import Binding, Concept, Terminology
from enrs.kit.errors import PayloadTooLarge, Unprocessable

RPPS_OID = "1.2.250.1.71.4.2.1"  # idNatPs: "8" + RPPS
STRUCTURE_OID = "1.2.250.1.71.4.2.2"  # idNatSt: "1" + FINESS
SUBMISSION_SET_CODE = "submissionset"
# The DMP's visibility codes (JDV_J08, code system 1.2.250.1.213.1.1.4.13), given in
# securityLabel beside the confidentiality level.
VISIBILITY_CODES = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"})
# Given at filing, the patient's (and legal representatives') invisibility is only ever lifted
# afterwards, never set again (the DMP's rule: what the patient may have read stays readable).
ONLY_LIFTED = frozenset({"INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"})


def check_visibility(codes: frozenset[str], where: str) -> None:
    """The DMP refuses a document both masked to professionals and invisible to the patient
    (no one but its author would read it): refused here, naming both codes."""
    if {"MASQUE_PS", "INVISIBLE_PATIENT"} <= codes:
        raise InvalidSubmission(
            f"{where}: MASQUE_PS and INVISIBLE_PATIENT together: a document is not both masked"
            " to professionals and invisible to the patient"
        )


def check_visibility_change(before: frozenset[str], after: frozenset[str], where: str) -> None:
    """A correction may lift the patient's or the legal representatives' invisibility, never
    set it on a document already visible to them."""
    if added := sorted((after - before) & ONLY_LIFTED):
        raise InvalidSubmission(
            f"{where}: {', '.join(added)} cannot be added: a document visible to the patient"
            " (or their legal representatives) stays visible"
        )


ACCEPTED_TYPES = frozenset(
    {
        "application/pdf",
        "text/xml",
        "application/xml",
        "application/hl7-v3+xml",
        "text/plain",
        "image/jpeg",
        "image/png",
        "image/tiff",
    }
)
CDA_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml"})


class InvalidSubmission(Unprocessable):
    """The Bundle breaks a rule of ITI-65 or of the French metadata."""

    issue_code = "invalid"


@dataclass
class ProvidedDocument:
    """One DocumentReference of the Bundle, read and checked, with its content."""

    full_url: str
    resource: dict[str, Any]
    unique_id: str
    patient: tuple[str, str]  # (oid, value) the subject names
    type: Concept
    category: Concept
    confidentiality: Concept
    visibility: frozenset[str]
    format: Concept | None
    facility_type: Concept
    practice_setting: Concept
    content: bytes
    content_type: str
    sha1: str
    title: str | None
    date: datetime
    created: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    author_rpps: str | None
    author_finess: str | None
    author_reference: str | None
    language: str | None
    replaces: str | None  # resource id of the DocumentReference it replaces
    cda: cda.CdaDocument | None = None


@dataclass
class Submission:
    """The SubmissionSet and its documents, in Bundle order."""

    list_full_url: str
    list_resource: dict[str, Any]
    unique_id: str
    source_id: str | None
    patient: tuple[str, str]
    documents: list[ProvidedDocument] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # fullUrls in Bundle order


def _where(index: int, kind: str, path: str) -> str:
    return f"entry[{index}] {kind}.{path}"


def _instant(raw: Any, where: str) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidSubmission(f"{where}: a date-time string is expected")
    text = raw.replace("Z", "+00:00")
    try:
        if len(text) == 4:
            moment = datetime(int(text), 1, 1)
        elif len(text) == 7:
            moment = datetime(int(text[:4]), int(text[5:7]), 1)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSubmission(f"{where}: {raw!r} is not a FHIR dateTime") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _oid(system: Any) -> str | None:
    if isinstance(system, str) and system.startswith("urn:oid:"):
        return system.removeprefix("urn:oid:")
    return None


def _coding(value: Any, where: str) -> dict[str, Any]:
    """The first coding of a CodeableConcept (or a bare Coding)."""
    if isinstance(value, dict) and isinstance(value.get("coding"), list) and value["coding"]:
        value = value["coding"][0]
    if not isinstance(value, dict) or not isinstance(value.get("code"), str):
        raise InvalidSubmission(f"{where}: a coded value is required")
    return value


def _check(terms: Terminology, binding: Binding, value: Any, where: str) -> Concept:
    coding = _coding(value, where)
    try:
        return terms.check(binding, coding.get("system"), coding["code"])
    except Unprocessable as exc:
        raise InvalidSubmission(f"{where}: {exc.message}", issue_code="code-invalid") from None


def _identifier_value(ident: Any) -> tuple[str, str] | None:
    if not isinstance(ident, dict):
        return None
    system, value = _oid(ident.get("system")), ident.get("value")
    return (system, value) if system and isinstance(value, str) and value else None


def _patient_of(subject: Any, where: str) -> tuple[str, str]:
    """``(oid, value)`` of the patient a reference names: ``identifier`` (an IPP of a
    registered domain, an INS) or ``Patient/{RRI}`` (``("rri", RRI)``)."""
    if not isinstance(subject, dict):
        raise InvalidSubmission(f"{where}: the patient reference is required")
    named = _identifier_value(subject.get("identifier"))
    if named is not None:
        return named
    reference = subject.get("reference")
    if isinstance(reference, str) and "Patient/" in reference:
        return ("rri", reference.rsplit("Patient/", 1)[1].split("/")[0])
    raise InvalidSubmission(
        f"{where}: name the patient by identifier (urn:oid:…, an IPP or the INS) or Patient/{{RRI}}"
    )


def _contained(resource: dict[str, Any], reference: Any) -> dict[str, Any] | None:
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    for item in resource.get("contained") or []:
        if isinstance(item, dict) and item.get("id") == reference[1:]:
            return item
    return None


def _national_ids(resource: dict[str, Any] | None, oid: str) -> list[str]:
    if resource is None:
        return []
    found = []
    for ident in resource.get("identifier") or []:
        named = _identifier_value(ident)
        if named is not None and named[0] == oid:
            found.append(named[1])
    return found


def _authors(resource: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(RPPS, FINESS, reference)`` of the first author: a contained Practitioner,
    PractitionerRole (its practitioner, organization) or Organization."""
    rpps = finess = reference = None
    for author in resource.get("author") or []:
        if not isinstance(author, dict):
            continue
        ref = author.get("reference")
        target = _contained(resource, ref)
        if target is None:
            reference = reference or (ref if isinstance(ref, str) else None)
            continue
        if target.get("resourceType") == "PractitionerRole":
            person = _contained(resource, (target.get("practitioner") or {}).get("reference"))
            org = _contained(resource, (target.get("organization") or {}).get("reference"))
        elif target.get("resourceType") == "Practitioner":
            person, org = target, None
        else:
            person, org = None, target
        ids = _national_ids(person, RPPS_OID)
        if ids and rpps is None:
            rpps = ids[0][1:] if len(ids[0]) == 12 and ids[0].startswith("8") else ids[0]
        sts = _national_ids(org, STRUCTURE_OID)
        if sts and finess is None:
            finess = sts[0][1:] if len(sts[0]) == 10 and sts[0].startswith("1") else sts[0]
    return rpps, finess, reference


def sniff(data: bytes, content_type: str, where: str) -> None:
    """The content is what its contentType says (the formats a repository is given)."""
    ok = {
        "application/pdf": data.startswith(b"%PDF-"),
        "image/jpeg": data.startswith(b"\xff\xd8\xff"),
        "image/png": data.startswith(b"\x89PNG\r\n\x1a\n"),
        "image/tiff": data[:4] in (b"II*\x00", b"MM\x00*"),
    }.get(content_type)
    if content_type in CDA_TYPES:
        ok = data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
    elif content_type == "text/plain":
        try:
            data.decode("utf-8")
            ok = True
        except UnicodeDecodeError:
            ok = False
    if not ok:
        raise InvalidSubmission(f"{where}: the content is not {content_type}")


class BundleReader:
    """Reads one ITI-65 Bundle (:meth:`read`)."""

    def __init__(self, terms: Terminology, *, max_document_bytes: int) -> None:
        self.terms = terms
        self.max_document_bytes = max_document_bytes

    def read(self, bundle: dict[str, Any]) -> Submission:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise InvalidSubmission("ITI-65 takes a Bundle of type transaction")
        entries = bundle.get("entry")
        if not isinstance(entries, list) or not entries:
            raise InvalidSubmission("Bundle.entry: the Bundle is empty")
        by_url: dict[str, tuple[int, dict[str, Any]]] = {}
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                raise InvalidSubmission(f"entry[{index}]: an entry with a resource is expected")
            url = entry.get("fullUrl")
            method = (entry.get("request") or {}).get("method")
            if not isinstance(url, str) or not url or url in by_url:
                raise InvalidSubmission(f"entry[{index}].fullUrl: missing or repeated")
            if method != "POST":
                raise InvalidSubmission(f"entry[{index}].request.method: POST is expected")
            by_url[url] = (index, entry["resource"])
        lists = [(u, i, r) for u, (i, r) in by_url.items() if r.get("resourceType") == "List"]
        if len(lists) != 1:
            raise InvalidSubmission("the Bundle must hold exactly one SubmissionSet List")
        others = {
            r.get("resourceType")
            for _u, (_i, r) in by_url.items()
            if r.get("resourceType") not in ("List", "DocumentReference", "Binary")
        }
        if others:
            raise InvalidSubmission(
                "ITI-65 here takes List, DocumentReference and Binary, not "
                f"{sorted(str(o) for o in others)}"
            )
        submission = self._submission(*lists[0])
        referenced = self._listed(submission, by_url)
        for url, (index, resource) in by_url.items():
            if resource.get("resourceType") == "DocumentReference":
                if url not in referenced:
                    raise InvalidSubmission(f"entry[{index}]: not listed in the SubmissionSet")
                doc = self._document(index, url, resource, by_url)
                if doc.patient != submission.patient:
                    raise InvalidSubmission(
                        f"entry[{index}] DocumentReference.subject: another patient than the "
                        "SubmissionSet's"
                    )
                submission.documents.append(doc)
        used = {d.resource["content"][0]["attachment"]["url"] for d in submission.documents}
        for url, (index, resource) in by_url.items():
            if resource.get("resourceType") == "Binary" and url not in used:
                raise InvalidSubmission(f"entry[{index}]: a Binary no DocumentReference uses")
        if not submission.documents:
            raise InvalidSubmission("the SubmissionSet lists no DocumentReference")
        submission.order = list(by_url)
        return submission

    def _submission(self, url: str, index: int, resource: dict[str, Any]) -> Submission:
        where = f"entry[{index}] List"
        code = _coding(resource.get("code"), f"{where}.code")
        if code.get("code") != SUBMISSION_SET_CODE:
            raise InvalidSubmission(f"{where}.code: the List must be a submissionset")
        unique = None
        for ident in resource.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("use") == "usual":
                unique = ident.get("value")
        if not isinstance(unique, str) or not unique:
            raise InvalidSubmission(f"{where}.identifier: the uniqueId (use usual) is required")
        source = None
        for ext in resource.get("extension") or []:
            if isinstance(ext, dict) and str(ext.get("url", "")).endswith("ihe-sourceId"):
                source = (ext.get("valueIdentifier") or {}).get("value")
        patient = _patient_of(resource.get("subject"), f"{where}.subject")
        return Submission(url, resource, unique.removeprefix("urn:oid:"), source, patient)

    def _listed(self, submission: Submission, by_url: dict[str, Any]) -> set[str]:
        listed = set()
        for item in submission.list_resource.get("entry") or []:
            ref = (item.get("item") or {}).get("reference") if isinstance(item, dict) else None
            if ref not in by_url:
                raise InvalidSubmission(f"List.entry: {ref!r} is not an entry of the Bundle")
            listed.add(ref)
        return listed

    def _document(
        self, index: int, url: str, res: dict[str, Any], by_url: dict[str, Any]
    ) -> ProvidedDocument:
        def at(path: str) -> str:
            return _where(index, "DocumentReference", path)

        master = res.get("masterIdentifier") or {}
        unique = master.get("value") if isinstance(master, dict) else None
        if not isinstance(unique, str) or not unique:
            raise InvalidSubmission(f"{at('masterIdentifier')}: the uniqueId is required")
        if res.get("status") != "current":
            raise InvalidSubmission(f"{at('status')}: a new document is current")
        contents = res.get("content")
        if not isinstance(contents, list) or len(contents) != 1:
            raise InvalidSubmission(f"{at('content')}: exactly one content is expected")
        attachment = (contents[0] or {}).get("attachment")
        if not isinstance(attachment, dict):
            raise InvalidSubmission(f"{at('content[0].attachment')}: required")
        content, content_type = self._content(index, attachment, by_url)
        labels = [_coding(x, at("securityLabel")) for x in res.get("securityLabel") or []]
        concepts = [
            _check(self.terms, Binding.CONFIDENTIALITY, c, at("securityLabel")) for c in labels
        ]
        visibility = frozenset(c.code for c in concepts if c.code in VISIBILITY_CODES)
        check_visibility(visibility, at("securityLabel"))
        levels = [c for c in concepts if c.code not in VISIBILITY_CODES]
        if len(levels) != 1:
            raise InvalidSubmission(f"{at('securityLabel')}: one confidentiality code is required")
        context = res.get("context") or {}
        period = context.get("period") or {}
        rpps, finess, author_ref = _authors(res)
        related = [
            (r.get("target") or {}).get("reference", "")
            for r in res.get("relatesTo") or []
            if isinstance(r, dict) and r.get("code") == "replaces"
        ]
        doc = ProvidedDocument(
            full_url=url,
            resource=res,
            unique_id=unique.removeprefix("urn:oid:"),
            patient=_patient_of(res.get("subject"), at("subject")),
            type=_check(self.terms, Binding.TYPE, res.get("type"), at("type")),
            category=_check(
                self.terms, Binding.CLASS, (res.get("category") or [None])[0], at("category")
            ),
            confidentiality=levels[0],
            visibility=visibility,
            format=_check(
                self.terms, Binding.FORMAT, contents[0].get("format"), at("content[0].format")
            ),
            facility_type=_check(
                self.terms,
                Binding.FACILITY_TYPE,
                context.get("facilityType"),
                at("context.facilityType"),
            ),
            practice_setting=_check(
                self.terms,
                Binding.PRACTICE_SETTING,
                context.get("practiceSetting"),
                at("context.practiceSetting"),
            ),
            content=content,
            content_type=content_type,
            sha1=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
            title=res.get("description") or attachment.get("title"),
            date=_instant(res.get("date"), at("date")) or datetime.now(UTC),
            created=_instant(attachment.get("creation"), at("content[0].attachment.creation")),
            period_start=_instant(period.get("start"), at("context.period.start")),
            period_end=_instant(period.get("end"), at("context.period.end")),
            author_rpps=rpps,
            author_finess=finess,
            author_reference=author_ref,
            language=attachment.get("language"),
            replaces=related[0].rsplit("DocumentReference/", 1)[-1] if related else None,
        )
        if content_type in CDA_TYPES:
            doc.cda = cda.parse_cda(content)
            check_cda_header(doc, doc.cda, f"entry[{index}]")
        return doc

    def _content(
        self, index: int, attachment: dict[str, Any], by_url: dict[str, Any]
    ) -> tuple[bytes, str]:
        where = _where(index, "DocumentReference", "content[0].attachment")
        url = attachment.get("url")
        if url not in by_url or by_url[url][1].get("resourceType") != "Binary":
            raise InvalidSubmission(f"{where}.url: must be the fullUrl of a Binary of the Bundle")
        bin_index, binary = by_url[url]
        content_type = attachment.get("contentType")
        if content_type not in ACCEPTED_TYPES:
            raise InvalidSubmission(
                f"{where}.contentType: {content_type!r} is not accepted "
                f"({', '.join(sorted(ACCEPTED_TYPES))})"
            )
        if binary.get("contentType") != content_type:
            raise InvalidSubmission(
                f"entry[{bin_index}] Binary.contentType: {binary.get('contentType')!r} differs "
                f"from the DocumentReference's {content_type!r}"
            )
        raw = binary.get("data")
        if not isinstance(raw, str):
            raise InvalidSubmission(f"entry[{bin_index}] Binary.data: required (base64)")
        if len(raw) * 3 // 4 > self.max_document_bytes + 3:
            raise PayloadTooLarge(
                f"entry[{bin_index}] Binary.data: a document is at most "
                f"{self.max_document_bytes} bytes"
            )
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSubmission(f"entry[{bin_index}] Binary.data: not base64") from None
        if len(data) > self.max_document_bytes:
            raise PayloadTooLarge(
                f"entry[{bin_index}]: a document is at most {self.max_document_bytes} bytes"
            )
        size = attachment.get("size")
        if size is not None and size != len(data):
            raise InvalidSubmission(f"{where}.size: {size} but the Binary holds {len(data)} bytes")
        digest = attachment.get("hash")
        if digest is not None:
            expected = base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest())
            if digest != expected.decode():
                raise InvalidSubmission(f"{where}.hash: not the SHA-1 of the Binary's content")
        sniff(data, content_type, f"entry[{bin_index}] Binary.data")
        return data, content_type


def _same_instant(cda_time: datetime | None, metadata: datetime | None) -> bool:
    """Whether the CDA's time and the metadata's are the same instant (to the second); a CDA
    time without an offset is compared as the wall-clock time the metadata was written in."""
    if cda_time is None or metadata is None:
        return True
    if cda_time.tzinfo is None:
        metadata = metadata.replace(tzinfo=None)
    return cda_time.replace(microsecond=0) == metadata.replace(microsecond=0)


def check_cda_header(doc: ProvidedDocument, header: cda.CdaDocument, where: str) -> None:
    """The CDA header agrees with the submitted metadata: type code, confidentiality,
    dates, author, and the patient's identifier (the one the metadata names must be among
    the recordTarget's ids). Raises :class:`InvalidSubmission` naming the first difference."""
    problems = []
    if (header.type_code.code, header.type_code.system_oid) != (
        doc.type.code,
        doc.type.oid(),
    ):
        problems.append(f"type {header.type_code.code} in the CDA, {doc.type.code} in the metadata")
    if header.confidentiality.code != doc.confidentiality.code:
        problems.append(
            f"confidentiality {header.confidentiality.code} in the CDA, "
            f"{doc.confidentiality.code} in the metadata"
        )
    if not _same_instant(header.effective_time, doc.created):
        problems.append("effectiveTime in the CDA differs from attachment.creation")
    if not _same_instant(header.service_start, doc.period_start):
        problems.append("serviceEvent start in the CDA differs from context.period.start")
    if not _same_instant(header.service_stop, doc.period_end):
        problems.append("serviceEvent end in the CDA differs from context.period.end")
    ids = {(i.root, i.extension) for i in header.patient_ids}
    oid, value = doc.patient
    if oid != "rri" and (oid, value) not in ids:
        problems.append(f"the CDA's recordTarget does not carry the patient id {value} of {oid}")
    if doc.author_rpps is not None:
        rpps = {
            (i.extension or "").removeprefix("8")
            for a in header.authors
            for i in a.ids
            if i.root == RPPS_OID
        }
        if doc.author_rpps not in rpps:
            problems.append(f"the author RPPS {doc.author_rpps} is not an author of the CDA")
    if problems:
        raise InvalidSubmission(f"{where}: the CDA header does not match: {'; '.join(problems)}")


def read_correction(terms: Terminology, res: dict[str, Any]) -> dict[str, Any]:
    """The metadata a correction may change (a ``PUT`` of the DocumentReference: XDS metadata
    update), checked like ITI-65's, as the ``document_entry`` columns they fill; the content
    (its hash, size, url) is not metadata and cannot change."""

    def at(path: str) -> str:
        return f"DocumentReference.{path}"

    labels = [_coding(x, at("securityLabel")) for x in res.get("securityLabel") or []]
    concepts = [_check(terms, Binding.CONFIDENTIALITY, c, at("securityLabel")) for c in labels]
    levels = [c for c in concepts if c.code not in VISIBILITY_CODES]
    if len(levels) != 1:
        raise InvalidSubmission(f"{at('securityLabel')}: one confidentiality code is required")
    visibility = frozenset(c.code for c in concepts if c.code in VISIBILITY_CODES)
    check_visibility(visibility, at("securityLabel"))
    kind = _check(terms, Binding.TYPE, res.get("type"), at("type"))
    category = _check(terms, Binding.CLASS, (res.get("category") or [None])[0], at("category"))
    context = res.get("context") or {}
    period = context.get("period") or {}
    contents = res.get("content") or [{}]
    fmt = _check(terms, Binding.FORMAT, contents[0].get("format"), at("content[0].format"))
    return {
        "type_system": kind.system,
        "type_code": kind.code,
        "class_system": category.system,
        "class_code": category.code,
        "confidentiality": levels[0].code,
        "visibility": " ".join(sorted(visibility)),
        "facility_type": _check(
            terms, Binding.FACILITY_TYPE, context.get("facilityType"), at("context.facilityType")
        ).code,
        "practice_setting": _check(
            terms,
            Binding.PRACTICE_SETTING,
            context.get("practiceSetting"),
            at("context.practiceSetting"),
        ).code,
        "format_code": fmt.code,
        "title": (res.get("description") or "")[:256] or None,
        "period_start": _instant(period.get("start"), at("context.period.start")),
        "period_end": _instant(period.get("end"), at("context.period.end")),
    }
