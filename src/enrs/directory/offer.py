"""The ROR (Répertoire Opérationnel des Ressources): what care each structure offers
(``HealthcareService``) and where, with how many beds (``Location`` and its capacity), kept
up to date by the structure itself, and "available beds of this kind within N km".

Who may describe a structure's offer and count its beds (:func:`may_manage`, the one rule):
the regional admins; a system client or MLLP sender of that member facility (the facility
registry, :mod:`enrs.identity.domains`); a professional with an active activity there (their
structures decide their rights).

Codes are the national nomenclatures (NOS) the ROR FHIR guide binds: TRE_R227 field of
activity, TRE_R211 operational activity, TRE_R213 care mode, TRE_R329/R330/R331/R332 nature,
status, temporality and gender of a capacity. Only the current temporality (TRE_R331 ``01``)
is kept: a capacity is what the unit has now."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.directory.models import Activity, Capacity, CareService, CareUnit, Structure
from enrs.kit.db import utcnow
from enrs.kit.errors import Forbidden, NotFound, Unprocessable
from enrs.kit.fhir.search_params import normalize_text
from enrs.kit.security.principal import Principal


def _nos(table: str) -> str:
    return f"https://mos.esante.gouv.fr/NOS/{table}/FHIR/{table.replace('_', '-')}"


FIELD = _nos("TRE_R227-ChampActivite")
ACTIVITY = _nos("TRE_R211-ActiviteOperationnelle")
CARE_MODE = _nos("TRE_R213-ModePriseEnCharge")
NATURE = _nos("TRE_R329-NatureCapacite")
STATUS = _nos("TRE_R330-TypeStatutCapacite")
TEMPORALITY = _nos("TRE_R331-TemporaliteCapacite")
GENDER = _nos("TRE_R332-GenreCapacite")
SOURCE = _nos("TRE_R335-TypeSourceCapacite")
ASSIGNMENT = _nos("TRE_R337-AffectationTemporaire")
FUNCTION = _nos("TRE_R343-FonctionLieu")

FIELDS = {
    "01": "Médecine, Chirurgie, Obstétrique (MCO)",
    "02": "Soins Médicaux et de réadaptation (SMR)",
    "03": "Psychiatrie (PSY)",
    "04": "Médico-social (MS)",
    "05": "Ville",
    "06": "Social",
}
CARE_MODES = {
    "09": "Chirurgie ambulatoire",
    "13": "Hospitalisation courte durée (UHCD)",
    "20": "Soins externes et traitements ambulatoires",
    "28": "Hospitalisation complète (HC)",
    "29": "Hospitalisation de jour (HJ)",
    "30": "Hospitalisation de nuit (HN)",
    "31": "Hospitalisation à domicile (HAD)",
    "32": "Consultation (CS) ou Séance",
    "33": "Accueil des urgences",
    "34": "Hospitalisation de semaine (HS)",
}
# A few operational activities (TRE_R211 has hundreds: any code is accepted with its
# display); these are offered by the portal's forms besides the codes already in use.
ACTIVITIES = {
    "025": "Chirurgie orthopédique et traumatologique",
    "183": "Traitement neurochirurgical de la douleur",
    "356": "Soins intensifs spécialisés neurologie vasculaire (USINV)",
    "391": "Surveillance continue spécialisée pédiatrique",
}
NATURES = {"01": "Lit", "02": "Place"}
STATUSES = {"01": "Installé", "02": "Disponible", "05": "Fermé", "06": "Supplémentaire"}
GENDERS = {"01": "Femme", "02": "Homme", "03": "Indifférencié"}
INSTALLED, AVAILABLE, BED, ANY_GENDER, CURRENT = "01", "02", "01", "03", "01"
UNIT_STATUSES = ("active", "suspended", "inactive")
MAX_COUNT = 100_000


# --- who may manage a structure's offer ------------------------------------------------------


def may_manage(session: Session, principal: Principal, structure: Structure) -> bool:
    """The one rule: a regional admin; a feeder (system client) of the member facility
    ``structure.finess``; a professional practising there (an active activity at it)."""
    if principal.kind == "user" and "admin" in principal.roles:
        return True
    if principal.kind == "client":
        grant = accounts_service.client_grant(session, principal.client_id or principal.subject)
        return grant is not None and grant.finess == structure.finess
    if principal.rpps:
        practising = sa.select(Activity.id).where(
            Activity.id_nat_ps == f"8{principal.rpps}",
            Activity.finess_site == structure.finess,
            Activity.active.is_(True),
        )
        return session.scalar(practising.limit(1)) is not None
    return False


def check_manager(session: Session, principal: Principal, structure: Structure) -> None:
    if not may_manage(session, principal, structure):
        raise Forbidden(
            f"only the structure {structure.finess} (its clients, its professionals) or a "
            "regional admin may describe its offer and capacity"
        )


def managed_structures(session: Session, principal: Principal) -> list[Structure]:
    """The structures whose capacity ``principal`` may update (admins: none listed here)."""
    if not principal.rpps:
        return []
    sites = sa.select(Activity.finess_site).where(
        Activity.id_nat_ps == f"8{principal.rpps}", Activity.active.is_(True)
    )
    return list(session.scalars(sa.select(Structure).where(Structure.finess.in_(sites))))


# --- what is written ------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """One capacity of a unit: ``count`` beds (or places) of a nature, status and gender."""

    nature: str
    status: str
    gender: str
    count: int


@dataclass(frozen=True)
class UnitInput:
    name: str
    status: str
    counts: tuple[Count, ...]


@dataclass(frozen=True)
class ServiceInput:
    name: str
    field_code: str
    activity_code: str
    activity: str
    care_mode_code: str
    age_low: int | None
    age_high: int | None
    unit_id: int | None
    active: bool


def check_counts(counts: Iterable[Count]) -> tuple[Count, ...]:
    """422 for an unknown code, a negative or absurd count, or a capacity given twice."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for c in counts:
        for value, codes, what in (
            (c.nature, NATURES, "nature (TRE_R329)"),
            (c.status, STATUSES, "status (TRE_R330)"),
            (c.gender, GENDERS, "gender (TRE_R332)"),
        ):
            if value not in codes:
                raise Unprocessable(f"capacity {what} {value!r}: one of {', '.join(codes)}")
        if not 0 <= c.count <= MAX_COUNT:
            raise Unprocessable(f"capacity count {c.count}: 0 to {MAX_COUNT}")
        key = (c.nature, c.status, c.gender)
        if key in seen:
            raise Unprocessable(f"capacity {'/'.join(key)} given twice")
        seen.add(key)
        out.append(c)
    return tuple(out)


def structure_of(session: Session, finess: str) -> Structure | None:
    return session.scalar(sa.select(Structure).where(Structure.finess == finess))


def structure_by_finess(session: Session, finess: str) -> Structure:
    found = structure_of(session, finess)
    if found is None:
        raise Unprocessable(f"no structure {finess!r} in the directory")
    return found


def unit(session: Session, unit_id: int) -> CareUnit | None:
    return session.get(CareUnit, unit_id)


def create_unit(
    session: Session, principal: Principal, structure: Structure, data: UnitInput
) -> CareUnit:
    check_manager(session, principal, structure)
    now = utcnow()
    row = CareUnit(
        structure_id=structure.id, name=data.name, status=data.status, created_at=now,
        updated_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    _set_counts(session, row, check_counts(data.counts), principal, now)
    return row


def update_unit(session: Session, principal: Principal, row: CareUnit, data: UnitInput) -> None:
    """Replace a unit's name, status and capacities (a PUT)."""
    structure = session.get(Structure, row.structure_id)
    assert structure is not None
    check_manager(session, principal, structure)
    counts = check_counts(data.counts)
    now = utcnow()
    row.name, row.status, row.updated_at = data.name, data.status, now
    _set_counts(session, row, counts, principal, now)


def update_capacity(
    session: Session, principal: Principal, row: CareUnit, counts: Iterable[Count]
) -> None:
    """Set a unit's capacities of some natures and statuses (the portal's form: installed and
    available beds, every gender), keeping those of the others."""
    structure = session.get(Structure, row.structure_id)
    assert structure is not None
    check_manager(session, principal, structure)
    given = {(c.nature, c.status, c.gender): c for c in check_counts(counts)}
    replaced = {(nature, status) for nature, status, _ in given}
    kept = [
        c for c in capacities(session, [row.id])[row.id] if (c.nature, c.status) not in replaced
    ]
    now = utcnow()
    row.updated_at = now
    _set_counts(session, row, (*kept, *given.values()), principal, now)


def _set_counts(
    session: Session,
    row: CareUnit,
    counts: Sequence[Count],
    principal: Principal,
    now: datetime,
) -> None:
    session.execute(sa.delete(Capacity).where(Capacity.unit_id == row.id))
    for c in counts:
        session.add(
            Capacity(
                unit_id=row.id, nature=c.nature, status=c.status, gender=c.gender,
                count=c.count, updated_at=now,
            )
        )  # fmt: skip
    row.capacity_updated_at = now
    row.capacity_updated_by = principal.display or principal.subject
    session.flush()


def capacities(session: Session, unit_ids: Sequence[int]) -> dict[int, list[Count]]:
    """unit id → its capacities."""
    out: dict[int, list[Count]] = {u: [] for u in unit_ids}
    if unit_ids:
        stmt = sa.select(Capacity).where(Capacity.unit_id.in_(list(unit_ids)))
        for c in session.scalars(stmt.order_by(Capacity.nature, Capacity.status, Capacity.gender)):
            out[c.unit_id].append(Count(c.nature, c.status, c.gender, c.count))
    return out


def beds(counts: Iterable[Count], status: str) -> int | None:
    """The beds of ``status`` now (every gender), ``None`` when never given."""
    found = [c.count for c in counts if c.nature == BED and c.status == status]
    return sum(found) if found else None


def create_service(
    session: Session, principal: Principal, structure: Structure, data: ServiceInput
) -> CareService:
    check_manager(session, principal, structure)
    _check_service(session, structure, data)
    now = utcnow()
    row = CareService(structure_id=structure.id, created_at=now)
    _fill_service(row, data, now)
    session.add(row)
    session.flush()
    return row


def update_service(
    session: Session, principal: Principal, row: CareService, data: ServiceInput
) -> None:
    structure = session.get(Structure, row.structure_id)
    assert structure is not None
    check_manager(session, principal, structure)
    _check_service(session, structure, data)
    _fill_service(row, data, utcnow())
    session.flush()


def _check_service(session: Session, structure: Structure, data: ServiceInput) -> None:
    if data.field_code not in FIELDS:
        raise Unprocessable(f"field of activity (TRE_R227) {data.field_code!r}: one of "
                            f"{', '.join(FIELDS)}")  # fmt: skip
    if data.care_mode_code not in CARE_MODES:
        raise Unprocessable(
            f"care mode (TRE_R213) {data.care_mode_code!r}: one of {', '.join(CARE_MODES)}"
        )
    if not data.activity_code or not data.activity:
        raise Unprocessable("an operational activity (TRE_R211) needs its code and display")
    low, high = data.age_low, data.age_high
    if (low is not None and not 0 <= low <= 130) or (high is not None and not 0 <= high <= 130):
        raise Unprocessable("ages are 0 to 130 years")
    if low is not None and high is not None and low > high:
        raise Unprocessable(f"age range {low}-{high}: the low bound is above the high one")
    if data.unit_id is not None:
        where = session.get(CareUnit, data.unit_id)
        if where is None or where.structure_id != structure.id:
            raise Unprocessable(f"Location/{data.unit_id} is not a unit of {structure.finess}")


def _fill_service(row: CareService, data: ServiceInput, now: datetime) -> None:
    row.name, row.unit_id, row.active = data.name, data.unit_id, data.active
    row.field_code, row.field = data.field_code, FIELDS[data.field_code]
    row.activity_code, row.activity = data.activity_code, data.activity
    row.care_mode_code, row.care_mode = data.care_mode_code, CARE_MODES[data.care_mode_code]
    row.age_low, row.age_high = data.age_low, data.age_high
    row.updated_at = now


# --- the offer of a structure, and beds near a place ------------------------------------------


@dataclass(frozen=True)
class Offer:
    """One offer of care of a structure, with its unit and that unit's capacities."""

    service: CareService
    unit: CareUnit | None
    counts: list[Count]

    @property
    def available(self) -> int | None:
        return beds(self.counts, AVAILABLE)

    @property
    def installed(self) -> int | None:
        return beds(self.counts, INSTALLED)


def offers_of(session: Session, structure: Structure) -> tuple[list[Offer], list[CareUnit]]:
    """A structure's active offers (by name) and all its units."""
    units = list(
        session.scalars(
            sa.select(CareUnit).where(CareUnit.structure_id == structure.id).order_by(CareUnit.name)
        )
    )
    by_id = {u.id: u for u in units}
    counts = capacities(session, list(by_id))
    services = session.scalars(
        sa.select(CareService)
        .where(CareService.structure_id == structure.id, CareService.active.is_(True))
        .order_by(CareService.name, CareService.id)
    )
    offers = [
        Offer(s, by_id.get(s.unit_id) if s.unit_id else None, counts.get(s.unit_id or 0, []))
        for s in services
    ]
    return offers, units


EARTH_KM = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def box(lat: float, lon: float, km: float) -> sa.ColumnElement[bool]:
    """Structures whose position lies in the latitude/longitude box around a circle of ``km``
    (the index-friendly first cut; :func:`distance_km` decides)."""
    dlat = math.degrees(km / EARTH_KM)
    dlon = math.degrees(km / (EARTH_KM * max(math.cos(math.radians(lat)), 0.01)))
    return sa.and_(
        Structure.latitude.between(lat - dlat, lat + dlat),
        Structure.longitude.between(lon - dlon, lon + dlon),
    )


@dataclass(frozen=True)
class Place:
    """A commune's position: the mean of the positions of the directory's structures there."""

    name: str
    latitude: float
    longitude: float
    structures: int


def place(session: Session, commune: str) -> Place | None:
    """Where ``commune`` is (a name, or a postal code), from the FINESS geolocation of its
    structures; ``None`` when no located structure is there."""
    text = commune.strip()
    if not text:
        return None
    where = (
        Structure.postal_code == text
        if text.isdigit()
        else Structure.n_city == normalize_text(text)
    )
    row = session.execute(
        sa.select(
            sa.func.min(Structure.city),
            sa.func.avg(Structure.latitude),
            sa.func.avg(Structure.longitude),
            sa.func.count(),
        ).where(where, Structure.latitude.is_not(None), Structure.longitude.is_not(None))
    ).one()
    if not row[3]:
        return None
    return Place(str(row[0]), float(row[1]), float(row[2]), int(row[3]))


@dataclass(frozen=True)
class Nearby:
    """An offer with available beds, at ``km`` from the place asked."""

    offer: Offer
    structure: Structure
    km: float


def beds_near(
    session: Session,
    lat: float,
    lon: float,
    km: float,
    *,
    activity: str = "",
    care_mode: str = "",
    minimum: int = 1,
    limit: int = 100,
) -> list[Nearby]:
    """Active offers (of ``activity``, ``care_mode`` when given) whose unit has at least
    ``minimum`` beds available now, within ``km`` of (lat, lon), nearest first."""
    has_beds = (
        sa.select(Capacity.unit_id)
        .where(Capacity.nature == BED, Capacity.status == AVAILABLE)
        .group_by(Capacity.unit_id)
        .having(sa.func.sum(Capacity.count) >= minimum)
    )
    stmt = (
        sa.select(CareService, CareUnit, Structure)
        .join(CareUnit, CareUnit.id == CareService.unit_id)
        .join(Structure, Structure.id == CareService.structure_id)
        .where(
            CareService.active.is_(True),
            CareUnit.status == "active",
            CareUnit.id.in_(has_beds),
            box(lat, lon, km),
        )
    )
    if activity:
        stmt = stmt.where(CareService.activity_code == activity)
    if care_mode:
        stmt = stmt.where(CareService.care_mode_code == care_mode)
    rows = session.execute(stmt).all()
    counts = capacities(session, sorted({u.id for _, u, _ in rows}))
    found = []
    for service, where, structure in rows:
        assert structure.latitude is not None and structure.longitude is not None
        d = distance_km(lat, lon, structure.latitude, structure.longitude)
        if d <= km:
            found.append(Nearby(Offer(service, where, counts[where.id]), structure, d))
    found.sort(key=lambda n: (n.km, n.structure.finess, n.offer.service.id))
    return found[:limit]


def activities_in_use(session: Session) -> dict[str, str]:
    """The operational activities of the region's offers, with the built-in list."""
    used = session.execute(
        sa.select(CareService.activity_code, sa.func.min(CareService.activity)).group_by(
            CareService.activity_code
        )
    ).all()
    return dict(sorted({**ACTIVITIES, **dict(used)}.items()))  # a list of rows


def require_unit(session: Session, unit_id: int) -> CareUnit:
    row = session.get(CareUnit, unit_id)
    if row is None:
        raise NotFound(f"Location/{unit_id} not found")
    return row
