"""CDA R2 as the CI-SIS profiles it: the header of a level 1 (PDF) and a level 3 (structured)
document read field by field, what is tolerated and what is refused (broken XML, entities,
a foreign root, missing required elements, a body that does not decode), and the HTML the
portal shows. The documents under ``data/`` are synthetic."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from lxml import etree

from enrs.documents import cda
from enrs.documents.cda import CdaAuthor, CdaDocument, CdaError, Code, InstanceId, parse_cda
from enrs.documents.cda_html import render_html
from enrs.kit.errors import PayloadTooLarge, Unprocessable

DATA = Path(__file__).parent / "data"
PARIS_WINTER = timezone(timedelta(hours=1))
PDF_SHA256 = "9d1cbdfdb3212fcec14a4d5c6cfd4f6bdb667d8b276e4eb95826e496e3a68e4b"


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _edit(name: str, old: str, new: str, *, regex: bool = False) -> bytes:
    """A fixture with one change; the change must happen (a test never passes vacuously)."""
    text = _read(name).decode()
    edited = re.sub(old, new, text, count=1, flags=re.S) if regex else text.replace(old, new, 1)
    assert edited != text, f"{old!r} is not in {name}"
    return edited.encode()


def _refused(data: bytes) -> str:
    with pytest.raises(CdaError) as caught:
        parse_cda(data)
    return caught.value.message


# --- the two fixtures, field by field -----------------------------------------------------


def test_level_1_pdf_document_header_and_body() -> None:
    doc = parse_cda(_read("n1_pdf.xml"))

    assert doc.body is not None
    assert doc.body.startswith(b"%PDF-1.4\n") and doc.body.endswith(b"%%EOF\n")
    assert hashlib.sha256(doc.body).hexdigest() == PDF_SHA256
    lab = (InstanceId("1.2.250.1.71.4.2.2", "1350000001"),)
    expected = CdaDocument(
        document_id=InstanceId("1.2.250.1.999.7.1.2024.31", "CR-000417"),
        set_id=InstanceId("1.2.250.1.999.7.1.2024.31", "SET-000417"),
        version=2,
        type_code=Code("11502-2", "2.16.840.1.113883.6.1", "CR d'examens biologiques"),
        title="Compte rendu d'examens biologiques",
        effective_time=datetime(2024, 3, 15, 14, 30, 5, tzinfo=PARIS_WINTER),
        confidentiality=Code("N", "2.16.840.1.113883.5.25", "Normal"),
        language="fr-FR",
        # the id with a nullFlavor is no id
        patient_ids=(
            InstanceId(cda.INS_NIR_TEST_OID, "248067500000123"),
            InstanceId("1.2.250.1.999.7.2", "IPP-77001"),
        ),
        patient_family="LEGRAND-TEST",  # the birth name, not the used one (CL)
        patient_given=("CAMILLE ANNE MARIE",),  # the birth certificate's given names
        patient_birth_date=date(1980, 6, 14),
        patient_gender="F",
        authors=(
            CdaAuthor(
                ids=(InstanceId(cda.RPPS_OID, "810100000001"),),
                family="BIOLOGISTE-TEST",
                given="Paul Henri",
                time=datetime(2024, 3, 15, 14, 20, tzinfo=PARIS_WINTER),
                organization_ids=lab,
                organization_name="Laboratoire de l'Estuaire (test)",
                specialty=Code(
                    "G15_10/SM03", "1.2.250.1.213.1.1.4.5", "Médecin - Biologie médicale (SM)"
                ),
            ),
        ),
        custodian_ids=lab,
        service_start=datetime(2024, 3, 15, 8, 15, tzinfo=PARIS_WINTER),
        service_stop=datetime(2024, 3, 15, 12, 0, tzinfo=PARIS_WINTER),
        practice_setting=Code("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire"),
        facility_type=Code("SA29", "1.2.250.1.71.4.2.4", "Laboratoire de biologie médicale"),
        body_kind="nonXMLBody",
        body_media_type="application/pdf",
        body=doc.body,
        template_ids=(
            "2.16.840.1.113883.2.8.2.1",
            "1.2.250.1.213.1.1.1.1",
            "1.3.6.1.4.1.19376.1.2.20",
        ),
        warnings=(),
    )
    assert doc == expected
    assert doc.authors[0].rpps == "10100000001"  # idNatPs "8" + RPPS
    assert doc.ins == InstanceId(cda.INS_NIR_TEST_OID, "248067500000123")
    assert doc.effective_time.utcoffset() == timedelta(hours=1)


def test_level_3_structured_document_header() -> None:
    doc = parse_cda(_read("n3_structured.xml"))

    hospital = (InstanceId("1.2.250.1.71.4.2.2", "1350000002"),)
    expected = CdaDocument(
        document_id=InstanceId("7d1f2c4a-0b6e-4e55-9a43-2f1c6b0e8a11", None),
        set_id=None,
        version=None,
        type_code=Code("34133-9", "2.16.840.1.113883.6.1", "Synthèse d'épisode de soin"),
        title="Lettre de liaison à la sortie",
        effective_time=datetime(2024, 3, 20, 10, 45),  # no offset in the CDA: naive
        confidentiality=Code("R", "2.16.840.1.113883.5.25", "Restreint"),
        language=None,
        patient_ids=(
            InstanceId(cda.INS_NIR_OID, "175112B00000042"),
            InstanceId("1.2.250.1.999.8.2", "IPP-0042"),
        ),
        patient_family="DUPONT-TEST",
        patient_given=("Jean", "Pierre"),
        patient_birth_date=date(1975, 11, 2),
        patient_gender="M",
        authors=(
            CdaAuthor(
                ids=(InstanceId(cda.RPPS_OID, "810100000002"),),
                family="MEDECIN-TEST",
                given="Claire",
                time=datetime(2024, 3, 20, 10, 30),
                organization_ids=hospital,
                organization_name="Centre hospitalier de test",
                specialty=Code(
                    "G15_10/SM26",
                    "1.2.250.1.213.1.1.4.5",
                    "Médecin - Qualifié en médecine générale (SM)",
                ),
            ),
            CdaAuthor(  # a device
                ids=(InstanceId("1.2.250.1.999.8.9", "DPI-1"),),
                family=None,
                given=None,
                time=datetime(2024, 3, 20),
                organization_ids=(),
                organization_name=None,
                specialty=None,
            ),
        ),
        custodian_ids=hospital,
        # the main act is the first serviceEvent; its effectiveTime is a single value
        service_start=datetime(2024, 3, 18),
        service_stop=datetime(2024, 3, 18),
        # the main act's performer, not the author's organisation (AMBULATOIRE)
        practice_setting=Code("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé"),
        facility_type=Code("SA01", "1.2.250.1.71.4.2.4", "Etablissement Public de santé"),
        body_kind="structuredBody",
        body_media_type=None,
        body=None,
        template_ids=("2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1"),
        warnings=(),
    )
    assert doc == expected
    assert doc.effective_time.tzinfo is None
    assert doc.authors[1].rpps is None


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240315", datetime(2024, 3, 15)),
        ("2024031514", datetime(2024, 3, 15, 14)),
        ("202403151430", datetime(2024, 3, 15, 14, 30)),
        ("20240315143005", datetime(2024, 3, 15, 14, 30, 5)),
        ("20240315143005.25", datetime(2024, 3, 15, 14, 30, 5, 250000)),
        ("20240315143005+0100", datetime(2024, 3, 15, 14, 30, 5, tzinfo=PARIS_WINTER)),
        (
            "20240715143005+0200",
            datetime(2024, 7, 15, 14, 30, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "202403151430-0330",
            datetime(2024, 3, 15, 14, 30, tzinfo=timezone(-timedelta(hours=3.5))),
        ),
        ("20240315+0000", datetime(2024, 3, 15, tzinfo=UTC)),
        (" 20240315 ", datetime(2024, 3, 15)),
    ],
)
def test_hl7_timestamps_with_and_without_zone(value: str, expected: datetime) -> None:
    parsed = cda.parse_ts(value)
    assert parsed == expected
    assert (
        parsed.tzinfo is None
        if expected.tzinfo is None
        else parsed.utcoffset() == expected.utcoffset()
    )


@pytest.mark.parametrize(
    "value",
    ["2024", "202403", "2024-03-15", "20241315", "20240230", "20240315 1430", "2024031514305",
     "20240315143005+2500", "20240315143005+01", "20240315T1430", "", "now"],
)  # fmt: skip
def test_malformed_or_coarse_timestamps_are_refused(value: str) -> None:
    with pytest.raises(cda.TimestampError):
        cda.parse_ts(value)


def test_a_malformed_effective_time_is_an_error() -> None:
    data = _edit(
        "n1_pdf.xml",
        'effectiveTime value="20240315143005+0100"',
        'effectiveTime value="2024-03-15"',
    )
    message = _refused(data)
    assert "effectiveTime" in message and "2024-03-15" in message


# --- refused documents --------------------------------------------------------------------


def test_broken_xml_is_refused_with_its_line() -> None:
    message = _refused(_read("broken_not_well_formed.xml"))
    assert message.startswith("the CDA does not parse: line 4: ")


@pytest.mark.parametrize("data", [b"", b"   \n", b"not xml at all", b"<ClinicalDocument"])
def test_what_is_not_xml_is_refused(data: bytes) -> None:
    assert _refused(data).startswith("the CDA does not parse")


def test_a_root_without_the_hl7_namespace_is_refused() -> None:
    message = _refused(_read("broken_no_namespace.xml"))
    assert message.startswith("not a CDA R2 ClinicalDocument")
    assert "urn:hl7-org:v3" in message


@pytest.mark.parametrize(
    "root",
    [
        '<ClinicalDocument xmlns="urn:hl7-org:v2">',
        '<Document xmlns="urn:hl7-org:v3">',
        '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform">',
    ],
)
def test_another_root_is_refused(root: str) -> None:
    end = root.split()[0].replace("<", "</") + ">"
    data = _edit(
        "n1_pdf.xml", r"<ClinicalDocument .*</ClinicalDocument>", f"{root}<x/>{end}", regex=True
    )
    assert _refused(data).startswith("not a CDA R2 ClinicalDocument")


def test_a_missing_patient_id_is_refused() -> None:
    assert _refused(_read("broken_no_patient_id.xml")) == (
        "the CDA has no recordTarget patient id (recordTarget/patientRole/id)"
    )


def test_a_nonxml_body_that_is_not_base64_is_refused() -> None:
    assert _refused(_read("broken_bad_base64.xml")) == "the nonXMLBody text is not valid base64"


@pytest.mark.parametrize(
    ("old", "needle"),
    [
        (r'<id root="1\.2\.250\.1\.999\.7\.1\.2024\.31" extension="CR-000417"/>', "has no id"),
        (r"<code code=\"11502-2\".*?/>", "has no code"),
        (r'<effectiveTime value="20240315143005\+0100"/>', "has no effectiveTime"),
        (r"<confidentialityCode .*?/>", "has no confidentialityCode"),
        (r"<recordTarget>.*?</recordTarget>", "has no recordTarget patient id"),
        (r"<author>.*?</author>", "has no author"),
        (r"<component>\s*<nonXMLBody>.*?</component>", "has no body"),
    ],
)
def test_a_missing_required_element_is_named(old: str, needle: str) -> None:
    message = _refused(_edit("n1_pdf.xml", old, "", regex=True))
    assert message.startswith("the CDA " + needle), message


def test_two_patients_are_refused() -> None:
    target = re.search(r"<recordTarget>.*?</recordTarget>", _read("n1_pdf.xml").decode(), re.S)
    assert target is not None
    data = _edit("n1_pdf.xml", "<author>", target.group(0) + "<author>")
    assert "2 recordTarget patients" in _refused(data)


def test_a_document_past_the_size_limit_is_refused_before_parsing() -> None:
    data = _read("n1_pdf.xml")
    with pytest.raises(PayloadTooLarge):
        parse_cda(data, max_bytes=len(data) - 1)
    assert parse_cda(data, max_bytes=len(data)).body_kind == "nonXMLBody"


def test_cda_errors_answer_422() -> None:
    assert issubclass(CdaError, Unprocessable)
    assert CdaError("x").status == 422


# --- entities: refused, never expanded, no file read --------------------------------------

SECRET = "SECRET-7f3a9c"


class Tripwire:
    """A FIFO that knows whether anything opened it for reading: opening a FIFO for writing
    without blocking fails (ENXIO) until a reader has it open, so a thread polls; if a
    parser opens the FIFO, the thread meets it and hands it ``payload``."""

    def __init__(self, path: Path, payload: str) -> None:
        os.mkfifo(path)
        self.url = path.as_uri()
        self.path = path
        self.payload = payload.encode()
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.001)
                continue
            self.opened.set()
            try:
                os.write(fd, self.payload)
            except OSError:
                pass
            finally:
                os.close(fd)
            return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def tripwires(tmp_path: Path) -> Iterator[list[Tripwire]]:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    made: list[Tripwire] = []
    yield made
    for wire in made:
        wire.close()


def _with_doctype(doctype: str, title: str) -> bytes:
    text = _read("n1_pdf.xml").decode()
    text = text.replace('<?xml version="1.0" encoding="UTF-8"?>', f'<?xml version="1.0"?>{doctype}')
    return text.replace(
        "<title>Compte rendu d'examens biologiques</title>", f"<title>{title}</title>"
    ).encode()


XXE_FORMS = {
    # an external general entity in the internal subset
    "external-entity": (
        '<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "{url}">]>',
        "&xxe;",
        SECRET,
    ),
    # an external DTD that would declare the entity
    "external-dtd": (
        '<!DOCTYPE ClinicalDocument SYSTEM "{url}">',
        "&leak;",
        f'<!ENTITY leak "{SECRET}">',
    ),
    # an external parameter entity
    "parameter-entity": (
        '<!DOCTYPE ClinicalDocument [<!ENTITY % pe SYSTEM "{url}"> %pe;]>',
        "&leak;",
        f'<!ENTITY leak "{SECRET}">',
    ),
}


@pytest.mark.parametrize("form", sorted(XXE_FORMS))
def test_xxe_is_refused_and_no_file_is_read(
    form: str, tmp_path: Path, tripwires: list[Tripwire]
) -> None:
    doctype, reference, payload = XXE_FORMS[form]
    wire = Tripwire(tmp_path / "target", payload)
    tripwires.append(wire)

    message = _refused(_with_doctype(doctype.format(url=wire.url), reference))

    time.sleep(0.05)  # time for the watcher to meet a reader, had there been one
    assert not wire.opened.is_set(), "the parser opened the referenced file"
    assert SECRET not in message


def test_the_tripwire_sees_a_parser_that_reads_files(
    tmp_path: Path, tripwires: list[Tripwire]
) -> None:
    """The control: an lxml parser that expands entities trips the wire (so the test above
    would fail if the CDA parser did)."""
    doctype, reference, payload = XXE_FORMS["external-entity"]
    wire = Tripwire(tmp_path / "target", payload)
    tripwires.append(wire)
    unsafe = etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=True)
    root = etree.fromstring(_with_doctype(doctype.format(url=wire.url), reference), unsafe)
    assert wire.opened.is_set()
    assert SECRET in "".join(root.itertext())


def test_internal_entities_are_refused_not_expanded() -> None:
    message = _refused(_with_doctype('<!DOCTYPE ClinicalDocument [<!ENTITY a "AAAA">]>', "&a;"))
    assert message == "the CDA's DOCTYPE declares entities: refused"


def test_an_entity_bomb_is_refused_at_once() -> None:
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "ha"}">' for i in range(9))
    started = time.monotonic()
    message = _refused(_with_doctype(f"<!DOCTYPE ClinicalDocument [{laughs}]>", "&l8;"))
    assert time.monotonic() - started < 2
    assert "haha" not in message
    assert message.startswith(("the CDA does not parse", "the CDA's DOCTYPE declares entities"))


def test_a_bare_doctype_is_tolerated() -> None:
    doc = parse_cda(_with_doctype("<!DOCTYPE ClinicalDocument>", "Titre"))
    assert doc.title == "Titre"


# --- lenient in: what is tolerated, and said --------------------------------------------


def test_malformed_optional_values_are_dropped_with_a_warning() -> None:
    data = _edit("n1_pdf.xml", '<birthTime value="19800614"/>', '<birthTime value="1980"/>')
    data = data.replace(b'<versionNumber value="2"/>', b'<versionNumber value="deux"/>')
    data = data.replace(b'<time value="20240315142000+0100"/>', b'<time value="hier"/>')
    doc = parse_cda(data)
    assert (doc.patient_birth_date, doc.version, doc.authors[0].time) == (None, None, None)
    assert len(doc.warnings) == 3
    assert any("birthTime" in w and "1980" in w for w in doc.warnings)
    assert any("versionNumber" in w for w in doc.warnings)
    assert any("author/time" in w and "hier" in w for w in doc.warnings)


def test_missing_base64_padding_is_repaired_and_said() -> None:
    text = _read("n1_pdf.xml").decode()
    encoded = re.search(r'representation="B64">(.*?)</text>', text, re.S)
    assert encoded is not None and encoded.group(1).strip().endswith("=")
    data = text.replace(encoded.group(1), encoded.group(1).strip().rstrip("=")).encode()
    doc = parse_cda(data)
    assert doc.body is not None and hashlib.sha256(doc.body).hexdigest() == PDF_SHA256
    assert doc.warnings == ("the nonXMLBody's base64 lacked its final padding: added",)


def test_the_practice_setting_falls_back_to_the_authors_organization() -> None:
    data = _edit(
        "n3_structured.xml", r'<standardIndustryClassCode code="ETABLISSEMENT".*?/>', "", regex=True
    )
    doc = parse_cda(data)
    assert doc.practice_setting == Code("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", None)
    assert len(doc.warnings) == 1 and "author's organization" in doc.warnings[0]


def test_a_plain_text_body_is_read() -> None:
    doc = parse_cda(
        _read("broken_no_patient_id.xml").replace(
            b'<id nullFlavor="NI"/>', b'<id root="1.2.250.1.999.7.2" extension="IPP-1"/>'
        )
    )
    assert (doc.body_kind, doc.body_media_type, doc.body) == (
        "nonXMLBody",
        "text/plain",
        b"Bonjour",
    )
    assert doc.patient_family == "SANS-ID" and doc.ins is None


# --- HTML -------------------------------------------------------------------------------

ALLOWED_TAGS = {
    "article", "header", "h1", "h2", "h3", "h4", "h5", "h6", "dl", "dt", "dd", "section",
    "div", "p", "pre", "span", "strong", "em", "u", "sub", "sup", "small", "br", "ul", "ol",
    "li", "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td", "del", "ins",
}  # fmt: skip


class _Structure(HTMLParser):
    """Every tag of a fragment, checked: allowed, balanced, with only harmless attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"<{tag}> is not allowed")
        for name, value in attrs:
            if name not in ("class", "colspan", "rowspan"):
                self.problems.append(f"<{tag} {name}={value!r}>")
        if tag != "br":
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"</{tag}> closes nothing open")

    def handle_comment(self, data: str) -> None:
        self.problems.append("a comment")


def _checked(fragment: str) -> _Structure:
    structure = _Structure()
    structure.feed(fragment)
    structure.close()
    assert structure.problems == []
    assert structure.stack == []
    return structure


def test_a_structured_document_renders_its_sections_and_narrative() -> None:
    fragment = render_html(_read("n3_structured.xml"))
    structure = _checked(fragment)

    assert fragment.startswith('<article class="cda"><header class="cda-header">')
    assert "<h1>Lettre de liaison à la sortie</h1>" in fragment
    assert "<dd>DUPONT-TEST Jean Pierre, date de naissance 02/11/1975, sexe masculin, " in fragment
    assert "INS-NIR 175112B00000042</dd>" in fragment
    assert "<dd>MEDECIN-TEST Claire, Médecin - Qualifié en médecine générale (SM), " in fragment
    assert "<dt>Date</dt><dd>20/03/2024 10:45</dd>" in fragment
    assert "<dt>Confidentialité</dt><dd>Restreint</dd>" in fragment
    # sections, nested, with their titles (or their code's name)
    assert "<h2>Motif d&#x27;hospitalisation</h2>" in fragment
    assert "<h2>Résultats</h2>" in fragment
    assert "<h3>Traitements de sortie</h3>" in fragment
    assert "<h2>Plan de soins</h2>" in fragment
    assert structure.tags.count("section") == 4
    # the table
    assert (
        '<table class="cda-table"><caption>Biologie du 18/03</caption>'
        "<thead><tr><th>Examen</th><th>Valeur</th></tr></thead>"
        "<tbody><tr><td>Troponine</td><td><span><strong>12 ng/L</strong></span></td></tr>"
        '<tr><td colspan="2">Prélèvement hémolysé</td></tr></tbody></table>'
    ) in fragment
    # paragraphs, styles, line breaks, lists, captions
    assert "<span><strong>aiguë</strong></span>" in fragment
    assert "<span><em>irradiant</em></span>" in fragment
    assert "<span><u>gauche</u></span>.<br>Voir" in fragment
    assert "SpO<sub>2</sub> 97 %, 10<sup>9</sup>/L.</p>" in fragment
    assert (
        '<p><strong class="cda-caption">Antécédents</strong> Aucun antécédent notable.</p>'
        in fragment
    )
    assert (
        '<p class="cda-caption"><strong>Ordonnance</strong></p><ol><li>Aspirine 75 mg</li>'
        in fragment
    )
    assert "<li><span><strong><em>Bisoprolol</em></strong></span> 2,5 mg</li></ol>" in fragment
    assert "<ul><li>Consultation de cardiologie à 1 mois</li></ul>" in fragment
    assert '<span class="cda-media">[image non affichée]</span>' in fragment
    assert '<small class="cda-footnote">tracé joint</small>' in fragment
    # a link is its text; the entries and presentational attributes are not shown
    assert "la fiche d&#x27;admission." in fragment
    for absent in ("example.org", "href", "onclick", "steal", "width", "ENTRY-ONLY-TEXT"):
        assert absent not in fragment


def test_rendering_escapes_what_a_narrative_carries() -> None:
    hostile = (
        "&lt;script&gt;alert(1)&lt;/script&gt;"
        "<script>alert(2)</script>"
        '<x:script xmlns:x="http://www.w3.org/1999/xhtml">alert(3)</x:script>'
        '<content styleCode="Bold" onmouseover="alert(4)" ID="a&quot;b">ok</content>'
        '<linkHtml href="javascript:alert(6)">lien</linkHtml>'
        '<renderMultiMedia referencedObject="x">'
        '<caption>"&gt;&lt;img src=x&gt;</caption></renderMultiMedia>'
    )
    data = _edit("n3_structured.xml", "Aucun antécédent notable.", hostile)
    data = data.replace(
        b"<title>Lettre de liaison", b"<title>&lt;img src=x onerror=alert(5)&gt;Lettre de liaison"
    )
    fragment = render_html(data)
    _checked(fragment)

    assert "<script" not in fragment.lower()
    assert "<img" not in fragment.lower()
    assert "javascript" not in fragment and "onmouseover" not in fragment
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment
    assert "<span>alert(2)</span>alert(3)<span><strong>ok</strong></span>lien" in fragment
    assert "<h1>&lt;img src=x onerror=alert(5)&gt;Lettre de liaison à la sortie</h1>" in fragment
    assert "[image non affichée : &quot;&gt;&lt;img src=x&gt;]" in fragment


def test_a_pdf_document_renders_as_a_pointer_to_the_viewer() -> None:
    fragment = render_html(_read("n1_pdf.xml"))
    _checked(fragment)

    assert "<h1>Compte rendu d&#x27;examens biologiques</h1>" in fragment
    assert (
        "<dd>LEGRAND-TEST CAMILLE ANNE MARIE, date de naissance 14/06/1980, sexe féminin, "
        "INS-NIR de test 248067500000123</dd>"
    ) in fragment
    assert "<dd>BIOLOGISTE-TEST Paul Henri, Médecin - Biologie médicale (SM), " in fragment
    assert "<dd>15/03/2024 14:30 (UTC+01:00)</dd>" in fragment
    assert "Confidentialité" not in fragment  # N, the usual level, is not repeated
    assert "est un PDF (599 octets)" in fragment
    assert "JVBER" not in fragment and "<section" not in fragment


def test_a_text_body_renders_escaped() -> None:
    data = (
        _read("broken_no_patient_id.xml")
        .replace(b'<id nullFlavor="NI"/>', b'<id root="1.2.250.1.999.7.2" extension="IPP-1"/>')
        .replace(b">Bonjour<", b">&lt;b&gt;Bonjour&lt;/b&gt;<")
    )
    fragment = render_html(data)
    _checked(fragment)
    assert '<pre class="cda-body cda-body-text">&lt;b&gt;Bonjour&lt;/b&gt;</pre>' in fragment


def test_rendering_a_broken_document_raises_the_parsing_error() -> None:
    with pytest.raises(CdaError, match="recordTarget patient id"):
        render_html(_read("broken_no_patient_id.xml"))


def test_a_body_past_libxml2s_text_limit_is_refused_plainly() -> None:
    text = _read("n1_pdf.xml").decode()
    body = "QUFB" * 2_600_000  # 10.4 million characters of base64
    data = re.sub(r'(representation="B64">).*?(</text>)', rf"\g<1>{body}\g<2>", text, flags=re.S)
    message = _refused(data.encode())
    assert "a text node is longer than 10,000,000 characters" in message
    assert "HUGE" not in message
