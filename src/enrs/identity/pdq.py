"""IHE PDQ over HL7 v2 (ITI-21): QBP^Q22 answered by RSP^K22.

QPD-3 holds the query parameters, one repetition each, as ``@<field>^<value>``:

- ``@PID.3.1`` an identifier, with ``@PID.3.4.1`` / ``@PID.3.4.2`` / ``@PID.3.4.3`` its
  assigning authority (namespace, OID, type) — a registered domain, the RRI's or the INS's;
- ``@PID.5.1.1`` (or ``@PID.5.1``) the family name, birth or used; ``@PID.5.2`` a first name;
- ``@PID.7.1`` (or ``@PID.7``) the birth date: ``YYYYMMDD``, or ``YYYYMM`` / ``YYYY`` for any
  day of that month or year (ITI-21's partial dates);
- ``@PID.8`` the sex (M, F, U); ``@PID.11.3`` the city, ``@PID.11.5`` the postal code.

Names and city compare accent- and case-insensitively, as the ITI-78 search does, and match as a
whole unless they end with ``*`` (ITI-21's wildcard: the start of the name). QPD-8 (what domains
returned) restricts the identifiers listed in each PID-3; an unregistered one is an AE with
ERR 204 at its CX-4 (``QPD^1^8^n^4``), like an unknown domain in QPD-3. RCP-2 caps the
number of answers (default and maximum 100); QAK gives the hit counts (no continuation).

Each answer is one active source identity (as ITI-78's): PID-3 its IPP, the INS of a
qualified identity, the RRI; PID-5 birth name (type L) and used name (D), PID-7, PID-8, PID-11,
PID-13, PID-32 the RNIV status; then the whole record (:mod:`.record`) as fed over HL7 v2 or
translated from FHIR: every name, address and telecom, PID-15, PID-16, PID-24, PID-25, and the
PD1 and NK1 segments after the PID. What a client may read is :mod:`.access`'s, as for every
read."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.identity import access, domains, record, xref
from enrs.identity.access import Identifier
from enrs.identity.config import IdentityConfig
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.identity.pam import Handled, Touched, required
from enrs.identity.pamfr import INS_NAMESPACES, authority_of, cx_out
from enrs.identity.traits import normalize_name
from enrs.kit.hl7v2 import STANDARD, Message, Segment, V2Error

S = SourceIdentity
RSP_K22 = "RSP^K22^RSP_K21"
MAX_HITS = 100


@dataclass
class _Query:
    clauses: list[ColumnElement[bool]] = field(default_factory=list)
    id_value: str = ""
    id_parts: dict[str, str] = field(default_factory=dict)
    id_rep: int = 0


def _name(columns: tuple[Any, ...], raw: str) -> ColumnElement[bool]:
    prefix = raw.endswith("*")
    folded = normalize_name(raw.rstrip("*"))
    if not folded:
        return sa.true() if prefix else sa.false()
    if prefix:  # a range the (name, birth year) indexes serve on both databases (LIKE alone
        # uses none on SQLite); the prefix test kept for collations that order spaces apart
        after = folded[:-1] + chr(ord(folded[-1]) + 1)
        return sa.or_(
            *(
                sa.and_(c >= folded, c < after, c.startswith(folded, autoescape=True))
                for c in columns
            )
        )
    return sa.or_(*(c == folded for c in columns))


def _given(raw: str) -> ColumnElement[bool]:
    """Any of the birth first names (``n_given_names`` is ``|``-separated)."""
    prefix = raw.endswith("*")
    folded = normalize_name(raw.rstrip("*"))
    if not folded:
        return sa.true() if prefix else sa.false()
    names = S.n_given_names
    if prefix:
        return sa.or_(
            names.startswith(folded, autoescape=True), names.contains("|" + folded, autoescape=True)
        )
    return sa.or_(
        names == folded,
        names.startswith(folded + "|", autoescape=True),
        names.endswith("|" + folded, autoescape=True),
        names.contains("|" + folded + "|", autoescape=True),
    )


def _birth_date(raw: str) -> ColumnElement[bool]:
    text = raw.strip()
    if not text.isdigit() or len(text) not in (4, 6, 8):
        raise ValueError("a date is YYYYMMDD, or YYYYMM / YYYY for a partial date")
    year = int(text[:4])
    if len(text) == 8:
        return S.birth_date == date(year, int(text[4:6]), int(text[6:8]))
    if len(text) == 6:
        month = int(text[4:6])
        first = date(year, month, 1)
        after = date(year + (month == 12), month % 12 + 1, 1)
    else:  # the birth year has a column of its own, second in the name indexes
        return S.birth_year == year
    return sa.and_(S.birth_date >= first, S.birth_date < after)


def _city(raw: str) -> ColumnElement[bool]:
    """The city as entered, case-insensitively (ASCII letters on SQLite); ``*`` a prefix."""
    prefix = raw.endswith("*")
    text = raw.rstrip("*").strip().upper()
    city = sa.func.upper(S.city)
    return city.startswith(text, autoescape=True) if prefix else city == text


def _sex(raw: str) -> ColumnElement[bool]:
    value = raw.strip().upper()
    if value not in ("M", "F", "U"):
        raise ValueError("the sex is M, F or U")
    return S.sex == value


_FIELDS: dict[str, Callable[[str], ColumnElement[bool]]] = {
    "PID.5.1.1": lambda v: _name((S.n_birth_name, S.n_used_name), v),
    "PID.5.1": lambda v: _name((S.n_birth_name, S.n_used_name), v),
    "PID.5.2": _given,
    "PID.7.1": _birth_date,
    "PID.7": _birth_date,
    "PID.8": _sex,
    "PID.11.3": lambda v: _city(v),
    "PID.11.5": lambda v: S.postal_code == v.strip(),
}
_ID_PARTS = {
    "PID.3.4": "namespace",
    "PID.3.4.1": "namespace",
    "PID.3.4.2": "oid",
    "PID.3.4.3": "type",
}


def _parse(qpd_reps: list[Any]) -> _Query:
    """QPD-3's parameters as SQL conditions; :class:`V2Error` (AE) at the faulty one."""
    query = _Query()
    for rep, value in enumerate(qpd_reps, start=1):
        path, text = value.get(1).lstrip("@").upper(), value.get(2)
        where = f"QPD^1^3^{rep}"
        if path == "PID.3.1" or path == "PID.3":
            query.id_value, query.id_rep = text, rep
            continue
        if path in _ID_PARTS:
            query.id_parts[_ID_PARTS[path]] = text
            query.id_rep = query.id_rep or rep
            continue
        build = _FIELDS.get(path)
        if build is None:
            raise V2Error(
                103,
                f"QPD-3: {path or '(empty)'} is not a supported query parameter",
                ack="AE",
                location=f"{where}^1",
            )
        if not text:
            raise V2Error(101, f"QPD-3: {path} has no value", ack="AE", location=f"{where}^2")
        try:
            query.clauses.append(build(text))
        except ValueError as exc:
            raise V2Error(
                102, f"QPD-3: {path} {text!r}: {exc}", ack="AE", location=f"{where}^2"
            ) from None
    return query


def _identifier_clause(
    session: Session, config: IdentityConfig, query: _Query
) -> ColumnElement[bool] | None:
    parts = query.id_parts
    if not query.id_value and not parts:
        return None
    where = f"QPD^1^3^{query.id_rep}"
    if not query.id_value:
        raise V2Error(
            101,
            "QPD-3: @PID.3.1 (the identifier) is required with its authority",
            ack="AE",
            location=f"{where}^2",
        )
    namespace, oid = parts.get("namespace", ""), parts.get("oid", "")
    system = authority_of(config, namespace, oid, parts.get("type", ""))
    system = system or INS_NAMESPACES.get(namespace.upper())
    if not system:  # a bare value: any identifier of any domain
        return sa.or_(
            S.ipp == query.id_value, sa.and_(S.ins == query.id_value, access.trusted_ins_clause())
        )
    if not xref.known_domain(session, config, system):
        raise V2Error(
            204,
            f"QPD-3: assigning authority {system} not recognised",
            ack="AE",
            location=f"{where}^2",
        )
    value = query.id_value
    if system == config.rri_authority:
        return S.patient_id.in_(
            sa.select(RegionalPatient.id).where(RegionalPatient.rri == value.upper())
        )
    if system in config.accepted_ins:
        return sa.and_(
            S.ins == value.replace(" ", "").upper(),
            S.ins_system == system,
            access.trusted_ins_clause(),
        )
    return sa.and_(S.authority == system, S.ipp == value)


def requested_domains(
    session: Session, config: IdentityConfig, qpd: Segment, field: int
) -> frozenset[str]:
    """The identifier domains a query asks for (PIX QPD-4, PDQ QPD-8; all when empty): each
    an OID, namespace or INS namespace of a known domain, else AE 204 at that repetition's
    CX-4 (ITI-9, ITI-21)."""
    wanted: set[str] = set()
    for i, rep in enumerate(qpd.reps(field), start=1):
        domain = authority_of(config, rep.get(4, 1), rep.get(4, 2), rep.get(4, 3))
        domain = domain or INS_NAMESPACES.get(rep.get(4, 1).upper())
        if domain is None or not xref.known_domain(session, config, domain):
            raise V2Error(
                204,
                f"QPD-{field}: domain {rep.standard()!r} not recognised",
                ack="AE",
                location=f"QPD^1^{field}^{i}^4",
            )
        wanted.add(domain)
    return frozenset(wanted)


def _telecoms(raw: str | None) -> list[dict[str, str]]:
    try:
        found = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [t for t in found if isinstance(t, dict) and t.get("value")]


def _xtn(telecom: dict[str, str]) -> str:
    value = STANDARD.escape(str(telecom["value"]))
    if telecom.get("system") == "email":
        return f"^NET^Internet^{value}"
    return f"^PRN^PH^^^^^^^^^{value}"


def pid_segment(
    n: int, source: SourceIdentity, identifiers: list[Identifier], namespaces: Mapping[str, str]
) -> str:
    """PID (set id ``n``) with ``identifiers`` in PID-3, the traits of ``source`` and the
    fields of its record: the outbound notifications' (:mod:`enrs.identity.notify`)."""
    return _pid(n, source, identifiers, namespaces, record.v2_view(source.record)[0])


def answer_segments(
    n: int, source: SourceIdentity, identifiers: list[Identifier], namespaces: Mapping[str, str]
) -> list[str]:
    """A PDQ answer's segments for ``source``: its PID (as :func:`pid_segment`), then the PD1
    and NK1 of its record (ITI-21's ``PID [PD1] [{NK1}]``)."""
    fields, segments = record.v2_view(source.record)
    return [_pid(n, source, identifiers, namespaces, fields), *segments]


def _pid(
    n: int,
    source: SourceIdentity,
    identifiers: list[Identifier],
    namespaces: Mapping[str, str],
    recorded: Mapping[int, str],
) -> str:
    esc = STANDARD.escape
    fields = [""] * 33
    fields[1] = str(n)
    fields[3] = "~".join(cx_out(i.value, i.system, i.type, namespaces) for i in identifiers)
    given = source.given_names.split()
    first = esc(given[0]) if given else ""
    others = esc(" ".join(given[1:]))
    names = [f"{esc(source.birth_name)}^{first}^{others}^^^^L"]
    if source.used_name:
        names.append(f"{esc(source.used_name)}^{first}^^^^^D")
    fields[5] = "~".join(names)
    fields[7] = source.birth_date.strftime("%Y%m%d") if source.birth_date else ""
    fields[8] = source.sex
    place = f"~^^^^^^BDL^^{esc(source.birth_place)}" if source.birth_place else ""
    if source.address_line or source.city or source.postal_code:
        home = f"{esc(source.address_line or '')}^^{esc(source.city or '')}^^"
        fields[11] = f"{home}{esc(source.postal_code or '')}^^H{place}"
    elif place:
        fields[11] = place.lstrip("~")
    fields[13] = "~".join(_xtn(t) for t in _telecoms(source.telecom))
    fields[32] = source.status
    for n, text in recorded.items():  # as fed, or translated
        fields[n] = text
    if place and "BDL" not in fields[11].upper():  # a record fed over FHIR has it aside
        fields[11] = f"{fields[11]}{place}" if fields[11] else place.lstrip("~")
    return "PID|" + "|".join(fields[1:]).rstrip("|")


def pdq_query(config: IdentityConfig, session: Session, msg: Message) -> Handled:
    """ITI-21: QBP^Q22 → RSP^K22 with QAK OK / NF / AE and one PID per matching identity."""
    qpd = required(msg, "QPD")
    tag = STANDARD.escape(qpd.get(2))
    rcp = msg.segment("RCP")
    asked = rcp.get(2, 1) if rcp is not None else ""
    limit = min(int(asked), MAX_HITS) if asked.isdigit() and int(asked) > 0 else MAX_HITS

    def answer(
        status: str,
        error: V2Error | None = None,
        pids: list[str] | None = None,
        hits: tuple[int, int] = (0, 0),
    ) -> Handled:
        total, shown = hits
        counts = f"|{total}|{shown}|{total - shown}" if status == "OK" else ""
        body = [f"QAK|{tag}|{status}|{qpd.standard(1)}{counts}", qpd.text(), *(pids or [])]
        return Handled(
            "AE" if error else "AA", [error] if error else [], RSP_K22, body, query=qpd.text()
        )

    try:
        query = _parse(qpd.reps(3))
        ident = _identifier_clause(session, config, query)
        wanted = requested_domains(session, config, qpd, 8)
    except V2Error as err:
        return answer("AE", err)
    clauses = [*query.clauses, *([ident] if ident is not None else [])]
    if not clauses:
        missing = V2Error(
            101, "QPD-3: at least one query parameter is required", ack="AE", location="QPD^1^3"
        )
        return answer("AE", missing)
    stmt = access.readable_sources().where(*clauses).order_by(S.id)
    total = int(session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) or 0)
    rows = session.execute(stmt.limit(limit)).all() if total else []
    if not rows:
        return answer("NF")
    namespaces = domains.namespaces(session)
    pids = []
    handled_touched = []
    for n, (source, rri) in enumerate(rows, start=1):
        shown = access.source_identifiers(source, rri, config)
        if wanted:
            shown = [i for i in shown if i.system in wanted]
        pids += answer_segments(n, source, shown, namespaces)
        handled_touched.append(Touched(rri, f"Patient/{source.id}", "E"))
    handled = answer("OK", pids=pids, hits=(total, len(rows)))
    handled.touched.extend(handled_touched)
    return handled
