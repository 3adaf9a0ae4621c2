"""The HL7 v2.6 MDM an applicative mailbox's software receives for each document of a mail
(ANS guide "transmission au LPS d'un document CDA provenant d'un courriel MSSanté"):

- ``MDM^T02`` a new document (OBX-11 ``F``), ``MDM^T10`` a replacement (``C``, TXA-13 the
  uniqueId of the replaced version), ``MDM^T04`` a deletion (``D``);
- PID-3 the patient's INS (and the regional identifier), TXA the document (type, time,
  uniqueId, status), one PRT per participant of the mail (the sender ``SB``, each recipient
  ``RCT``, their MSSanté addresses in PRT-15);
- the document itself in an OBX of type ED (Base64), then one OBX per MetaDMP/MSS flag
  (``MASQUE_PS``, ``DESTMSSANTEPS`` …, OBX-5 ``Y``).

What we emit is strict (house habit 11): every field value is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

EVENTS = {"T02": "F", "T10": "C", "T04": "D"}  # MDM trigger -> OBX-11 result status
SUBTYPES = {"text/xml": "XML", "application/pdf": "PDF", "text/plain": "TEXT"}
OBX_CODES = frozenset(
    {
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REP_LEGAUX",
        "CONNEXION_SECRETE",
        "MODIF_CONF_CODE",
        "DESTDMP",
        "DESTMSSANTEPS",
        "DESTMSSANTEPAT",
        "ACK_RECEPTION",
        "ACK_LECTURE_MSS",
        "CORPSMAIL_PS",
        "CORPSMAIL_PATIENT",
    }
)
INS_OID = "1.2.250.1.213.1.4.8"  # INS-NIR
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(value: str) -> str:
    """``value`` as an HL7 v2 field component (delimiters escaped, line breaks as ``\\X0D\\``)."""
    for raw, escaped in _ESCAPES:
        value = value.replace(raw, escaped)
    return value.replace("\r\n", "\\X0D\\").replace("\r", "\\X0D\\").replace("\n", "\\X0D\\")


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


@dataclass(frozen=True)
class MdmDocument:
    """One document of a mail, as its MDM carries it."""

    event: str  # T02, T10, T04
    control_id: str  # MSH-10, unique per message (the outbound queue checks the ACK's MSA-2)
    patient_ins: str
    patient_rri: str
    family: str
    given: str
    unique_id: str
    type_code: str  # LOINC
    type_display: str
    mime_type: str
    content: bytes
    sender: str  # the mail's sender (MSSanté address)
    recipients: Sequence[str]
    receiving_application: str  # MSH-5: the APP mailbox's address
    receiving_facility: str  # MSH-6: its structure's FINESS
    created: datetime | None = None
    replaces: str | None = None  # TXA-13: uniqueId of the replaced version (T10, T04)
    title: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)  # OBX_CODES sent with Y


def build(doc: MdmDocument, *, sending_facility: str, now: datetime | None = None) -> str:
    """The MDM (segments separated by CR) for ``doc``; ``ValueError`` on a bad event or flag."""
    if doc.event not in EVENTS:
        raise ValueError(f"MDM^{doc.event}: one of {', '.join(EVENTS)}")
    unknown = doc.flags - OBX_CODES
    if unknown:
        raise ValueError(f"OBX-3 codes {', '.join(sorted(unknown))} are not MetaDMP/MSS codes")
    now = now or datetime.now(UTC)
    e = escape
    status = EVENTS[doc.event]
    ins_repetition = (  # none when the region has no qualified INS for the patient
        f"{e(doc.patient_ins)}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS~" if doc.patient_ins else ""
    )
    segments = [
        f"MSH|^~\\&|ENRS|{e(sending_facility)}|{e(doc.receiving_application)}|"
        f"{e(doc.receiving_facility)}|{_ts(now)}||MDM^{doc.event}^MDM_T02|{e(doc.control_id)}|"
        "P|2.6|||AL|NE||UNICODE UTF-8|||",
        f"EVN||{_ts(now)}",
        f"PID|1||{ins_repetition}{e(doc.patient_rri)}^^^ENRS^PI||"
        f"{e(doc.family)}^{e(doc.given)}^^^^^L",
        "PV1|1|N",
        f"TXA|1|{e(doc.type_code)}^{e(doc.type_display)}^LN|{SUBTYPES.get(doc.mime_type, 'XML')}|"
        f"{_ts(doc.created) if doc.created else ''}||||||||{e(doc.unique_id)}|"
        f"{e(doc.replaces or '')}||||{'AU' if status != 'D' else 'DE'}",
        f"PRT|1|AD||SB^Sender^participation|||||||||||{e(doc.sender)}",
    ]
    segments += [
        f"PRT|{n}|AD||RCT^Recipient^participation|||||||||||{e(to)}"
        for n, to in enumerate(doc.recipients, start=2)
    ]
    data = base64.b64encode(doc.content).decode("ascii")
    subtype = SUBTYPES.get(doc.mime_type, "XML")
    segments.append(
        f"OBX|1|ED|{e(doc.type_code)}^{e(doc.title or doc.type_display)}^LN||"
        f"^{'text' if subtype != 'PDF' else 'application'}^{subtype}^Base64^{data}||||||{status}"
    )
    segments += [
        f"OBX|{n}|CE|{code}^{code}^MetaDMPMSS||Y^Oui^HL70136||||||{status}"
        for n, code in enumerate(sorted(doc.flags), start=2)
    ]
    return "\r".join(segments) + "\r"
