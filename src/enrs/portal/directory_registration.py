"""Regional registration in the directory (French UI, administrators only): a structure
without FINESS, a professional the national files do not cover with their activity in a
structure, and an RPPS number attached to a regional professional from their card
(:mod:`enrs.directory.registration`). Each form carries the session's CSRF token; each write
is audited. A form refused is shown again with why, and nothing is stored."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.directory import registration, repository
from enrs.directory.identifiers import RegionalSystems
from enrs.kit.errors import EnrsError, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
ADMINS = frozenset({"admin"})
FIELDS = {
    "family": "nom",
    "given": "prénom",
    "civility": "civilité",
    "name": "nom",
    "address_line": "adresse",
    "postal_code": "code postal (5 chiffres)",
    "city": "commune",
    "phone": "téléphone",
    "siret": "SIRET (14 chiffres)",
    "structure": "structure",
    "profession_code": "profession",
}


def _admin(
    request: Request,
    user: Principal,
    interaction: str,
    kind: str,
    form: tuple[Session, str] | None = None,
) -> None:
    """The request's audit entry; 403 for a person who is not an administrator, or a
    ``form`` (the session, the token it carries) without the session's CSRF token."""
    action = {"create": "C", "update": "U"}.get(interaction, "E")
    entry = new_entry(request, "rest", interaction, action=action, resource_type=kind)
    set_agent(entry, user)
    if not ADMINS & user.roles:
        raise Forbidden("l'enregistrement dans l'annuaire régional est réservé aux administrateurs")
    if form is not None:
        session, csrf = form
        if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
            raise Forbidden("jeton CSRF invalide")


def _systems(request: Request) -> RegionalSystems:
    return RegionalSystems.of(request.app.state.settings.oid_root)


class Refused(Exception):
    """A form refused, with what to tell the person."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


M = TypeVar("M", bound=BaseModel)


def _valid(model: type[M], values: dict[str, Any]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        wrong = sorted({FIELDS.get(str(e["loc"][0]), str(e["loc"][0])) for e in exc.errors()})
        raise Refused(f"Vérifiez ces champs : {', '.join(wrong)}.") from None


def _page(
    request: Request,
    session: Session,
    user: Principal,
    *,
    error: str = "",
    status: int = 200,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    return _render(
        request,
        "directory_registration.html",
        status,
        health=registration.HEALTH_PROFESSIONS,
        social=registration.REGIONAL_PROFESSIONS,
        structures=repository.regional_structures(session),
        error=error,
        values=values or {},
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/annuaire/enregistrement")
def registration_page(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """The forms: a professional in a structure, a structure."""
    _admin(request, user, "search-type", "Organization")
    request.state.audit[-1].query = "origin=regional"
    return _page(request, session, user)


@router.post("/annuaire/enregistrement/structure")
def register_structure(
    request: Request,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
    nom: Annotated[str, Form()] = "",
    adresse: Annotated[str, Form()] = "",
    code_postal: Annotated[str, Form()] = "",
    commune: Annotated[str, Form()] = "",
    telephone: Annotated[str, Form()] = "",
    siret: Annotated[str, Form()] = "",
) -> Response:
    """A structure without FINESS, with the next regional identifier; to its page."""
    _admin(request, user, "create", "Organization", (session, csrf))
    values = {"name": nom, "address_line": adresse, "postal_code": code_postal}
    values |= {"city": commune, "phone": telephone, "siret": siret}
    try:
        data = _valid(registration.StructureIn, values)
    except Refused as refused:
        shown = {f"structure_{k}": v for k, v in values.items()}
        return _page(
            request, session, user, error=refused.message, status=refused.status, values=shown
        )
    place = registration.register_structure(session, _systems(request), data)
    request.state.audit[-1].entity_ref = f"Organization/{place.finess}"
    return RedirectResponse(f"/annuaire/structure/{place.finess}", 303)


def _profession(systems: RegionalSystems, choice: str) -> tuple[str | None, str]:
    """``G15|41`` or ``regional|ES`` (the form's choices) as a system and a code."""
    family, _, code = choice.partition("|")
    if family == "regional":
        return systems.profession, code
    if family == "G15":
        return None, code
    raise Refused("Choisissez une profession.")


@router.post("/annuaire/enregistrement/professionnel")
def register_professional(
    request: Request,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
    nom: Annotated[str, Form()] = "",
    prenom: Annotated[str, Form()] = "",
    civilite: Annotated[str, Form()] = "",
    profession: Annotated[str, Form()] = "",
    structure: Annotated[str, Form()] = "",
) -> Response:
    """A professional with the next regional identifier and their activity in a structure
    of the directory (FINESS or regional identifier); to their card. Everything is checked
    before anything is written."""
    _admin(request, user, "create", "Practitioner", (session, csrf))
    systems = _systems(request)
    try:
        person = _valid(
            registration.ProfessionalIn, {"family": nom, "given": prenom, "civility": civilite}
        )
        system, code = _profession(systems, profession)
        label = registration.profession_label(systems, system, code) or ""
        activity = _valid(
            registration.ActivityIn,
            {"structure": structure, "profession_system": system, "profession_code": code},
        )
        if not label:
            raise Refused("Choisissez une profession de la liste.")
        if repository.structure(session, activity.structure) is None:
            raise Refused(f"Aucune structure d'identifiant « {structure} » dans l'annuaire.")
        registration.check_activity(session, systems, activity)
    except Refused as refused:
        values = {"nom": nom, "prenom": prenom, "civilite": civilite}
        values |= {"profession": profession, "structure": structure}
        shown = {f"ps_{k}": v for k, v in values.items()}
        return _page(
            request, session, user, error=refused.message, status=refused.status, values=shown
        )
    created = registration.register_professional(session, systems, person)
    request.state.audit[-1].entity_ref = f"Practitioner/{created.id_nat_ps}"
    made = registration.register_activity(session, systems, created.id_nat_ps, activity)
    entry = new_entry(request, "rest", "create", action="C", resource_type="PractitionerRole")
    set_agent(entry, user)
    entry.entity_ref = f"PractitionerRole/{made.activity_key}"
    return RedirectResponse(f"/annuaire/ps/{created.id_nat_ps}", 303)


@router.post("/annuaire/ps/{id_nat_ps}/rpps")
def attach_rpps(
    request: Request,
    id_nat_ps: str,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
    rpps: Annotated[str, Form()] = "",
) -> Response:
    """Attach an RPPS number to a regional professional: their card then answers under
    idNatPs 8 + RPPS, the regional identifier kept."""
    _admin(request, user, "update", "Practitioner", (session, csrf))
    request.state.audit[-1].entity_ref = f"Practitioner/{id_nat_ps}"
    number = "".join(rpps.split())
    try:
        person = registration.regional_professional(session, id_nat_ps[:16])
        registration.check_rpps(session, person, number)
    except EnrsError as exc:
        return _render(
            request,
            "directory_rpps.html",
            exc.status,
            id_nat_ps=id_nat_ps,
            number=number,
            error=_rpps_refusal(exc, number),
            csrf=accounts_service.session_csrf(session, user),
        )
    registration.attach_rpps(session, person, number)
    request.state.audit[-1].entity_ref = f"Practitioner/{person.id_nat_ps}"
    request.state.audit[-1].query = f"previous_id={id_nat_ps}"
    return RedirectResponse(f"/annuaire/ps/{person.id_nat_ps}", 303)


def _rpps_refusal(exc: EnrsError, number: str) -> str:
    """Why an RPPS number was refused, in French."""
    if exc.status == 404:
        return "Ce professionnel n'est pas dans l'annuaire."
    if exc.issue_code == "value":
        return (
            f"« {number} » n'est pas un numéro RPPS valide : il a 11 chiffres, le dernier "
            "étant une clé de contrôle qui doit correspondre aux dix premiers."
        )
    if exc.issue_code == "duplicate":
        return f"Le numéro RPPS {number} figure déjà dans l'annuaire pour un autre professionnel."
    return (
        "Ce professionnel a déjà un numéro RPPS, ou provient de l'annuaire national : "
        "seuls les fichiers nationaux le modifient."
    )
