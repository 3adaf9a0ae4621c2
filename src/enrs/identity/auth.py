"""The permissions the identity server's FHIR endpoints declare in their signatures.

SMART scopes on ``Patient``: feeding (PIXm ITI-104, a conditional update that may create)
needs both ``c`` and ``u`` (``system/Patient.cu`` for a facility's system), and a person also
needs the ``identitovigilance`` role; reading needs ``r``; searching, the PIXm ``$ihe-pix`` and
PDQm ``$match`` queries need ``s``. Every call is audited by :func:`enrs.kit.http.require`
(401 without valid credentials, 403 without the permission).

What a feeder writes: a system client only the identities of the assigning authorities its
facility owns or the admin bound to it (:func:`enrs.identity.domains.feeder_grant`,
:func:`check_writer`);
the regional cell's people (role ``identitovigilance``) write for every authority. The HL7 v2
senders follow the same rule (:mod:`enrs.identity.hl7`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.identity import domains
from enrs.identity.config import IdentityConfig
from enrs.identity.pamfr import authority_of
from enrs.kit.errors import BadRequest, Forbidden
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


def check_writer(session: Session, principal: Principal, authority: str) -> None:
    """403 unless ``principal`` may write the identities of ``authority``: a person of the
    cell (the role is checked by :data:`PatientFeed`) always, a system client when the
    authority is registered for it (looked up at each request: a revocation or a change of
    authorities applies to the next one)."""
    if principal.kind == "user":
        return
    client_id = principal.client_id or principal.subject
    grant = domains.feeder_grant(session, accounts_service.client_grant(session, client_id))
    if grant is None:
        raise Forbidden(f"client {client_id} is not an active system client")
    if not grant.may_write(authority):
        registered = ", ".join(sorted(grant.authorities)) or "none"
        raise Forbidden(
            f"client {client_id} may not write identities of the assigning authority "
            f"{authority} (registered authorities: {registered})"
        )


def finess_authority(finess: str, config: IdentityConfig) -> str:
    """The assigning authority (OID) that PAM-FR messages give a FINESS-numbered facility
    (``pamfr.authority_of`` of an HD with type ``M``), for ``enrs clients create --finess``
    and the demo; 400 for a malformed FINESS."""
    value = finess.strip()
    oid = authority_of(config, "", value, "M") if "." not in value else None  # not an OID
    if oid is None:
        raise BadRequest(f"{finess!r} is not a FINESS number (9 characters, 2A/2B in Corsica)")
    return oid
