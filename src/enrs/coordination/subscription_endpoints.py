"""FHIR endpoints of the care circles' subscriptions (:mod:`.subscriptions`):

- ``POST /fhir/Subscription``: ``criteria`` ``CommunicationRequest[?category=…][&patient=
  Patient/{RRI}]``, ``channel.type`` ``rest-hook``, ``channel.endpoint``, ``channel.payload``
  ``application/fhir+json``, ``channel.header`` ``Name: value`` strings sent with each POST;
  201 with ``Location``, ``status`` ``active``.
- ``GET /fhir/Subscription/{id}``, ``GET /fhir/Subscription``: the caller's own (``error``
  while its hook fails, ``off`` once ended); ``DELETE /fhir/Subscription/{id}``: ended.

**Sharing ``/fhir/Subscription`` with the identity feed's** (IHE PMIR,
:mod:`enrs.identity.subscription_endpoints`), this router's routes being mounted first: an id
of digits only is the identity feed's, any other a care circle's (:func:`is_coordination_id`);
``POST`` is this router's, which hands a ``Patient…`` criteria to the identity feed's; the
search lists both kinds of the caller's subscriptions.

People need the ``professional`` role (``user/Subscription.crd``); software a
``system/Subscription`` scope (and, for these, its member facility). Every call is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.routing import Match
from starlette.types import Scope

from enrs.coordination import subscriptions
from enrs.documents.access import reader_of
from enrs.identity import subscription_endpoints as identity_subscriptions
from enrs.kit.errors import Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.fhir.subscription import rest_hook_channel
from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.security.principal import Principal

SUBSCRIBERS = frozenset({"professional"})
SubCreate = Annotated[Principal, Depends(require("Subscription", "create", roles=SUBSCRIBERS))]
SubRead = Annotated[Principal, Depends(require("Subscription", "read", roles=SUBSCRIBERS))]
SubSearch = Annotated[Principal, Depends(require("Subscription", "search-type", roles=SUBSCRIBERS))]
SubDelete = Annotated[Principal, Depends(require("Subscription", "delete", roles=SUBSCRIBERS))]
DISPATCH = (
    "Care circle events (admission, discharge, new-document, task-assigned, mention) share "
    "these URLs with the identity feed's (PMIR): criteria `CommunicationRequest?category="
    "{kinds}&patient=Patient/{RRI}` for the former, `Patient…` for the latter; an id of "
    "digits only is the identity feed's. Notifications are FHIR R4 `history` Bundles "
    "(Subscriptions Backport status Parameters, then a CommunicationRequest naming the event)."
)


def is_coordination_id(sub_id: str) -> bool:
    """The one dispatch rule of ``/fhir/Subscription/{id}``: not digits only."""
    return not sub_id.isdigit()


class CoordinationSubscriptionRoute(TransactionalRoute):
    """A route that leaves ``/fhir/Subscription/{digits}`` to the identity feed's routes."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        sub_id = (child.get("path_params") or {}).get("sub_id")
        if sub_id is None or is_coordination_id(str(sub_id)):
            return match, child
        return Match.NONE, {}


router = APIRouter(
    route_class=CoordinationSubscriptionRoute, tags=["coordination"], dependencies=[FhirFormat]
)


def register_capabilities(registry: CapabilityRegistry) -> None:
    """After the identity feed's ``Subscription``: one entry."""
    registry.add_documentation("Subscription", DISPATCH)


def _audited(request: Request, sub: subscriptions.Subscription) -> None:
    entry = request.state.audit[-1]
    entry.entity_ref = f"Subscription/{sub.id}"
    if sub.patient:
        entry.patient_ref = f"Patient/{sub.patient}"


@router.post("/fhir/Subscription", status_code=201, summary="Subscribe a rest-hook")
async def create_subscription(
    request: Request, session: DbSession, principal: SubCreate
) -> FhirJSONResponse:
    body = await read_resource(request, "Subscription")
    criteria = body.get("criteria")
    if not isinstance(criteria, str):
        raise Unprocessable("Subscription.criteria is required")
    if criteria.startswith("Patient"):
        return identity_subscriptions.create_pmir(request, session, principal, body)
    endpoint, headers = rest_hook_channel(body)
    reader = reader_of(session, principal)
    made = subscriptions.subscribe(
        session,
        reader,
        criteria=criteria,
        endpoint=endpoint,
        headers=headers or None,
        reason=str(body.get("reason") or ""),
    )
    _audited(request, made)
    base = request.app.state.settings.fhir_base
    return FhirJSONResponse(
        subscriptions.to_fhir(made),
        status_code=201,
        headers={"Location": f"{base}/Subscription/{made.id}"},
    )


# (shared with the identity feed's route, which /openapi.json shows with both: one operation)
@router.get(
    "/fhir/Subscription/{sub_id}",
    summary="Read one of the caller's Subscriptions",
    include_in_schema=False,
)
def read_subscription(
    request: Request, sub_id: str, session: DbSession, principal: SubRead
) -> FhirJSONResponse:
    found = subscriptions.one(session, reader_of(session, principal), sub_id)
    _audited(request, found)
    return FhirJSONResponse(subscriptions.to_fhir(found))


@router.get("/fhir/Subscription", summary="The caller's Subscriptions")
def search_subscriptions(
    request: Request, session: DbSession, principal: SubSearch
) -> FhirJSONResponse:
    found = identity_subscriptions.pmir_subscriptions(session, principal)
    found += [
        subscriptions.to_fhir(s) for s in subscriptions.own(session, reader_of(session, principal))
    ]
    base = request.app.state.settings.fhir_base
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": f"{base}/Subscription"}],
        "entry": [
            {
                "fullUrl": f"{base}/Subscription/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in found
        ],
    }
    return FhirJSONResponse(bundle)


@router.delete(
    "/fhir/Subscription/{sub_id}",
    status_code=204,
    summary="End a Subscription",
    include_in_schema=False,  # (shared, as the read)
)
def delete_subscription(
    request: Request, sub_id: str, session: DbSession, principal: SubDelete
) -> Response:
    subscriptions.end(session, reader_of(session, principal), sub_id)
    request.state.audit[-1].entity_ref = f"Subscription/{sub_id}"
    return Response(status_code=204)
