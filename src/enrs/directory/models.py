"""The directory's tables: professionals (RPPS/ADELI) and their activities, structures
(FINESS), and the national imports.

Each table the national files feed (a *target* of :mod:`.imports`) has the same bookkeeping
columns: ``origin`` (``national``: from the national files; ``regional``: registered here),
``active`` (a national entry gone from the latest extraction is kept, inactive: never
deleted), ``content_hash`` (what the import compares to tell a changed entry), ``created_at``
and ``updated_at``. Its *stage* table (``<table>_stage``) holds one extraction while it is
read, before it is applied in one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class _Tracked:
    """The bookkeeping columns of an imported table."""

    origin: Mapped[str] = mapped_column(String(16), default="national")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    content_hash: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Professional(_Tracked, Base):
    """A professional (FHIR Practitioner), from the activity file's personal columns."""

    __tablename__ = "directory_professional"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # idNatPs: 8 + RPPS number, 0 + ADELI number (system urn:oid:1.2.250.1.71.4.2.1).
    id_nat_ps: Mapped[str] = mapped_column(String(16), unique=True)
    id_type: Mapped[str] = mapped_column(String(2))
    number: Mapped[str] = mapped_column(String(16))
    practice_civility_code: Mapped[str] = mapped_column(String(8))
    practice_civility: Mapped[str] = mapped_column(String(64))
    civility_code: Mapped[str] = mapped_column(String(8))
    civility: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(128))
    given: Mapped[str] = mapped_column(String(128))
    # Case- and accent-folded (kit.fhir.search_params.normalize_text), for search.
    n_family: Mapped[str] = mapped_column(String(128))
    n_given: Mapped[str] = mapped_column(String(128))

    # With the key: a name's start read in (name, key) order, a page without sorting.
    __table_args__ = (Index("ix_directory_professional_family", "n_family", "id"),)
    # A regionally registered professional (:mod:`.registration`): the local identifier given
    # at registration and its system, kept when an RPPS number is attached later.
    local_id: Mapped[str | None] = mapped_column(String(16), unique=True, index=True)
    local_system: Mapped[str | None] = mapped_column(String(128))


class Activity(_Tracked, Base):
    """One activity line of a professional (FHIR PractitionerRole): profession, savoir-faire,
    mode of practice, and the site where it is practised."""

    __tablename__ = "directory_activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A digest of what identifies the activity (see imports.ACTIVITY_KEY).
    activity_key: Mapped[str] = mapped_column(String(32), unique=True)
    id_nat_ps: Mapped[str] = mapped_column(String(16), index=True)
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("directory_professional.id"), index=True
    )
    profession_code: Mapped[str] = mapped_column(String(8))
    profession: Mapped[str] = mapped_column(String(128))
    # The code system of a regional profession (not in TRE_G15); none: TRE_G15.
    profession_system: Mapped[str | None] = mapped_column(String(128))
    category_code: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(64))
    skill_type_code: Mapped[str] = mapped_column(String(8))
    skill_type: Mapped[str] = mapped_column(String(128))
    skill_code: Mapped[str] = mapped_column(String(16))
    skill: Mapped[str] = mapped_column(String(256))
    mode_code: Mapped[str] = mapped_column(String(8))
    mode: Mapped[str] = mapped_column(String(64))
    siret: Mapped[str] = mapped_column(String(16))
    siren: Mapped[str] = mapped_column(String(16))
    finess_site: Mapped[str] = mapped_column(String(16), index=True)
    finess_ej: Mapped[str] = mapped_column(String(16))
    structure_id: Mapped[str] = mapped_column(String(32), index=True)
    site_name: Mapped[str] = mapped_column(String(256))
    site_sign: Mapped[str] = mapped_column(String(256))
    addressee: Mapped[str] = mapped_column(String(256))
    address_line: Mapped[str] = mapped_column(String(512))
    cedex: Mapped[str] = mapped_column(String(64))
    postal_code: Mapped[str] = mapped_column(String(16))
    commune_code: Mapped[str] = mapped_column(String(8))
    city: Mapped[str] = mapped_column(String(128))
    n_city: Mapped[str] = mapped_column(String(128))
    country_code: Mapped[str] = mapped_column(String(8))
    country: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    phone2: Mapped[str] = mapped_column(String(32))
    fax: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(256))
    department_code: Mapped[str] = mapped_column(String(8))
    department: Mapped[str] = mapped_column(String(64))
    former_structure_id: Mapped[str] = mapped_column(String(32))
    registration_authority: Mapped[str] = mapped_column(String(128))
    sector_code: Mapped[str] = mapped_column(String(16))
    sector: Mapped[str] = mapped_column(String(256))
    pharmacist_section_code: Mapped[str] = mapped_column(String(8))
    pharmacist_section: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_directory_activity_profession_city", "profession_code", "n_city", "id"),
        Index("ix_directory_activity_city", "n_city", "id"),
        Index("ix_directory_activity_postal_code", "postal_code"),
    )


class Structure(_Tracked, Base):
    """A FINESS establishment (FHIR Organization), from the FINESS file's ``structureet``
    and ``geolocalisation`` lines; its position converted to WGS84."""

    __tablename__ = "directory_structure"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finess: Mapped[str] = mapped_column(String(16), unique=True)
    finess_ej: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(256))
    long_name: Mapped[str] = mapped_column(String(512))
    name_complement: Mapped[str] = mapped_column(String(256))
    n_name: Mapped[str] = mapped_column(String(256), index=True)
    addressee: Mapped[str] = mapped_column(String(256))
    address_line: Mapped[str] = mapped_column(String(512))
    postal_code: Mapped[str] = mapped_column(String(16), index=True)
    city: Mapped[str] = mapped_column(String(128))
    n_city: Mapped[str] = mapped_column(String(128), index=True)
    commune_code: Mapped[str] = mapped_column(String(8))
    department_code: Mapped[str] = mapped_column(String(8), index=True)
    department: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    fax: Mapped[str] = mapped_column(String(32))
    category_code: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(256))
    category_group_code: Mapped[str] = mapped_column(String(8))
    category_group: Mapped[str] = mapped_column(String(256))
    siret: Mapped[str] = mapped_column(String(16))
    ape_code: Mapped[str] = mapped_column(String(8))
    pricing_code: Mapped[str] = mapped_column(String(8))
    pricing: Mapped[str] = mapped_column(String(256))
    sph_code: Mapped[str] = mapped_column(String(8))
    sph: Mapped[str] = mapped_column(String(256))
    opened_on: Mapped[str] = mapped_column(String(10))
    authorised_on: Mapped[str] = mapped_column(String(10))
    source_updated_on: Mapped[str] = mapped_column(String(10))
    uai: Mapped[str] = mapped_column(String(16))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    position_source: Mapped[str | None] = mapped_column(String(256))
    # A regionally registered structure: its local identifier (also its ``finess`` key) and
    # the identifier's system.
    local_id: Mapped[str | None] = mapped_column(String(16), unique=True, index=True)
    local_system: Mapped[str | None] = mapped_column(String(128))


class Qualification(_Tracked, Base):
    """A savoir-faire of a professional (``PS_LibreAcces_SavoirFaire``: specialty,
    competence, capacity…)."""

    __tablename__ = "directory_qualification"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    qualification_key: Mapped[str] = mapped_column(String(32), unique=True)
    id_nat_ps: Mapped[str] = mapped_column(String(16))
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("directory_professional.id"), index=True
    )
    profession_code: Mapped[str] = mapped_column(String(8))
    profession: Mapped[str] = mapped_column(String(128))
    category_code: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(64))
    skill_type_code: Mapped[str] = mapped_column(String(8))
    skill_type: Mapped[str] = mapped_column(String(128))
    skill_code: Mapped[str] = mapped_column(String(16))
    skill: Mapped[str] = mapped_column(String(256))


class Diploma(_Tracked, Base):
    """A diploma or authorisation to practise of a professional
    (``PS_LibreAcces_Dipl_AutExerc``)."""

    __tablename__ = "directory_diploma"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    diploma_key: Mapped[str] = mapped_column(String(32), unique=True)
    id_nat_ps: Mapped[str] = mapped_column(String(16))
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("directory_professional.id"), index=True
    )
    diploma_type_code: Mapped[str] = mapped_column(String(16))
    diploma_type: Mapped[str] = mapped_column(String(256))
    diploma_code: Mapped[str] = mapped_column(String(32))
    diploma: Mapped[str] = mapped_column(String(256))
    authorisation_type_code: Mapped[str] = mapped_column(String(16))
    authorisation_type: Mapped[str] = mapped_column(String(256))
    discipline_code: Mapped[str] = mapped_column(String(32))
    discipline: Mapped[str] = mapped_column(String(256))


class Mailbox(_Tracked, Base):
    """An MSSanté mailbox of the national extraction: personal (``PER``, a professional's),
    organisational (``ORG``), applicative (``APP``), of a practice (``CAB``)."""

    __tablename__ = "directory_mailbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(256), unique=True)  # lower case
    kind: Mapped[str] = mapped_column(String(8))
    id_nat_ps: Mapped[str] = mapped_column(String(16), index=True)
    structure_id_type: Mapped[str] = mapped_column(String(8))
    structure_id: Mapped[str] = mapped_column(String(32), index=True)
    service: Mapped[str] = mapped_column(String(256))
    civility: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(128))
    given: Mapped[str] = mapped_column(String(128))
    category_code: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(64))
    profession_code: Mapped[str] = mapped_column(String(8))
    profession: Mapped[str] = mapped_column(String(128))
    skill_code: Mapped[str] = mapped_column(String(16))
    skill: Mapped[str] = mapped_column(String(256))
    dematerialisation: Mapped[str] = mapped_column(String(16))
    structure_name: Mapped[str] = mapped_column(String(256))
    structure_sign: Mapped[str] = mapped_column(String(256))
    address_line: Mapped[str] = mapped_column(String(512))
    routing: Mapped[str] = mapped_column(String(256))
    postal_code: Mapped[str] = mapped_column(String(16))
    department: Mapped[str] = mapped_column(String(64))
    country: Mapped[str] = mapped_column(String(64))


class LocalCounter(Base):
    """The last local identifier given to a regionally registered professional or structure
    (one row per kind, incremented under the row's lock: :mod:`.registration`)."""

    __tablename__ = "directory_local_counter"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Import(Base):
    """One run of ``enrs directory import`` on one file."""

    __tablename__ = "directory_import"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    file_name: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[str | None] = mapped_column(Text)  # JSON: per target, new/changed/gone…
    error: Mapped[str | None] = mapped_column(Text)


# The professionals' names in an FTS5 trigram table on SQLite (made by the migration, kept by
# triggers; PostgreSQL has gin_trgm_ops indexes on the columns instead): kit.db.Substring.
PROFESSIONAL_FTS = "directory_professional_fts"

_NOT_STAGED = frozenset(
    {"id", "origin", "active", "created_at", "updated_at", "professional_id"}
    | {"latitude", "longitude", "position_source"}  # from the position stage
    | {"local_id", "local_system", "profession_system"}  # regional registration only
)


def _stage(target: Table, key: str) -> Table:
    """``<target>_stage``: the target's content columns and its hash, keyed like it."""
    columns = [
        Column(c.name, c.type, primary_key=c.name == key)
        for c in target.columns
        if c.name not in _NOT_STAGED
    ]
    return Table(f"{target.name}_stage", Base.metadata, *columns)


PROFESSIONAL_STAGE = _stage(Professional.__table__, "id_nat_ps")  # type: ignore[arg-type]
ACTIVITY_STAGE = _stage(Activity.__table__, "activity_key")  # type: ignore[arg-type]
STRUCTURE_STAGE = _stage(Structure.__table__, "finess")  # type: ignore[arg-type]
QUALIFICATION_STAGE = _stage(Qualification.__table__, "qualification_key")  # type: ignore[arg-type]
DIPLOMA_STAGE = _stage(Diploma.__table__, "diploma_key")  # type: ignore[arg-type]
MAILBOX_STAGE = _stage(Mailbox.__table__, "address")  # type: ignore[arg-type]
POSITION_STAGE = Table(
    "directory_structure_position_stage",
    Base.metadata,
    Column("finess", String(16), primary_key=True),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("position_source", String(256)),
)


# --- the ROR: each structure's offer of care and its capacity --------------------------------


class CareUnit(Base):
    """A place where a structure delivers care (ROR *lieu de réalisation de l'offre*, FHIR
    ``Location``): a ward, a unit, with its beds or places (:class:`Capacity`). Described and
    kept up to date by the structure itself (API or portal), never by the national files."""

    __tablename__ = "directory_unit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("directory_structure.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    # FHIR Location.status: active | suspended (closed for a while) | inactive.
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # When the beds were last counted, and by whom (a user, a client): shown with them.
    capacity_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    capacity_updated_by: Mapped[str | None] = mapped_column(String(256))


class Capacity(Base):
    """One count of a unit's beds or places (the ROR ``ror-location-supported-capacity``
    extension): of a nature (TRE_R329: 01 lit, 02 place), a status (TRE_R330: 01 installé,
    02 disponible, 06 supplémentaire…) and a gender (TRE_R332: 01 femme, 02 homme, 03
    indifférencié), for the current time (TRE_R331 01 courant: the only temporality kept)."""

    __tablename__ = "directory_capacity"

    unit_id: Mapped[int] = mapped_column(
        ForeignKey("directory_unit.id", ondelete="CASCADE"), primary_key=True
    )
    nature: Mapped[str] = mapped_column(String(4), primary_key=True)
    status: Mapped[str] = mapped_column(String(4), primary_key=True)
    gender: Mapped[str] = mapped_column(String(4), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    # No index on the status: a search reaches a unit's counts by its key (unit first); an
    # index led by the status made SQLite scan every unit's counts for each unit.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CareService(Base):
    """An offer of care of a structure (ROR *offre opérationnelle*, FHIR
    ``HealthcareService``): its field (TRE_R227 champ d'activité), operational activity
    (TRE_R211), care mode (TRE_R213, mandatory), the ages it takes, and the unit where it
    is delivered."""

    __tablename__ = "directory_service"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("directory_structure.id"), index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("directory_unit.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    field_code: Mapped[str] = mapped_column(String(8))
    field: Mapped[str] = mapped_column(String(256))
    activity_code: Mapped[str] = mapped_column(String(16), index=True)
    activity: Mapped[str] = mapped_column(String(256))
    care_mode_code: Mapped[str] = mapped_column(String(8))
    care_mode: Mapped[str] = mapped_column(String(256))
    age_low: Mapped[int | None] = mapped_column(Integer)
    age_high: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
