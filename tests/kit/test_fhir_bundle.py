"""searchset Bundles (links, entries, outcome) and the CapabilityStatement registry."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import sqlalchemy as sa

from enrs.kit.fhir import (
    CapabilityRegistry,
    ParsedSearch,
    SearchParam,
    SearchSpec,
    bundle_entry,
    parse_search,
    searchset_bundle,
)

BASE = "https://enrs.example/fhir"
md = sa.MetaData()
obs = sa.Table(
    "bundletest_obs",
    md,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("code", sa.String(64)),
    sa.Column("code_system", sa.String(200)),
    sa.Column("subject_id", sa.String(64)),
    sa.Column("display", sa.String(200)),
    sa.Column("effective", sa.DateTime(timezone=True)),
)
SPEC = SearchSpec(
    resource_type="Observation",
    params={
        "code": SearchParam.token(
            obs.c.code,
            system=obs.c.code_system,
            doc="The code of the observation",
            definition="http://hl7.org/fhir/SearchParameter/clinical-code",
        ),
        "subject": SearchParam.reference(obs.c.subject_id, targets=["Patient", "Group"]),
        "date": SearchParam.date(obs.c.effective),
        "text": SearchParam.string(obs.c.display),
    },
    sorts={"date": obs.c.effective},
    default_sort="-date",
    tiebreaker=obs.c.id,
    includes=frozenset({"Observation:subject"}),
)


def _parse(query: list[tuple[str, str]]) -> ParsedSearch:
    return parse_search(SPEC, query, strict=False)


def _obs(ident: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": ident, "status": "final"}


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def test_first_page_structure() -> None:
    parsed = _parse([("code", "http://loinc.org|8867-4"), ("_count", "2")])
    bundle = searchset_bundle(
        base_url=BASE + "/",
        resource_type="Observation",
        resources=[_obs("o1"), _obs("o2")],
        parsed=parsed,
        total=5,
        has_next=True,
    )
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 5
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"{BASE}/Observation/o1",
        f"{BASE}/Observation/o2",
    ]
    assert all(e["search"] == {"mode": "match"} for e in bundle["entry"])
    assert bundle["entry"][0]["resource"] == _obs("o1")
    links = _links(bundle)
    assert list(links) == ["self", "first", "next", "last"]
    assert links["self"] == f"{BASE}/Observation?code=http://loinc.org%7C8867-4&_count=2"
    assert links["first"] == links["self"]
    assert _params(links["next"])[-1] == ("_offset", "2")
    assert _params(links["last"])[-1] == ("_offset", "4")
    assert "previous" not in links


def test_second_page_has_previous_and_no_next_on_last_page() -> None:
    parsed = _parse([("_count", "2"), ("_offset", "2")])
    links = _links(
        searchset_bundle(
            base_url=BASE,
            resource_type="Observation",
            resources=[_obs("o3"), _obs("o4")],
            parsed=parsed,
            total=None,
            has_next=True,
        )
    )
    assert list(links) == ["self", "first", "previous", "next"]
    assert _params(links["self"]) == [("_count", "2"), ("_offset", "2")]
    assert _params(links["previous"]) == [("_count", "2")]
    assert _params(links["next"]) == [("_count", "2"), ("_offset", "4")]

    parsed = _parse([("_count", "2"), ("_offset", "4")])
    bundle = searchset_bundle(
        base_url=BASE,
        resource_type="Observation",
        resources=[_obs("o5")],
        parsed=parsed,
        total=5,
        has_next=False,
    )
    links = _links(bundle)
    assert "next" not in links
    assert _params(links["previous"]) == [("_count", "2"), ("_offset", "2")]
    assert links["last"] == links["self"]


def test_links_echo_only_used_parameters_and_encode_them() -> None:
    parsed = _parse(
        [
            ("text", "blood pressure"),
            ("code", r"http://loinc.org|85354-9,http://snomed.info/sct|75367002"),
            ("subject:Patient", "123"),
            ("date", "ge2024-05-03T10:00:00+02:00"),
            ("_sort", "-date"),
            ("unknown", "x"),
            ("_format", "json"),
            ("_include", "Observation:subject"),
        ]
    )
    bundle = searchset_bundle(
        base_url=BASE,
        resource_type="Observation",
        resources=[],
        parsed=parsed,
        total=0,
        has_next=False,
    )
    self_url = _links(bundle)["self"]
    query = urlsplit(self_url).query
    assert "text=blood%20pressure" in query
    assert "code=http://loinc.org%7C85354-9,http://snomed.info/sct%7C75367002" in query
    assert "date=ge2024-05-03T10:00:00%2B02:00" in query
    assert " " not in self_url and "|" not in self_url and "+" not in self_url
    assert _params(self_url) == [
        ("text", "blood pressure"),
        ("code", "http://loinc.org|85354-9,http://snomed.info/sct|75367002"),
        ("subject:Patient", "123"),
        ("date", "ge2024-05-03T10:00:00+02:00"),
        ("_sort", "-date"),
        ("_include", "Observation:subject"),
        ("_count", "20"),
    ]
    # The round trip through the query string gives the same search.
    again = _parse(_params(self_url))
    assert again.used == parsed.used
    # The ignored parameter is reported in an OperationOutcome entry, not echoed.
    (outcome,) = bundle["entry"]
    assert outcome["search"] == {"mode": "outcome"}
    assert outcome["fullUrl"].startswith("urn:uuid:")
    issue = outcome["resource"]["issue"][0]
    assert issue["severity"] == "warning" and issue["code"] == "not-supported"
    assert "'unknown'" in issue["diagnostics"]
    assert bundle["total"] == 0


def test_empty_bundle_has_no_entry_array() -> None:
    bundle = searchset_bundle(
        base_url=BASE,
        resource_type="Observation",
        resources=[],
        parsed=_parse([]),
        total=None,
        has_next=False,
    )
    assert "entry" not in bundle and "total" not in bundle
    assert list(_links(bundle)) == ["self", "first"]


def test_included_resources_and_scores() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    bundle = searchset_bundle(
        base_url=BASE,
        resource_type="Observation",
        resources=[_obs("o1"), _obs("o2")],
        parsed=_parse([("_include", "Observation:subject")]),
        total=2,
        has_next=False,
        included=[patient],
        scores=[0.9, None],
    )
    modes = [(e["fullUrl"], e["search"]) for e in bundle["entry"]]
    assert modes == [
        (f"{BASE}/Observation/o1", {"mode": "match", "score": 0.9}),
        (f"{BASE}/Observation/o2", {"mode": "match"}),
        (f"{BASE}/Patient/p1", {"mode": "include"}),
    ]
    with pytest.raises(ValueError):
        searchset_bundle(
            base_url=BASE,
            resource_type="Observation",
            resources=[_obs("o1")],
            parsed=_parse([]),
            total=None,
            has_next=False,
            scores=[],
        )


def test_count_zero_bundle() -> None:
    bundle = searchset_bundle(
        base_url=BASE,
        resource_type="Observation",
        resources=[],
        parsed=_parse([("_count", "0")]),
        total=42,
        has_next=True,
    )
    assert bundle["total"] == 42
    assert list(_links(bundle)) == ["self", "first"]


def test_next_link_stays_within_max_offset() -> None:
    parsed = _parse([("_count", "100"), ("_offset", str(SPEC.max_offset))])
    links = _links(
        searchset_bundle(
            base_url=BASE,
            resource_type="Observation",
            resources=[_obs("o1")],
            parsed=parsed,
            total=None,
            has_next=True,
        )
    )
    assert "next" not in links


def test_bundle_entry_helper() -> None:
    entry = bundle_entry({"resourceType": "Patient", "id": "a.b-1"}, base_url=BASE, mode="include")
    assert entry == {
        "fullUrl": f"{BASE}/Patient/a.b-1",
        "resource": {"resourceType": "Patient", "id": "a.b-1"},
        "search": {"mode": "include"},
    }
    with pytest.raises(ValueError):
        bundle_entry({"resourceType": "Patient"}, base_url=BASE)
    with pytest.raises(ValueError):
        bundle_entry({"resourceType": "Patient", "id": "1"}, base_url=BASE, mode="other")


# --------------------------------------------------------------------- capability


def _statement(registry: CapabilityRegistry) -> dict[str, Any]:
    return registry.capability_statement(
        base_url=BASE,
        software_name="ENRS",
        software_version="0.1.0",
        security_description="OAuth 2.0 bearer tokens (SMART on FHIR)",
        token_url="https://enrs.example/oauth/token",
        authorize_url="https://enrs.example/oauth/authorize",
        date="2024-05-03T10:00:00+00:00",
    )


def test_capability_statement() -> None:
    registry = CapabilityRegistry()
    registry.add_resource(
        "Patient",
        interactions=["search-type", "read"],
        search_params=[("family", "string", "Family name"), ("_id", "token", "")],
        operations=[("$everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything")],
        profile="http://interopsante.org/fhir/StructureDefinition/FrPatient",
    )
    registry.add_resource("Observation", interactions=["read", "search-type"], search_params=SPEC)
    registry.add_resource("AuditEvent", interactions=["create", "read", "patch"])
    registry.add_system_interaction("batch")
    registry.add_system_operation(
        "$export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    )
    cs = _statement(registry)

    assert cs["resourceType"] == "CapabilityStatement"
    assert (cs["status"], cs["kind"], cs["fhirVersion"]) == ("active", "instance", "4.0.1")
    assert cs["format"] == ["json"]
    assert cs["date"] == "2024-05-03T10:00:00+00:00"
    assert cs["software"] == {"name": "ENRS", "version": "0.1.0"}
    assert cs["implementation"]["url"] == BASE
    assert cs["patchFormat"] == ["application/json-patch+json"]
    (rest,) = cs["rest"]
    assert rest["mode"] == "server"
    service = rest["security"]["service"][0]["coding"][0]
    assert service["code"] == "SMART-on-FHIR"
    assert service["system"] == "http://terminology.hl7.org/CodeSystem/restful-security-service"
    (oauth,) = rest["security"]["extension"]
    assert oauth["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert {e["url"]: e["valueUri"] for e in oauth["extension"]} == {
        "token": "https://enrs.example/oauth/token",
        "authorize": "https://enrs.example/oauth/authorize",
    }
    assert [r["type"] for r in rest["resource"]] == ["AuditEvent", "Observation", "Patient"]
    audit, observation, patient = rest["resource"]
    assert [i["code"] for i in audit["interaction"]] == ["read", "patch", "create"]
    assert "searchParam" not in audit
    assert [i["code"] for i in patient["interaction"]] == ["read", "search-type"]
    assert patient["searchParam"] == [
        {"name": "_id", "type": "token"},
        {"name": "family", "type": "string", "documentation": "Family name"},
    ]
    assert patient["operation"] == [
        {
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        }
    ]
    assert patient["profile"].endswith("FrPatient")
    assert [p["name"] for p in observation["searchParam"]] == ["code", "date", "subject", "text"]
    assert observation["searchParam"][0] == {
        "name": "code",
        "type": "token",
        "definition": "http://hl7.org/fhir/SearchParameter/clinical-code",
        "documentation": "The code of the observation",
    }
    assert observation["searchInclude"] == ["Observation:subject"]
    assert rest["interaction"] == [{"code": "batch"}]
    assert rest["operation"][0]["name"] == "export"


def test_capability_registry_refuses_mistakes() -> None:
    registry = CapabilityRegistry()
    registry.add_resource("Patient", interactions=["read"])
    with pytest.raises(ValueError):
        registry.add_resource("Patient", interactions=["read"])
    with pytest.raises(ValueError):
        registry.add_resource("Group", interactions=["fetch"])
    with pytest.raises(ValueError):
        registry.add_resource("Device", interactions=["read"], search_params=[("x", "text", "")])
    with pytest.raises(ValueError):
        registry.add_resource("Device", interactions=["read"], search_params=[("x", "token", "")])
    with pytest.raises(ValueError):
        registry.add_resource("Encounter", interactions=["search-type"], search_params=SPEC)
    with pytest.raises(ValueError):
        registry.add_operation("Unknown", "$x", "http://example.org/x")
    with pytest.raises(ValueError):
        registry.add_system_interaction("read")
    cs = CapabilityRegistry().capability_statement(
        base_url=BASE,
        software_name="ENRS",
        software_version="0",
        security_description="none",
        token_url="https://enrs.example/oauth/token",
    )
    assert "resource" not in cs["rest"][0]
    assert cs["date"].endswith("+00:00")
