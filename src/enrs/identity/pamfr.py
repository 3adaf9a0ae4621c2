"""The French extension of IHE PAM, PAM-FR 2.11: a facility's PID (and ZFD) read as the
identity service's input, and the identifiers (CX) of PID-3, MRG-1 and QPD-3.

- PID-3 carries the IPP (CX-5 ``PI``) and the INS (CX-5 ``INS``), PID-5 the birth name (type
  ``L``) and used name (``D``), PID-11 the birth place COG in the ``BDL`` address (XAD-9),
  PID-32 the identity status and attributes, ZFD-5/ZFD-7 how the identity was collected;
- what cannot be read raises :class:`~enrs.kit.hl7v2.V2Error` (AR, ERR-2 pointing at the field);
  what was repaired is appended to the message's notes.

Assigning authorities are OIDs. A PAM-FR authority given as a FINESS number (HD-3 ``M`` or
``N``) is mapped to ``{root}.2.<1 + FINESS>`` (Corsica's 2A/2B: ``2`` + the FINESS with A→1,
B→2); the regional id travels with authority ``{root}.1``, where ``{root}`` is the region's OID
arc (``ENRS_OID_ROOT``, given as ``IdentityConfig``; the placeholder ``1.2.250.1.999`` until the
region registers its own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from pydantic import ValidationError

from enrs.identity import record, translate
from enrs.identity.config import IdentityConfig
from enrs.identity.schemas import OID, OfferedIdentifier, SourceIdentityIn, Telecom
from enrs.identity.traits import ATTRIBUTES, INS_NIA_OID, INS_NIR_OID, INS_OIDS, STATUSES
from enrs.kit.hl7v2 import STANDARD, Segment, V2Error

INS_TYPES = frozenset({"INS", "INS-NIR", "INS-NIA"})
INS_NAMESPACES = {"ASIP-SANTE-INS-NIR": INS_NIR_OID, "ASIP-SANTE-INS-NIA": INS_NIA_OID}
_OID = re.compile(OID)
_FINESS = re.compile(r"^(\d{9}|2[AB]\d{7})$")
_SEX = {"M": "M", "F": "F", "U": "U", "O": "U", "A": "U", "N": "U", "": "U"}
_FIELDS = {  # SourceIdentityIn field -> where it comes from, for ERR-2
    **dict.fromkeys(("authority", "ipp", "ins"), "PID^1^3"),
    **dict.fromkeys(("birth_name", "used_name", "given_names"), "PID^1^5"),
    **dict.fromkeys(("birth_place", "address_line", "postal_code", "city", "country"), "PID^1^11"),
    **{"birth_date": "PID^1^7", "sex": "PID^1^8", "telecom": "PID^1^13"},
    **dict.fromkeys(("status", "attributes"), "PID^1^32"),
    **{"method_collection": "ZFD^1^5", "validation_mode": "ZFD^1^7"},
}


def location_of(field: str) -> str:
    """Where a ``SourceIdentityIn`` field is read from in the message (ERR-2)."""
    return _FIELDS.get(field, "PID")


def finess_oid(config: IdentityConfig, finess: str) -> str:
    """The OID standing for a FINESS-numbered assigning authority (see the module docstring)."""
    f = finess.upper()
    arc = "1" + f if f.isdigit() else "2" + f.replace("A", "1").replace("B", "2")
    return f"{config.finess_arc}.{arc}"


def authority_of(
    config: IdentityConfig, namespace: str, universal_id: str, id_type: str
) -> str | None:
    """The OID of an HD (namespace, universal id, universal id type), or ``None``."""
    if _OID.match(universal_id):
        return universal_id
    if id_type.upper() in ("M", "N") and _FINESS.match(universal_id.upper()):
        return finess_oid(config, universal_id)
    if not universal_id and _OID.match(namespace):
        return namespace
    return None


@dataclass(frozen=True)
class Cx:
    """One identifier (CX) of PID-3, MRG-1 or QPD-3."""

    value: str
    namespace: str
    universal_id: str
    id_type: str
    type_code: str
    rep: int

    def authority(self, config: IdentityConfig) -> str | None:
        return authority_of(config, self.namespace, self.universal_id, self.id_type)

    @property
    def is_ins(self) -> bool:
        return (
            self.type_code in INS_TYPES
            or self.universal_id in INS_OIDS
            or self.namespace.upper() in INS_NAMESPACES
        )

    @property
    def ins_system(self) -> str:
        if self.universal_id in INS_OIDS:
            return self.universal_id
        if self.type_code == "INS-NIA":
            return INS_NIA_OID
        return INS_NAMESPACES.get(self.namespace.upper(), self.universal_id or INS_NIR_OID)


def cx_out(value: str, system: str, type_code: str, namespaces: Mapping[str, str]) -> str:
    """An identifier as a CX of the answers (PIX, PDQ): CX-4 ``namespace&OID&ISO``, the
    namespace of a registered domain (``namespaces``: OID → namespace), ``ENRS`` for the RRI,
    the ANS's for the INS."""
    if type_code == "INS":
        namespace = "ASIP-SANTE-INS-NIA" if system == INS_NIA_OID else "ASIP-SANTE-INS-NIR"
    else:
        namespace = "ENRS" if type_code == "RRI" else namespaces.get(system, "")
    esc = STANDARD.escape
    return f"{esc(value)}^^^{esc(namespace)}&{system}&ISO^{type_code}"


def identifiers(seg: Segment, n: int) -> list[Cx]:
    return [
        Cx(r.get(1), r.get(4, 1), r.get(4, 2), r.get(4, 3), r.get(5).upper(), i)
        for i, r in enumerate(seg.reps(n), start=1)
        if r.get(1)
    ]


def ipp_of(
    config: IdentityConfig,
    seg: Segment,
    n: int,
    notes: list[str],
    *,
    facility: str | None,
    default: str | None = None,
) -> tuple[str, str]:
    """(authority OID, IPP) of PID-3 or MRG-1: the ``PI`` identifier (the sending facility's
    first when several), else an untyped one; ``default`` when it names no authority."""
    where, label = f"{seg.name}^1^{n}", f"{seg.name}-{n}"
    cxs = [c for c in identifiers(seg, n) if not c.is_ins and c.type_code != "INS-C"]
    typed = [c for c in cxs if c.type_code == "PI"]
    if not typed:
        typed = [c for c in cxs if not c.type_code]
        if typed:
            notes.append(f"{label}: identifier without CX-5 taken as the IPP")
    if not typed:
        raise V2Error(101, f"{label}: no patient identifier (CX-5 PI)", location=where)
    best = next((c for c in typed if facility and c.authority(config) == facility), typed[0])
    if not (best.namespace or best.universal_id) and default:
        return default, best.value
    authority = best.authority(config)
    if authority is None:
        raise V2Error(
            102,
            f"{label}: the assigning authority (CX-4) must be an OID (ISO) or a FINESS (M/N)",
            location=f"{where}^{best.rep}^4",
        )
    return authority, best.value


def _names(pid: Segment, notes: list[str]) -> tuple[str, str | None, list[str]]:
    reps = pid.reps(5)
    legal = [r for r in reps if r.get(7).upper() == "L"]
    used = [r for r in reps if r.get(7).upper() == "D"]
    untyped = [r for r in reps if not r.get(7)]
    candidates = legal or untyped or used
    birth = candidates[0] if candidates else None
    if birth is not None and not legal:
        notes.append(f"PID-5: no birth name (type L); {birth.get(7) or 'untyped'} name used")
    if birth is None or not birth.get(1):
        raise V2Error(101, "PID-5: the birth name (type L) is required", location="PID^1^5")
    given = translate.given_names(birth.get(2), birth.get(3))
    if not given and used and used[0].get(2):
        notes.append("PID-5: no birth first name; the used first name taken")
        given = translate.given_names(used[0].get(2), used[0].get(3))
    if not given:
        raise V2Error(101, "PID-5: the first name (XPN-2) is required", location="PID^1^5^1^2")
    if len(given) > 10:
        notes.append("PID-5: first names after the tenth dropped")
    used_name = used[0].get(1) if used and used[0] is not birth else ""
    return birth.get(1), used_name or None, given[:10]


def _birth_date(pid: Segment, notes: list[str]) -> date | None:
    raw = pid.get(7)
    if not raw:
        return None
    if raw.isdigit() and len(raw) in (4, 6):
        notes.append(f"PID-7: partial birth date {raw!r} ignored")
        return None
    try:
        if len(raw) < 8 or not raw[:8].isdigit():
            raise ValueError(raw)
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    except ValueError:
        raise V2Error(102, f"PID-7: {raw!r} is not a date (YYYYMMDD)", location="PID^1^7") from None


def _check_death(pid: Segment) -> None:
    """PID-29 a DTM and PID-30 ``Y`` or ``N`` when given (AR otherwise: a death misread is
    not to be kept)."""
    when, flag = pid.get(29), pid.get(30).upper()
    if when and translate.dtm_to_fhir(when) is None:
        raise V2Error(102, f"PID-29: {when!r} is not a date and time (DTM)", location="PID^1^29")
    if flag not in ("", "Y", "N"):
        raise V2Error(103, f"PID-30: {flag!r} is not Y or N", location="PID^1^30")
    if when and flag == "N":
        raise V2Error(102, "PID-29 gives a death that PID-30 (N) denies", location="PID^1^30")


def _addresses(pid: Segment) -> dict[str, str | None]:
    home, birth_place = None, None
    for r in pid.reps(11):
        kind = r.get(7).upper()
        if kind == "BDL":
            birth_place = birth_place or r.get(9) or None
        elif kind in ("H", "HP", "") and home is None and any(r.get(i) for i in (1, 2, 3, 5)):
            home = r
    out: dict[str, str | None] = {"birth_place": birth_place}
    if home is not None:
        line = " ".join(p for p in (home.get(1), home.get(2)) if p)
        country = home.get(6)
        out |= {
            "address_line": line or None,
            "city": home.get(3) or None,
            "postal_code": home.get(5) or None,
            "country": country if 0 < len(country) <= 3 else None,
        }
    return out


def _telecom(pid: Segment) -> list[Telecom]:
    out: list[Telecom] = []
    for r in pid.reps(13) + pid.reps(14):
        equipment, use = r.get(3).upper(), r.get(2).upper()
        if equipment in ("INTERNET", "X.400") or use == "NET":
            value = r.get(4)
            system = "email"
        else:
            value = r.get(12) or r.get(1) or "".join(r.get(i) for i in (5, 6, 7))
            system = "fax" if equipment == "FX" else "phone"
        if value:
            out.append(Telecom(system=system, value=value[:256]))
    return out[:10]


def _status(pid: Segment, notes: list[str]) -> tuple[str, frozenset[str]]:
    codes = [r.get(1).upper() for r in pid.reps(32)]
    statuses = sorted({c for c in codes if c in STATUSES})
    ignored = [c for c in codes if c and c not in STATUSES and c not in ATTRIBUTES]
    if ignored:
        notes.append(f"PID-32: code(s) {', '.join(ignored)} ignored")
    if len(statuses) > 1:
        raise V2Error(
            103,
            f"PID-32: several identity statuses ({', '.join(statuses)})",
            ack="AE",
            location="PID^1^32",
        )
    return (statuses[0] if statuses else "PROV"), frozenset(c for c in codes if c in ATTRIBUTES)


def offered_identifiers(
    config: IdentityConfig,
    pid: Segment,
    kept: tuple[str, str],
    ins_cx: Cx | None,
    notes: list[str],
) -> list[OfferedIdentifier]:
    """The PID-3 identifiers besides the IPP and the INS (a foreign or social-security number,
    another facility's number, a second INS…), for :mod:`.others` to keep or refuse; the
    regional identifier (``RRI``) echoed back and the former computed INS (``INS-C``) are ours
    or obsolete, and pass silently."""
    found = []
    for cx in identifiers(pid, 3):
        if cx is ins_cx or cx.type_code in ("RRI", "INS-C"):
            continue
        if not cx.is_ins and (cx.authority(config), cx.value) == kept:
            continue
        domain = cx.ins_system if cx.is_ins else cx.authority(config)
        if len(cx.value) > 64:
            notes.append(f"PID-3: identifier {cx.value[:20]!r}… ignored: over 64 characters")
            continue
        found.append(
            OfferedIdentifier(system=domain, value=cx.value, type=cx.type_code[:8] or None)
        )
    return found


def identity_from_pid(
    config: IdentityConfig,
    pid: Segment,
    zfd: Segment | None,
    notes: list[str],
    *,
    facility: str | None,
    segments: Sequence[Segment] = (),
) -> SourceIdentityIn:
    """Map a PAM-FR PID (and ZFD) to the identity service's input; :class:`V2Error` (AR) when
    it cannot be read. Repairs are appended to ``notes``."""
    authority, ipp = ipp_of(config, pid, 3, notes, facility=facility)
    ins_cx = next((c for c in identifiers(pid, 3) if c.is_ins), None)
    offered = offered_identifiers(config, pid, (authority, ipp), ins_cx, notes)
    birth_name, used_name, given = _names(pid, notes)
    status, attributes = _status(pid, notes)
    _check_death(pid)
    sex = pid.get(8).upper()
    if sex not in _SEX:
        notes.append(f"PID-8: sex {sex!r} read as U")
    try:
        return SourceIdentityIn(
            authority=authority,
            ipp=ipp,
            birth_name=birth_name,
            used_name=used_name,
            given_names=given,
            birth_date=_birth_date(pid, notes),
            sex=_SEX.get(sex, "U"),
            telecom=_telecom(pid),
            ins=ins_cx.value if ins_cx else None,
            ins_system=ins_cx.ins_system if ins_cx else None,
            status=status,
            attributes=attributes,
            method_collection=(zfd.get(5) or None) if zfd else None,
            validation_mode=(zfd.get(7) or None) if zfd else None,
            other_identifiers=offered[:20],
            record=record.from_v2(pid, segments),
            **_addresses(pid),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        where = location_of(name)
        label = where.replace("^1^", "-")
        raise V2Error(102, f"{label}: {name}: {first['msg']}", location=where) from None
