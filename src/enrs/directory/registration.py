"""Regional registration in the directory: the professionals and structures the national
files do not cover (social and medico-social workers, the RPPS+ population, structures without
FINESS), registered by the region through the API or the portal.

- A professional gets a local identifier (``L`` + 8 digits, :mod:`.identifiers`), which is
  also their ``id_nat_ps`` until an RPPS number is attached (:func:`attach_rpps`): they then
  answer under idNatPs ``8`` + RPPS and keep the local identifier as a second one.
- A structure without FINESS gets a local identifier (``S`` + 8 digits), kept where the
  FINESS number is (its ``Organization`` id).
- An activity (PractitionerRole) of a regional professional names a structure of the
  directory (FINESS or local) and a profession: of TRE_G15, or of the regional list
  (:data:`REGIONAL_PROFESSIONS`).

Only regional entries are written here: a national one (from the RPPS or FINESS files) is
refused (409), as is an RPPS number already in the directory (409) or with a wrong key
(400). The functions only ``flush()``: the caller's transaction commits, or rolls everything
back (the identifier counters too)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from sqlalchemy import String, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enrs.directory import fhir, repository
from enrs.directory import service as directory_service
from enrs.directory.identifiers import RegionalSystems, local_id, rpps_error
from enrs.directory.models import Activity, Professional, Structure
from enrs.directory.national import digest
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound
from enrs.kit.fhir.search_params import normalize_text

REGIONAL = "regional"

# TRE_G15-ProfessionSante: the portal's professions and the social worker it codes (41).
HEALTH_PROFESSIONS = (*directory_service.PROFESSIONS, ("41", "Assistant de service social"))
# Professions outside TRE_G15, coded in the region's system (RegionalSystems.profession).
REGIONAL_PROFESSIONS = (
    ("ES", "Éducateur spécialisé"),
    ("CESF", "Conseiller en économie sociale et familiale"),
    ("EJE", "Éducateur de jeunes enfants"),
    ("AES", "Accompagnant éducatif et social"),
    ("MJPM", "Mandataire judiciaire à la protection des majeurs"),
)

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]


class ProfessionalIn(BaseModel):
    """A regional professional as registered or updated; ``rpps``: an RPPS number to attach."""

    model_config = ConfigDict(extra="forbid")

    family: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    given: Text = ""
    civility: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] = ""
    rpps: str | None = None
    active: bool = True


class StructureIn(BaseModel):
    """A regional structure (no FINESS) as registered or updated."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
    address_line: Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)] = ""
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^(\d{5})?$")] = (
        ""
    )
    city: Text = ""
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] = ""
    siret: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^(\d{14})?$")] = ""
    category_code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=8)] = ""
    category: LongText = ""
    active: bool = True


class ActivityIn(BaseModel):
    """An activity of a regional professional in a structure of the directory
    (``structure``: FINESS or local identifier); the profession of TRE_G15
    (``profession_system`` none or TRE_G15) or of the regional list."""

    model_config = ConfigDict(extra="forbid")

    structure: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
    profession_system: str | None = None
    profession_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    profession: LongText = ""
    skill_system: str | None = None
    skill_code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=16)] = ""
    skill: LongText = ""
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] = ""
    email: LongText = ""


M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], values: dict[str, Any]) -> M:
    """``values`` as ``model``, or 400 saying what is wrong."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        what = model.__name__.removesuffix("In").lower()
        raise BadRequest(f"invalid {what}: {details}") from None


def _blank(table: Table, **values: Any) -> dict[str, Any]:
    """Every non-null text column of ``table`` empty, but ``values``."""
    empty = {
        c.name: ""
        for c in table.columns
        if isinstance(c.type, String) and not c.nullable and not c.primary_key
    }
    return empty | values


def _hash(values: Iterable[Any]) -> str:
    return digest([str(v) for v in values])


# --- professionals ---------------------------------------------------------------------------


def register_professional(
    session: Session, systems: RegionalSystems, data: ProfessionalIn
) -> Professional:
    """A new regional professional with the next local identifier (and ``data.rpps``
    attached: 400 wrong key, 409 already in the directory)."""
    local = local_id("professional", repository.next_local_number(session, "professional"))
    now = utcnow()
    table: Table = Professional.__table__  # type: ignore[assignment]
    person = Professional(
        **_blank(
            table,
            id_nat_ps=local,
            id_type="L",
            number=local,
            local_id=local,
            local_system=systems.professional,
            origin=REGIONAL,
            created_at=now,
        )
    )
    _set_person(person, data, now)
    session.add(person)
    _flush(session, f"Practitioner/{local}")
    if data.rpps:
        attach_rpps(session, person, data.rpps)
    return person


def regional_professional(session: Session, id_nat_ps: str) -> Professional:
    """The regional professional ``id_nat_ps``: 404 unknown, 409 a national one."""
    person = repository.professional(session, id_nat_ps)
    if person is None:
        raise NotFound(f"Practitioner/{id_nat_ps} not found")
    if person.origin != REGIONAL:
        raise Conflict(
            f"Practitioner/{id_nat_ps} comes from the national referential (RPPS/ADELI): only "
            "the national files update it",
            issue_code="business-rule",
        )
    return person


def update_professional(session: Session, id_nat_ps: str, data: ProfessionalIn) -> Professional:
    """Update the regional professional ``id_nat_ps`` (404, 409 national); ``data.rpps``
    attached as :func:`attach_rpps` does, checked before anything changes."""
    person = regional_professional(session, id_nat_ps)
    if data.rpps:
        check_rpps(session, person, data.rpps)
    _set_person(person, data, utcnow())
    if data.rpps:
        attach_rpps(session, person, data.rpps)
    _flush(session, f"Practitioner/{person.id_nat_ps}")
    return person


def _set_person(person: Professional, data: ProfessionalIn, now: datetime) -> None:
    person.family, person.given = data.family, data.given
    person.n_family, person.n_given = normalize_text(data.family), normalize_text(data.given)
    person.practice_civility = data.civility
    person.active = data.active
    person.updated_at = now
    person.content_hash = _hash([person.family, person.given, person.practice_civility])


def check_rpps(session: Session, person: Professional, rpps: str) -> None:
    """Whether ``rpps`` may be attached to ``person``: 400 (issue ``value``) a wrong number,
    409 another number attached already (``business-rule``) or ``rpps`` in the directory
    (``duplicate``); writes nothing."""
    if error := rpps_error(rpps):
        raise BadRequest(error, issue_code="value")
    if person.id_type == "8" and person.number != rpps:
        raise Conflict(
            f"Practitioner/{person.id_nat_ps} already has the RPPS number {person.number}",
            issue_code="business-rule",
        )
    other = repository.professional(session, f"8{rpps}")
    if other is not None and other.id != person.id:
        raise Conflict(
            f"RPPS {rpps} is already in the directory (Practitioner/8{rpps})",
            issue_code="duplicate",
        )


def attach_rpps(session: Session, person: Professional, rpps: str) -> bool:
    """Give the regional ``person`` the RPPS number ``rpps``: it then answers under idNatPs
    ``8`` + ``rpps`` (its activities follow), its local identifier kept. 400 a wrong RPPS
    number, 409 one already in the directory or another already attached; whether it
    changed anything (the same number again changes nothing)."""
    check_rpps(session, person, rpps)
    if person.id_type == "8":
        return False
    person.id_nat_ps, person.id_type, person.number = f"8{rpps}", "8", rpps
    person.updated_at = utcnow()
    _flush(session, f"Practitioner/8{rpps}")
    repository.follow_professional(session, person.id, person.id_nat_ps)
    return True


def _flush(session: Session, what: str) -> None:
    """Flush; a unique key taken meanwhile (another registration, an import) is a 409."""
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"{what}: the directory changed meanwhile, retry") from None


# --- structures ------------------------------------------------------------------------------


def register_structure(session: Session, systems: RegionalSystems, data: StructureIn) -> Structure:
    """A new regional structure with the next local identifier as its key."""
    local = local_id("structure", repository.next_local_number(session, "structure"))
    table: Table = Structure.__table__  # type: ignore[assignment]
    now = utcnow()
    place = Structure(
        **_blank(
            table,
            finess=local,
            local_id=local,
            local_system=systems.structure,
            origin=REGIONAL,
            created_at=now,
        )
    )
    _set_structure(place, data, now)
    session.add(place)
    _flush(session, f"Organization/{local}")
    return place


def regional_structure(session: Session, key: str) -> Structure:
    """The regional structure ``key``: 404 unknown, 409 a national (FINESS) one."""
    place = repository.structure(session, key)
    if place is None:
        raise NotFound(f"Organization/{key} not found")
    if place.origin != REGIONAL:
        raise Conflict(
            f"Organization/{key} comes from the national referential (FINESS): only the "
            "national files update it",
            issue_code="business-rule",
        )
    return place


def update_structure(session: Session, key: str, data: StructureIn) -> Structure:
    place = regional_structure(session, key)
    _set_structure(place, data, utcnow())
    _flush(session, f"Organization/{key}")
    return place


def _set_structure(place: Structure, data: StructureIn, now: datetime) -> None:
    place.name, place.n_name = data.name, normalize_text(data.name)
    place.address_line, place.postal_code = data.address_line, data.postal_code
    place.city, place.n_city = data.city, normalize_text(data.city)
    place.phone, place.siret = data.phone, data.siret
    place.category_code, place.category = data.category_code, data.category
    place.active = data.active
    place.updated_at = now
    place.content_hash = _hash(data.model_dump().values())


# --- activities ------------------------------------------------------------------------------


def profession_label(systems: RegionalSystems, system: str | None, code: str) -> str | None:
    """The label of a profession of TRE_G15 (``system`` none or TRE_G15) or of the regional
    list; ``None`` for a code this directory does not know."""
    if system in (None, fhir.PROFESSION):
        return dict(HEALTH_PROFESSIONS).get(code)
    if system == systems.profession:
        return dict(REGIONAL_PROFESSIONS).get(code)
    return None


def _profession(systems: RegionalSystems, data: ActivityIn) -> tuple[str | None, str]:
    """The stored system (none: TRE_G15) and the label of the activity's profession: 400
    for a system other than TRE_G15 or the regional one, a regional code not in the list, or
    a TRE_G15 code neither known here nor given with its label."""
    system = data.profession_system
    if system not in (None, fhir.PROFESSION, systems.profession):
        raise BadRequest(
            f"profession: the code system {system!r} is neither TRE_G15 ({fhir.PROFESSION}) "
            f"nor the regional professions ({systems.profession})",
            issue_code="code-invalid",
        )
    label = profession_label(systems, system, data.profession_code)
    if system == systems.profession:
        if label is None:
            known = ", ".join(code for code, _ in REGIONAL_PROFESSIONS)
            raise BadRequest(
                f"profession {data.profession_code!r} is not a regional profession ({known})",
                issue_code="code-invalid",
            )
        return system, data.profession or label
    if not (data.profession_code.isdigit() and len(data.profession_code) == 2):
        raise BadRequest(
            f"profession {data.profession_code!r}: a TRE_G15 code has two digits",
            issue_code="code-invalid",
        )
    if not (data.profession or label):
        raise BadRequest(f"profession {data.profession_code}: its label (display) is required")
    return None, data.profession or label or ""


def _skill_type(system: str | None) -> str:
    """The savoir-faire type of a specialty's code system (``fhir.SKILL``), else 400."""
    for kind, known in fhir.SKILL.items():
        if known == system:
            return kind
    raise BadRequest(
        f"specialty: the code system {system!r} is not one of {', '.join(fhir.SKILL.values())}",
        issue_code="code-invalid",
    )


@dataclass(frozen=True)
class Checked:
    """What an activity names, checked: its structure, its profession's stored system and
    label, its savoir-faire type."""

    structure: Structure
    profession_system: str | None
    profession: str
    skill_type: str


def check_activity(session: Session, systems: RegionalSystems, data: ActivityIn) -> Checked:
    """400 for an unknown structure, a profession not accepted (:func:`_profession`), a
    specialty without a code or of a system not of :data:`.fhir.SKILL`; writes nothing."""
    place = repository.structure(session, data.structure)
    if place is None:
        raise BadRequest(f"Organization/{data.structure} is not in the directory")
    profession_system, profession = _profession(systems, data)
    if not data.skill_code and (data.skill or data.skill_system):
        raise BadRequest("specialty: a code is required")
    skill_type = _skill_type(data.skill_system) if data.skill_code else ""
    return Checked(place, profession_system, profession, skill_type)


def register_activity(
    session: Session, systems: RegionalSystems, professional: str, data: ActivityIn
) -> Activity:
    """A new activity of the regional professional ``professional`` (its id) in a structure
    of the directory: 404 for an unknown professional, 409 a national one or the same
    activity registered already, 400 as :func:`check_activity` says."""
    person = regional_professional(session, professional)
    named = check_activity(session, systems, data)
    place, profession_system = named.structure, named.profession_system
    what = [REGIONAL, person.local_id, profession_system or fhir.PROFESSION, data.profession_code]
    key = "R" + digest([str(v) for v in [*what, place.finess, data.skill_code]])[1:]
    if repository.activity(session, key) is not None:
        raise Conflict(f"PractitionerRole/{key}: this activity is registered already")
    table: Table = Activity.__table__  # type: ignore[assignment]
    now = utcnow()
    row = _blank(
        table,
        activity_key=key,
        id_nat_ps=person.id_nat_ps,
        professional_id=person.id,
        profession_system=profession_system,
        profession_code=data.profession_code,
        profession=named.profession,
        skill_type_code=named.skill_type,
        skill_code=data.skill_code,
        skill=data.skill,
        siret=place.siret,
        siren=place.siret[:9],
        finess_site=place.finess,
        finess_ej=place.finess_ej,
        site_name=place.name,
        address_line=place.address_line,
        postal_code=place.postal_code,
        commune_code=place.commune_code,
        city=place.city,
        n_city=place.n_city,
        department_code=place.department_code,
        department=place.department,
        phone=data.phone or place.phone,
        email=data.email,
        origin=REGIONAL,
        created_at=now,
        updated_at=now,
    )
    row["content_hash"] = _hash(row.values())
    activity = Activity(**row)
    session.add(activity)
    person.updated_at = now  # its Practitioner shows the new profession
    _flush(session, f"PractitionerRole/{key}")
    return activity
