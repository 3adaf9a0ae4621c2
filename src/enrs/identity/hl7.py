"""HL7 v2.5 feed of the regional identity server over MLLP.

- IHE PAM *Patient Identity Feed* (ITI-30): ADT^A28 create, A31 update, A40 merge, A47 change
  identifier; ITI-8 style A01, A04, A05, A08 carry the same PID and are fed the same way;
- French extension PAM-FR 2.11: the IPP (CX-5 ``PI``) and the INS (CX-5 ``INS``) in PID-3, the
  birth name (type ``L``) and used name (``D``) in PID-5, the birth place COG in the ``BDL``
  address (XAD-9), the identity status and attributes in PID-32, ZFD-5/ZFD-7;
- IHE PIX query (ITI-9): QBP^Q23 answered by RSP^K23.

One database transaction per message, committed before the acknowledgement is sent; every
message whose header can be read is audited (category ``hl7``) after its transaction.
Acknowledgements (original mode): ``AA`` applied; ``AE`` understood but refused (INS key, status
rules, unknown or duplicate identifier: ERR-3 102, 103, 204, 205); ``AR`` rejected (no or
incomplete MSH: 100/101, unsupported type or event: 200/201, sending facility not allowed: 103,
unreadable PID: 101/102, internal error: 207 - the sender should retry).

Assigning authorities are OIDs. A PAM-FR authority given as a FINESS number (HD-3 ``M`` or
``N``) is mapped to ``1.2.250.1.999.2.<1 + FINESS>`` (Corsica's 2A/2B: ``2`` + the FINESS with
A→1, B→2); the regional id travels with authority ``1.2.250.1.999.1`` — placeholders under one
arc until the region registers its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enrs.identity import merges, repository, service
from enrs.identity.matching.engine import EmbeddedMatcher, Matcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.schemas import OID, SourceIdentityIn, Telecom
from enrs.identity.traits import ATTRIBUTES, INS_NIA_OID, INS_NIR_OID, INS_OIDS, STATUSES
from enrs.kit.audit.trail import AuditEntry, Outcome
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.kit.errors import Conflict, EnrsError, NotFound
from enrs.kit.listeners import Listener
from enrs.kit.mllp import STANDARD, Message, MLLPServer, Segment, V2Error, build_response
from enrs.kit.mllp import parse_message as parse_v2
from enrs.settings import Settings

log = logging.getLogger(__name__)

FEED_EVENTS = frozenset({"A01", "A04", "A05", "A08", "A28", "A31"})
FINESS_ARC = f"{merges.PLATFORM_OID}.2"
INS_TYPES = frozenset({"INS", "INS-NIR", "INS-NIA"})
INS_NAMESPACES = {"ASIP-SANTE-INS-NIR": INS_NIR_OID, "ASIP-SANTE-INS-NIA": INS_NIA_OID}
RSP_K23 = "RSP^K23^RSP_K23"
_OID = re.compile(OID)
_FINESS = re.compile(r"^(\d{9}|2[AB]\d{7})$")
_OUTCOMES = {"AA": Outcome.SUCCESS, "AE": Outcome.MINOR_FAILURE, "AR": Outcome.SERIOUS_FAILURE}
_SEX = {"M": "M", "F": "F", "U": "U", "O": "U", "A": "U", "N": "U", "": "U"}
_FIELDS = {  # SourceIdentityIn field -> where it comes from, for ERR-2
    **dict.fromkeys(("authority", "ipp", "ins"), "PID^1^3"),
    **dict.fromkeys(("birth_name", "used_name", "given_names"), "PID^1^5"),
    **dict.fromkeys(("birth_place", "address_line", "postal_code", "city", "country"), "PID^1^11"),
    **{"birth_date": "PID^1^7", "sex": "PID^1^8", "telecom": "PID^1^13", "status": "PID^1^32"},
    **{"method_collection": "ZFD^1^5", "validation_mode": "ZFD^1^7"},
}


# --------------------------------------------------------------------------- PID → identity


def finess_oid(finess: str) -> str:
    """The OID standing for a FINESS-numbered assigning authority (see the module docstring)."""
    f = finess.upper()
    arc = "1" + f if f.isdigit() else "2" + f.replace("A", "1").replace("B", "2")
    return f"{FINESS_ARC}.{arc}"


def authority_of(namespace: str, universal_id: str, id_type: str) -> str | None:
    """The OID of an HD (namespace, universal id, universal id type), or ``None``."""
    if _OID.match(universal_id):
        return universal_id
    if id_type.upper() in ("M", "N") and _FINESS.match(universal_id.upper()):
        return finess_oid(universal_id)
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

    @property
    def authority(self) -> str | None:
        return authority_of(self.namespace, self.universal_id, self.id_type)

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


def identifiers(seg: Segment, n: int) -> list[Cx]:
    return [
        Cx(r.get(1), r.get(4, 1), r.get(4, 2), r.get(4, 3), r.get(5).upper(), i)
        for i, r in enumerate(seg.reps(n), start=1)
        if r.get(1)
    ]


def ipp_of(
    seg: Segment, n: int, notes: list[str], *, facility: str | None, default: str | None = None
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
    best = next((c for c in typed if facility and c.authority == facility), typed[0])
    if not (best.namespace or best.universal_id) and default:
        return default, best.value
    authority = best.authority
    if authority is None:
        raise V2Error(
            102,
            f"{label}: the assigning authority (CX-4) must be an OID (ISO) or a FINESS (M/N)",
            location=f"{where}^{best.rep}^4",
        )
    return authority, best.value


def _given(first: str, further: str) -> list[str]:
    """PAM-FR: XPN-2 the first birth first name, XPN-3 the list of birth first names (space
    separated, repeating XPN-2); plain HL7 XPN-3 (further names only) reads the same."""
    words = further.split()
    if not first:
        return words
    head = first.upper().split()
    if [w.upper() for w in words[: len(head)]] == head:
        words = words[len(head) :]
    return [first, *words]


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
    given = _given(birth.get(2), birth.get(3))
    if not given and used and used[0].get(2):
        notes.append("PID-5: no birth first name; the used first name taken")
        given = _given(used[0].get(2), used[0].get(3))
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


def identity_from_pid(
    pid: Segment, zfd: Segment | None, notes: list[str], *, facility: str | None
) -> SourceIdentityIn:
    """Map a PAM-FR PID (and ZFD) to the identity service's input; :class:`V2Error` (AR) when
    it cannot be read. Repairs are appended to ``notes``."""
    authority, ipp = ipp_of(pid, 3, notes, facility=facility)
    ins_cx = next((c for c in identifiers(pid, 3) if c.is_ins), None)
    birth_name, used_name, given = _names(pid, notes)
    status, attributes = _status(pid, notes)
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
            **_addresses(pid),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        where = _FIELDS.get(name, "PID")
        label = where.replace("^1^", "-")
        raise V2Error(102, f"{label}: {name}: {first['msg']}", location=where) from None


# --------------------------------------------------------------------------- message handling


@dataclass(frozen=True)
class Sender:
    app: str
    facility: str
    facility_oid: str | None

    @property
    def actor(self) -> str:
        return f"hl7:{self.app}@{self.facility}"[:256]


@dataclass(frozen=True)
class Touched:
    rri: str | None
    entity: str
    action: str


@dataclass
class Handled:
    ack: str = "AA"
    errors: list[V2Error] = field(default_factory=list)
    message_type: str | None = None
    body: list[str] = field(default_factory=list)
    touched: list[Touched] = field(default_factory=list)
    query: str | None = None


Work = Callable[[Session, Message, Sender], Handled]


def _sender(msg: Message) -> Sender:
    msh = msg.msh
    oid = authority_of(msh.get(4, 1), msh.get(4, 2), msh.get(4, 3))
    return Sender(msh.get(3, 1) or msh.get(3, 2), msh.get(4, 1) or msh.get(4, 2), oid)


def _required(msg: Message, name: str) -> Segment:
    seg = msg.segment(name)
    if seg is None:
        raise V2Error(100, f"{msg.message_type}^{msg.event} needs a {name} segment", location=name)
    return seg


def _cx_out(ident: merges.Identifier) -> str:
    value = STANDARD.escape(ident.value)
    if ident.type == "INS":
        ns = "ASIP-SANTE-INS-NIA" if ident.system == INS_NIA_OID else "ASIP-SANTE-INS-NIR"
        return f"{value}^^^{ns}&{ident.system}&ISO^INS"
    namespace = "ENRS" if ident.type == "RRI" else ""
    return f"{value}^^^{namespace}&{ident.system}&ISO^{ident.type}"


class IdentityFeed:
    """The MLLP handler: one HL7 v2 message in, its acknowledgement out."""

    def __init__(
        self, db: Database, matcher: Matcher, audit: AuditWriter, *, authorities: str = ""
    ) -> None:
        self.db, self.matcher, self.audit = db, matcher, audit
        self.authorities = frozenset(a.strip() for a in authorities.split(",") if a.strip())

    def __call__(self, payload: bytes, peer: str) -> bytes:
        try:
            msg = parse_v2(payload)
        except V2Error as err:
            log.warning("%s: frame refused: %s", peer, err.text)
            return build_response(None, "AR", errors=[err])
        sender = _sender(msg)
        handled = self._process(msg, sender)
        msg.repairs[:] = dict.fromkeys(msg.repairs)  # a retried transaction repeats them
        if msg.repairs:
            log.info("%s: message %s repaired: %s", peer, msg.control_id, "; ".join(msg.repairs))
        if not self._audit(msg, sender, handled, peer) and handled.message_type == RSP_K23:
            handled = Handled("AR", [V2Error(207, "audit trail unavailable, try again later")])
        return build_response(
            msg,
            handled.ack,
            message_type=handled.message_type,
            errors=handled.errors,
            body=handled.body,
        )

    def _process(self, msg: Message, sender: Sender) -> Handled:
        try:
            self._check_header(msg, sender)
            work = self._route(msg)
        except V2Error as err:
            return Handled(err.ack, [err])
        for attempt in (1, 2):
            try:
                with self.db.transaction() as session:
                    if work != self._pix:  # SQLite: take the write lock at BEGIN
                        session.connection(execution_options={"sqlite_immediate": True})
                    return work(session, msg, sender)
            except V2Error as err:
                return Handled(err.ack, [err])
            except EnrsError as exc:
                if exc.status >= 500:
                    return Handled("AR", [V2Error(207, exc.message)])
                code = (
                    204 if isinstance(exc, NotFound) else 205 if isinstance(exc, Conflict) else 102
                )
                return Handled("AE", [V2Error(code, exc.message, ack="AE")])
            except IntegrityError:
                if attempt == 2:
                    log.exception("message %s: conflicting writes", msg.control_id)
                    break
                log.info("message %s: concurrent write, retrying once", msg.control_id)
            except Exception:
                log.exception("message %s failed", msg.control_id)
                break
        return Handled("AR", [V2Error(207, "application internal error, try again later")])

    def _check_header(self, msg: Message, sender: Sender) -> None:
        msh = msg.msh
        for n, what in (
            (7, "date/time"),
            (9, "message type"),
            (10, "control id"),
            (11, "processing id"),
            (12, "version id"),
        ):
            if not msh.get(n):
                raise V2Error(101, f"MSH-{n} ({what}) is required", location=f"MSH^1^{n}")
        if not msg.event:
            raise V2Error(101, "MSH-9.2 (trigger event) is required", location="MSH^1^9^1^2")
        if not msh.get(12).startswith("2."):
            raise V2Error(203, f"version {msh.get(12)!r} not supported", location="MSH^1^12")
        if self.authorities and not ({msh.get(4, 2), sender.facility_oid} & self.authorities):
            raise V2Error(
                103,
                f"sending facility {msh.standard(4)!r} is not allowed on this server",
                location="MSH^1^4",
            )

    def _route(self, msg: Message) -> Work:
        kind, event = msg.message_type.upper(), msg.event.upper()
        routes: dict[tuple[str, str], Work] = {("ADT", e): self._feed for e in FEED_EVENTS}
        routes |= {("ADT", "A40"): self._merge, ("ADT", "A47"): self._change}
        routes[("QBP", "Q23")] = self._pix
        if (kind, event) in routes:
            return routes[(kind, event)]
        if kind in ("ADT", "QBP"):
            raise V2Error(201, f"{kind}^{event} is not supported", location="MSH^1^9^1^2")
        raise V2Error(200, f"message type {kind!r} is not supported", location="MSH^1^9^1^1")

    def _feed(self, session: Session, msg: Message, sender: Sender) -> Handled:
        """ITI-30 A28/A31 (and A01/A04/A05/A08): create or update the identity, then match."""
        pid = _required(msg, "PID")
        data = identity_from_pid(pid, msg.segment("ZFD"), msg.repairs, facility=sender.facility_oid)
        known = repository.source_by_key(session, data.authority, data.ipp)
        if known is not None and not known.active:
            raise V2Error(
                204,
                f"identity {data.ipp!r} was merged or deactivated",
                ack="AE",
                location="PID^1^3",
            )
        result = service.feed(session, self.matcher, data, actor=sender.actor)
        action = "C" if result.created else "U"
        return Handled(touched=[Touched(result.rri, f"{data.authority}|{data.ipp}", action)])

    def _merge(self, session: Session, msg: Message, sender: Sender) -> Handled:
        """ITI-30 A40: each PID/MRG group merges MRG-1's identity into PID-3's."""
        handled, pid = Handled(), None
        for seg in msg.segments:
            if seg.name == "PID":
                pid = seg
            elif seg.name == "MRG" and pid is not None:
                authority, surviving = ipp_of(pid, 3, msg.repairs, facility=sender.facility_oid)
                merged = self._prior(seg, authority, msg.repairs)
                if repository.source_by_key(session, authority, surviving) is None:
                    data = identity_from_pid(pid, None, msg.repairs, facility=sender.facility_oid)
                    service.feed(session, self.matcher, data, actor=sender.actor)
                result = merges.merge_sources(
                    session,
                    authority=authority,
                    surviving_ipp=surviving,
                    merged_ipp=merged,
                    actor=sender.actor,
                )
                handled.touched.append(Touched(result.merged_rri, f"{authority}|{merged}", "U"))
                if result.surviving_rri != result.merged_rri:
                    entity = f"{authority}|{surviving}"
                    handled.touched.append(Touched(result.surviving_rri, entity, "U"))
                pid = None
        if not handled.touched:
            raise V2Error(100, "ADT^A40 needs PID and MRG segments", location="MRG")
        return handled

    def _change(self, session: Session, msg: Message, sender: Sender) -> Handled:
        """ITI-30 A47: MRG-1's IPP becomes PID-3's."""
        pid, mrg = _required(msg, "PID"), _required(msg, "MRG")
        authority, new = ipp_of(pid, 3, msg.repairs, facility=sender.facility_oid)
        old = self._prior(mrg, authority, msg.repairs)
        rri = merges.change_identifier(
            session, authority=authority, old_ipp=old, new_ipp=new, actor=sender.actor
        )
        return Handled(touched=[Touched(rri, f"{authority}|{new}", "U")])

    @staticmethod
    def _prior(mrg: Segment, authority: str, notes: list[str]) -> str:
        prior_authority, prior = ipp_of(mrg, 1, notes, facility=authority, default=authority)
        if prior_authority != authority:
            raise V2Error(
                102,
                "MRG-1 and PID-3 must be identifiers of the same assigning authority",
                ack="AE",
                location="MRG^1^1",
            )
        return prior

    def _pix(self, session: Session, msg: Message, sender: Sender) -> Handled:
        """ITI-9 PIX query: QPD-3 one identifier, QPD-4 the domains wanted (all if empty) →
        RSP^K23 with QAK OK / NF / AE and a PID listing the patient's identifiers."""
        qpd = _required(msg, "QPD")
        tag = STANDARD.escape(qpd.get(2))

        def answer(status: str, error: V2Error | None = None, pid: str = "") -> Handled:
            body = [f"QAK|{tag}|{status}", qpd.text(), *([pid] if pid else [])]
            errors = [error] if error else []
            ack = "AE" if error else "AA"
            return Handled(ack, errors, RSP_K23, body, query=qpd.text())

        cxs = identifiers(qpd, 3)
        if not cxs:
            return answer("AE", V2Error(101, "QPD-3 is required", ack="AE", location="QPD^1^3"))
        cx = cxs[0]
        system = cx.ins_system if cx.is_ins else cx.authority
        patient = merges.find_patient(session, system=system, value=cx.value) if system else None
        if patient is None:
            text = f"QPD-3: identifier {cx.value!r} of {system or 'an unknown authority'} not known"
            return answer("AE", V2Error(204, text, ack="AE", location="QPD^1^3^1^1"))
        wanted: set[str] = set()
        for i, rep in enumerate(qpd.reps(4), start=1):
            domain = authority_of(rep.get(4, 1), rep.get(4, 2), rep.get(4, 3))
            domain = domain or INS_NAMESPACES.get(rep.get(4, 1).upper())
            if domain is None or not merges.authority_known(session, domain):
                text = f"QPD-4: domain {rep.standard()!r} not recognised"
                return answer("AE", V2Error(204, text, ack="AE", location=f"QPD^1^4^{i}^4"))
            wanted.add(domain)
        xref = merges.cross_reference(session, patient)
        found = [i for i in xref.identifiers if not wanted or i.system in wanted]
        handled = answer("OK", pid="PID|||" + "~".join(_cx_out(i) for i in found) + "||~^^^^^^S")
        if not found:
            handled = answer("NF")
        handled.touched.append(Touched(xref.rri, f"{system}|{cx.value}", "E"))
        return handled

    def _audit(self, msg: Message, sender: Sender, handled: Handled, peer: str) -> bool:
        """Write the message's audit entries; ``False`` when the trail could not be written."""
        kind, event = msg.message_type.upper(), msg.event.upper()
        default = "E" if kind == "QBP" else "C" if event in ("A01", "A04", "A05", "A28") else "U"
        template = AuditEntry(
            category="hl7",
            interaction=f"{kind}^{event}"[:32],
            action=default,
            outcome=_OUTCOMES.get(handled.ack, Outcome.SERIOUS_FAILURE),
            outcome_desc="; ".join(e.text for e in handled.errors) or None,
            agent_kind="client",
            agent_id=(sender.facility_oid or sender.facility)[:128] or None,
            agent_name=sender.app[:256] or None,
            source_ip=peer.rsplit(":", 1)[0][:64],
            resource_type="Patient",
            query=handled.query,
            request_id=msg.control_id[:64] or None,
            detail=json.dumps({"repairs": msg.repairs}, ensure_ascii=False)
            if msg.repairs
            else None,
        )
        entries = [
            replace(
                template,
                action=t.action,
                patient_ref=f"Patient/{t.rri}" if t.rri else None,
                entity_ref=t.entity[:256],
            )
            for t in handled.touched
        ] or [template]
        try:
            self.audit.write(entries)
        except Exception:
            log.exception("message %s: audit trail not written", msg.control_id)
            return False
        return True


# --------------------------------------------------------------------------- the listener


def describe(settings: Settings) -> str:
    return f"mllp://{settings.mllp_host}:{settings.mllp_port}"


async def _serve(settings: Settings) -> None:
    db = Database(settings.database_url)
    audit = AuditWriter(db)
    matcher = EmbeddedMatcher(MatchModel.load(settings.identity_model))
    feed = IdentityFeed(db, matcher, audit, authorities=settings.mllp_authorities)
    server = MLLPServer(feed, host=settings.mllp_host, port=settings.mllp_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.serve(stop)
    finally:
        audit.close()
        db.dispose()


def run(settings: Settings) -> None:
    """Serve the identity feed on ``mllp_host:mllp_port`` until SIGTERM (``enrs serve``)."""
    logging.basicConfig(level=settings.log_level.upper())
    asyncio.run(_serve(settings))


LISTENER = Listener("mllp", describe, run)
