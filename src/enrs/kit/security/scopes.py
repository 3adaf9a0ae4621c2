"""SMART App Launch v2 scopes (``system/Patient.rs``, ``user/*.cruds``) and the roles' grants.

Grammar (SMART v2, scopes-and-launch-context): ``context/resource.permissions[?query]`` where
context is ``patient``, ``user`` or ``system``, resource a FHIR type or ``*``, and permissions a
subset of ``cruds`` in that order. v1 suffixes ``read``, ``write`` and ``*`` are accepted and
translated. Fine-grained ``?query`` restrictions are parsed and kept but grant nothing yet: a
restricted scope never widens access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<resource>\*|[A-Z][A-Za-z]+)\."
    r"(?P<perms>c?r?u?d?s?|read|write|\*)(?:\?(?P<query>[^\s]+))?$"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
INTERACTIONS = frozenset("cruds")
OIDC_SCOPES = frozenset({"openid", "profile", "fhirUser", "offline_access", "online_access"})
# The platform's own services that are not FHIR: "mail" (a mail client logs into the
# person's MSSanté mailbox), "introspect" (a resource server asks whether a token is valid).
SERVICE_SCOPES = frozenset({"mail", "introspect"})


class ScopeError(ValueError):
    """A scope string that is not SMART v2 (or v1) syntax."""


@dataclass(frozen=True)
class Scope:
    context: str
    resource: str
    permissions: frozenset[str]
    query: str | None = None

    @classmethod
    def parse(cls, text: str) -> Scope:
        m = _SCOPE.match(text)
        if m is None or not m.group("perms"):
            raise ScopeError(f"not a SMART scope: {text!r}")
        perms = m.group("perms")
        perms = _V1.get(perms, perms)
        return cls(m.group("context"), m.group("resource"), frozenset(perms), m.group("query"))

    def __str__(self) -> str:
        perms = "".join(p for p in "cruds" if p in self.permissions)
        q = f"?{self.query}" if self.query else ""
        return f"{self.context}/{self.resource}.{perms}{q}"

    def grants(self, resource: str, interaction: str, contexts: Iterable[str]) -> bool:
        return (
            self.query is None
            and self.context in contexts
            and self.resource in ("*", resource)
            and interaction in self.permissions
        )

    def covers(self, other: Scope) -> bool:
        """True when everything ``other`` grants is granted by this scope too."""
        return (
            self.context == other.context
            and self.resource in ("*", other.resource)
            and other.permissions <= self.permissions
            and (self.query is None or self.query == other.query)
        )


@dataclass(frozen=True)
class ScopeSet:
    """The SMART scopes a principal holds, plus plain OIDC scopes kept verbatim."""

    scopes: frozenset[Scope]
    other: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> ScopeSet:
        items = text.split() if isinstance(text, str) else list(text)
        smart: set[Scope] = set()
        other: set[str] = set()
        for item in items:
            if item in OIDC_SCOPES or item in SERVICE_SCOPES:
                other.add(item)
            else:
                smart.add(Scope.parse(item))
        return cls(frozenset(smart), frozenset(other))

    def allows(self, resource: str, interaction: str, contexts: Iterable[str]) -> bool:
        if interaction not in INTERACTIONS:
            raise ValueError(f"unknown interaction {interaction!r}")
        ctx = tuple(contexts)
        return any(s.grants(resource, interaction, ctx) for s in self.scopes)

    def covers(self, other: ScopeSet) -> bool:
        return all(any(mine.covers(s) for mine in self.scopes) for s in other.scopes) and (
            other.other <= self.other | OIDC_SCOPES
        )

    def __str__(self) -> str:
        return " ".join(sorted([str(s) for s in self.scopes] + sorted(self.other)))


# Roles of people and the scopes each one brings. Kept as data; services add care-relationship
# checks on top (a professional only reaches patients of their care teams).
# Everyone who logs in may look up the directory (professionals, their roles, structures).
DIRECTORY_READ = (
    "user/Practitioner.rs user/PractitionerRole.rs user/Organization.rs "
    "user/HealthcareService.rs user/Location.rs user/Endpoint.rs"
)
ROLES: dict[str, str] = {
    "admin": (
        "user/AuditEvent.rs user/Practitioner.cruds user/PractitionerRole.cruds "
        "user/Organization.cruds user/Subscription.rus "
        "user/HealthcareService.crus user/Location.crus user/Consent.crus user/CareTeam.crus"
        " user/ImagingStudy.rs"
    ),
    "identitovigilance": (
        f"user/Patient.cruds user/Task.rus user/AuditEvent.rs {DIRECTORY_READ} user/ImagingStudy.rs"
    ),
    # A professional counts the beds of the structures they practise in (directory.offer).
    "professional": (
        "user/Patient.rs user/DocumentReference.crus user/Binary.r user/List.s user/Consent.cru "
        f"user/CareTeam.crus user/Communication.cus user/Task.crus {DIRECTORY_READ} user/Location.u"
        " user/Questionnaire.rs user/QuestionnaireResponse.crus"
        " user/Appointment.crus user/Schedule.crs user/Slot.crus"
        " user/CarePlan.crus user/PlanDefinition.rs user/Subscription.crds"
        " user/ImagingStudy.rs"
    ),
    "auditor": f"user/AuditEvent.rs {DIRECTORY_READ}",
    # Social and medico-social workers (RPPS+, registered regionally; DAC case managers of that
    # field): only what the coordination of the care circles they are in needs (Code de la
    # santé publique L1110-4 / L1110-12: the information strictly necessary to it, the patient
    # informed). The circle (accept, leave), its plan and pathways (read), its tasks, chat,
    # agenda and evaluation forms; the circle's rule applies on top (current members only,
    # tasks changed only when given to them: enrs.coordination.auth). They are not health
    # professionals: no Patient (the identity registry, the INS), no DocumentReference or
    # Binary (the clinical documents, a chat's attachments included), no imaging, no Consent.
    "social": (
        f"{DIRECTORY_READ} user/CareTeam.rus user/CarePlan.rs user/PlanDefinition.rs"
        " user/Task.crus user/Communication.cus user/Appointment.crus user/Schedule.rs"
        " user/Slot.rs user/Questionnaire.rs user/QuestionnaireResponse.crus"
    ),
}


def scopes_for_roles(roles: Iterable[str]) -> ScopeSet:
    parts: list[str] = []
    for role in roles:
        if role not in ROLES:
            raise ScopeError(f"unknown role {role!r}; known roles: {', '.join(sorted(ROLES))}")
        parts.extend(ROLES[role].split())
    return ScopeSet.parse(parts)
