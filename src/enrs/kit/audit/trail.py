"""Writing and verifying the hash chain of the audit trail.

Each record carries ``hash = SHA-256(prev_hash || canonical JSON of its fields)`` and a gap-free
sequence number, so ``verify_chain`` finds the first record altered, inserted or removed.
Writers serialise on the chain head: ``pg_advisory_xact_lock`` on PostgreSQL (taken, and the
head read after it, by the function ``audit_chain_head`` of the migrations), the write lock
taken at ``BEGIN IMMEDIATE`` on SQLite. Which transaction appends which entries is one rule,
:mod:`enrs.kit.unit_of_work`: a write appends its own in its transaction (``append_entries``),
reads and failures are appended after, in a short transaction of their own
(``write_entries``, batched by ``writer.AuditWriter``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database, utcnow

GENESIS = "0" * 64
_LOCK_KEY = 0x454E5253  # "ENRS"

ACTIONS = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D"}


class Outcome(StrEnum):
    """FHIR AuditEvent.outcome codes."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


@dataclass
class AuditEntry:
    """One audited event, filled in during a request and written when its outcome is known."""

    category: str
    interaction: str
    action: str = "E"
    outcome: str = Outcome.SUCCESS
    outcome_desc: str | None = None
    agent_kind: str = "anonymous"
    agent_id: str | None = None
    agent_name: str | None = None
    client_id: str | None = None
    source_ip: str | None = None
    patient_ref: str | None = None
    resource_type: str | None = None
    entity_ref: str | None = None
    query: str | None = None
    request_id: str | None = None
    detail: str | None = None
    recorded: datetime = field(default_factory=utcnow)


_FIELDS = list(AuditEntry.__dataclass_fields__)


def _canonical(seq: int, fields: dict[str, Any]) -> bytes:
    data = {k: v for k, v in fields.items() if k not in ("hash", "prev_hash", "seq")}
    data["seq"] = seq
    data["recorded"] = fields["recorded"].isoformat(timespec="microseconds")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, seq: int, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical(seq, fields)).hexdigest()


_HEAD = select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
# PostgreSQL: the advisory lock, then the head (a function of the migrations: one round trip).
_LOCKED_HEAD = text("SELECT head_seq, head_hash FROM audit_chain_head(:k)")
_INSERT = insert(AuditRecord)


def _lock_head(conn: Connection) -> tuple[int, str]:
    if conn.dialect.name == "postgresql":
        row = conn.execute(_LOCKED_HEAD, {"k": _LOCK_KEY}).first()
    else:
        row = conn.execute(_HEAD).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def append_entries(conn: Connection, entries: Sequence[AuditEntry]) -> list[int]:
    """Append ``entries`` to the chain in the transaction of ``conn``; returns their sequence
    numbers. The chain head stays locked until that transaction ends: append last, just before
    the commit. On SQLite the transaction must already hold the write lock (``BEGIN
    IMMEDIATE``), or a concurrent writer may make it fail at this point."""
    if not entries:
        return []
    seq, prev = _lock_head(conn)
    rows, seqs = [], []
    for entry in entries:
        seq += 1
        fields = {name: getattr(entry, name) for name in _FIELDS}
        digest = chain_hash(prev, seq, fields)
        rows.append({**fields, "seq": seq, "prev_hash": prev, "hash": digest})
        seqs.append(seq)
        prev = digest
    conn.execute(_INSERT, rows)
    return seqs


def write_entries(db: Database, entries: Sequence[AuditEntry]) -> list[int]:
    """Append ``entries`` to the chain in a transaction of their own."""
    if not entries:
        return []
    with db.connect(write=True) as conn, conn.begin():
        return append_entries(conn, entries)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


def _iter_records(db: Database, batch: int = 5000) -> Iterator[AuditRecord]:
    last = 0
    while True:
        with db.sessionmaker() as session:
            rows = list(
                session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq > last)
                    .order_by(AuditRecord.seq)
                    .limit(batch)
                )
            )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify_chain(db: Database) -> ChainReport:
    """Walk the whole chain; report the first record that is missing or does not verify."""
    prev, expected, checked = GENESIS, 1, 0
    for rec in _iter_records(db):
        if rec.seq != expected:
            return ChainReport(
                False, checked, expected, f"record {expected} is missing (next is {rec.seq})"
            )
        if rec.prev_hash != prev:
            return ChainReport(
                False, checked, rec.seq, f"record {rec.seq} does not follow record {rec.seq - 1}"
            )
        fields = {name: getattr(rec, name) for name in _FIELDS}
        if chain_hash(prev, rec.seq, fields) != rec.hash:
            return ChainReport(False, checked, rec.seq, f"record {rec.seq} was altered")
        prev, expected, checked = rec.hash, expected + 1, checked + 1
    return ChainReport(True, checked)
