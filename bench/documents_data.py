"""A document registry at a regional repository's size, for the document benches: regional
patients, each known by an IPP of one facility (the CHU, which has them all in care), and
their documents' metadata (a real repository holds ~1.6 million documents for ~300,000
patients, a skewed few having dozens). Rows go straight into the tables, in one transaction
per batch; no content is written (the searches read metadata only)."""

from __future__ import annotations

import json
import random
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.identity_bulk import pg_database
from enrs.documents.models import DocumentEntry, SubmissionSet
from enrs.identity import domains
from enrs.identity.config import IdentityConfig
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.kit.db import Database, prepare_bulk
from enrs.kit.migrate import upgrade_head
from enrs.settings import PLACEHOLDER_OID_ROOT

CHU_FINESS = "970000014"  # a Luhn-valid FINESS of Martinique for the bench's CHU
CHU_OID = "1.2.250.1.999.1.1"
TYPES = [
    ("11490-0", "10"), ("11488-4", "10"), ("18748-4", "31"), ("11502-2", "10"),
    ("34133-9", "11"), ("57833-6", "42"), ("11506-3", "10"), ("52040-3", "11"),
]  # fmt: skip
LOINC = "http://loinc.org"
CLASS_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
BATCH = 20_000


@dataclass(frozen=True)
class Seeded:
    patients: int
    documents: int
    sample: list[tuple[str, str]]  # (IPP, RRI) of patients with documents


def _documents_per_patient(rng: random.Random, mean: float) -> int:
    """A skewed count: most patients have a few documents, some have dozens."""
    return max(1, min(200, int(rng.expovariate(1 / mean)) + 1))


def _resource(unique: str, kind: tuple[str, str], title: str) -> str:
    resource = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique}"},
        "type": {"coding": [{"system": LOINC, "code": kind[0]}]},
        "category": [{"coding": [{"system": CLASS_SYSTEM, "code": kind[1]}]}],
        "description": title,
        "securityLabel": [{"coding": [{"code": "N"}]}],
        "content": [{"attachment": {"contentType": "application/pdf", "title": title}}],
        "context": {"facilityType": {"coding": [{"code": "SA01"}]}},
    }
    return json.dumps(resource, separators=(",", ":"))


def _rows(
    patients: int, documents: int, seed: int, life: Life | None = None
) -> Iterator[
    tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]
]:
    """Batches of (patients, identities, submission sets, documents) rows."""
    rng = random.Random(seed)
    mean = max(documents / patients, 1e-9)
    start = life.since if life else datetime(2016, 1, 1, tzinfo=UTC)
    span = round((life.span_years if life else 10) * 365 * 24 * 60)
    made = 0
    p_rows: list[dict[str, Any]] = []
    s_rows: list[dict[str, Any]] = []
    ss_rows: list[dict[str, Any]] = []
    d_rows: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    for pid in range(1, patients + 1):
        p_rows.append(
            {"id": pid, "rri": f"R{pid:09d}", "active": True, "created_at": now, "updated_at": now}
        )
        s_rows.append(_identity(pid, now, rng, life))
        count = 0
        if documents > made:
            count = _documents_per_patient(rng, mean) if pid < patients else documents - made
            count = min(count, documents - made)
        for _ in range(count):
            made += 1
            kind = TYPES[rng.randrange(len(TYPES))]
            when = start + timedelta(minutes=rng.randrange(span))
            unique = f"1.2.250.1.999.9.{made}"
            ss_rows.append({
                "id": made, "resource_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "unique_id": f"1.2.250.1.999.8.{made}", "source_id": CHU_OID, "patient_id": pid,
                "status": "current", "date": when, "submitter": "client:bench",
                "submitter_finess": CHU_FINESS, "resource": "{}", "created_at": when,
            })  # fmt: skip
            d_rows.append({
                "id": made, "resource_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "unique_id": unique, "submission_set_id": made, "patient_id": pid,
                "source_patient": f"{CHU_OID}|IPP{pid}", "status": "current",
                "type_system": LOINC, "type_code": kind[0], "class_system": CLASS_SYSTEM,
                "class_code": kind[1], "facility_type": "SA01", "practice_setting": "ETABLISSEMENT",
                "format_code": "urn:ihe:iti:xds-sd:pdf:2008", "confidentiality": "N",
                "visibility": "", "title": "Compte rendu", "date": when, "created": when,
                "period_start": when - timedelta(days=2), "period_end": when,
                "author_rpps": None, "author_reference": None, "structure_finess": CHU_FINESS,
                "mime_type": "application/pdf", "size": 200_000, "sha1": "0" * 40,
                "blob_key": f"documents/bench/{made}", "language": "fr-FR", "replaces_id": None,
                "opposed": False, "submitter": "client:bench", "version": 1,
                "resource": _resource(unique, kind, "Compte rendu"), "created_at": when,
                "updated_at": when,
            })  # fmt: skip
        if len(d_rows) >= BATCH or len(p_rows) >= BATCH or pid == patients:
            yield p_rows, s_rows, ss_rows, d_rows
            p_rows, s_rows, ss_rows, d_rows = [], [], [], []
        if made >= documents and pid >= patients:
            break


@dataclass(frozen=True)
class Life:
    """Documents dated from ``since`` over ``span_years``; birth dates between ``born`` and
    2020, a share ``dead`` of the patients dead since 2000 (the retention bench)."""

    since: datetime
    span_years: float
    born: int = 1930
    dead: float = 0.05


def _identity(
    pid: int, now: datetime, rng: random.Random, life: Life | None = None
) -> dict[str, Any]:
    born = died = None
    if life is not None:
        days = rng.randrange(365 * (2020 - life.born))
        born = datetime(life.born, 1, 1).date() + timedelta(days=days)
        if rng.random() < life.dead:
            died = datetime(2000, 1, 1).date() + timedelta(days=rng.randrange(365 * 26))
    return {
        "id": pid, "authority": CHU_OID, "ipp": f"IPP{pid}", "patient_id": pid,
        "birth_name": "BENCH", "used_name": None, "given_names": "PATIENT",
        "birth_date": born, "death_date": died, "sex": "U", "birth_place": None,
        "address_line": None, "postal_code": None, "city": None, "country": None,
        "telecom": None, "ins": None, "ins_system": None, "status": "PROV", "attributes": "",
        "method_collection": None,
        "validation_mode": None, "n_birth_name": "BENCH", "n_used_name": "",
        "n_given_names": "PATIENT", "n_first_given": "PATIENT",
        "birth_year": born.year if born else None,
        "p_birth_name": None, "p_first_given": None, "n_address": None, "n_city": None,
        "n_phone": None, "n_email": None, "birth_order": None, "active": True, "version": 1,
        "created_at": now, "updated_at": now, "record": None, "other_identifiers": None,
    }  # fmt: skip


def database(
    stack: ExitStack, prefix: str, *, postgres: bool, pg_admin_url: str
) -> tuple[Path, str]:
    """A temporary folder, and a migrated empty database: SQLite in that folder, or a new
    PostgreSQL database on the server of ``pg_admin_url``; both gone when ``stack`` closes."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    url = stack.enter_context(pg_database(pg_admin_url)) if postgres else f"sqlite:///{tmp}/enrs.db"
    upgrade_head(url)
    return tmp, url


def seed(
    url: str,
    *,
    patients: int,
    documents: int,
    seed: int = 0,
    sample: int = 5000,
    life: Life | None = None,
) -> Seeded:
    """Fill the (migrated, empty) database at ``url``; the CHU's domain is registered and
    owned by its FINESS, so that its client reads every patient's documents. ``life``: dates
    of documents, births and deaths (else 2016–2026, no birth date, no death)."""
    db = Database(url)
    try:
        with db.transaction() as session:
            domains.add(
                session, IdentityConfig(PLACEHOLDER_OID_ROOT), CHU_OID, namespace="CHU",
                owner=CHU_FINESS,
            )  # fmt: skip
        tables = [RegionalPatient.__table__, SourceIdentity.__table__, SubmissionSet.__table__,
                  DocumentEntry.__table__]  # fmt: skip
        for batch in _rows(patients, documents, seed, life):
            with db.engine.begin() as conn:
                prepare_bulk(conn)
                for table, rows in zip(tables, batch, strict=True):
                    if rows:
                        conn.execute(sa.insert(table), rows)
        rng = random.Random(seed + 1)
        picks = sorted(rng.sample(range(1, patients + 1), min(sample, patients)))
        with db.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        return Seeded(patients, documents, [(f"IPP{p}", f"R{p:09d}") for p in picks])
    finally:
        db.dispose()
