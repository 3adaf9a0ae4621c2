"""The directory's pages (French UI): search professionals by name, profession and commune,
a professional's card (activities, sites), a structure's page (its details and the
professionals practising there). Every logged-in person may use them; each page is audited."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from enrs.accounts import service as accounts_service
from enrs.directory import offer
from enrs.directory import service as directory_service
from enrs.identity import domains as identity_domains
from enrs.kit.errors import NotFound
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
PAGE_SIZE = 50


def _audit(
    request: Request, user: Principal, interaction: str, kind: str, entity: str = ""
) -> None:
    entry = new_entry(request, "rest", interaction, action="E", resource_type=kind)
    set_agent(entry, user)
    if entity:
        entry.entity_ref = entity
    elif request.url.query:
        entry.query = str(request.url.query)


@router.get("/annuaire")
def search_page(
    request: Request,
    user: PortalUser,
    session: DbSession,
    nom: str = "",
    profession: str = "",
    commune: str = "",
    page: int = 1,
) -> HTMLResponse:
    """Professionals by name (start of the family name), profession and commune, 50 a page."""
    _audit(request, user, "search-type", "Practitioner")
    asked = bool(nom.strip() or profession or commune.strip())
    page = max(page, 1)
    hits, more = (
        directory_service.find_professionals(
            session,
            name=nom,
            profession=profession,
            city=commune,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
        if asked
        else ([], False)
    )
    chosen = {"nom": nom, "profession": profession, "commune": commune}
    kept = {k: v for k, v in chosen.items() if v}
    return _render(
        request,
        "directory_search.html",
        hits=hits,
        asked=asked,
        chosen=chosen,
        professions=directory_service.PROFESSIONS,
        page=page,
        previous=f"/annuaire?{urlencode({**kept, 'page': page - 1})}" if page > 1 else None,
        next=f"/annuaire?{urlencode({**kept, 'page': page + 1})}" if more else None,
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/annuaire/ps/{id_nat_ps}")
def professional_page(
    request: Request, user: PortalUser, session: DbSession, id_nat_ps: str
) -> HTMLResponse:
    """A professional's card."""
    _audit(request, user, "read", "Practitioner", f"Practitioner/{id_nat_ps}")
    card = directory_service.professional_card(session, id_nat_ps[:16])
    if card is None:
        raise NotFound(f"aucun professionnel d'identifiant {id_nat_ps} dans l'annuaire")
    return _render(
        request,
        "directory_professional.html",
        card=card,
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/annuaire/structure/{finess}")
def structure_page(
    request: Request, user: PortalUser, session: DbSession, finess: str
) -> HTMLResponse:
    """A structure's page."""
    _audit(request, user, "read", "Organization", f"Organization/{finess}")
    found = directory_service.structure_page(session, finess[:16])
    if found is None:
        raise NotFound(f"aucune structure de FINESS {finess} dans l'annuaire")
    offers, units = offer.offers_of(session, found.structure)
    admin = user.kind == "user" and "admin" in user.roles
    return _render(
        request,
        "directory_structure.html",
        found=found,
        offers=offers,
        units=units,
        counts=offer.capacities(session, [u.id for u in units]),
        beds=offer.beds,
        manage=offer.may_manage(session, user, found.structure),
        fields=offer.FIELDS,
        care_modes=offer.CARE_MODES,
        activities=offer.activities_in_use(session),
        # The member facility's connections, for the regional team.
        domains=identity_domains.owned_by(session, found.structure.finess) if admin else None,
        feeders=accounts_service.registrations_of(session, found.structure.finess)
        if admin
        else None,
        message=request.query_params.get("message", ""),
        csrf=accounts_service.session_csrf(session, user),
    )
