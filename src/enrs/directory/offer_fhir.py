"""The ROR over FHIR: ``HealthcareService`` (an offer of care) and ``Location`` (the unit
where it is delivered, with its capacity in the ROR's ``ror-location-supported-capacity``
extension), rendered, read from request bodies, and searched.

Searches follow the ROR guide's: ``HealthcareService?specialty=…&location.capacity-status=
…|02&location.nb-capacity=gt0``. The capacity parameters of one search apply to one and the
same capacity record (a unit with *an available women's bed*, not a unit with some available
bed and some women's bed), as the guide's scenarios read. ``near`` (``Location``) and
``location.near`` (``HealthcareService``) take FHIR's ``latitude|longitude|distance|unit``
(unit ``km`` or ``m``, default distance 50 km): the results are those within that distance of
the point, nearest first, each HealthcareService with the ROR's ``ror-calculated-distance``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.directory import offer
from enrs.directory.models import Capacity, CareService, CareUnit, Structure
from enrs.kit.errors import BadRequest, Unprocessable
from enrs.kit.fhir.search import (
    ParsedSearch,
    SearchParam,
    SearchSpec,
    apply_search,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_params import number_clause, string_clause
from enrs.kit.fhir.search_values import ReferenceValue, StringValue, TokenValue

ROR = "https://interop.esante.gouv.fr/ig/fhir/ror/StructureDefinition/"
CAPACITY_URL = ROR + "ror-location-supported-capacity"
PATIENT_TYPE_URL = ROR + "ror-healthcareservice-patient-type"
DISTANCE_URL = ROR + "ror-calculated-distance"
SP = "http://hl7.org/fhir/SearchParameter/"
DEFAULT_KM, MAX_KM, MAX_NEAR_ROWS = 50.0, 1000.0, 10_000
Sv, U, St, C = CareService, CareUnit, Structure, Capacity


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _instant(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at is not None else None


# --- rendering ------------------------------------------------------------------------------


def location(u: CareUnit, s: Structure, counts: Sequence[offer.Count]) -> dict[str, Any]:
    """A unit as a ROR Location: its capacities, status, the structure's address and
    position, the structure managing it."""
    capacity = [
        {
            "url": CAPACITY_URL,
            "extension": [
                {
                    "url": "capacityType",
                    "valueCodeableConcept": _coding(
                        offer.NATURE, c.nature, offer.NATURES[c.nature]
                    ),
                },
                {
                    "url": "capacityStatus",
                    "valueCodeableConcept": _coding(
                        offer.STATUS, c.status, offer.STATUSES[c.status]
                    ),
                },
                {
                    "url": "temporalityCapacity",
                    "valueCodeableConcept": _coding(offer.TEMPORALITY, offer.CURRENT, "Courant"),
                },
                {"url": "nbCapacity", "valueInteger": c.count},
                {
                    "url": "genderCapacityAvailable",
                    "valueCodeableConcept": _coding(
                        offer.GENDER, c.gender, offer.GENDERS[c.gender]
                    ),
                },
                {"url": "capacityUpdateDate", "valueDateTime": _instant(u.capacity_updated_at)},
            ],
        }
        for c in counts
    ]
    resource: dict[str, Any] = {
        "resourceType": "Location",
        "id": str(u.id),
        "meta": {"lastUpdated": _instant(u.updated_at), "profile": [ROR + "ror-location"]},
        "extension": capacity,
        "status": u.status,
        "name": u.name,
        "type": [_coding(offer.FUNCTION, "001", "Hébergement")],
        "address": {
            k: v
            for k, v in {
                "line": [x for x in (s.addressee, s.address_line) if x],
                "postalCode": s.postal_code,
                "city": s.city,
                "country": "FR",
            }.items()
            if v
        },
        "managingOrganization": {"reference": f"Organization/{s.finess}", "display": s.name},
    }
    if s.latitude is not None and s.longitude is not None:
        resource["position"] = {
            "longitude": round(s.longitude, 6),
            "latitude": round(s.latitude, 6),
        }
    if not capacity:
        del resource["extension"]
    return resource


def healthcare_service(svc: CareService, s: Structure, km: float | None = None) -> dict[str, Any]:
    """An offer as a ROR HealthcareService; ``km``: its distance from a ``near`` point."""
    extension: list[dict[str, Any]] = []
    if svc.age_low is not None or svc.age_high is not None:
        ages = {
            k: {"value": v, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}
            for k, v in (("low", svc.age_low), ("high", svc.age_high))
            if v is not None
        }
        extension.append(
            {"url": PATIENT_TYPE_URL, "extension": [{"url": "ageRange", "valueRange": ages}]}
        )
    if km is not None:
        extension.append(
            {
                "url": DISTANCE_URL,
                "valueQuantity": {
                    "value": round(km, 2),
                    "unit": "km",
                    "system": "http://unitsofmeasure.org",
                    "code": "km",
                },
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "HealthcareService",
        "id": str(svc.id),
        "meta": {
            "lastUpdated": _instant(svc.updated_at),
            "profile": [ROR + "ror-healthcareservice"],
        },
        "extension": extension,
        "active": svc.active,
        "providedBy": {"reference": f"Organization/{s.finess}", "display": s.name},
        "type": [_coding(offer.FIELD, svc.field_code, svc.field)],
        "specialty": [_coding(offer.ACTIVITY, svc.activity_code, svc.activity)],
        "characteristic": [_coding(offer.CARE_MODE, svc.care_mode_code, svc.care_mode)],
        "location": [{"reference": f"Location/{svc.unit_id}"}] if svc.unit_id else [],
        "name": svc.name,
    }
    return {k: v for k, v in resource.items() if v not in ([], None)}


# --- request bodies -------------------------------------------------------------------------


def _name(body: dict[str, Any], kind: str) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise Unprocessable(f"{kind}.name: a text of 1 to 256 characters is required")
    return name.strip()


def _reference(value: Any, kind: str, where: str) -> str:
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str) or not ref.startswith(f"{kind}/") or len(ref) > 80:
        raise Unprocessable(f"{where}: a reference {kind}/{{id}} is required")
    return ref.split("/", 1)[1]


def _code(concept: Any, system: str, where: str) -> tuple[str, str]:
    """(code, display) of the first coding of ``concept`` in ``system``."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and coding.get("system") == system:
            code, display = coding.get("code"), coding.get("display", "")
            if isinstance(code, str) and code and isinstance(display, str):
                return code, display[:256]
    raise Unprocessable(f"{where}: a coding of {system} is required")


def _count(entry: Any) -> offer.Count:
    parts = entry.get("extension") if isinstance(entry, dict) else None
    if not isinstance(parts, list):
        raise Unprocessable(f"{CAPACITY_URL}: its extensions are required")
    got = {p.get("url"): p for p in parts if isinstance(p, dict)}
    where = "ror-location-supported-capacity"
    number = got.get("nbCapacity", {}).get("valueInteger")
    if not isinstance(number, int) or isinstance(number, bool):
        raise Unprocessable(f"{where}.nbCapacity: valueInteger is required")
    if "temporalityCapacity" in got:
        concept = got["temporalityCapacity"].get("valueCodeableConcept")
        if _code(concept, offer.TEMPORALITY, f"{where}.temporalityCapacity")[0] != offer.CURRENT:
            raise Unprocessable(f"{where}.temporalityCapacity: only 01 (current) is kept")
    gender = offer.ANY_GENDER
    if "genderCapacityAvailable" in got:
        concept = got["genderCapacityAvailable"].get("valueCodeableConcept")
        gender = _code(concept, offer.GENDER, f"{where}.genderCapacityAvailable")[0]
    nature = _code(got.get("capacityType", {}).get("valueCodeableConcept"), offer.NATURE,
                   f"{where}.capacityType")[0]  # fmt: skip
    status = _code(got.get("capacityStatus", {}).get("valueCodeableConcept"), offer.STATUS,
                   f"{where}.capacityStatus")[0]  # fmt: skip
    return offer.Count(nature, status, gender, number)


def read_location(body: dict[str, Any]) -> tuple[str, offer.UnitInput]:
    """(FINESS of the managing organization, the unit) of a Location body; 422 if wrong."""
    if body.get("resourceType") != "Location":
        raise Unprocessable("a Location resource is expected")
    status = body.get("status", "active")
    if status not in offer.UNIT_STATUSES:
        raise Unprocessable(f"Location.status: one of {', '.join(offer.UNIT_STATUSES)}")
    finess = _reference(body.get("managingOrganization"), "Organization",
                        "Location.managingOrganization")  # fmt: skip
    entries = [e for e in body.get("extension") or [] if isinstance(e, dict)]
    counts = [_count(e) for e in entries if e.get("url") == CAPACITY_URL]
    return finess, offer.UnitInput(_name(body, "Location"), status, offer.check_counts(counts))


def _age(value: Any, where: str) -> int | None:
    if value is None:
        return None
    number = value.get("value") if isinstance(value, dict) else None
    if not isinstance(number, int | float) or isinstance(number, bool) or number != int(number):
        raise Unprocessable(f"{where}: a whole number of years is expected")
    return int(number)


def read_service(body: dict[str, Any]) -> tuple[str, offer.ServiceInput]:
    """(FINESS of the providing organization, the offer) of a HealthcareService body."""
    if body.get("resourceType") != "HealthcareService":
        raise Unprocessable("a HealthcareService resource is expected")
    finess = _reference(body.get("providedBy"), "Organization", "HealthcareService.providedBy")

    def first(key: str) -> Any:
        items = body.get(key)
        return items[0] if isinstance(items, list) and items else None

    field_code = _code(first("type"), offer.FIELD, "HealthcareService.type")[0]
    activity, activity_display = _code(first("specialty"), offer.ACTIVITY,
                                       "HealthcareService.specialty")  # fmt: skip
    care_mode = _code(first("characteristic"), offer.CARE_MODE,
                      "HealthcareService.characteristic")[0]  # fmt: skip
    places = body.get("location") or []
    unit_id = None
    if not isinstance(places, list):
        raise Unprocessable("HealthcareService.location: a list of references")
    if places:
        ref = _reference(places[0], "Location", "HealthcareService.location")
        if not ref.isdigit():
            raise Unprocessable(f"HealthcareService.location: no Location/{ref}")
        unit_id = int(ref)
    low = high = None
    for e in body.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == PATIENT_TYPE_URL:
            for part in e.get("extension") or []:
                if isinstance(part, dict) and part.get("url") == "ageRange":
                    ages = part.get("valueRange") or {}
                    low = _age(ages.get("low"), "ageRange.low")
                    high = _age(ages.get("high"), "ageRange.high")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise Unprocessable("HealthcareService.active: true or false")
    data = offer.ServiceInput(
        _name(body, "HealthcareService"), field_code, activity, activity_display or activity,
        care_mode, low, high, unit_id, active,
    )  # fmt: skip
    return finess, data


# --- search ---------------------------------------------------------------------------------


def _token(column: Any, system: str) -> Callable[[TokenValue], ColumnElement[bool]]:
    def match(value: TokenValue) -> ColumnElement[bool]:
        if value.system not in (None, system) or value.code is None:
            return sa.false()
        return column == value.code  # type: ignore[no-any-return]

    return match


def _current(value: TokenValue) -> ColumnElement[bool]:
    """Every capacity kept is current (TRE_R331 ``01``): true for that code, else false."""
    current = value.system in (None, offer.TEMPORALITY) and value.code == offer.CURRENT
    return sa.true() if current else sa.false()


# Capacity conditions on one capacity record, by parameter (without the ``location.`` prefix).
CAPACITY: dict[str, tuple[str, Callable[[Any], ColumnElement[bool]], str]] = {
    "capacity-type": ("token", _token(C.nature, offer.NATURE), "TRE_R329: 01 lit, 02 place"),
    "capacity-status": (
        "token", _token(C.status, offer.STATUS), "TRE_R330: 01 installé, 02 disponible…"
    ),
    "gender-capacity-available": (
        "token", _token(C.gender, offer.GENDER), "TRE_R332: 01 femme, 02 homme, 03 indifférencié"
    ),
    "temporality-capacity": ("token", lambda v: _current(v), "TRE_R331: 01 courant (kept)"),
    "nb-capacity": ("number", lambda v: number_clause(v, C.count), "Number of beds or places"),
}  # fmt: skip


def _capacity_param(
    name: str, unit_id: Any, kind: str, cond: Callable[[Any], ColumnElement[bool]], doc: str
) -> SearchParam:
    def match(value: Any) -> ColumnElement[bool]:
        return sa.exists().where(C.unit_id == unit_id, cond(value))

    if kind == "number":
        return SearchParam.number(match=match, doc=doc)
    return SearchParam.token(match=match, doc=doc)


@dataclass(frozen=True)
class Near:
    latitude: float
    longitude: float
    km: float


def parse_near(text: str) -> Near:
    """``latitude|longitude|distance|unit`` (FHIR Location ``near``); 400 if malformed."""
    parts = text.split("|")
    try:
        lat, lon = float(parts[0]), float(parts[1])
        distance = float(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_KM
    except (ValueError, IndexError):
        raise BadRequest(f"near {text!r}: latitude|longitude|distance|unit expected") from None
    unit = parts[3] if len(parts) > 3 and parts[3] else "km"
    km = {"km": distance, "m": distance / 1000}.get(unit)
    if km is None:
        raise BadRequest(f"near {text!r}: unit km or m")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < km <= MAX_KM):
        raise BadRequest(f"near {text!r}: a position and a distance up to {MAX_KM:g} km")
    return Near(lat, lon, km)


def _near_param(structure_id: Any) -> SearchParam:
    def match(value: StringValue) -> ColumnElement[bool]:
        near = parse_near(value.text)
        inside = sa.select(St.id).where(offer.box(near.latitude, near.longitude, near.km))
        return structure_id.in_(inside)  # type: ignore[no-any-return]

    return SearchParam.string(
        match=match,
        doc="latitude|longitude|distance|unit (km, m): within that distance, nearest first",
        definition=SP + "Location-near",
    )


def _organization(structure_id: Any) -> Callable[[ReferenceValue], ColumnElement[bool]]:
    def match(value: ReferenceValue) -> ColumnElement[bool]:
        if value.type not in (None, "Organization"):
            return sa.false()
        return structure_id.in_(sa.select(St.id).where(St.finess == value.id))  # type: ignore[no-any-return]

    return match


def _ids(column: Any) -> Callable[[TokenValue], ColumnElement[bool]]:
    def match(value: TokenValue) -> ColumnElement[bool]:
        if value.code is None or not value.code.isdigit():
            return sa.false()
        return column == int(value.code)  # type: ignore[no-any-return]

    return match


@cache
def service_spec() -> SearchSpec:
    params: dict[str, SearchParam] = {
        "_id": SearchParam.token(match=_ids(Sv.id), definition=SP + "Resource-id"),
        "_lastUpdated": SearchParam.date(Sv.updated_at, definition=SP + "Resource-lastUpdated"),
        "active": SearchParam.token(Sv.active, definition=SP + "HealthcareService-active"),
        "name": SearchParam.string(
            match=lambda v: string_clause(v, (Sv.name,), ()),
            definition=SP + "HealthcareService-name",
        ),
        "organization": SearchParam.reference(
            targets=("Organization",),
            match=_organization(Sv.structure_id),
            definition=SP + "HealthcareService-organization",
        ),
        "service-type": SearchParam.token(
            match=_token(Sv.field_code, offer.FIELD), doc="Field of activity (TRE_R227)",
            definition=SP + "HealthcareService-service-type",
        ),
        "specialty": SearchParam.token(
            match=_token(Sv.activity_code, offer.ACTIVITY),
            doc="Operational activity (TRE_R211)",
            definition=SP + "HealthcareService-specialty",
        ),
        "characteristic": SearchParam.token(
            match=_token(Sv.care_mode_code, offer.CARE_MODE), doc="Care mode (TRE_R213)",
            definition=SP + "HealthcareService-characteristic",
        ),
        "location": SearchParam.reference(
            targets=("Location",),
            match=lambda v: _ids(Sv.unit_id)(TokenValue(None, v.id))
            if v.type in (None, "Location") else sa.false(),
            definition=SP + "HealthcareService-location",
        ),
        "location.near": _near_param(Sv.structure_id),
    }  # fmt: skip
    for name, (kind, cond, doc) in CAPACITY.items():
        params[f"location.{name}"] = _capacity_param(name, Sv.unit_id, kind, cond, doc)
    return SearchSpec(
        resource_type="HealthcareService",
        params=params,
        sorts={"_lastUpdated": Sv.updated_at, "name": Sv.name},
        tiebreaker=Sv.id,
        includes=frozenset({"HealthcareService:location", "HealthcareService:organization"}),
    )


@cache
def location_spec() -> SearchSpec:
    params: dict[str, SearchParam] = {
        "_id": SearchParam.token(match=_ids(U.id), definition=SP + "Resource-id"),
        "_lastUpdated": SearchParam.date(U.updated_at, definition=SP + "Resource-lastUpdated"),
        "name": SearchParam.string(
            match=lambda v: string_clause(v, (U.name,), ()), definition=SP + "Location-name"
        ),
        "status": SearchParam.token(U.status, definition=SP + "Location-status"),
        "organization": SearchParam.reference(
            targets=("Organization",),
            match=_organization(U.structure_id),
            definition=SP + "Location-organization",
        ),
        "near": _near_param(U.structure_id),
    }
    for name, (kind, cond, doc) in CAPACITY.items():
        params[name] = _capacity_param(name, U.id, kind, cond, doc)
    return SearchSpec(
        resource_type="Location",
        params=params,
        sorts={"_lastUpdated": U.updated_at, "name": U.name},
        tiebreaker=U.id,
        includes=frozenset({"Location:organization"}),
    )


def _one_record(parsed: ParsedSearch, prefix: str, unit_id: Any) -> ParsedSearch:
    """The capacity parameters' conditions applied to one and the same capacity record."""
    names = {prefix + name: cond for name, (_, cond, _doc) in CAPACITY.items()}
    mine = [
        (p, c) for p, c in zip(parsed.params, parsed.clauses, strict=True)
        if p.name in names and p.modifier is None
    ]  # fmt: skip
    if len(mine) < 2:
        return parsed
    conditions = [sa.or_(*(names[p.name](v) for v in p.values if v is not None)) for p, _ in mine]
    skipped = {id(c) for _, c in mine}
    kept = [c for c in parsed.clauses if id(c) not in skipped]
    kept.append(sa.exists().where(C.unit_id == unit_id, *conditions))
    return replace(parsed, parts=tuple(kept))


@dataclass
class Page:
    resources: list[dict[str, Any]]
    parsed: ParsedSearch
    total: int | None
    has_next: bool
    included: list[dict[str, Any]] = field(default_factory=list)


def _near_of(parsed: ParsedSearch, name: str) -> Near | None:
    for p in parsed.params:
        if p.name == name and p.values and isinstance(p.values[0], StringValue):
            return parse_near(p.values[0].text)
    return None


def _structures(session: Session, ids: set[int]) -> dict[int, Structure]:
    if not ids:
        return {}
    return {s.id: s for s in session.scalars(sa.select(St).where(St.id.in_(sorted(ids))))}


def _run(
    session: Session, stmt: sa.Select[Any], parsed: ParsedSearch, near: Near | None
) -> tuple[list[Any], int | None, bool, dict[int, float]]:
    """The page of rows (with ``structure_id``), the total, whether more follow, and each
    row's distance when ``near``: then the position of every row in the box is read, those
    within the distance sorted nearest first, and only the page's rows loaded."""
    if near is None:
        rows = session.scalars(apply_search(stmt, parsed)).all()
        page, has_next = split_page(rows, parsed)
        return page, search_total(session, stmt, parsed, page, has_next), has_next, {}
    model = stmt.column_descriptions[0]["entity"]
    located = (
        sa.select(model.id, St.latitude, St.longitude)
        .join(St, St.id == model.structure_id)
        .where(*parsed.clauses, St.latitude.is_not(None), St.longitude.is_not(None))
        .limit(MAX_NEAR_ROWS)
    )
    km: dict[int, float] = {}
    for row_id, lat, lon in session.execute(located):
        d = offer.distance_km(near.latitude, near.longitude, lat, lon)
        if d <= near.km:
            km[row_id] = d
    ranked = sorted(km, key=lambda i: (km[i], i))
    wanted = ranked[parsed.offset : parsed.offset + parsed.count]
    loaded = {r.id: r for r in session.scalars(stmt.where(model.id.in_(wanted)))} if wanted else {}
    page = [loaded[i] for i in wanted]
    has_next = len(ranked) > parsed.offset + parsed.count
    return page, len(ranked) if parsed.want_total else None, has_next, km


def locations(session: Session, units: Sequence[CareUnit]) -> list[dict[str, Any]]:
    places = _structures(session, {u.structure_id for u in units})
    counts = offer.capacities(session, [u.id for u in units])
    return [location(u, places[u.structure_id], counts[u.id]) for u in units]


def services(
    session: Session, rows: Sequence[CareService], km: dict[int, float] | None = None
) -> list[dict[str, Any]]:
    places = _structures(session, {r.structure_id for r in rows})
    return [healthcare_service(r, places[r.structure_id], (km or {}).get(r.id)) for r in rows]


def search_services(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool
) -> Page:
    """``GET /fhir/HealthcareService`` (the ROR's offer searches)."""
    from enrs.directory.search import organizations

    parsed = parse_search(service_spec(), items, strict=strict, base_url=base_url)
    parsed = _one_record(parsed, "location.", Sv.unit_id)
    found, total, has_next, km = _run(
        session, sa.select(Sv), parsed, _near_of(parsed, "location.near")
    )
    page = Page(services(session, found, km), parsed, total, has_next)
    if "HealthcareService:location" in parsed.includes:
        ids = sorted({r.unit_id for r in found if r.unit_id})
        units = session.scalars(sa.select(U).where(U.id.in_(ids)).order_by(U.id)).all()
        page.included += locations(session, units)
    if "HealthcareService:organization" in parsed.includes:
        places = _structures(session, {r.structure_id for r in found})
        page.included += organizations(session, sorted(places.values(), key=lambda s: s.id))
    return page


def search_locations(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool
) -> Page:
    """``GET /fhir/Location`` (units and their capacity)."""
    from enrs.directory.search import organizations

    parsed = parse_search(location_spec(), items, strict=strict, base_url=base_url)
    parsed = _one_record(parsed, "", U.id)
    found, total, has_next, _ = _run(session, sa.select(U), parsed, _near_of(parsed, "near"))
    page = Page(locations(session, found), parsed, total, has_next)
    if "Location:organization" in parsed.includes:
        places = _structures(session, {r.structure_id for r in found})
        page.included += organizations(session, sorted(places.values(), key=lambda s: s.id))
    return page


def read(session: Session, kind: str, resource_id: str) -> dict[str, Any] | None:
    if not resource_id.isdigit():
        return None
    if kind == "Location":
        unit = session.get(U, int(resource_id))
        return locations(session, [unit])[0] if unit else None
    svc = session.get(Sv, int(resource_id))
    return services(session, [svc])[0] if svc else None


def history(
    session: Session, kind: str, since: datetime | None, count: int, offset: int
) -> tuple[list[dict[str, Any]], bool]:
    """ITI-91 for the offer: changed at or after ``since``, oldest first."""
    model: Any = U if kind == "Location" else Sv
    stmt = sa.select(model).order_by(model.updated_at, model.id).offset(offset).limit(count + 1)
    if since is not None:
        stmt = stmt.where(model.updated_at >= since)
    rows = session.scalars(stmt).all()
    page, more = list(rows[:count]), len(rows) > count
    return (locations(session, page) if kind == "Location" else services(session, page)), more
