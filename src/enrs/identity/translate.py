"""The demographic record (:mod:`.record`) translated between HL7 v2 and FHIR, for an identity
fed over one protocol and read over the other: a PDQm consumer reading an identity fed by ADT,
a PDQ consumer reading one fed by ITI-104.

The mappings follow the HL7 *Version 2 to FHIR* implementation guide (its concept maps for
tables 0200, 0002, 0190, 0201, 0202) and PAM-FR's conventions:

======================  ==========================================================
HL7 v2                  FHIR Patient
======================  ==========================================================
PID-5 (XPN, each)       ``name``: family, given (XPN-2, then XPN-3's further first
                        names), suffix (XPN-4, XPN-6), prefix (XPN-5), use from XPN-7
                        (L official, D usual, M maiden, N nickname, S anonymous,
                        BAD old, TEMP temp); the birth name (L, else the first
                        untyped name, as the identity server reads it) is the official
                        name, with FR Core's list of birth first names
PID-11 (XAD, each)      ``address``: line (XAD-1, XAD-2), city, state, postalCode,
                        country, district (XAD-9), use from XAD-7 (H home, O/B work,
                        C temp, BA old; M a postal address). The birth place (BDL)
                        is FR Core's ``birthPlace`` extension, not an address
PID-13, PID-14 (XTN)    ``telecom``: system from XTN-3 (PH phone, CP phone of use
                        mobile, FX fax, BP pager, Internet/X.400 email), use from
                        XTN-2 (PRN home, WPN work, VHN temp; PID-14 work)
PID-15 (CWE)            ``communication[0].language`` (ISO 639 ↔ ``urn:ietf:bcp:47``)
PID-16 (CWE)            ``maritalStatus``: the v3 MaritalStatus code and the v2 0002
                        code (both codings, so that the v2 code comes back as fed)
PID-24, PID-25          ``multipleBirthBoolean`` / ``multipleBirthInteger``
PD1-3 (XON)             ``generalPractitioner`` of type Organization (and
                        ``managingOrganization`` going to v2, when no such one)
PD1-4 (XCN)             ``generalPractitioner`` of type Practitioner
NK1 (each)              ``contact``: name (NK1-2), relationship (NK1-3, table 0063;
                        NK1-7, table 0131), address (NK1-4), telecom (NK1-5, NK1-6
                        work), organization (NK1-13), gender (NK1-15)
======================  ==========================================================

What has no counterpart is left out: a FHIR ``Reference`` to a practitioner carries a
display, not a structured name, so it goes to XCN-2 whole; a literal reference
(``Practitioner/12``) without an identifier has no HL7 v2 form. Codes of other code systems
keep their code and text, without a system."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from enrs.kit.hl7v2 import STANDARD, Segment, Value

BIRTH_LIST = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
V3_MARITAL = TERMINOLOGY + "v3-MaritalStatus"
V3_NULL = TERMINOLOGY + "v3-NullFlavor"
V2_0002 = TERMINOLOGY + "v2-0002"
V2_0063 = TERMINOLOGY + "v2-0063"
V2_0131 = TERMINOLOGY + "v2-0131"
BCP47 = "urn:ietf:bcp:47"

NAME_USE = {
    "L": "official",
    "D": "usual",
    "M": "maiden",
    "N": "nickname",
    "S": "anonymous",
    "BAD": "old",
    "TEMP": "temp",
}
NAME_TYPE = {use: code for code, use in NAME_USE.items()}
ADDRESS_USE = {"H": "home", "HP": "home", "O": "work", "B": "work", "C": "temp", "BA": "old"}
ADDRESS_TYPE = {"home": "H", "work": "O", "temp": "C", "old": "BA"}
BIRTH_ADDRESSES = frozenset({"BDL", "BR"})
TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "temp"}
TELECOM_CODE = {"home": "PRN", "work": "WPN", "temp": "VHN", "mobile": "PRN"}
EQUIPMENT = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager", "MD": "other"}
EQUIPMENT_CODE = {"phone": "PH", "fax": "FX", "pager": "BP", "sms": "CP"}
# HL7 table 0002 → v3 MaritalStatus (v2-to-FHIR concept map), and back for codes fed in FHIR.
MARITAL = {
    "A": "L",
    "B": "U",
    "C": "C",
    "D": "D",
    "E": "L",
    "G": "T",
    "I": "I",
    "M": "M",
    "N": "A",
    "P": "T",
    "R": "T",
    "S": "S",
    "W": "W",
}
MARITAL_V2 = {
    "A": "N",
    "C": "C",
    "D": "D",
    "I": "I",
    "L": "E",
    "M": "M",
    "P": "O",
    "S": "S",
    "T": "P",
    "U": "B",
    "W": "W",
    "UNK": "U",
}
SEX = {"M": "male", "F": "female", "U": "unknown", "O": "other", "A": "other"}
SEX_CODE = {"male": "M", "female": "F", "unknown": "U", "other": "O"}
ISO639 = frozenset({"ISO639", "ISO 639", "ISO639-1", "ISO639-2", "HL70296", ""})
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_V2_SYSTEMS = {"HL70063": V2_0063, "HL70131": V2_0131, "HL70002": V2_0002}


# --- HL7 v2 → FHIR -----------------------------------------------------------------------


def segment(text: str) -> Segment:
    """A stored segment (standard delimiters) read back."""
    return Segment(text[:3], tuple(text.split("|")), STANDARD)


def pid(fields: Mapping[int, str]) -> Segment:
    """A PID made of the stored fields (number → text)."""
    top = max(fields, default=0)
    return Segment("PID", ("PID", *(fields.get(n, "") for n in range(1, top + 1))), STANDARD)


def given_names(first: str, further: str) -> list[str]:
    """PAM-FR: XPN-2 the first birth first name, XPN-3 the list of birth first names (space
    separated, repeating XPN-2); plain HL7 XPN-3 (further names only) reads the same."""
    words = further.split()
    if not first:
        return words
    head = first.upper().split()
    if [w.upper() for w in words[: len(head)]] == head:
        words = words[len(head) :]
    return [first, *words]


def _drop_empty(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v not in (None, "", [], {})}


def human_name(rep: Value, type_code: str = "") -> dict[str, Any]:
    """An XPN as a HumanName (``type_code`` when it has no type)."""
    given = given_names(rep.get(2), rep.get(3))
    use = NAME_USE.get(rep.get(7).upper() or type_code)
    name: dict[str, Any] = {"use": use, "family": rep.get(1)}
    if use == "official" and given:
        name["given"] = given[:1]
        name["extension"] = [{"url": BIRTH_LIST, "valueString": " ".join(given)}]
    else:
        name["given"] = given
    name["prefix"] = [p for p in (rep.get(5),) if p]
    name["suffix"] = [s for s in (rep.get(4), rep.get(6)) if s]
    return _drop_empty(name)


def address(rep: Value) -> dict[str, Any]:
    """An XAD as an Address."""
    kind = rep.get(7).upper()
    return _drop_empty(
        {
            "use": ADDRESS_USE.get(kind),
            "type": "postal" if kind == "M" else None,
            "line": [line for line in (rep.get(1), rep.get(2)) if line],
            "city": rep.get(3),
            "district": rep.get(9),
            "state": rep.get(4),
            "postalCode": rep.get(5),
            "country": rep.get(6),
        }
    )


def contact_point(rep: Value, *, work: bool = False) -> dict[str, Any] | None:
    """An XTN as a ContactPoint (``work``: read from a business phone field)."""
    equipment, use_code = rep.get(3).upper(), rep.get(2).upper()
    if equipment in ("INTERNET", "X.400") or use_code == "NET":
        system, value = "email", rep.get(4)
    else:
        system = EQUIPMENT.get(equipment, "phone")
        number = "".join(rep.get(i) for i in (6, 7))
        if number and rep.get(5):
            number = f"+{rep.get(5).lstrip('+')} {number}"
        if number and rep.get(8):
            number = f"{number} ext. {rep.get(8)}"
        value = rep.get(12) or rep.get(1) or number
    if not value:
        return None
    use = "mobile" if equipment == "CP" else TELECOM_USE.get(use_code)
    if use is None and work:
        use = "work"
    return _drop_empty({"system": system, "value": value, "use": use})


def concept(rep: Value, systems: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A CWE as a CodeableConcept (CWE-3 read through ``systems``)."""
    code, text, system = rep.get(1), rep.get(2), rep.get(3).upper()
    coding = _drop_empty(
        {"system": (systems or {}).get(system, _V2_SYSTEMS.get(system)), "code": code}
    )
    return _drop_empty({"coding": [coding] if code else [], "text": text})


def _oid_system(hd_oid: str) -> str | None:
    return f"urn:oid:{hd_oid}" if _OID.match(hd_oid) else None


def organization(rep: Value) -> dict[str, Any]:
    """An XON (PD1-3, NK1-13) as a Reference to an Organization."""
    value = rep.get(10) or rep.get(3)
    ident = _drop_empty({"system": _oid_system(rep.get(6, 2)), "value": value})
    return _drop_empty(
        {"type": "Organization", "identifier": ident if value else None, "display": rep.get(1)}
    )


def practitioner(rep: Value) -> dict[str, Any]:
    """An XCN (PD1-4) as a Reference to a Practitioner."""
    words = [rep.get(6), *given_names(rep.get(3), rep.get(4)), rep.get(2), rep.get(5)]
    ident = _drop_empty({"system": _oid_system(rep.get(9, 2)), "value": rep.get(1)})
    return _drop_empty(
        {
            "type": "Practitioner",
            "identifier": ident if rep.get(1) else None,
            "display": " ".join(w for w in words if w),
        }
    )


def contact(nk1: Segment) -> dict[str, Any]:
    """An NK1 as a Patient.contact."""
    relationship = [concept(r, {"": V2_0063}) for r in nk1.reps(3)]
    relationship += [concept(r, {"": V2_0131}) for r in nk1.reps(7)]
    names = [human_name(r) for r in nk1.reps(2)]
    addresses = [address(r) for r in nk1.reps(4)]
    telecom = [contact_point(r) for r in nk1.reps(5)]
    telecom += [contact_point(r, work=True) for r in nk1.reps(6)]
    orgs = [organization(r) for r in nk1.reps(13)]
    return _drop_empty(
        {
            "relationship": [r for r in relationship if r],
            "name": names[0] if names else None,
            "telecom": [t for t in telecom if t],
            "address": addresses[0] if addresses else None,
            "gender": SEX.get(nk1.get(15).upper()),
            "organization": orgs[0] if orgs else None,
        }
    )


def v2_to_fhir(fields: Mapping[int, str], segments: Sequence[str]) -> dict[str, Any]:
    """The FHIR Patient elements of a record fed over HL7 v2 (PID fields, PD1 and NK1)."""
    seg = pid(fields)
    out: dict[str, Any] = {}
    reps = seg.reps(5)
    legal = any(r.get(7).upper() == "L" for r in reps)
    first_untyped = next((r for r in reps if not r.get(7)), None)  # the birth name (PAM-FR)
    names = [human_name(r, "L" if r is first_untyped and not legal else "") for r in reps]
    if names := [n for n in names if n.get("family")]:
        out["name"] = names
    places = [r for r in seg.reps(11) if r.get(7).upper() not in BIRTH_ADDRESSES]
    if addresses := [a for a in (address(r) for r in places) if a.keys() - {"use", "type"}]:
        out["address"] = addresses
    telecom = [contact_point(r) for r in seg.reps(13)]
    telecom += [contact_point(r, work=True) for r in seg.reps(14)]
    if telecom := [t for t in telecom if t]:
        out["telecom"] = telecom
    if (language := seg.reps(15)) and language[0].get(1):
        code = language[0].get(1)
        system = BCP47 if language[0].get(3).upper() in ISO639 and _LANGUAGE.match(code) else None
        coding = _drop_empty({"system": system, "code": code.lower() if system else code})
        words = _drop_empty({"coding": [coding], "text": language[0].get(2)})
        out["communication"] = [{"language": words, "preferred": True}]
    if (marital := seg.reps(16)) and marital[0].get(1):
        code = marital[0].get(1).upper()
        codings = [{"system": V3_MARITAL, "code": MARITAL[code]}] if code in MARITAL else []
        if code == "U":
            codings = [{"system": V3_NULL, "code": "UNK"}]
        codings.append({"system": V2_0002, "code": code})
        out["maritalStatus"] = _drop_empty({"coding": codings, "text": marital[0].get(2)})
    order, flag = seg.get(25), seg.get(24).upper()
    if order.isdigit() and int(order) >= 1:
        out["multipleBirthInteger"] = int(order)
    elif flag in ("Y", "N"):
        out["multipleBirthBoolean"] = flag == "Y"
    out |= death_to_fhir(seg)
    stored = [segment(text) for text in segments]
    practitioners = [organization(r) for s in stored if s.name == "PD1" for r in s.reps(3)]
    practitioners += [practitioner(r) for s in stored if s.name == "PD1" for r in s.reps(4)]
    if practitioners := [p for p in practitioners if p.keys() - {"type"}]:
        out["generalPractitioner"] = practitioners
    if contacts := [c for c in (contact(s) for s in stored if s.name == "NK1") if c]:
        out["contact"] = contacts
    return out


# --- FHIR → HL7 v2 -----------------------------------------------------------------------


def _esc(value: Any) -> str:
    return STANDARD.escape(str(value)) if isinstance(value, str | int) else ""


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return (
        [v.strip() for v in value if isinstance(v, str) and v.strip()]
        if isinstance(value, list)
        else []
    )


def _join(parts: Iterable[str], sep: str = "^") -> str:
    return sep.join(parts).rstrip(sep)


def _birth_list(name: dict[str, Any]) -> list[str]:
    for ext in _dicts(name.get("extension")):
        if ext.get("url") == BIRTH_LIST and isinstance(ext.get("valueString"), str):
            return str(ext["valueString"]).split()
    return []


def xpn(name: dict[str, Any], type_code: str = "") -> str:
    """A HumanName as an XPN (``type_code`` when its use has no HL7 type)."""
    given = _strings(name.get("given"))
    listed = _birth_list(name)
    if listed and (not given or listed[0].upper() == given[0].upper()):
        given = listed
    kind = NAME_TYPE.get(str(name.get("use")), type_code)
    parts = [
        _esc(name.get("family")),
        _esc(given[0]) if given else "",
        _esc(" ".join(given[1:])),
        _esc(" ".join(_strings(name.get("suffix")))),
        _esc(" ".join(_strings(name.get("prefix")))),
        "",
        kind,
    ]
    return _join(parts)


def xad(item: dict[str, Any]) -> str:
    """An Address as an XAD."""
    lines = _strings(item.get("line"))
    kind = ADDRESS_TYPE.get(str(item.get("use")), "")
    if not kind and item.get("type") == "postal":
        kind = "M"
    parts = [
        _esc(lines[0]) if lines else "",
        _esc(" ".join(lines[1:])),
        _esc(item.get("city")),
        _esc(item.get("state")),
        _esc(item.get("postalCode")),
        _esc(item.get("country")),
        kind,
        "",
        _esc(item.get("district")),
    ]
    return _join(parts)


def xtn(point: dict[str, Any]) -> str:
    """A ContactPoint as an XTN."""
    system, use, value = point.get("system"), str(point.get("use")), _esc(point.get("value"))
    if system in ("email", "url"):
        return f"^NET^Internet^{value}"
    equipment = "CP" if use == "mobile" else EQUIPMENT_CODE.get(str(system), "")
    return f"^{TELECOM_CODE.get(use, 'PRN')}^{equipment}^^^^^^^^^{value}"


def cwe(item: Any, wanted: str = "", names: Mapping[str, str] | None = None) -> str:
    """A CodeableConcept as a CWE: its ``wanted`` system's coding, else its first one (CWE-3
    from ``names``, system → HL7 name, else empty)."""
    if not isinstance(item, dict):
        return ""
    codings = [c for c in _dicts(item.get("coding")) if isinstance(c.get("code"), str)]
    coding = next((c for c in codings if c.get("system") == wanted), None) if wanted else None
    coding = coding or (codings[0] if codings else {})
    text = item.get("text") or coding.get("display") or ""
    system = (names or {}).get(str(coding.get("system")), "")
    return _join([_esc(coding.get("code", "")), _esc(text), system])


def _identifier(ref: dict[str, Any]) -> tuple[str, str]:
    found = ref.get("identifier")
    ident: dict[str, Any] = found if isinstance(found, dict) else {}
    system = str(ident.get("system") or "")
    oid = system.removeprefix("urn:oid:") if system.startswith("urn:oid:") else ""
    return _esc(ident.get("value")), oid


def xon(ref: dict[str, Any]) -> str:
    """A Reference to an Organization as an XON."""
    value, oid = _identifier(ref)
    authority = f"&{oid}&ISO" if oid and value else ""
    return _join([_esc(ref.get("display")), "", "", "", "", authority, "", "", "", value])


def xcn(ref: dict[str, Any]) -> str:
    """A Reference to a Practitioner as an XCN (its display, whole, in XCN-2)."""
    value, oid = _identifier(ref)
    authority = f"&{oid}&ISO" if oid and value else ""
    return _join([value, _esc(ref.get("display")), "", "", "", "", "", "", authority])


def _is_organization(ref: dict[str, Any]) -> bool:
    return ref.get("type") == "Organization" or str(ref.get("reference", "")).startswith(
        "Organization/"
    )


def nk1(n: int, item: dict[str, Any]) -> str:
    """A Patient.contact as NK1 (set id ``n``)."""
    fields = [""] * 16
    fields[1] = str(n)
    if isinstance(item.get("name"), dict):
        fields[2] = xpn(item["name"])
    concepts = _dicts(item.get("relationship"))
    roles = [c for c in concepts if V2_0131 in (x.get("system") for x in _dicts(c.get("coding")))]
    others = [c for c in concepts if c not in roles]
    fields[3] = cwe(others[0], V2_0063, {V2_0063: "HL70063"}) if others else ""
    fields[7] = cwe(roles[0], V2_0131, {V2_0131: "HL70131"}) if roles else ""
    if isinstance(item.get("address"), dict):
        fields[4] = xad(item["address"])
    points = _dicts(item.get("telecom"))
    fields[5] = "~".join(xtn(p) for p in points if p.get("use") != "work")
    fields[6] = "~".join(xtn(p) for p in points if p.get("use") == "work")
    org = item.get("organization")
    fields[13] = xon(org) if isinstance(org, dict) else ""
    fields[15] = SEX_CODE.get(str(item.get("gender")), "")
    return "NK1|" + "|".join(fields[1:]).rstrip("|")


def fhir_to_v2(elements: Mapping[str, Any]) -> tuple[dict[int, str], list[str]]:
    """The PID fields and the PD1 and NK1 segments of a record fed over FHIR."""
    fields: dict[int, str] = {}
    names = [n for n in _dicts(elements.get("name")) if n.get("family")]
    has_official = any(n.get("use") == "official" for n in names)
    first_untyped = next((n for n in names if not n.get("use")), None)
    reps = [xpn(n, "L" if n is first_untyped and not has_official else "") for n in names]
    fields[5] = "~".join(reps)
    fields[11] = "~".join(xad(a) for a in _dicts(elements.get("address")))
    points = [p for p in _dicts(elements.get("telecom")) if p.get("value")]
    fields[13] = "~".join(xtn(p) for p in points if p.get("use") != "work")
    fields[14] = "~".join(xtn(p) for p in points if p.get("use") == "work")
    languages = _dicts(elements.get("communication"))
    chosen = next((c for c in languages if c.get("preferred") is True), None)
    chosen = chosen or (languages[0] if languages else None)
    if chosen is not None:
        fields[15] = cwe(chosen.get("language"), BCP47, {BCP47: "ISO639"})
    marital = elements.get("maritalStatus")
    if isinstance(marital, dict):
        codings = _dicts(marital.get("coding"))
        v2 = next((c for c in codings if c.get("system") == V2_0002), None)
        v3 = next((c for c in codings if c.get("system") in (V3_MARITAL, V3_NULL)), None)
        if v2 is None and v3 is not None and str(v3.get("code")) in MARITAL_V2:
            v2 = {"code": MARITAL_V2[str(v3["code"])], "system": V2_0002}
        concept_ = {**marital, "coding": [v2]} if v2 else marital
        fields[16] = cwe(concept_, V2_0002, {V2_0002: "HL70002"})
    order = elements.get("multipleBirthInteger")
    if isinstance(order, int) and not isinstance(order, bool):
        fields[24], fields[25] = "Y", str(order)
    elif isinstance(elements.get("multipleBirthBoolean"), bool):
        fields[24] = "Y" if elements["multipleBirthBoolean"] else "N"
    fields |= death_to_v2(elements)
    refs = _dicts(elements.get("generalPractitioner"))
    orgs = [r for r in refs if _is_organization(r)]
    if not orgs and isinstance(elements.get("managingOrganization"), dict):
        orgs = [elements["managingOrganization"]]
    people = [r for r in refs if not _is_organization(r)]
    segments = []
    pd1 = [xon(r) for r in orgs if xon(r)], [xcn(r) for r in people if xcn(r)]
    if any(pd1):
        segments.append(_join(["PD1", "", "", "~".join(pd1[0]), "~".join(pd1[1])], "|"))
    segments += [nk1(n, c) for n, c in enumerate(_dicts(elements.get("contact")), start=1)]
    return {n: text for n, text in fields.items() if text}, segments


# --- death: PID-29 (DTM) and PID-30 (Y/N) ↔ Patient.deceased[x] --------------------------------

_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(?:\.\d{1,4})?)?)?)?([+-]\d{4})?"
)
_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"(Z|[+-]\d{2}:\d{2}))?)?)?"
)


def _valid_day(year: str, month: str | None, day: str | None) -> bool:
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return False
    return True


def dtm_to_fhir(text: str) -> str | None:
    """An HL7 v2 DTM (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``) as a FHIR dateTime; the time
    kept only with its zone (FHIR requires one), else the day alone; ``None`` when it is not a
    DTM."""
    found = _DTM.fullmatch(text.strip())
    if not found:
        return None
    year, month, day, hour, minute, second, zone = found.groups()
    if not _valid_day(year, month, day):
        return None
    if month is None:
        return year
    if day is None:
        return f"{year}-{month}"
    if hour is None or zone is None:
        return f"{year}-{month}-{day}"
    if int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59:
        return None
    offset = f"{zone[:3]}:{zone[3:]}"
    return f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}{offset}"


def fhir_to_dtm(text: str) -> str | None:
    """A FHIR dateTime as an HL7 v2 DTM (``Z`` as ``+0000``); ``None`` when it is not one."""
    found = _DATETIME.fullmatch(text.strip())
    if not found:
        return None
    year, month, day, hour, minute, second, zone = found.groups()
    if not _valid_day(year, month, day):
        return None
    dtm = year + (month or "") + (day or "")
    if hour is not None:
        if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
            return None
        offset = "+0000" if zone == "Z" else zone.replace(":", "")
        dtm += f"{hour}{minute}{second}{offset}"
    return dtm


def death_to_fhir(seg: Segment) -> dict[str, Any]:
    """PID-29 (the death's date and time) and PID-30 (the death indicator) as
    ``deceasedDateTime`` or ``deceasedBoolean``."""
    when = dtm_to_fhir(seg.get(29)) if seg.get(29) else None
    if when:
        return {"deceasedDateTime": when}
    flag = seg.get(30).upper()
    if flag in ("Y", "N"):
        return {"deceasedBoolean": flag == "Y"}
    return {}


def death_to_v2(elements: Mapping[str, Any]) -> dict[int, str]:
    """``deceasedDateTime`` or ``deceasedBoolean`` as PID-29 and PID-30."""
    when = elements.get("deceasedDateTime")
    dtm = fhir_to_dtm(when) if isinstance(when, str) else None
    if dtm:
        return {29: dtm, 30: "Y"}
    flag = elements.get("deceasedBoolean")
    if isinstance(flag, bool):
        return {30: "Y" if flag else "N"}
    return {}
