"""The permissions the identity server's FHIR endpoints declare in their signatures.

SMART scopes on ``Patient``: feeding (PIXm ITI-104, a conditional update that may create)
needs both ``c`` and ``u`` (``system/Patient.cu`` for a facility's system), and a person also
needs the ``identitovigilance`` role; reading needs ``r``; searching, the PIXm ``$ihe-pix`` and
PDQm ``$match`` queries need ``s``. Every call is audited by :func:`enrs.kit.http.require`
(401 without valid credentials, 403 without the permission).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from enrs.kit.errors import Forbidden
from enrs.kit.http import require
from enrs.kit.security.principal import Principal

FEEDERS = frozenset({"identitovigilance"})

_update = require("Patient", "update", roles=FEEDERS)


def _feeder(principal: Annotated[Principal, Depends(_update)]) -> Principal:
    """``Patient.u`` (checked and audited by ``require``) and ``Patient.c`` as well."""
    if not principal.can("Patient", "c"):
        raise Forbidden(f"scope {principal.contexts[0]}/Patient.c is required")
    return principal


PatientFeed = Annotated[Principal, Depends(_feeder)]
PatientRead = Annotated[Principal, Depends(require("Patient", "read"))]
PatientSearch = Annotated[Principal, Depends(require("Patient", "search-type"))]


def actor(principal: Principal) -> str:
    """How the identity service records who changed an identity (``client:…``, ``user:…``)."""
    return f"{principal.kind}:{principal.subject}"
