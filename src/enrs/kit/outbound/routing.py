"""Several services' renderers over the one outbound queue (one dispatcher, one fan-out
cursor per database): each destination belongs to the service its selector names
(``"service"``; destinations without one belong to ``default``), and only that service's
renderer writes its messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from enrs.kit.events import Event
from enrs.kit.outbound.queue import Destination, Outgoing, Renderer


def service_of(destination: Destination, default: str) -> str:
    return str(destination.selector.get("service") or default)


class ByService:
    """A :class:`~enrs.kit.outbound.queue.Renderer` made of one renderer per service."""

    def __init__(self, renderers: Mapping[str, Renderer], *, default: str) -> None:
        if default not in renderers:
            raise ValueError(f"no renderer for the default service {default!r}")
        self.renderers = dict(renderers)
        self.default = default
        names: list[str] = []
        for renderer in self.renderers.values():
            names.extend(n for n in renderer.names if n not in names)
        self.names = tuple(names)

    def prepare(self, session: Session, event: Event) -> dict[str, Any] | None:
        prepared = {}
        for service, renderer in self.renderers.items():
            if event.name in renderer.names:
                found = renderer.prepare(session, event)
                if found is not None:
                    prepared[service] = found
        return prepared or None

    def render(
        self, prepared: Any, destination: Destination, control_prefix: str
    ) -> list[Outgoing]:
        service = service_of(destination, self.default)
        mine = prepared.get(service)
        if mine is None:
            return []
        return self.renderers[service].render(mine, destination, control_prefix)
