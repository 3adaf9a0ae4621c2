"""The ANS correspondence tables ASS_X04 (type -> class), ASS_A11 (CDA model -> format) and
ASS_12 (media type of a CDA level 1 body -> format), as shipped and as looked up."""

from __future__ import annotations

from collections import Counter

import pytest

from enrs.documents.correspondence import (
    Pair,
    Table,
    Target,
    class_of_type,
    format_of_media,
    format_of_model,
    table,
)

NOS = "https://mos.esante.gouv.fr/NOS/"
LOINC, LOINC_OID = "http://loinc.org", "2.16.840.1.113883.6.1"
A03 = NOS + "TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
A05 = NOS + "TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
A05_OID = "1.2.250.1.213.1.1.4.12"
A06 = NOS + "TRE_A06-FormatCodeComplementaire/FHIR/TRE-A06-FormatCodeComplementaire"
A10 = NOS + "TRE_A10-NomenclatureURN/FHIR/TRE-A10-NomenclatureURN"
A11 = NOS + "TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode"
A12 = NOS + "TRE_A12-NomenclatureASTM/FHIR/TRE-A12-NomenclatureASTM"
CISIS_HEADER = "1.2.250.1.213.1.1.1.1"  # every CI-SIS CDA carries it; not a model
XDS_SD = "1.3.6.1.4.1.19376.1.2.20"
PDF = Target(A11, "urn:ihe:iti:xds-sd:pdf:2008", "Document à corps non structuré en Pdf/A-1")
TEXT = Target(A11, "urn:ihe:iti:xds-sd:text:2008", "Document à corps non structuré en texte brut")


def _sources(name: str) -> Counter[str]:
    return Counter(pair.source_system for pair in table(name).pairs)


def test_x04_is_the_published_table() -> None:
    x04 = table("ASS_X04")
    assert (x04.name, x04.version) == ("ASS_X04-CorrespondanceType-Classe-CISIS", "20240426120000")
    assert len(x04.pairs) == 129
    assert _sources("ASS_X04") == {LOINC: 91, A05: 37, A12: 1}
    assert {p.equivalence for p in x04.pairs} == {"equivalent"}
    assert len(x04.derived) == 129  # one class per type
    assert x04.systems[LOINC] == LOINC_OID and x04.systems[A05] == A05_OID


def test_a11_is_the_published_table() -> None:
    a11 = table("ASS_A11")
    assert (a11.name, a11.version) == ("ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS", "5.0.0")
    assert len(a11.pairs) == 83
    assert Counter(p.target.system for p in a11.pairs) == {A06: 47, A11: 36}
    # the XDS-SD model's five 'narrower' formats derive nothing; the 78 models do
    assert len(a11.derived) == 78


def test_a12_is_the_published_table() -> None:
    a12 = table("ASS_12")
    assert a12.version == "5.0.0"
    assert [(p.source_code, p.target.code) for p in a12.pairs] == [
        ("application/pdf", "urn:ihe:iti:xds-sd:pdf:2008"),
        ("text/plain", "urn:ihe:iti:xds-sd:text:2008"),
        ("text/rtf", "urn:ihe:iti-fr:xds-sd:rtf:2010"),
        ("image/jpeg", "urn:ihe:iti-fr:xds-sd:jpeg:2010"),
        ("image/tiff", "urn:ihe:iti-fr:xds-sd:tiff:2010"),
    ]


def test_only_one_equivalent_target_derives() -> None:
    def pair(source: str, target: str, equivalence: str) -> Pair:
        return Pair("urn:s", source, Target("urn:t", target, target), equivalence)

    made_up = Table(
        name="made-up",
        url="urn:made-up",
        version="1",
        pairs=(
            pair("one", "x", "equivalent"),
            pair("narrow", "y", "narrower"),  # a narrower map is a hint, not a derivation
            pair("two", "a", "equivalent"),  # two equivalent targets: ambiguous
            pair("two", "b", "equivalent"),
            pair("mixed", "c", "equal"),
            pair("mixed", "d", "relatedto"),
        ),
        systems={"urn:s": None, "urn:t": None},
    )
    assert made_up.derived == {
        ("urn:s", "one"): Target("urn:t", "x", "x"),
        ("urn:s", "mixed"): Target("urn:t", "c", "c"),
    }


def test_every_target_has_a_display() -> None:
    for name in ("ASS_X04", "ASS_A11", "ASS_12"):
        assert all(p.target.display.strip() for p in table(name).pairs), name


@pytest.mark.parametrize(
    ("code", "klass", "display"),
    [
        ("11490-0", "10", "Compte rendu"),  # lettre de sortie
        ("11488-4", "10", "Compte rendu"),  # compte rendu de consultation
        ("34133-9", "11", "Synthèse"),  # synthèse d'épisode de soins
        ("57833-6", "42", "Prescription"),  # prescription de médicaments
        ("18748-4", "31", "Imagerie médicale"),  # compte rendu d'imagerie
        ("51851-4", "95", "Document de gestion"),
        ("87273-9", "52", "Certificat, déclaration"),
    ],
)
def test_class_of_a_loinc_type(code: str, klass: str, display: str) -> None:
    assert class_of_type(LOINC, code) == Target(A03, klass, display)


@pytest.mark.parametrize(
    "system", [LOINC, f"urn:oid:{LOINC_OID}", LOINC_OID, f" {LOINC_OID} ", "URN:OID:" + LOINC_OID]
)
def test_each_form_of_the_loinc_system(system: str) -> None:
    assert class_of_type(system, "34133-9") == Target(A03, "11", "Synthèse")


@pytest.mark.parametrize("system", [A05, f"urn:oid:{A05_OID}", A05_OID])
def test_each_form_of_an_ans_system(system: str) -> None:
    assert class_of_type(system, "SYNTH") == Target(A03, "11", "Synthèse")
    assert class_of_type(system, "FEUILLE-DE-STYLE") == Target(A03, "99", "Document technique")


@pytest.mark.parametrize("system", [A12, "ASTM", "urn:oid:ASTM"])
def test_a_signature_document(system: str) -> None:
    digital_signature = Target(A10, "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "Digital Signature")
    assert class_of_type(system, "E1762") == digital_signature


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (LOINC, "99999-9"),  # not in the table
        (LOINC, "101881-1"),  # in JDV_J07 since, not (yet) in ASS_X04 20240426120000
        (A05, "11490-0"),  # a LOINC code under the wrong system
        (LOINC, "SYNTH"),  # a TRE_A05 code under LOINC
        ("urn:oid:1.2.3.4", "11490-0"),  # a system no table declares
        ("", "11490-0"),
    ],
)
def test_an_unknown_type_has_no_class(system: str, code: str) -> None:
    assert class_of_type(system, code) is None


def test_format_of_a_ci_sis_model_after_the_header_template() -> None:
    ldl_ses = Target(
        A06,
        "urn:asip:ci-sis:ldl-ses:2017",
        "Lettre de Liaison à la sortie de l'établissement de santé",
    )
    assert format_of_model([CISIS_HEADER, "1.2.250.1.213.1.1.1.29"]) == ldl_ses
    assert format_of_model(iter(["urn:oid:1.2.250.1.213.1.1.1.29"])) == ldl_ses


def test_format_of_an_ihe_model() -> None:
    xd_lab = Target(
        A11, "urn:ihe:lab:xd-lab:2008", "Compte rendu structuré d'examens de biologie médicale"
    )
    assert format_of_model(["2.16.840.1.113883.10.20.1", "1.3.6.1.4.1.19376.1.3.3"]) == xd_lab
    assert format_of_model([CISIS_HEADER, "1.2.250.1.213.1.1.1.55"]) == xd_lab


def test_the_first_model_wins() -> None:
    vsm, ips = "urn:asip:ci-sis:vsm:2012", "urn:ihe:pcc:ips:2020"
    first = format_of_model(["1.2.250.1.213.1.1.1.13", "1.2.250.1.213.1.1.1.51"])
    second = format_of_model(["1.2.250.1.213.1.1.1.51", "1.2.250.1.213.1.1.1.13"])
    assert first is not None and first.code == vsm
    assert second is not None and second.code == ips


@pytest.mark.parametrize(
    "template_ids",
    [
        [],
        [CISIS_HEADER],
        ["1.2.3.4.5"],
        [CISIS_HEADER, XDS_SD],  # a CDA level 1 document: the media type decides
        ["1.2.250.1.213.1.1.1"],  # a prefix of the models, not one
    ],
)
def test_no_format_without_a_model(template_ids: list[str]) -> None:
    assert format_of_model(template_ids) is None


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        ("application/pdf", PDF),
        ("Application/PDF", PDF),
        ("text/plain", TEXT),
        ("text/plain; charset=UTF-8", TEXT),
        (
            "image/jpeg",
            Target(
                A11,
                "urn:ihe:iti-fr:xds-sd:jpeg:2010",
                "Document à corps non structuré en format jpeg",
            ),
        ),
        (
            "text/rtf",
            Target(
                A11,
                "urn:ihe:iti-fr:xds-sd:rtf:2010",
                "Document à corps non structuré en format rtf",
            ),
        ),
    ],
)
def test_format_of_a_media_type(media_type: str, expected: Target) -> None:
    assert format_of_media(media_type) == expected


@pytest.mark.parametrize(
    "media_type", ["application/msword", "image/png", "", "text/xml", XDS_SD, "application"]
)
def test_an_unknown_media_type_has_no_format(media_type: str) -> None:
    assert format_of_media(media_type) is None


def test_a_model_is_not_a_media_type_nor_a_type() -> None:
    assert format_of_media("1.2.250.1.213.1.1.1.29") is None
    assert format_of_model(["application/pdf"]) is None
    assert class_of_type(LOINC, "1.2.250.1.213.1.1.1.29") is None


def test_tables_are_read_once() -> None:
    assert table("ASS_X04") is table("ASS_X04")
