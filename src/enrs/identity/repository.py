"""All SQL of the identity service.

The statements of the real-time feed (a look-up by key, blocking, the inserts of a new identity)
are built once with bound parameters, select only the columns they need and run on the
session's connection: SQLAlchemy then only binds values, and no ORM object is built for rows
that matching reads and throws away.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Integer,
    Table,
    TextClause,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from enrs.identity.matching.compare import Traits
from enrs.identity.models import (
    IdentityChange,
    IdentityDomain,
    IdentityLink,
    IdentityTask,
    OtherIdentifier,
    RegionalPatient,
    SourceIdentity,
)
from enrs.identity.traits import phonetic
from enrs.kit.db import UTCDateTime, utcnow
from enrs.kit.events import emit

S = SourceIdentity
P = RegionalPatient
_SOURCE: Table = S.__table__  # type: ignore[assignment]
_PATIENT: Table = P.__table__  # type: ignore[assignment]
_LINK: Table = IdentityLink.__table__  # type: ignore[assignment]


class Key(NamedTuple):
    id: int
    active: bool


class Candidate(NamedTuple):
    """What blocking returns of an identity: only the columns that matching scores and decides
    on (loading whole rows as ORM objects cost more than the query itself)."""

    id: int
    patient_id: int
    ins: str | None
    attributes: str
    n_birth_name: str
    n_used_name: str
    n_given_names: str
    birth_date: date | None
    sex: str
    birth_place: str | None
    postal_code: str | None
    p_birth_name: str | None
    p_first_given: str | None
    n_address: str | None
    n_city: str | None
    n_phone: str | None
    n_email: str | None
    birth_order: str | None

    @property
    def attribute_set(self) -> frozenset[str]:
        return frozenset(self.attributes.split())


_SCORED = [getattr(S, name) for name in Candidate._fields]
_KEY = select(S.id, S.active).where(S.authority == bindparam("a"), S.ipp == bindparam("i"))
_INS_HOLDERS = select(*_SCORED).where(S.ins == bindparam("ins"), S.active.is_(True)).order_by(S.id)
_RRI = select(P.rri).where(P.id == bindparam("id"))
_SAME_AUTHORITY = (
    select(S.id)
    .where(
        S.patient_id == bindparam("patient"),
        S.authority == bindparam("authority"),
        S.active.is_(True),
        S.id != bindparam("own"),
    )
    .limit(1)
)
_INSERT_PATIENT = insert(_PATIENT).returning(_PATIENT.c.id)
_INSERT_SOURCE = insert(_SOURCE).returning(_SOURCE.c.id)
_INSERT_LINK = insert(_LINK)
SOURCE_COLUMNS = [c.key for c in _SOURCE.columns if c.key != "id"]  # all but the id


_CONNECTION = "enrs.identity.connection"


def _conn(session: Session) -> Connection:
    """The session's connection, with pending changes flushed (as autoflush would). Kept in
    ``session.info`` while its transaction lasts: asking the session costs more than most
    statements of the feed."""
    session.flush()
    conn: Connection | None = session.info.get(_CONNECTION)
    if conn is None or conn.closed or not conn.in_transaction():
        conn = session.info[_CONNECTION] = session.connection()
    return conn


def source_by_key(session: Session, authority: str, ipp: str) -> SourceIdentity | None:
    return session.scalar(select(S).where(S.authority == authority, S.ipp == ipp))


def key_of(session: Session, authority: str, ipp: str) -> Key | None:
    """Id and state of the identity ``ipp`` of ``authority``, without loading it."""
    row = _conn(session).execute(_KEY, {"a": authority, "i": ipp}).first()
    return Key(*row) if row is not None else None


def replace_others(
    session: Session, source_id: int, others: list[tuple[str, str, str | None]], *, fresh: bool
) -> None:
    """The other identifiers ``(system, value, type)`` of an identity, instead of those it had
    (``fresh``: a new identity, it has none)."""
    if not fresh:
        session.execute(delete(OtherIdentifier).where(OtherIdentifier.source_id == source_id))
    if others:
        rows = [
            {"source_id": source_id, "system": s, "value": v, "type_code": t} for s, v, t in others
        ]
        session.execute(insert(OtherIdentifier), rows)


def sources_with_other(session: Session, system: str, value: str) -> list[SourceIdentity]:
    """The active identities given the other identifier ``value`` of ``system``."""
    other = OtherIdentifier
    stmt = (
        select(S)
        .join(other, other.source_id == S.id)
        .where(other.system == system, other.value == value, S.active.is_(True))
        .order_by(S.id)
    )
    return list(session.scalars(stmt))


def domain(session: Session, oid: str) -> IdentityDomain | None:
    """The registered domain of OID ``oid``, if any."""
    return session.get(IdentityDomain, oid)


def domains_of(session: Session, finess: str) -> list[IdentityDomain]:
    """The domains the member facility ``finess`` owns, by OID."""
    stmt = select(IdentityDomain).where(IdentityDomain.finess == finess)
    return list(session.scalars(stmt.order_by(IdentityDomain.oid)))


def domain_by_namespace(session: Session, namespace: str) -> IdentityDomain | None:
    return session.scalar(select(IdentityDomain).where(IdentityDomain.namespace == namespace))


def domains(session: Session) -> list[IdentityDomain]:
    """Every registered domain, by OID."""
    return list(session.scalars(select(IdentityDomain).order_by(IdentityDomain.oid)))


def source(session: Session, source_id: int) -> SourceIdentity | None:
    return session.get(S, source_id)


def sources_by_ins(session: Session, ins: str) -> list[SourceIdentity]:
    return list(session.scalars(select(S).where(S.ins == ins, S.active.is_(True)).order_by(S.id)))


def ins_holders(session: Session, ins: str) -> list[Candidate]:
    """:func:`sources_by_ins` as candidates (the columns matching needs)."""
    return [Candidate(*row) for row in _conn(session).execute(_INS_HOLDERS, {"ins": ins})]


def sources_by_ids(session: Session, ids: list[int]) -> dict[int, SourceIdentity]:
    return {s.id: s for s in session.scalars(select(S).where(S.id.in_(ids)))} if ids else {}


def sources_of_patient(session: Session, patient_id: int) -> list[SourceIdentity]:
    stmt = select(S).where(S.patient_id == patient_id, S.active.is_(True)).order_by(S.id)
    return list(session.scalars(stmt))


def patient(session: Session, patient_id: int) -> RegionalPatient | None:
    return session.get(RegionalPatient, patient_id)


def patient_rri(session: Session, patient_id: int) -> str | None:
    rri: str | None = _conn(session).scalar(_RRI, {"id": patient_id})
    return rri


def patient_by_rri(session: Session, rri: str) -> RegionalPatient | None:
    return session.scalar(select(RegionalPatient).where(RegionalPatient.rri == rri))


def insert_patient(session: Session, *, rri: str, now: datetime) -> int:
    """A new active regional patient; returns its id."""
    values = {"rri": rri, "active": True, "created_at": now, "updated_at": now}
    patient_id: int = _conn(session).execute(_INSERT_PATIENT, values).scalar_one()
    return patient_id


def insert_source(session: Session, values: dict[str, Any]) -> int:
    """Insert a new identity (``values``: every column of :data:`SOURCE_COLUMNS`); returns its
    id."""
    source_id: int = _conn(session).execute(_INSERT_SOURCE, values).scalar_one()
    return source_id


def insert_link(session: Session, **values: Any) -> None:
    """A link record (the columns of :class:`IdentityLink` but ``id`` and the end)."""
    _conn(session).execute(_INSERT_LINK, values)


def _create_statement() -> TextClause:
    """PostgreSQL: :func:`create_identity`'s inserts in one statement (one round trip rather
    than three or four), chained by data-modifying ``WITH`` queries; its event goes through
    :func:`enrs.kit.events.emit`, inserted at commit in commit order."""
    columns = [c for c in _SOURCE.columns if c.key not in ("id", "patient_id")]
    names = ", ".join(c.name for c in columns)
    values = ", ".join(f":s_{c.key}" for c in columns)
    sql = f"""
WITH p AS (
    INSERT INTO {_PATIENT.name} (rri, active, created_at, updated_at)
    SELECT :rri, true, :now, :now WHERE CAST(:patient_id AS integer) IS NULL
    RETURNING id, rri
), target AS (
    SELECT id, rri FROM p
    UNION ALL
    SELECT id, rri FROM {_PATIENT.name} WHERE id = CAST(:patient_id AS integer)
), s AS (
    INSERT INTO {_SOURCE.name} ({names}, patient_id)
    SELECT {values}, target.id FROM target
    RETURNING id, patient_id
), l AS (
    INSERT INTO {_LINK.name} (source_id, patient_id, method, score, model_version, actor,
                              created_at)
    SELECT s.id, s.patient_id, :method, :score, :model_version, :actor, :now FROM s
)
SELECT s.id, s.patient_id, target.rri FROM s JOIN target ON target.id = s.patient_id"""  # noqa: S608 - names: our own metadata
    typed = [bindparam(f"s_{c.key}", type_=c.type) for c in columns]
    now, patient = bindparam("now", type_=UTCDateTime()), bindparam("patient_id", type_=Integer())
    return text(sql).bindparams(*typed, now, patient)


_CREATE = _create_statement()


class Created(NamedTuple):
    source_id: int
    patient_id: int
    rri: str


def create_identity(
    session: Session,
    values: dict[str, Any],
    *,
    patient_id: int | None,
    rri: str,
    method: str,
    score: float | None,
    model_version: str | None,
    actor: str,
) -> Created:
    """A new identity (``values``: every column of :data:`SOURCE_COLUMNS`) joining the
    regional patient ``patient_id``, or a new one of RRI ``rri``; its link (``method``,
    ``score`` and ``model_version``, ``actor``) and the event ``identity.linked``."""
    now = utcnow()
    conn = _conn(session)
    if conn.dialect.name == "postgresql":
        params = {f"s_{key}": value for key, value in values.items()}
        params |= {"patient_id": patient_id, "rri": rri, "now": now, "method": method}
        params |= {"score": score, "model_version": model_version, "actor": actor}
        row = conn.execute(_CREATE, params).one()
        created = Created(int(row[0]), int(row[1]), str(row[2]))
        emit(
            session,
            "identity.linked",
            {"source_id": created.source_id, "patient_id": created.patient_id, "method": method},
        )
        return created
    if patient_id is None:
        patient_id = insert_patient(session, rri=rri, now=now)
    else:
        rri = str(patient_rri(session, patient_id))
    source_id = insert_source(session, {**values, "patient_id": patient_id})
    link = {"method": method, "score": score, "model_version": model_version, "actor": actor}
    insert_link(
        session, source_id=source_id, patient_id=patient_id, reason=None, created_at=now, **link
    )
    payload = {"source_id": source_id, "patient_id": patient_id, "method": method}
    emit(session, "identity.linked", payload)
    return Created(source_id, patient_id, rri)


def _swap(d: date) -> date | None:
    if d.day <= 12 and d.day != d.month:
        return d.replace(month=d.day, day=d.month)
    return None


def _one_of(column: Any, name: str, n: int) -> Any:
    """``column IN (:name0, … :name{n-1})``: a fixed number of values, padded with NULLs (which
    match nothing), so the statement's SQL never changes (an expanding IN is rendered again at
    each execution)."""
    return column.in_([bindparam(f"{name}{i}") for i in range(n)])


# Built once: SQLAlchemy caches its compiled form, and each call only binds values.
_CANDIDATES = (
    select(*_SCORED)
    .where(
        S.active.is_(True),
        or_(
            _one_of(S.birth_date, "date", 2),
            # the French phonetic key of a name is the same for the same spelling: these keys
            # find the names spelt alike as well as those that sound alike
            and_(_one_of(S.p_birth_name, "sound", 2), _one_of(S.birth_year, "year", 3)),
            and_(_one_of(S.n_used_name, "name", 2), _one_of(S.birth_year, "year", 3)),
            and_(
                S.p_first_given == bindparam("given_sound"),
                S.p_birth_name == bindparam("surname_sound"),
            ),
            and_(
                S.p_first_given == bindparam("sound_as_given"),
                S.p_birth_name == bindparam("given_sound_as_surname"),
            ),
            # the same phone, or the same address line and postal code
            S.n_phone == bindparam("phone"),
            and_(S.n_address == bindparam("address"), S.postal_code == bindparam("postal")),
        ),
    )
    .limit(bindparam("limit"))
)


C = IdentityChange
_LAST_CHANGE = select(func.max(C.seq))
_CHANGES = select(C.seq, C.source_id).where(C.seq > bindparam("seen")).order_by(C.seq)
_CANDIDATES_CHANGED = _CANDIDATES.where(
    S.id.in_(select(C.source_id).where(C.seq > bindparam("seen")).scalar_subquery())
)
CANDIDATE_LIMIT = 300


def _padded(name: str, values: list[Any], n: int) -> dict[str, Any]:
    return {f"{name}{i}": values[i] if i < len(values) else None for i in range(n)}


def _blocking(t: Traits) -> dict[str, Any] | None:
    """The parameters of the blocking keys of ``t``; ``None`` when it has none."""
    dates: list[date] = []
    if t.birth_date is not None:
        dates = [t.birth_date]
        if (swapped := _swap(t.birth_date)) is not None:
            dates.append(swapped)
    years = [t.birth_date.year + d for d in (-1, 0, 1)] if t.birth_date else []
    names = sorted({t.birth_name, t.used_name} - {""}) if years else []
    sounds = sorted({phonetic(n) for n in names})
    has_names = bool(t.birth_name and t.first_given)
    sound, given_sound = t.birth_name_phonetic, t.given_phonetic
    address = t.address if t.postal_code else ""
    if not (dates or names or has_names or t.phone or address):
        return None
    return {
        **_padded("date", dates, 2),
        **_padded("sound", sounds, 2),
        **_padded("name", names, 2),
        **_padded("year", years, 3),
        "given_sound": given_sound if has_names else None,
        "surname_sound": sound if has_names else None,
        "sound_as_given": sound if has_names else None,
        "given_sound_as_surname": given_sound if has_names else None,
        "phone": t.phone or None,
        "address": address or None,
        "postal": t.postal_code if address else None,
    }


def candidates(session: Session, t: Traits, *, limit: int = CANDIDATE_LIMIT) -> list[Candidate]:
    """Blocking: active identities sharing the birth date (or its day/month swap); or a birth
    name (or used name) that sounds as the birth or used name (French phonetic key, which
    spelling alike implies) and a birth year ±1; or, whatever the dates, birth name and first
    name sounding alike, either way round; or the phone; or the address line and postal
    code. Each key is served by an index."""
    params = _blocking(t)
    if params is None:
        return []
    rows = _conn(session).execute(_CANDIDATES, {**params, "limit": limit})
    return [Candidate(*row) for row in rows]


def blocking_sql(session: Session, t: Traits) -> tuple[str, Any] | None:
    """The SQL of :func:`candidates` for ``t`` and its parameters, as the driver gets them
    (to be explained); ``None`` when ``t`` has no blocking key."""
    params = _blocking(t)
    if params is None:
        return None
    conn = _conn(session)
    compiled = _CANDIDATES.compile(dialect=conn.dialect)
    values = compiled.construct_params({**params, "limit": CANDIDATE_LIMIT})
    if compiled.positiontup is not None:  # SQLite's "?" placeholders
        return compiled.string, tuple(values[name] for name in compiled.positiontup)
    return compiled.string, values


def last_change(session: Session) -> int | None:
    """SQLite: the position of the change log (see :class:`IdentityChange`) in this
    transaction's snapshot, for :func:`candidates_since`; ``None`` elsewhere."""
    if session.get_bind().dialect.name != "sqlite":
        return None
    return int(_conn(session).scalar(_LAST_CHANGE) or 0)


def candidates_since(
    session: Session, t: Traits, seen: int, earlier: list[Candidate]
) -> list[Candidate] | None:
    """What :func:`candidates` gives now, from ``earlier`` (its result when the change log
    was at ``seen``) and the identities inserted or updated since, read again; ``None`` when
    that cannot be known (the log was pruned past ``seen``, or the limit was reached)."""
    params = _blocking(t)
    if params is None or len(earlier) >= CANDIDATE_LIMIT:
        return None if params is not None else []
    conn = _conn(session)
    changes = conn.execute(_CHANGES, {"seen": seen}).all()
    if not changes:
        return earlier
    if changes[0][0] != seen + 1:
        return None
    changed = {source_id for _, source_id in changes}
    kept = [c for c in earlier if c.id not in changed]
    values = {**params, "limit": CANDIDATE_LIMIT, "seen": seen}
    now = kept + [Candidate(*row) for row in conn.execute(_CANDIDATES_CHANGED, values)]
    return now if len(now) < CANDIDATE_LIMIT else None


def holds_authority(
    session: Session, patient_id: int, authority: str, own_source: int | None
) -> bool:
    """Whether the regional patient ``patient_id`` holds an active identity of ``authority``
    other than ``own_source``: another IPP of the same facility."""
    params = {"patient": patient_id, "authority": authority, "own": own_source or 0}
    return _conn(session).execute(_SAME_AUTHORITY, params).first() is not None


def authority_ipps(session: Session, patient_id: int, authority: str, own_source: int) -> list[str]:
    """The IPPs of the active identities of ``authority`` that the regional patient
    ``patient_id`` holds, ``own_source`` left out."""
    stmt = select(S.ipp).where(
        S.patient_id == patient_id, S.authority == authority, S.active.is_(True), S.id != own_source
    )
    return sorted(session.scalars(stmt))


def current_link(session: Session, source_id: int) -> IdentityLink | None:
    stmt = select(IdentityLink).where(
        IdentityLink.source_id == source_id, IdentityLink.ended_at.is_(None)
    )
    return session.scalar(stmt)


def links_of(session: Session, source_id: int) -> list[IdentityLink]:
    """The links of an identity, the current one first."""
    stmt = select(IdentityLink).where(IdentityLink.source_id == source_id)
    return list(session.scalars(stmt.order_by(IdentityLink.id.desc())))


def open_task(
    session: Session, kind: str, source_id: int, other_patient_id: int
) -> IdentityTask | None:
    stmt = select(IdentityTask).where(
        IdentityTask.kind == kind,
        IdentityTask.source_id == source_id,
        IdentityTask.other_patient_id == other_patient_id,
        IdentityTask.status == "OPEN",
    )
    return session.scalar(stmt)


def identifiers_of_patient(session: Session, patient_id: int) -> list[SourceIdentity]:
    return sources_of_patient(session, patient_id)


_APART = ("KEEP_APART", "UNLINK")


def ruled_apart(session: Session, source_id: int) -> set[int]:
    """The regional patients the identity ``source_id`` was ruled not to belong to: by the
    cell (``KEEP_APART``, ``UNLINK``) or by its facility (ADT^A37), either way round (the
    decision named this identity, or named it as the other one of the pair)."""
    named = select(IdentityTask.other_patient_id).where(
        IdentityTask.source_id == source_id, IdentityTask.decision.in_(_APART)
    )
    other = (
        select(S.patient_id)
        .join(IdentityTask, IdentityTask.source_id == S.id)
        .where(IdentityTask.other_source_id == source_id, IdentityTask.decision.in_(_APART))
    )
    return {int(pid) for pid in session.scalars(named.union(other))}


def kept_apart(session: Session, source_id: int, other_patient_id: int) -> bool:
    """The cell decided this identity and that patient are two people."""
    stmt = select(IdentityTask.id).where(
        IdentityTask.source_id == source_id,
        IdentityTask.other_patient_id == other_patient_id,
        IdentityTask.decision == "KEEP_APART",
    )
    return session.scalar(stmt.limit(1)) is not None


_MERGED_HOPS = 16


def merged_into(session: Session, patient_id: int) -> list[int]:
    """``patient_id`` and the patients merged into it, directly or not (at most
    ``_MERGED_HOPS`` merges deep), in that order."""
    return _merged_down(session, [patient_id])[patient_id]


def _merged_down(session: Session, ends: Iterable[int]) -> dict[int, list[int]]:
    """For each of ``ends``: itself, then the patients merged into it, directly or not (at most
    ``_MERGED_HOPS`` merges deep), level by level; one statement per level for all of them."""
    records = {end: [end] for end in ends}
    frontier = {end: end for end in records}  # a patient of a record → the record's end
    for _ in range(_MERGED_HOPS):
        stmt = select(RegionalPatient.id, RegionalPatient.merged_into_id)
        rows = session.execute(stmt.where(RegionalPatient.merged_into_id.in_(list(frontier))))
        following: dict[int, int] = {}
        for child, parent in rows:
            if parent is None or child in records:  # (an end is its own record)
                continue
            end = frontier[parent]
            if child not in records[end]:
                records[end].append(child)
                following[child] = end
        frontier = following
        if not frontier:
            break
    return records


def deaths_before(session: Session, day: date) -> dict[int, date]:
    """Patient id → the latest day of death its active identities give, when before ``day``."""
    death = func.max(SourceIdentity.death_date)
    rows = session.execute(
        select(SourceIdentity.patient_id, death)
        .where(SourceIdentity.active, SourceIdentity.death_date.is_not(None))
        .group_by(SourceIdentity.patient_id)
        .having(death < day)
    )
    return {patient: died for patient, died in rows if died is not None}


def life_dates(
    session: Session, patient_ids: list[int]
) -> list[tuple[int, date | None, date | None]]:
    """(patient id, birth date, day of death) of each active identity of ``patient_ids``."""
    stmt = select(
        SourceIdentity.patient_id, SourceIdentity.birth_date, SourceIdentity.death_date
    ).where(SourceIdentity.patient_id.in_(patient_ids), SourceIdentity.active)
    return [(patient, born, died) for patient, born, died in session.execute(stmt)]


def records_of(session: Session, patient_ids: list[int]) -> dict[int, list[int]]:
    """The records ``patient_ids`` are part of, by the patient each ends in (the first active
    one up its merges, else the last of them): that patient, then those merged into it, directly
    or not (at most ``_MERGED_HOPS`` merges each way). A few statements for many patients."""
    ends: dict[int, int] = {}
    at = {patient: patient for patient in patient_ids}
    for _ in range(_MERGED_HOPS):
        stmt = select(RegionalPatient.id, RegionalPatient.active, RegionalPatient.merged_into_id)
        rows = session.execute(stmt.where(RegionalPatient.id.in_(set(at.values()))))
        found = {patient: (active, into) for patient, active, into in rows}
        following: dict[int, int] = {}
        for patient, here in at.items():
            active, into = found.get(here, (True, None))
            if active or into is None:
                ends[patient] = here
            else:
                following[patient] = into
        at = following
        if not at:
            break
    ends.update(at)  # (deeper than _MERGED_HOPS: where the search stopped)
    return _merged_down(session, ends.values())


def facilities_of_patients(session: Session, patient_ids: list[int]) -> set[str]:
    """The FINESS of the facilities owning a domain with an active identity of one of
    ``patient_ids``."""
    stmt = (
        select(IdentityDomain.finess)
        .join(SourceIdentity, SourceIdentity.authority == IdentityDomain.oid)
        .where(
            SourceIdentity.patient_id.in_(patient_ids),
            SourceIdentity.active.is_(True),
            IdentityDomain.finess.is_not(None),
        )
        .distinct()
    )
    return {f for f in session.scalars(stmt) if f}
