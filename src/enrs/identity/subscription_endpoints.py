"""FHIR R4 ``Subscription`` (rest-hook) for FHIR consumers of the identity server (IHE PMIR
ITI-94 "subscribe to patient updates"): a system client registers its hook itself, and gets
the notifications of :mod:`.notify` (PMIR patient-feed message Bundles) POSTed to it, from the
same durable queue as the destinations the admin adds (``enrs notifications add``).

- ``POST /fhir/Subscription`` (``system/Subscription.c``): ``criteria`` ``Patient?identifier=
  urn:oid:{OID}|`` for a facility (one of the assigning authorities the client is registered
  for: it is told about the patients it holds, in its identifiers and the RRI) or ``Patient``
  for a service (a client registered for no authority: every patient); ``channel.type``
  ``rest-hook``, ``channel.endpoint`` an http(s) URL, ``channel.payload``
  ``application/fhir+json``, ``channel.header`` ``Name: value`` strings sent with each POST.
  Answer: the Subscription, ``status`` ``active``.
- ``GET /fhir/Subscription/{id}``, ``GET /fhir/Subscription`` (``.rs``): the client's own;
  ``status`` ``error`` with ``error`` while its hook fails, ``off`` once deleted.
- ``DELETE /fhir/Subscription/{id}`` (``.d``): nothing more is queued for it.

The URLs are shared with the care circles' subscriptions
(:mod:`enrs.coordination.subscription_endpoints`, whose routes come first): ``POST`` and the
search are its routes, which hand a ``Patient…`` criteria to :func:`create_pmir` and list
:func:`pmir_subscriptions` with its own; an id of digits only is one of these.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.identity import domains, subscriptions
from enrs.identity.config import IdentityConfig
from enrs.kit.errors import Forbidden, NotFound, Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat
from enrs.kit.fhir.subscription import PAYLOAD, rest_hook_channel
from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.outbound.models import OutboundDestination
from enrs.kit.outbound.queue import DestinationStatus, set_active, statuses
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["identity"], dependencies=[FhirFormat])
CLIENTS: frozenset[str] = frozenset()  # software only: people have no such role
SubRead = Annotated[Principal, Depends(require("Subscription", "read", roles=CLIENTS))]
SubDelete = Annotated[Principal, Depends(require("Subscription", "delete", roles=CLIENTS))]
_FACILITY = re.compile(r"^Patient\?identifier=urn:oid:([0-9.]+)\|$")


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "Subscription",
        interactions=["create", "read", "search-type", "delete"],
        search_params=[],
        profile=None,
    )


def _client(principal: Principal) -> str:
    if principal.kind != "client":
        raise Forbidden("a Subscription is made by a system client for its own hook")
    return principal.client_id or principal.subject


def _authority(session: Session, client_id: str, criteria: str) -> str | None:
    grant = domains.feeder_grant(session, accounts_service.client_grant(session, client_id))
    if grant is None:
        raise Forbidden(f"client {client_id} is not an active system client")
    if criteria == "Patient":
        if grant.authorities:
            raise Forbidden(
                "criteria 'Patient' (every patient) is for a service; a facility's client "
                "subscribes with 'Patient?identifier=urn:oid:{its authority}|'"
            )
        return None
    found = _FACILITY.match(criteria)
    if found is None:
        raise Unprocessable(
            "Subscription.criteria: 'Patient?identifier=urn:oid:{OID}|' or 'Patient'"
        )
    if found.group(1) not in grant.authorities:
        raise Forbidden(f"client {client_id} is not registered for the authority {found[1]}")
    return found.group(1)


def _to_fhir(d: DestinationStatus, row: OutboundDestination) -> dict[str, Any]:
    selector = d.selector
    authority = selector.get("authority")
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": str(row.id),
        "status": "off" if not d.active else "error" if d.head_error else "active",
        "reason": selector.get("reason") or "identity notifications",
        "criteria": f"Patient?identifier=urn:oid:{authority}|" if authority else "Patient",
        "channel": {"type": "rest-hook", "endpoint": d.endpoint, "payload": PAYLOAD},
    }
    if d.head_error and d.active:
        resource["error"] = d.head_error
    return resource


def _own(session: Session, client_id: str) -> list[tuple[DestinationStatus, OutboundDestination]]:
    rows = {
        r.name: r
        for r in session.scalars(select(OutboundDestination))
        if json.loads(r.selector or "{}").get("owner") == client_id
    }
    return [(d, rows[d.name]) for d in statuses(session) if d.name in rows]


def _one(session: Session, client_id: str, raw: str) -> tuple[DestinationStatus, Any]:
    for d, row in _own(session, client_id):
        if str(row.id) == raw:
            return d, row
    raise NotFound(f"Subscription/{raw} not found")


def create_pmir(
    request: Request, session: Session, principal: Principal, body: dict[str, Any]
) -> FhirJSONResponse:
    """``POST /fhir/Subscription`` with a ``Patient…`` criteria: the route is the front of
    :mod:`enrs.coordination.subscription_endpoints`, which hands these to this."""
    client_id = _client(principal)
    authority = _authority(session, client_id, str(body.get("criteria") or ""))
    endpoint, headers = rest_hook_channel(body)
    config: IdentityConfig = request.app.state.identity_config
    count = len(_own(session, client_id))
    dest = subscriptions.subscribe(
        session,
        config,
        name=f"fhir:{client_id}:{count + 1}"[:64],
        transport="http",
        endpoint=endpoint,
        authority=authority,
        headers=headers or None,
        owner=client_id,
        reason=str(body.get("reason") or "")[:256],
    )
    d, row = _one(session, client_id, str(dest.id))
    request.state.audit[-1].entity_ref = f"Subscription/{dest.id}"
    base = request.app.state.settings.fhir_base
    return FhirJSONResponse(
        _to_fhir(d, row), status_code=201, headers={"Location": f"{base}/Subscription/{dest.id}"}
    )


SHARED_ID = (
    "Shared by the identity feed (IHE PMIR) and the care circles: an id of digits only is a "
    "PMIR subscription of the calling client, any other id a care circle's subscription of the "
    "caller (enrs.coordination.subscription_endpoints)."
)


@router.get(
    "/fhir/Subscription/{sub_id}",
    summary="Read one of the caller's Subscriptions",
    description=SHARED_ID,
)
def read_subscription(
    request: Request, sub_id: str, session: DbSession, principal: SubRead
) -> FhirJSONResponse:
    d, row = _one(session, _client(principal), sub_id)
    request.state.audit[-1].entity_ref = f"Subscription/{row.id}"
    return FhirJSONResponse(_to_fhir(d, row))


def pmir_subscriptions(session: Session, principal: Principal) -> list[dict[str, Any]]:
    """The client's PMIR subscriptions (``GET /fhir/Subscription``, whose route is the front
    of :mod:`enrs.coordination.subscription_endpoints`); none for a person."""
    if principal.kind != "client":
        return []
    return [_to_fhir(d, row) for d, row in _own(session, _client(principal))]


@router.delete(
    "/fhir/Subscription/{sub_id}",
    status_code=204,
    summary="End a Subscription",
    description=SHARED_ID,
)
def delete_subscription(
    request: Request, sub_id: str, session: DbSession, principal: SubDelete
) -> Response:
    d, row = _one(session, _client(principal), sub_id)
    set_active(session, d.name, False)
    request.state.audit[-1].entity_ref = f"Subscription/{row.id}"
    return Response(status_code=204)
