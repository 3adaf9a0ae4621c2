"""The server's ``CapabilityStatement`` (``GET /fhir/metadata``), built from what is registered.

FHIR R4 capabilitystatement.html and http.html#capabilities: the statement describes the
interactions, search parameters and operations this instance really supports. HTTP routers
register each resource type in a :class:`CapabilityRegistry` as they are mounted, so the
statement can never advertise an endpoint that does not exist. Security follows SMART App
Launch (``rest.security.service`` = ``SMART-on-FHIR`` and the ``oauth-uris`` extension).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from enrs.kit.fhir.search import SearchSpec

__all__ = ["FHIR_VERSION", "CapabilityRegistry"]

FHIR_VERSION = "4.0.1"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")
SEARCH_PARAM_TYPES = frozenset(
    {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}
)


@dataclass
class _Resource:
    type: str
    interactions: list[str]
    search_params: list[dict[str, str]]
    operations: dict[str, str] = field(default_factory=dict)
    profile: str | None = None
    documentation: str | None = None
    includes: list[str] = field(default_factory=list)
    revincludes: list[str] = field(default_factory=list)


def _operation_name(name: str) -> str:
    return name.removeprefix("$")


class CapabilityRegistry:
    """Collects the implemented resource types; renders the R4 ``CapabilityStatement``."""

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}
        self._system_interactions: set[str] = set()
        self._system_operations: dict[str, str] = {}

    def add_resource(
        self,
        resource_type: str,
        *,
        interactions: Sequence[str],
        search_params: SearchSpec | Sequence[tuple[str, str, str]] = (),
        operations: Sequence[tuple[str, str]] = (),
        profile: str | None = None,
        documentation: str | None = None,
    ) -> None:
        """Register a resource type (once) with its interactions, search params, operations.

        ``search_params`` is a :class:`SearchSpec` (its parameters, documentation,
        definitions and allowed ``_include`` / ``_revinclude``) or ``(name, type, doc)``
        tuples. ``operations`` are ``(name, OperationDefinition canonical URL)`` pairs;
        ``documentation`` (markdown) says how the server departs from the profiles it follows.
        """
        if resource_type in self._resources:
            raise ValueError(f"{resource_type} is already registered")
        unknown = set(interactions) - set(TYPE_INTERACTIONS)
        if unknown:
            raise ValueError(f"unknown interactions for {resource_type}: {sorted(unknown)}")
        entry = _Resource(resource_type, [i for i in TYPE_INTERACTIONS if i in interactions], [])
        if isinstance(search_params, SearchSpec):
            if search_params.resource_type != resource_type:
                raise ValueError(
                    f"search spec of {search_params.resource_type}, not {resource_type}"
                )
            for name, param in search_params.params.items():
                item = {"name": name, "type": param.type}
                if param.definition:
                    item["definition"] = param.definition
                if param.doc:
                    item["documentation"] = param.doc
                entry.search_params.append(item)
            entry.includes = sorted(search_params.includes)
            entry.revincludes = sorted(search_params.revincludes)
        else:
            for name, kind, doc in search_params:
                if kind not in SEARCH_PARAM_TYPES:
                    raise ValueError(f"unknown search parameter type {kind!r} for {name!r}")
                item = {"name": name, "type": kind}
                if doc:
                    item["documentation"] = doc
                entry.search_params.append(item)
        if entry.search_params and "search-type" not in entry.interactions:
            raise ValueError(f"{resource_type} has search parameters but no search-type")
        entry.profile, entry.documentation = profile, documentation
        self._resources[resource_type] = entry
        for name, definition in operations:
            self.add_operation(resource_type, name, definition)

    def add_interactions(self, resource_type: str, interactions: Sequence[str]) -> None:
        """Declare more interactions on an already registered resource type (another router
        serving its writes)."""
        if resource_type not in self._resources:
            raise ValueError(f"{resource_type} is not registered")
        unknown = set(interactions) - set(TYPE_INTERACTIONS)
        if unknown:
            raise ValueError(f"unknown interactions for {resource_type}: {sorted(unknown)}")
        entry = self._resources[resource_type]
        wanted = set(entry.interactions) | set(interactions)
        entry.interactions = [i for i in TYPE_INTERACTIONS if i in wanted]

    def add_search_params(
        self, resource_type: str, search_params: Sequence[tuple[str, str, str]]
    ) -> None:
        """Declare more ``(name, type, doc)`` search parameters on an already registered
        resource type (another router answering some of its searches); a name already
        declared keeps its first declaration."""
        if resource_type not in self._resources:
            raise ValueError(f"{resource_type} is not registered")
        entry = self._resources[resource_type]
        if "search-type" not in entry.interactions:
            raise ValueError(f"{resource_type} has no search-type")
        known = {p["name"] for p in entry.search_params}
        for name, kind, doc in search_params:
            if kind not in SEARCH_PARAM_TYPES:
                raise ValueError(f"unknown search parameter type {kind!r} for {name!r}")
            if name not in known:
                entry.search_params.append({"name": name, "type": kind, "documentation": doc})
                known.add(name)

    def add_documentation(self, resource_type: str, text: str) -> None:
        """Add a paragraph to a registered resource type's ``documentation`` (markdown)."""
        if resource_type not in self._resources:
            raise ValueError(f"{resource_type} is not registered")
        entry = self._resources[resource_type]
        entry.documentation = f"{entry.documentation}\n\n{text}" if entry.documentation else text

    def add_operation(self, resource_type: str, name: str, definition: str) -> None:
        """Declare an operation (``$name``) on an already registered resource type."""
        if resource_type not in self._resources:
            raise ValueError(f"{resource_type} is not registered")
        self._resources[resource_type].operations[_operation_name(name)] = definition

    def add_system_interaction(self, code: str) -> None:
        """Declare a whole-system interaction (transaction, batch, search-system, ...)."""
        if code not in SYSTEM_INTERACTIONS:
            raise ValueError(f"unknown system interaction {code!r}")
        self._system_interactions.add(code)

    def add_system_operation(self, name: str, definition: str) -> None:
        """Declare a system-level operation (e.g. ``$export``)."""
        self._system_operations[_operation_name(name)] = definition

    @property
    def resource_types(self) -> list[str]:
        return sorted(self._resources)

    def _resource_json(self, res: _Resource) -> dict[str, Any]:
        out: dict[str, Any] = {"type": res.type}
        if res.profile:
            out["profile"] = res.profile
        if res.documentation:
            out["documentation"] = res.documentation
        out["interaction"] = [{"code": code} for code in res.interactions]
        if res.includes:
            out["searchInclude"] = res.includes
        if res.revincludes:
            out["searchRevInclude"] = res.revincludes
        if res.search_params:
            out["searchParam"] = sorted(res.search_params, key=lambda p: p["name"])
        if res.operations:
            out["operation"] = [
                {"name": name, "definition": url} for name, url in sorted(res.operations.items())
            ]
        if not out["interaction"]:
            del out["interaction"]
        return out

    def capability_statement(
        self,
        *,
        base_url: str,
        software_name: str,
        software_version: str,
        security_description: str,
        token_url: str,
        authorize_url: str | None = None,
        publisher: str | None = None,
        date: str | None = None,
    ) -> dict[str, Any]:
        """A valid R4 ``CapabilityStatement`` (``kind = instance``, JSON only, server mode).

        ``date`` defaults to now (UTC). ``implementation`` is present as kind ``instance``
        requires (invariant cpb-14 in R4's capabilitystatement.html).
        """
        oauth = [{"url": "token", "valueUri": token_url}]
        if authorize_url:
            oauth.append({"url": "authorize", "valueUri": authorize_url})
        security = {
            "extension": [{"url": OAUTH_URIS, "extension": oauth}],
            "service": [
                {
                    "coding": [
                        {
                            "system": SECURITY_SERVICE,
                            "code": "SMART-on-FHIR",
                            "display": "SMART-on-FHIR",
                        }
                    ],
                    "text": "OAuth2 using the SMART App Launch profile",
                }
            ],
            "description": security_description,
        }
        rest: dict[str, Any] = {"mode": "server", "security": security}
        resources = [self._resource_json(self._resources[t]) for t in self.resource_types]
        if resources:
            rest["resource"] = resources
        if self._system_interactions:
            rest["interaction"] = [
                {"code": c} for c in SYSTEM_INTERACTIONS if c in self._system_interactions
            ]
        if self._system_operations:
            rest["operation"] = [
                {"name": n, "definition": u} for n, u in sorted(self._system_operations.items())
            ]
        statement: dict[str, Any] = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": date or datetime.now(UTC).replace(microsecond=0).isoformat(),
            "kind": "instance",
            "software": {"name": software_name, "version": software_version},
            "implementation": {"description": software_name, "url": base_url.rstrip("/")},
            "fhirVersion": FHIR_VERSION,
            "format": ["json"],
            "rest": [rest],
        }
        if publisher:
            statement["publisher"] = publisher
        if any("patch" in r.interactions for r in self._resources.values()):
            statement["patchFormat"] = ["application/json-patch+json"]
        return statement
