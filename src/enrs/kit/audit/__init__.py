"""The audit trail: append-only, hash-chained records of every access to patient data or security.

``models`` holds the table, ``trail`` writes and verifies the chain, ``fhir`` maps a record to an
IHE BALP ``AuditEvent``.
"""

from enrs.kit.audit.trail import AuditEntry, Outcome, verify_chain, write_entries

__all__ = ["AuditEntry", "Outcome", "verify_chain", "write_entries"]
