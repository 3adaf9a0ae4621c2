"""The CI-SIS value sets shipped as data (``enrs/documents/valuesets``) and the checker over
them: each set loads with the count of the publication it was taken from, known codes are
accepted with their system as canonical URL, ``urn:oid:`` or bare OID, unknown or misplaced
codes are refused with a message that says where, systems translate both ways, and the DMP's
restriction sets refuse what they leave out. No database."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest

from enrs.documents.terminology import Binding, Concept, Terminology, UnknownCode, UnknownSystem
from enrs.kit.errors import Unprocessable

NOS = "https://mos.esante.gouv.fr/NOS/"
LOINC = "http://loinc.org"
TRE_A03 = f"{NOS}TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A11 = f"{NOS}TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode"
TRE_R02 = f"{NOS}TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
TRE_A01 = f"{NOS}TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
TRE_A08 = f"{NOS}TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
TRE_A07 = f"{NOS}TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
TRE_A12 = f"{NOS}TRE_A12-NomenclatureASTM/FHIR/TRE-A12-NomenclatureASTM"

# name -> (binding, scope, OID of the set, version, concepts), as published.
SHIPPED = {
    "JDV_J02-XdsHealthcareFacilityTypeCode-CISIS": (
        Binding.FACILITY_TYPE,
        "CI-SIS",
        "1.2.250.1.213.1.1.5.466",
        "20260223120000",
        69,
    ),
    "JDV_J04-XdsPracticeSettingCode-CISIS": (
        Binding.PRACTICE_SETTING,
        "CI-SIS",
        "1.2.250.1.213.1.1.5.467",
        "20240927120000",
        12,
    ),
    "JDV_J06-XdsClassCode-CISIS": (
        Binding.CLASS,
        "CI-SIS",
        "1.2.250.1.213.1.1.5.462",
        "20230922120000",
        13,
    ),
    "JDV_J07-XdsTypeCode-CISIS": (
        Binding.TYPE,
        "CI-SIS",
        "1.2.250.1.213.1.1.5.471",
        "20260629120000",
        123,
    ),
    "JDV_J08-XdsConfidentialityCode-CISIS": (
        Binding.CONFIDENTIALITY,
        "CI-SIS",
        "1.2.250.1.213.1.1.5.463",
        "20200424120000",
        6,
    ),
    "JDV_J10-XdsFormatCode-CISIS": (
        Binding.FORMAT,
        "CI-SIS",
        "1.2.250.1.213.1.1.5.465",
        "1.1.0",
        89,
    ),
    "JDV_J57-ClassCode-DMP": (Binding.CLASS, "DMP", "1.2.250.1.213.1.1.5.6", "20230922120000", 12),
    "JDV_J58-ConfidentialityCode-DMP": (
        Binding.CONFIDENTIALITY,
        "DMP",
        "1.2.250.1.213.1.1.5.9",
        "20200424120000",
        6,
    ),
    "JDV_J60-FormatCode-DMP": (
        Binding.FORMAT,
        "DMP",
        "1.2.250.1.213.1.1.5.8",
        "20240927120000",
        62,
    ),
}

# binding, canonical system, its OID, code, display (from the published sets).
KNOWN = [
    (Binding.TYPE, LOINC, "2.16.840.1.113883.6.1", "34133-9", "Synthèse d'épisode de soins"),
    (Binding.TYPE, TRE_A12, "ASTM", "E1762", "Full Document"),
    (Binding.CLASS, TRE_A03, "1.2.250.1.213.1.1.4.1", "10", "Compte rendu"),
    (Binding.CONFIDENTIALITY, TRE_A08, "2.16.840.1.113883.5.25", "N", "Normal"),
    (
        Binding.CONFIDENTIALITY,
        TRE_A07,
        "1.2.250.1.213.1.1.4.13",
        "MASQUE_PS",
        "Masqué aux professionnels de santé",
    ),
    (
        Binding.FORMAT,
        TRE_A11,
        "1.3.6.1.4.1.19376.1.2.3",
        "urn:ihe:iti:xds-sd:pdf:2008",
        "Document à corps non structuré en Pdf/A-1",
    ),
    (Binding.FACILITY_TYPE, TRE_R02, "1.2.250.1.71.4.2.4", "SA01", "Etablissement public de santé"),
    (
        Binding.PRACTICE_SETTING,
        TRE_A01,
        "1.2.250.1.213.1.1.4.9",
        "ETABLISSEMENT",
        "Etablissement de santé",
    ),
]


def _documents() -> dict[str, dict[str, Any]]:
    folder = resources.files("enrs.documents").joinpath("valuesets")
    found = {}
    for entry in folder.iterdir():
        if entry.name.startswith("JDV_") and entry.name.endswith(".json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            assert entry.name == f"{document['name']}.json"
            found[document["name"]] = document
    return found


@pytest.fixture(scope="module")
def terms() -> Terminology:
    return Terminology.load()


def test_the_shipped_files_are_the_published_sets() -> None:
    documents = _documents()
    assert set(documents) == set(SHIPPED)
    for name, (binding, scope, oid, version, count) in SHIPPED.items():
        document = documents[name]
        assert (document["binding"], document["scope"]) == (binding.value, scope)
        assert (document["oid"], document["version"], len(document["concepts"])) == (
            oid,
            version,
            count,
        ), name
        assert document["url"] == f"{NOS}{name}/FHIR/{name.replace('_', '-')}"
        assert all(c["display"] for c in document["concepts"]), name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_set_loads_with_its_published_count(terms: Terminology, name: str) -> None:
    binding, scope, oid, version, count = SHIPPED[name]
    vs = terms.value_set(binding, dmp=scope == "DMP")
    assert vs is not None
    assert (vs.name, vs.oid, vs.version, len(vs.concepts)) == (name, oid, version, count)
    if scope == "CI-SIS":
        assert terms.concepts(binding) == vs.concepts
        assert len({(c.system, c.code) for c in vs.concepts}) == count


def test_load_reads_the_package_data_once() -> None:
    assert Terminology.load() is Terminology.load()


@pytest.mark.parametrize(("binding", "url", "oid", "code", "display"), KNOWN)
def test_a_known_code_is_accepted_in_all_three_system_forms(
    terms: Terminology, binding: Binding, url: str, oid: str, code: str, display: str
) -> None:
    expected = Concept(url, code, display)
    for system in (url, f"urn:oid:{oid}", oid):
        assert terms.check(binding, system, code) == expected, system
    assert terms.check(binding, None, code) == expected
    assert expected.oid() == oid


def test_an_unknown_code_is_refused_naming_binding_system_code_and_set(
    terms: Terminology,
) -> None:
    with pytest.raises(UnknownCode) as caught:
        terms.check(Binding.TYPE, "urn:oid:2.16.840.1.113883.6.1", "99999-9")
    error = caught.value
    assert isinstance(error, Unprocessable) and error.status == 422
    assert error.message == "type: http://loinc.org|99999-9 is not in JDV_J07-XdsTypeCode-CISIS"
    assert (error.binding, error.code) == (Binding.TYPE, "99999-9")

    with pytest.raises(UnknownCode, match=r"^format: urn:nope:2024 is not in JDV_J10-"):
        terms.check(Binding.FORMAT, None, "urn:nope:2024")


def test_a_code_under_the_wrong_system_is_refused_and_the_message_says_where_it_is(
    terms: Terminology,
) -> None:
    with pytest.raises(UnknownCode) as caught:
        terms.check(Binding.TYPE, TRE_A03, "34133-9")
    assert caught.value.message == (
        f"type: {TRE_A03}|34133-9 is not in JDV_J07-XdsTypeCode-CISIS (it is under {LOINC})"
    )
    # a code of another binding's set is not in this one
    with pytest.raises(UnknownCode, match=r"^class: http://loinc.org\|34133-9 is not in JDV_J06-"):
        terms.check(Binding.CLASS, LOINC, "34133-9")
    # an unknown system is kept as given in the message
    with pytest.raises(UnknownCode, match=r"^confidentiality: urn:oid:1\.2\.3\|N is not in"):
        terms.check(Binding.CONFIDENTIALITY, "urn:oid:1.2.3", "N")


def test_a_code_without_system_must_be_unambiguous() -> None:
    documents = list(_documents().values())
    j06 = next(d for d in documents if d["name"] == "JDV_J06-XdsClassCode-CISIS")
    doubled = dict(j06, concepts=[*j06["concepts"], {**j06["concepts"][1], "system": LOINC}])
    doubled["systems"] = [
        *j06["systems"],
        {"url": LOINC, "name": "LOINC", "oid": "2.16.840.1.113883.6.1"},
    ]
    terms = Terminology.from_documents([doubled if d is j06 else d for d in documents])
    assert terms.check(Binding.CLASS, None, "10").code == "10"
    with pytest.raises(
        UnknownCode, match=r"^class: 11 is ambiguous \(give its system\) in JDV_J06"
    ):
        terms.check(Binding.CLASS, None, "11")
    assert terms.check(Binding.CLASS, "urn:oid:1.2.250.1.213.1.1.4.1", "11").system == TRE_A03


def test_systems_translate_between_canonical_url_and_oid(terms: Terminology) -> None:
    systems = {c.system for binding in Binding for c in terms.concepts(binding)}
    assert {LOINC, TRE_A03, TRE_A08, TRE_A11, TRE_R02, TRE_A01} <= systems
    for url in systems:
        oid = terms.oid_of(url)
        assert oid != url
        assert terms.canonical_system(oid) == url
        assert terms.canonical_system(f"urn:oid:{oid}") == url
        assert terms.canonical_system(url) == url
        assert terms.oid_of(f"urn:oid:{oid}") == oid
    assert terms.oid_of(LOINC) == "2.16.840.1.113883.6.1"
    assert terms.oid_of(f"{NOS}TRE_A10-NomenclatureURN/FHIR/TRE-A10-NomenclatureURN") == "URN"
    assert terms.canonical_system("http://snomed.info/sct") == "http://snomed.info/sct"
    assert terms.canonical_system("1.2.3.4") == "1.2.3.4"
    with pytest.raises(
        UnknownSystem, match=re.escape("http://snomed.info/sct is not a code system")
    ):
        terms.oid_of("http://snomed.info/sct")


def test_the_same_system_with_two_oids_is_refused() -> None:
    documents = list(_documents().values())
    j04 = next(d for d in documents if d["name"] == "JDV_J04-XdsPracticeSettingCode-CISIS")
    j02 = next(d for d in documents if d["name"].startswith("JDV_J02"))
    shared = {s["url"] for s in j04["systems"]} & {s["url"] for s in j02["systems"]}
    assert shared  # TRE_A00 is in both
    j04_bad = dict(j04, systems=[dict(s, oid="1.2.3") for s in j04["systems"]])
    with pytest.raises(ValueError, match=re.escape("has OID 1.2.3, another set gives")):
        Terminology.from_documents([j04_bad if d is j04 else d for d in documents])


def test_the_dmp_restrictions_refuse_what_they_leave_out(terms: Terminology) -> None:
    report = terms.check(Binding.CLASS, TRE_A03, "10")
    technical = terms.check(Binding.CLASS, TRE_A03, "99")  # "Document technique", J06 only
    assert terms.dmp_accepts(Binding.CLASS, report)
    assert not terms.dmp_accepts(Binding.CLASS, technical)

    pdf = terms.check(Binding.FORMAT, TRE_A11, "urn:ihe:iti:xds-sd:pdf:2008")
    enveloping = terms.check(Binding.FORMAT, TRE_A11, "urn:ihe:iti:dsg:enveloping:2014")
    assert terms.dmp_accepts(Binding.FORMAT, pdf)
    assert not terms.dmp_accepts(Binding.FORMAT, enveloping)
    # the concept's system may be given as an OID too
    assert terms.dmp_accepts(
        Binding.FORMAT, Concept("urn:oid:1.3.6.1.4.1.19376.1.2.3", pdf.code, "")
    )

    for code in ("N", "MASQUE_PS"):
        assert terms.dmp_accepts(
            Binding.CONFIDENTIALITY, terms.check(Binding.CONFIDENTIALITY, None, code)
        )


def test_bindings_without_a_shipped_dmp_set_accept_every_concept(terms: Terminology) -> None:
    """J61 (facility type), J62 (practice setting) and J66 (type) are not shipped."""
    for binding in (Binding.TYPE, Binding.FACILITY_TYPE, Binding.PRACTICE_SETTING):
        assert terms.value_set(binding, dmp=True) is None
        assert all(terms.dmp_accepts(binding, c) for c in terms.concepts(binding))
    for binding in (Binding.CLASS, Binding.CONFIDENTIALITY, Binding.FORMAT):
        assert terms.value_set(binding, dmp=True) is not None


def test_the_dmp_sets_are_within_the_ci_sis_sets_but_for_two_j60_formats(
    terms: Terminology,
) -> None:
    """J60 (published 2024-09) holds two formats the shipped J10 (an ANS working copy of
    2024-04) lacks; when a published J10 replaces it, this test says so."""
    outside = {}
    for binding in Binding:
        dmp = terms.value_set(binding, dmp=True)
        if dmp is not None:
            outside[binding] = {c.code for c in dmp.concepts} - {
                c.code for c in terms.concepts(binding)
            }
    assert outside == {
        Binding.CLASS: set(),
        Binding.CONFIDENTIALITY: set(),
        Binding.FORMAT: {"urn:ans:ci-sis:trod:2024", "http://www.w3.org/2000/09/xmldsig#"},
    }
