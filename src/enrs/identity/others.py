"""Identifiers a facility sends besides its IPP and the INS (IHE PIX/PAM "other identifiers"):
another facility's number it knows, a national or foreign number. One rule decides which are
kept, for every feed (HL7 v2 PID-3, FHIR Patient.identifier):

- kept when its domain is an assigning authority the admin registered (``enrs identity
  domains add``), other than the facility's own: stored with the identity (replaced by each
  new version of it), answered with it, and cross-referenced (a PIX query by it finds the
  regional patient when no identity of that domain has that number);
- else ignored, and the ACK (ERR severity W at PID-3) or the OperationOutcome says why: no
  assigning authority, the facility's own domain (one IPP per identity), a second INS, a
  domain not registered.

The RRI echoed back by a facility and the obsolete computed INS (``INS-C``) are not offered."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from enrs.identity import repository
from enrs.identity.config import IdentityConfig
from enrs.identity.schemas import OfferedIdentifier


def _label(offered: OfferedIdentifier) -> str:
    domain = offered.system or "no assigning authority"
    return f"identifier {offered.value!r} ({offered.type or 'untyped'}, {domain})"


def sort(
    session: Session,
    config: IdentityConfig,
    authority: str,
    offered: Sequence[OfferedIdentifier],
) -> tuple[list[OfferedIdentifier], list[str]]:
    """The identifiers of ``offered`` to keep for an identity of ``authority``, and a message
    for each one ignored (``identifier 'X' (type, domain) ignored: why``)."""
    kept: list[OfferedIdentifier] = []
    ignored: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in offered:
        system = item.system
        if system is None:
            why = "it names no assigning authority"
        elif system == authority:
            why = "a second number in the facility's own domain (one IPP per identity)"
        elif system in config.accepted_ins:
            why = "a second INS (one INS per identity)"
        elif system == config.rri_authority:
            continue  # the RRI echoed back: the server's own
        elif repository.domain(session, system) is None:
            why = f"its domain {system} is not registered on this server"
        elif (system, item.value) in seen:
            continue
        else:
            seen.add((system, item.value))
            kept.append(item)
            continue
        ignored.append(f"{_label(item)} ignored: {why}")
    return kept, ignored
