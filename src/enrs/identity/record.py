"""The demographic record of an identity as its facility fed it, beyond the traits the
matching reads (names, birth date and place, sex, one address, telecoms, INS): prefixes and
suffixes, every name, address and telecom, marital status, multiple birth, contacts (next of
kin), language, general practitioner, managing organisation. Kept with the identity
(``identity_source.record``, JSON; in its versions too) and given back to PDQ and PDQm
consumers in the protocol it came in:

- from FHIR (ITI-104), the Patient elements ``name``, ``telecom``, ``address``,
  ``maritalStatus``, ``multipleBirth[x]``, ``deceased[x]``, ``contact``, ``communication``,
  ``generalPractitioner``, ``managingOrganization`` as fed; a FHIR read or search returns
  them as they are;
- from HL7 v2 (ADT), PID-5 (every name, with prefix and suffix), PID-11 (every address),
  PID-13 and PID-14 (every telecom), PID-15 (language), PID-16 (marital status), PID-24 and
  PID-25 (multiple birth and order), PID-29 and PID-30 (the death's date and indicator), and
  the PD1 and NK1 segments, as fed (in the standard
  delimiters); a PDQ answer (RSP^K22) writes those PID fields as fed.

An identity fed over one protocol and read over the other gets its record translated
(:mod:`.translate`): PDQm reads an identity fed by ADT with its PID-5 names, PID-11
addresses, NK1 contacts… as FHIR elements; PDQ reads one fed over FHIR with its names,
addresses, contacts… as PID fields and PD1 and NK1 segments."""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from enrs.identity import translate
from enrs.kit.errors import Unprocessable
from enrs.kit.hl7v2 import Segment

FHIR_ELEMENTS: dict[str, type | tuple[type, ...]] = {
    "name": list,
    "telecom": list,
    "address": list,
    "maritalStatus": dict,
    "multipleBirthBoolean": bool,
    "multipleBirthInteger": int,
    "deceasedBoolean": bool,
    "deceasedDateTime": str,
    "contact": list,
    "communication": list,
    "generalPractitioner": list,
    "managingOrganization": dict,
}
PID_FIELDS = (5, 11, 13, 14, 15, 16, 24, 25, 29, 30)
SEGMENTS = ("PD1", "NK1")
MAX_BYTES = 32_768


def from_fhir(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The record of an FR Core Patient; 422 naming the element that has the wrong type."""
    kept: dict[str, Any] = {}
    for name, kind in FHIR_ELEMENTS.items():
        if name not in resource:
            continue
        value = resource[name]
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if kind is list and not wrong:
            wrong = not all(isinstance(item, dict) for item in value)
        if wrong:
            raise Unprocessable(f"Patient.{name}: not a valid {name}", issue_code="structure")
        kept[name] = value
    if "deceasedDateTime" in kept:
        if "deceasedBoolean" in kept:
            raise Unprocessable(
                "Patient.deceased[x]: deceasedBoolean and deceasedDateTime both given",
                issue_code="structure",
            )
        if translate.fhir_to_dtm(kept["deceasedDateTime"]) is None:
            raise Unprocessable(
                "Patient.deceasedDateTime: not a valid dateTime", issue_code="value"
            )
    return {"fhir": kept} if kept else None


def from_v2(pid: Segment, segments: Sequence[Segment]) -> dict[str, Any] | None:
    """The record of a PID and the message's PD1 and NK1 segments."""
    fields = {str(n): text for n in PID_FIELDS if (text := pid.standard(n))}
    extra = [seg.text() for seg in segments if seg.name in SEGMENTS]
    if not fields and not extra:
        return None
    return {"v2": {"PID": fields, "segments": extra}}


def birth_order(record: dict[str, Any] | None) -> str:
    """The order of birth of a multiple birth (1 for the first twin), as fed: FHIR
    ``multipleBirthInteger``, HL7 v2 PID-25; ``''`` when not given (or not a number ≥ 1)."""
    if not record:
        return ""
    fhir = record.get("fhir")
    v2 = record.get("v2")
    value: Any = None
    if isinstance(fhir, dict):
        value = fhir.get("multipleBirthInteger")
    elif isinstance(v2, dict) and isinstance(v2.get("PID"), dict):
        text = str(v2["PID"].get("25", "")).strip()
        value = int(text) if text.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 99:
        return ""
    return str(value)


def death_date(record: dict[str, Any] | None) -> date | None:
    """The day of the death, as fed (FHIR ``deceasedDateTime``, HL7 v2 PID-29); a month or a
    year alone gives its last day (a period counted from it then ends no earlier than the law
    says); ``None`` when not given or not a date."""
    if not record:
        return None
    fhir, v2 = record.get("fhir"), record.get("v2")
    text = ""
    if isinstance(fhir, dict) and isinstance(fhir.get("deceasedDateTime"), str):
        text = fhir["deceasedDateTime"]
    elif isinstance(v2, dict) and isinstance(v2.get("PID"), dict):
        text = translate.dtm_to_fhir(str(v2["PID"].get("29", ""))) or ""
    found = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text[:10])
    if not found:
        return None
    year, month, day = (int(g) if g else None for g in found.groups())
    assert year is not None
    try:
        if day is not None and month is not None:
            return date(year, month, day)
        if month is not None:
            return date(year, month, calendar.monthrange(year, month)[1])
        return date(year, 12, 31)
    except ValueError:
        return None


def dump(record: dict[str, Any] | None) -> str | None:
    """The column's value; 422 when the record is over :data:`MAX_BYTES`."""
    if not record:
        return None
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MAX_BYTES:
        raise Unprocessable(
            f"the demographic record is over {MAX_BYTES // 1024} KB", issue_code="too-costly"
        )
    return text


def _load(column: str | None) -> dict[str, Any]:
    try:
        found = json.loads(column) if column else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _v2(column: str | None) -> tuple[dict[int, str], list[str]] | None:
    """The PID fields and the PD1 and NK1 segments of a record fed over HL7 v2."""
    v2 = _load(column).get("v2")
    if not isinstance(v2, dict):
        return None
    fields, segments = v2.get("PID"), v2.get("segments")
    pid = (
        {int(k): str(v) for k, v in fields.items() if str(k).isdigit()}
        if isinstance(fields, dict)
        else {}
    )
    kept = (
        [str(s) for s in segments if str(s)[:3] in SEGMENTS] if isinstance(segments, list) else []
    )
    return pid, kept


def fhir_elements(column: str | None) -> dict[str, Any]:
    """The FHIR elements of a record: as fed over FHIR, translated when fed over HL7 v2."""
    elements = _load(column).get("fhir")
    if isinstance(elements, dict):
        return elements
    v2 = _v2(column)
    return translate.v2_to_fhir(*v2) if v2 else {}


def v2_view(column: str | None) -> tuple[dict[int, str], list[str]]:
    """The PID fields (number → text in the standard delimiters) and the PD1 and NK1 segments
    (PD1 first) of a record: as fed over HL7 v2, translated when fed over FHIR."""
    v2 = _v2(column)
    if v2 is None:
        elements = _load(column).get("fhir")
        v2 = translate.fhir_to_v2(elements) if isinstance(elements, dict) else ({}, [])
    fields, found = v2
    return fields, sorted(found, key=lambda text: SEGMENTS.index(text[:3]))
