"""The HL7 v2 listener's routes for the whole platform: the identity feed's and those of the
services that take HL7 v2 messages (the document repository's MDM^T02 and ORU^R01). Given to
each listener process by ``app.listeners`` (a module-level function: it crosses the process
boundary by name)."""

from __future__ import annotations

from collections.abc import Mapping

from enrs.documents import hl7 as documents_hl7
from enrs.identity import hl7 as identity_hl7
from enrs.identity.pam import Route
from enrs.settings import Settings


def platform_routes(settings: Settings) -> Mapping[tuple[str, str], Route]:
    return {**identity_hl7.ROUTES, **documents_hl7.routes(settings)}
