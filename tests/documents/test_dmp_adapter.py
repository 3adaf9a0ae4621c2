"""The DMP adapter (ITI-41 Provide and Register Document Set-b, ITI-57 Update Document Set) against
the fake DMP over real HTTP on localhost; the classification of the DMP's answers; the XDM
package."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from lxml import etree

from enrs.documents import xds
from enrs.documents.dmp import (
    STATUS_APPLIED_CODES,
    VERSION_APPLIED_CODES,
    DmpOutcome,
    Verdict,
    XdsDmpAdapter,
    classify,
)
from enrs.documents.xds import XdsAuthor, XdsCode, XdsDocument, XdsPatientInfo
from tests.support.fake_dmp import (
    FAILURE,
    NS,
    FakeDmp,
    as_mtom,
    registry_response,
    soap_fault,
)
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

PARIS = timezone(timedelta(hours=1))
NIR = "279035121518989"  # a NIR with a right key (ANS test patient)
PDF = b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n1 0 obj <<>> endobj\n\x00\xff\r\n--MIME\r\n%%EOF\r\n"


def make_document(content: bytes = PDF, number: int = 1, **changes: object) -> XdsDocument:
    doc = XdsDocument(
        entry_uuid=f"urn:uuid:5b1e7a52-9c3d-4d1f-8a6b-{number:012d}",
        unique_id=f"1.2.250.1.999.1.1.4.{number}",
        patient_ins=NIR,
        patient_ins_oid=xds.INS_TEST_NIR_OID,
        source_patient_id="0456789999^^^&1.2.250.1.999.1.1.2&ISO^PI",
        author=XdsAuthor(
            rpps="10001234567",
            family="D'ARC^MARTIN",
            given="Jeanne",
            institution_name="CH de Brive & Tulle",
            institution_finess="190000364",
            role=XdsCode("10", "1.2.250.1.213.1.1.4.6", "Médecin"),
            specialty=XdsCode("G15_10/SM26", "1.2.250.1.213.1.1.4.5", "Médecine générale"),
        ),
        class_code=XdsCode("10", "1.2.250.1.213.1.1.4.1", "Compte-rendu"),
        type_code=XdsCode("34133-9", "2.16.840.1.113883.6.1", "Synthèse d'épisode"),
        format_code=XdsCode("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "PDF"),
        confidentiality=(
            XdsCode("N", "2.16.840.1.113883.5.25", "Normal"),
            XdsCode("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué aux professionnels"),
        ),
        healthcare_facility_type=XdsCode("SA01", "1.2.250.1.71.4.2.4", "Établissement public"),
        practice_setting=XdsCode("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Établissement"),
        title="CR <hospitalisation> & suites",
        creation_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=PARIS),
        service_start=datetime(2025, 12, 20, 8, 0, tzinfo=UTC),
        service_stop=datetime(2026, 1, 1, 18, 30, tzinfo=UTC),
        mime_type="application/pdf",
        size=len(content),
        sha1_hex=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        language="fr-FR",
        content=content,
        submission_unique_id=f"1.2.250.1.999.1.1.5.{number}",
        source_id="1.2.250.1.999.1.1",
        submission_time=datetime(2026, 1, 2, 9, 0, 0, tzinfo=UTC),
        content_type_code=XdsCode("04", "1.2.250.1.213.2.2", "Hospitalisation"),
        source_patient_info=XdsPatientInfo("MARTIN", "Simone", date(1976, 7, 17), "F"),
    )
    return dataclasses.replace(doc, **changes)  # type: ignore[arg-type]


@pytest.fixture
def dmp() -> Iterator[FakeDmp]:
    with FakeDmp() as fake:
        yield fake


@pytest.fixture
def adapter(dmp: FakeDmp) -> Iterator[XdsDmpAdapter]:
    with XdsDmpAdapter(dmp.url, timeout=5) as client:
        yield client


# --- over HTTP --------------------------------------------------------------------------------


def test_a_document_is_accepted_with_the_dmp_metadata(dmp: FakeDmp, adapter: XdsDmpAdapter) -> None:
    doc = make_document()
    outcome = adapter.send(doc)
    assert outcome.verdict is Verdict.ACCEPTED, outcome
    assert outcome.delivered
    (stored,) = dmp.documents()
    assert stored.content == PDF  # the binary part came through MTOM unharmed
    assert stored.unique_id == doc.unique_id and stored.entry_uuid == doc.entry_uuid
    assert stored.patient_id == f"{NIR}^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert stored.submission_set_unique_id == doc.submission_unique_id
    assert stored.source_id == "1.2.250.1.999.1.1"
    assert stored.title == "CR <hospitalisation> & suites"
    assert stored.mime_type == "application/pdf"
    assert stored.codes["classCode"] == [("10", "1.2.250.1.213.1.1.4.1")]
    assert stored.codes["typeCode"] == [("34133-9", "2.16.840.1.113883.6.1")]
    assert stored.codes["confidentialityCode"] == [
        ("N", "2.16.840.1.113883.5.25"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
    ]
    assert stored.author["authorPerson"] == [
        "810001234567^D'ARC\\S\\MARTIN^Jeanne^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    ]
    assert stored.author["authorInstitution"] == [
        "CH de Brive \\T\\ Tulle^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1190000364"
    ]
    assert stored.author["authorSpecialty"] == [
        "G15_10/SM26^Médecine générale^1.2.250.1.213.1.1.4.5"
    ]
    assert stored.slots["creationTime"] == ["20260102020405"]  # 03:04:05 in Paris, in UTC
    assert stored.slots["serviceStopTime"] == ["20260101183000"]
    assert stored.slots["sourcePatientInfo"] == [
        "PID-5|MARTIN^Simone^^^^^L",
        "PID-7|19760717",
        "PID-8|F",
    ]
    content_type = dmp.requests[0]["Content-Type"]
    assert content_type.startswith("multipart/related;")
    assert 'type="application/xop+xml"' in content_type
    assert 'start-info="application/soap+xml"' in content_type


def test_the_same_document_again_is_already_present(dmp: FakeDmp, adapter: XdsDmpAdapter) -> None:
    doc = make_document()
    assert adapter.send(doc).verdict is Verdict.ACCEPTED
    again = adapter.send(doc)
    assert again.verdict is Verdict.ALREADY_PRESENT, again
    assert again.delivered
    assert set(again.codes) == {"XDSDuplicateUniqueIdInRegistry"}
    assert len(dmp.documents()) == 1


def test_another_content_under_a_held_unique_id_is_refused(
    dmp: FakeDmp, adapter: XdsDmpAdapter
) -> None:
    assert adapter.send(make_document()).verdict is Verdict.ACCEPTED
    other = make_document(content=b"%PDF-1.4 another\n%%EOF\n", submission_unique_id="1.2.3.9")
    outcome = adapter.send(other)
    assert outcome.verdict is Verdict.REFUSED, outcome
    assert outcome.codes == ("XDSNonIdenticalHash",)
    assert [d.content for d in dmp.documents()] == [PDF]


def test_a_new_document_in_a_reused_submission_set_is_refused(
    dmp: FakeDmp, adapter: XdsDmpAdapter
) -> None:
    assert adapter.send(make_document(number=1)).verdict is Verdict.ACCEPTED
    reused = make_document(number=2, submission_unique_id="1.2.250.1.999.1.1.5.1")
    outcome = adapter.send(reused)
    assert outcome.verdict is Verdict.REFUSED, outcome  # not "already present": it is not
    assert outcome.codes == ("XDSDuplicateUniqueIdInRegistry",)
    assert len(dmp.documents()) == 1


def test_an_ins_oid_the_dmp_does_not_take_is_refused_with_its_code() -> None:
    with FakeDmp(ins_oids={xds.INS_NIR_OID, xds.INS_NIA_OID}) as production:
        with XdsDmpAdapter(production.url, timeout=5) as adapter:
            outcome = adapter.send(make_document())  # a test INS (…4.10)
        assert production.documents() == []
    assert outcome.verdict is Verdict.REFUSED
    assert set(outcome.codes) == {"XDSUnknownPatientId"}
    assert "1.2.250.1.213.1.4.10" in outcome.detail


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"patient_ins": "279035121518988"}, "XDSUnknownPatientId"),  # wrong NIR key
        ({"author": XdsAuthor(None, "X", "Y", "Z", "190000364")}, None),  # names only: taken
    ],
)
def test_the_dmp_checks_the_patient_and_author(
    dmp: FakeDmp, adapter: XdsDmpAdapter, changes: dict[str, Any], code: str | None
) -> None:
    outcome = adapter.send(make_document(**changes))
    if code is None:
        assert outcome.verdict is Verdict.ACCEPTED, outcome
    else:
        assert outcome.verdict is Verdict.REFUSED and code in outcome.codes, outcome


def test_a_patient_without_a_dmp_is_refused() -> None:
    with (
        FakeDmp(known_patients={"277076322082910"}) as fake,
        XdsDmpAdapter(fake.url, timeout=5) as adapter,
    ):
        outcome = adapter.send(make_document())
    assert outcome.verdict is Verdict.REFUSED
    assert set(outcome.codes) == {"XDSUnknownPatientId"}
    assert "no DMP for 279035121518989" in outcome.detail


def test_503_is_retry_later_then_the_document_goes(dmp: FakeDmp, adapter: XdsDmpAdapter) -> None:
    dmp.fail_next(2, status=503)
    first, second = adapter.send(make_document()), adapter.send(make_document())
    assert first.verdict is second.verdict is Verdict.RETRY_LATER
    assert "HTTP 503" in first.detail
    assert dmp.documents() == []
    assert adapter.send(make_document()).verdict is Verdict.ACCEPTED
    assert dmp.calls == 3


def test_a_timeout_is_retry_later(dmp: FakeDmp) -> None:
    dmp.hang_next(1, seconds=20)
    with XdsDmpAdapter(dmp.url, timeout=0.5) as adapter:
        started = time.monotonic()
        outcome = adapter.send(make_document())
        elapsed = time.monotonic() - started
    assert outcome.verdict is Verdict.RETRY_LATER, outcome
    assert "Timeout" in outcome.detail
    assert elapsed < 5
    assert dmp.documents() == []


def test_a_document_registered_after_the_timeout_is_already_present_on_retry(
    dmp: FakeDmp,
) -> None:
    dmp.hang_next(1, seconds=1.0, then_process=True)
    with XdsDmpAdapter(dmp.url, timeout=0.3) as adapter:
        assert adapter.send(make_document()).verdict is Verdict.RETRY_LATER
        assert wait_until(lambda: len(dmp.documents()) == 1, timeout=10)
        assert adapter.send(make_document()).verdict is Verdict.ALREADY_PRESENT


def test_no_dmp_listening_is_retry_later() -> None:
    with XdsDmpAdapter(f"http://127.0.0.1:{free_port()}/dmp/iti41", timeout=2) as adapter:
        outcome = adapter.send(make_document())
    assert outcome.verdict is Verdict.RETRY_LATER
    assert "ConnectError" in outcome.detail


def test_bare_soap_answers_are_read_too() -> None:
    with FakeDmp(mtom_answers=False) as fake, XdsDmpAdapter(fake.url, timeout=5) as adapter:
        assert adapter.send(make_document()).verdict is Verdict.ACCEPTED
        assert adapter.send(make_document()).verdict is Verdict.ALREADY_PRESENT


def test_a_document_that_cannot_make_valid_metadata_is_not_sent(
    dmp: FakeDmp, adapter: XdsDmpAdapter
) -> None:
    with pytest.raises(xds.InvalidXdsDocument, match="sha1_hex is not the SHA-1"):
        adapter.send(make_document(sha1_hex="0" * 40))
    with pytest.raises(xds.InvalidXdsDocument, match="creation_time has no time zone"):
        adapter.send(make_document(creation_time=datetime(2026, 1, 2, 3, 4, 5)))
    with pytest.raises(xds.InvalidXdsDocument, match="patient_ins_oid"):
        adapter.send(make_document(patient_ins_oid="1.2.250.1.999"))
    assert dmp.calls == 0


# --- the fake DMP's own checks (it must catch what a real DMP catches) ------------------------


def post(dmp: FakeDmp, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(dmp.url, content=body, headers={"Content-Type": content_type}, timeout=5)


def test_the_fake_dmp_checks_the_hash_and_size_against_the_attachment(dmp: FakeDmp) -> None:
    doc = make_document()
    body, content_type = xds.provide_and_register(doc, to=dmp.url)
    tampered = body.replace(doc.sha1_hex.encode(), b"a" * 40).replace(
        f"<rim:Value>{doc.size}</rim:Value>".encode(), b"<rim:Value>7</rim:Value>"
    )
    outcome = classify(post(dmp, tampered, content_type), doc.unique_id)
    assert outcome.verdict is Verdict.REFUSED
    assert outcome.codes == ("XDSRepositoryMetadataError", "XDSRepositoryMetadataError")
    assert dmp.documents() == []


def test_the_fake_dmp_wants_the_class_code(dmp: FakeDmp) -> None:
    doc = make_document()
    body, content_type = xds.provide_and_register(doc, to=dmp.url)
    tampered = body.replace(xds.DE_CLASS_CODE.encode(), b"urn:uuid:00000000-0000-0000-0000-0")
    outcome = classify(post(dmp, tampered, content_type), doc.unique_id)
    assert outcome.verdict is Verdict.REFUSED
    assert outcome.codes == ("XDSRegistryMetadataError",)
    assert "classCode is missing" in outcome.detail


def test_a_request_that_is_not_mtom_gets_a_sender_fault(dmp: FakeDmp) -> None:
    answer = post(dmp, b"<hello/>", "application/soap+xml")
    assert answer.status_code == 400
    outcome = classify(answer, "1.2.3")
    assert outcome.verdict is Verdict.REFUSED
    assert "Sender" in outcome.detail and "not an MTOM package" in outcome.detail


# --- classification of answers (one function) -------------------------------------------------

UID = "1.2.250.1.999.1.1.4.1"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"


def soap_answer(status: int, envelope: bytes, *, mtom: bool = False) -> httpx.Response:
    if mtom:
        body, content_type = as_mtom(envelope)
    else:
        body, content_type = envelope, "application/soap+xml; charset=UTF-8"
    return httpx.Response(status, content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (soap_answer(200, registry_response(), mtom=True), Verdict.ACCEPTED),
        (soap_answer(200, registry_response(status=PARTIAL)), Verdict.ACCEPTED),
        (
            soap_answer(200, registry_response([("XDSDuplicateUniqueIdInRegistry", UID)])),
            Verdict.ALREADY_PRESENT,
        ),
        (
            soap_answer(
                200,
                registry_response(
                    [
                        ("XDSDuplicateUniqueIdInRegistry", f"SubmissionSet uniqueId {UID}.7"),
                        ("XDSDuplicateUniqueIdInRegistry", f"DocumentEntry uniqueId {UID}"),
                    ]
                ),
                mtom=True,
            ),
            Verdict.ALREADY_PRESENT,
        ),
        (
            soap_answer(200, registry_response([("XDSDuplicateUniqueIdInRegistry", f"{UID}0")])),
            Verdict.REFUSED,
        ),
        (
            soap_answer(
                200,
                registry_response(
                    [
                        ("XDSDuplicateUniqueIdInRegistry", UID),
                        ("XDSRegistryMetadataError", "no classCode"),
                    ]
                ),
            ),
            Verdict.REFUSED,
        ),
        (soap_answer(200, registry_response([("XDSRegistryBusy", "")])), Verdict.RETRY_LATER),
        (
            soap_answer(200, registry_response([("XDSRepositoryError", "internal")])),
            Verdict.RETRY_LATER,
        ),
        (soap_answer(200, registry_response(status=FAILURE)), Verdict.REFUSED),
        (soap_answer(200, registry_response([("XDSUnknownPatientId", "")])), Verdict.REFUSED),
        (soap_answer(500, soap_fault("Receiver", "database down")), Verdict.RETRY_LATER),
        (soap_answer(400, soap_fault("Sender", "bad VIHF")), Verdict.REFUSED),
        (httpx.Response(502, text="<html>Bad gateway</html>"), Verdict.RETRY_LATER),
        (httpx.Response(429, text="slow down"), Verdict.RETRY_LATER),
        (httpx.Response(404, text="<html>Not found</html>"), Verdict.REFUSED),
        (httpx.Response(200, text="not xml"), Verdict.REFUSED),
        (httpx.ConnectError("refused"), Verdict.RETRY_LATER),
        (httpx.ReadTimeout("slow"), Verdict.RETRY_LATER),
    ],
)
def test_classify(answer: httpx.Response | httpx.HTTPError, verdict: Verdict) -> None:
    outcome = classify(answer, UID)
    assert isinstance(outcome, DmpOutcome)
    assert outcome.verdict is verdict, outcome


def test_classify_keeps_the_dmp_errors() -> None:
    answer = soap_answer(
        200, registry_response([("XDSRegistryMetadataError", "typeCode not in JDV_J07")])
    )
    outcome = classify(answer, UID)
    assert outcome.codes == ("XDSRegistryMetadataError",)
    assert outcome.errors[0].context == "typeCode not in JDV_J07"
    assert outcome.errors[0].severity == "Error"
    assert "typeCode not in JDV_J07" in outcome.detail


# --- XDM ----------------------------------------------------------------------------------------


def test_the_xdm_package_names_the_document_with_its_hash_and_size() -> None:
    doc = make_document()
    package = xds.xdm_package(doc)
    archive = zipfile.ZipFile(io.BytesIO(package))
    assert archive.testzip() is None
    assert set(archive.namelist()) == {
        "README.TXT",
        "INDEX.HTM",
        "IHE_XDM/SUBSET01/METADATA.XML",
        "IHE_XDM/SUBSET01/DOC0001.PDF",
    }
    metadata = etree.fromstring(archive.read("IHE_XDM/SUBSET01/METADATA.XML"))
    assert metadata.tag == f"{{{NS['lcm']}}}SubmitObjectsRequest"
    (entry,) = metadata.iterfind(".//rim:ExtrinsicObject", NS)

    def slot(name: str) -> list[str]:
        return list(
            entry.xpath(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value/text()", namespaces=NS)
        )

    (uri,) = slot("URI")
    content = archive.read(f"IHE_XDM/SUBSET01/{uri}")
    assert content == PDF
    assert slot("hash") == [hashlib.sha1(content, usedforsecurity=False).hexdigest()]
    assert slot("size") == [str(len(content))]
    assert entry.get("mimeType") == "application/pdf"
    unique_id = entry.xpath(
        "rim:ExternalIdentifier[@identificationScheme="
        "'urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab']/@value",
        namespaces=NS,
    )
    assert unique_id == [doc.unique_id]
    members = metadata.xpath(
        ".//rim:Association[@targetObject=$e]/@associationType", namespaces=NS, e=doc.entry_uuid
    )
    assert members == ["urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"]
    index = etree.fromstring(archive.read("INDEX.HTM"))
    links = index.xpath("//*[local-name()='a']/@href")
    assert f"IHE_XDM/SUBSET01/{uri}" in links and "README.TXT" in links
    assert doc.submission_unique_id in archive.read("README.TXT").decode()
    assert xds.xdm_package(doc) == package  # the same document gives the same bytes


# --- ITI-57: metadata update, availability status; RPLC -----------------------------------------

VERSION, STATUS, DEP = VERSION_APPLIED_CODES, STATUS_APPLIED_CODES, xds.STATUS_DEPRECATED
INVISIBLE = XdsCode("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient")


def corrected(version: int, previous: int, **changes: object) -> xds.XdsUpdate:
    """The version ``version`` of document 1's metadata, updating the DMP's ``previous`` (each
    request in a SubmissionSet of its own, as the feed builds them)."""
    new_uuid = f"urn:uuid:5b1e7a52-9c3d-4d1f-8a6b-{version:06d}000001"
    doc = make_document(entry_uuid=new_uuid, submission_unique_id=new_set(), **changes)
    return xds.XdsUpdate(doc, make_document().entry_uuid, previous)


def new_set() -> str:
    return f"1.2.250.1.999.1.1.6.{uuid.uuid4().int % 10**12}"


def deprecation(entry_uuid: str) -> xds.XdsUpdate:
    doc = make_document(entry_uuid=entry_uuid, submission_unique_id=new_set())
    return xds.XdsUpdate(doc, make_document().entry_uuid, 1, new_status=xds.STATUS_DEPRECATED)


def test_a_metadata_update_makes_a_new_version(dmp: FakeDmp, adapter: XdsDmpAdapter) -> None:
    original = make_document()
    assert adapter.send(original).verdict is Verdict.ACCEPTED
    codes = (XdsCode("N", "2.16.840.1.113883.5.25", "Normal"), INVISIBLE)
    update = corrected(2, 1, confidentiality=codes)
    outcome = adapter.update(update)
    assert outcome.verdict is Verdict.ACCEPTED, outcome
    first, second = dmp.versions(original.unique_id)
    assert (first.status, second.status) == (xds.STATUS_DEPRECATED, xds.STATUS_APPROVED)
    assert second.lid == first.entry_uuid == original.entry_uuid
    assert second.entry_uuid == update.doc.entry_uuid and second.version == 2
    assert ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13") in second.codes["confidentialityCode"]
    assert second.content == PDF  # the document itself does not change
    assert dmp.requests[-1]["Content-Type"].startswith("application/soap+xml")
    assert 'action="urn:ihe:iti:2010:UpdateDocumentSet"' in dmp.requests[-1]["Content-Type"]

    again = adapter.update(corrected(2, 1, confidentiality=codes))  # applied, the answer lost
    assert again.verdict is Verdict.ALREADY_PRESENT, again
    assert again.codes == ("XDSMetadataVersionError",)
    assert len(dmp.versions(original.unique_id)) == 2

    stale = adapter.update(corrected(3, 1))  # another update came first: a conflict, kept
    assert stale.verdict is Verdict.REFUSED, stale
    assert stale.codes == ("XDSMetadataVersionError",)
    assert adapter.update(corrected(3, 2)).verdict is Verdict.ACCEPTED
    assert [d.version for d in dmp.versions(original.unique_id)] == [1, 2, 3]


def test_a_deprecation_is_applied_once(dmp: FakeDmp, adapter: XdsDmpAdapter) -> None:
    original = make_document()
    assert adapter.send(original).verdict is Verdict.ACCEPTED
    outcome = adapter.update(deprecation(original.entry_uuid))
    assert outcome.verdict is Verdict.ACCEPTED, outcome
    held = dmp.held(original.unique_id)
    assert held is not None and held.status == xds.STATUS_DEPRECATED
    again = adapter.update(deprecation(original.entry_uuid))
    assert again.verdict is Verdict.ALREADY_PRESENT, again
    assert again.codes == ("XDSMetadataUpdateError",)
    # a deprecated version takes no new version of its metadata
    refused = adapter.update(corrected(2, 1))
    assert refused.verdict is Verdict.REFUSED and refused.codes == ("XDSMetadataUpdateError",)


def test_an_update_of_a_document_the_dmp_does_not_hold_is_refused(
    dmp: FakeDmp, adapter: XdsDmpAdapter
) -> None:
    for update in (corrected(2, 1), deprecation(make_document().entry_uuid)):
        outcome = adapter.update(update)
        assert outcome.verdict is Verdict.REFUSED, outcome
        assert outcome.codes == ("XDSMetadataUpdateError",)
    assert dmp.documents() == []


def test_an_update_is_retried_when_the_dmp_fails(dmp: FakeDmp, adapter: XdsDmpAdapter) -> None:
    assert adapter.send(make_document()).verdict is Verdict.ACCEPTED
    dmp.fail_next(1, status=503)
    assert adapter.update(corrected(2, 1)).verdict is Verdict.RETRY_LATER
    assert adapter.update(corrected(2, 1)).verdict is Verdict.ACCEPTED


def test_a_replacement_deprecates_the_version_it_replaces(
    dmp: FakeDmp, adapter: XdsDmpAdapter
) -> None:
    first = make_document(number=1)
    assert adapter.send(first).verdict is Verdict.ACCEPTED
    second = make_document(number=2, replaces=first.entry_uuid)
    outcome = adapter.send(second)
    assert outcome.verdict is Verdict.ACCEPTED, outcome
    old, new = dmp.held(first.unique_id), dmp.held(second.unique_id)
    assert old is not None and old.status == xds.STATUS_DEPRECATED
    assert new is not None and new.replaces == first.entry_uuid
    third = make_document(number=3, replaces=first.entry_uuid)
    again = adapter.send(third)  # a deprecated version is not replaced twice
    assert again.verdict is Verdict.REFUSED and again.codes == (
        "XDSRegistryDeprecatedDocumentError",
    )
    unknown = make_document(number=4, replaces="urn:uuid:00000000-0000-4000-8000-000000000000")
    assert adapter.send(unknown).codes == ("UnresolvedReferenceException",)


NEW = "urn:uuid:5b1e7a52-0002"
LATER = "PreviousVersion '1' is not the latest version 2"


@pytest.mark.parametrize(
    ("error", "evidence", "done", "verdict"),
    [
        (
            ("XDSMetadataVersionError", f"{LATER} ({NEW}) of x"),
            NEW,
            VERSION,
            Verdict.ALREADY_PRESENT,
        ),
        (("XDSMetadataVersionError", f"{LATER} ({NEW}1) of x"), NEW, VERSION, Verdict.REFUSED),
        (("XDSMetadataVersionError", LATER), NEW, VERSION, Verdict.REFUSED),
        (("XDSMetadataUpdateError", f"{NEW} is latest"), NEW, VERSION, Verdict.REFUSED),
        (
            ("XDSMetadataUpdateError", f"x is {xds.STATUS_DEPRECATED}"),
            DEP,
            STATUS,
            Verdict.ALREADY_PRESENT,
        ),
        (("XDSMetadataUpdateError", "no such DocumentEntry"), DEP, STATUS, Verdict.REFUSED),
        (("XDSRegistryBusy", ""), DEP, STATUS, Verdict.RETRY_LATER),
    ],
)
def test_classify_an_update_answer(
    error: tuple[str, str], evidence: str, done: frozenset[str], verdict: Verdict
) -> None:
    answer = soap_answer(200, registry_response([error]))
    outcome = classify(answer, evidence, done=done)
    assert outcome.verdict is verdict, outcome
