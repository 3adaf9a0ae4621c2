"""The ROR's pages (French UI): available beds near a commune, and the forms with which a
structure (its professionals, a regional admin) adds a unit with its offer and updates its
bed counts. Who may write is :func:`enrs.directory.offer.may_manage`; every page is audited."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.directory import offer
from enrs.directory.models import Structure
from enrs.kit.errors import BadRequest, Forbidden, NotFound
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
RADII = (10, 30, 50, 100, 200)


def _audit(request: Request, user: Principal, interaction: str, kind: str, entity: str) -> None:
    action = {"search-type": "E", "create": "C", "update": "U"}[interaction]
    entry = new_entry(request, "rest", interaction, action=action, resource_type=kind)
    set_agent(entry, user)
    if entity:
        entry.entity_ref = entity
    if request.url.query:
        entry.query = str(request.url.query)


@router.get("/annuaire/lits")
def beds_page(
    request: Request,
    user: PortalUser,
    session: DbSession,
    commune: str = "",
    activite: str = "",
    mode: str = "",
    rayon: int = 30,
) -> HTMLResponse:
    """Offers with beds available now within ``rayon`` km of a commune, nearest first."""
    _audit(request, user, "search-type", "HealthcareService", "")
    radius = rayon if rayon in RADII else 30
    where = offer.place(session, commune) if commune.strip() else None
    found = (
        offer.beds_near(
            session, where.latitude, where.longitude, radius, activity=activite, care_mode=mode
        )
        if where
        else []
    )
    return _render(
        request,
        "directory_beds.html",
        asked=bool(commune.strip()),
        where=where,
        found=found,
        chosen={"commune": commune, "activite": activite, "mode": mode, "rayon": radius},
        activities=offer.activities_in_use(session),
        care_modes=offer.CARE_MODES,
        radii=RADII,
    )


def _structure(session: DbSession, finess: str) -> Structure:
    found = offer.structure_of(session, finess[:16])
    if found is None:
        raise NotFound(f"aucune structure de FINESS {finess} dans l'annuaire")
    return found


def _count(raw: str, what: str) -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) > offer.MAX_COUNT:
        raise BadRequest(f"{what} : un nombre entier de 0 à {offer.MAX_COUNT} est attendu")
    return int(text)


def _beds(installed: str, available: str) -> list[offer.Count]:
    return [
        offer.Count(
            offer.BED, offer.INSTALLED, offer.ANY_GENDER, _count(installed, "Lits installés")
        ),
        offer.Count(
            offer.BED, offer.AVAILABLE, offer.ANY_GENDER, _count(available, "Lits disponibles")
        ),
    ]


def _checked(session: DbSession, user: Principal, csrf: str) -> None:
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")


@router.post("/annuaire/structure/{finess}/lits/{unit_id}")
def update_beds(
    request: Request,
    finess: str,
    unit_id: int,
    user: PortalUser,
    session: DbSession,
    installes: Annotated[str, Form()] = "",
    disponibles: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The capacity form: the unit's installed and available beds, counted now."""
    _audit(request, user, "update", "Location", f"Location/{unit_id}")
    _checked(session, user, csrf)
    structure = _structure(session, finess)
    unit = offer.unit(session, unit_id)
    if unit is None or unit.structure_id != structure.id:
        raise NotFound(f"aucune unité {unit_id} dans la structure {structure.finess}")
    offer.update_capacity(session, user, unit, _beds(installes, disponibles))
    return RedirectResponse(
        f"/annuaire/structure/{quote(structure.finess)}?message=lits#offre", status_code=303
    )


@router.post("/annuaire/structure/{finess}/offre")
def add_offer(
    request: Request,
    finess: str,
    user: PortalUser,
    session: DbSession,
    unite: Annotated[str, Form()] = "",
    champ: Annotated[str, Form()] = "",
    activite: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
    installes: Annotated[str, Form()] = "0",
    disponibles: Annotated[str, Form()] = "0",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """A new unit of the structure with its offer (field, activity, care mode) and beds."""
    _audit(request, user, "create", "HealthcareService", "")
    _checked(session, user, csrf)
    structure = _structure(session, finess)
    name = unite.strip()
    if not name or len(name) > 256:
        raise BadRequest("Nom de l'unité : 1 à 256 caractères")
    activities = offer.activities_in_use(session)
    if activite not in activities:
        raise BadRequest("Activité : à choisir dans la liste")
    unit = offer.create_unit(
        session,
        user,
        structure,
        offer.UnitInput(name, "active", tuple(_beds(installes, disponibles))),
    )
    data = offer.ServiceInput(
        f"{offer.CARE_MODES.get(mode, '')} {name}".strip(),
        champ, activite, activities[activite], mode, None, None, unit.id, True,
    )  # fmt: skip
    made = offer.create_service(session, user, structure, data)
    request.state.audit[-1].entity_ref = f"HealthcareService/{made.id}"
    return RedirectResponse(
        f"/annuaire/structure/{quote(structure.finess)}?message=offre#offre", status_code=303
    )
