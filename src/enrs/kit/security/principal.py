"""Who is calling: a person (portal session or user token) or a system client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from enrs.kit.security.scopes import ScopeSet


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "client"]
    subject: str
    display: str
    scopes: ScopeSet
    roles: frozenset[str] = field(default_factory=frozenset)
    client_id: str | None = None
    rpps: str | None = None
    session_id: str | None = None

    @property
    def contexts(self) -> tuple[str, ...]:
        return ("system",) if self.kind == "client" else ("user",)

    def can(self, resource: str, interaction: str) -> bool:
        return self.scopes.allows(resource, interaction, self.contexts)
