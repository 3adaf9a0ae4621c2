"""What the retention jobs of the services share (``enrs documents retention``, ``enrs imaging
retention run``): the cutoff of a period, the audit entry of the system agent that acts, and the
deletion of blobs once the rows that named them are gone.

A retention job runs from the command line (cron or a systemd timer), one transaction per batch;
every deletion or move is written to the audit trail (category ``retention``) in the same
transaction as the rows it changes, and blobs are deleted only after that commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from enrs.kit.audit.trail import AuditEntry
from enrs.kit.db import utcnow
from enrs.kit.storage.base import BlobStorage

log = logging.getLogger(__name__)

CATEGORY = "retention"


def cutoff(*, years: int = 0, days: int = 0, now: datetime | None = None) -> datetime:
    """The instant ``years`` (of 365.25 days) and ``days`` before ``now``."""
    return (now or utcnow()) - timedelta(days=round(365.25 * years) + days)


def entry(
    interaction: str,
    action: str,
    *,
    resource_type: str,
    entity_ref: str,
    detail: str,
    patient_ref: str | None = None,
) -> AuditEntry:
    """An audit entry of the retention job (the system agent ``retention``)."""
    return AuditEntry(
        category=CATEGORY,
        interaction=interaction,
        action=action,
        agent_kind="system",
        agent_id="retention",
        agent_name="ENRS retention job",
        patient_ref=patient_ref,
        resource_type=resource_type,
        entity_ref=entity_ref,
        detail=detail,
    )


def remove_blobs(storage: BlobStorage, keys: Iterable[str]) -> int:
    """Delete ``keys`` from ``storage``; return how many could not be deleted (logged)."""
    failed = 0
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            failed += 1
            log.exception("retention: the content %s could not be deleted", key)
    return failed
