"""The ``audit_record`` table. Rows are never updated or deleted (triggers refuse it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime


class AuditRecord(Base):
    __tablename__ = "audit_record"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    category: Mapped[str] = mapped_column(String(32))  # rest | login | logout | token | security
    interaction: Mapped[str] = mapped_column(String(32))  # read, search-type, create, login...
    action: Mapped[str] = mapped_column(String(1))  # C R U D E
    outcome: Mapped[str] = mapped_column(String(2))  # 0 4 8 12
    outcome_desc: Mapped[str | None] = mapped_column(Text)
    agent_kind: Mapped[str] = mapped_column(String(16))  # user | client | anonymous
    agent_id: Mapped[str | None] = mapped_column(String(128), index=True)
    agent_name: Mapped[str | None] = mapped_column(String(256))
    client_id: Mapped[str | None] = mapped_column(String(128))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    patient_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(64))
    entity_ref: Mapped[str | None] = mapped_column(String(256))
    query: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)  # an AuditEvent recorded for a facility
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_record_action_recorded", "action", "recorded"),)
