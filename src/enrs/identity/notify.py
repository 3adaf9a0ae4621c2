"""What the identity server tells the facilities and services that subscribed to it: the
renderer of its events for the outbound queue (:mod:`enrs.kit.outbound`).

A destination's selector says who it is and what it wants:

- ``authority``: the facility's assigning authority (OID). It is told about the regional
  patients it *holds* (one of its active identities belongs to them) and not about the changes
  it made itself (the event's ``origin``). Without an authority (a service keyed on the RRI,
  e.g. a document repository) it holds every patient.
- ``domains``: the identifier domains its messages carry (its own IPPs, the RRI, the INS…;
  empty: all it may see). The INS only from a qualified identity (:mod:`.access`).
- ``format``: ``hl7v2`` (ADT over MLLP) or ``fhir`` (rest-hook, PMIR-style message Bundle);
  ``application`` / ``facility``: MSH-5 / MSH-6 of the HL7 messages.

The HL7 v2 messages (ITI-30 / ITI-10 shapes, version 2.5, UTF-8), for a destination X:

=============================  ================================================================
event                          message to X
=============================  ================================================================
two regional patients merged   ADT^A24 if X now holds the survivor with two of its own
(the cell's merge or link, a   identities (an intra-facility duplicate: X must merge them, with
facility's A40 or A24)         an A40); else ADT^A40 if X held the retired one (PID: the
                               survivor; MRG-1: what disappeared, the retired RRI and identities
                               merged away, in X's domains); else ADT^A31 if X holds the survivor
an identity joined another     ADT^A24 if X now holds that patient with two of its identities;
patient (that one lives on)    else ADT^A31 to the holders of the patient, and of the one it left
two identities unlinked        ADT^A37 (PID: the patient left, PID: the other) to the holders of
                               either
identifier changed (A47)       ADT^A47 (PID-3: the new, MRG-1: the old identifier) to the
                               holders, if X receives that domain
traits updated                 ADT^A31 to the holders
=============================  ================================================================

A merge that is undone is told by the links that follow it (A31).

The FHIR format sends, for the same events, a message Bundle (event
``urn:ihe:iti:pmir:2019:patient-feed``) whose history Bundle holds the regional Patient
resources concerned that X holds (a retired one: ``active`` false with a ``replaced-by``
link). Messages carry the registry's state when they are rendered (normally within a second of
the change); the queue keeps the events' order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.identity import access, domains
from enrs.identity.access import Identifier
from enrs.identity.config import IdentityConfig
from enrs.identity.fhir import identifier_to_fhir, reference_source, regional_to_fhir
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.identity.pamfr import cx_out
from enrs.identity.pdq import pid_segment
from enrs.kit.db import utcnow
from enrs.kit.events import Event
from enrs.kit.outbound.queue import Destination, Outgoing

EVENTS = (
    "identity.merged",
    "identity.linked",
    "identity.unlinked",
    "identity.identifier_changed",
    "identity.updated",
)
FORMATS = ("hl7v2", "fhir")
HL7_CONTENT = "x-application/hl7-v2+er7"
FHIR_CONTENT = "application/fhir+json"
PMIR_EVENT = "urn:ihe:iti:pmir:2019:patient-feed"


@dataclass
class _Patient:
    """A regional patient as the event's transaction left it (:mod:`.snapshots`): ``sources``
    its active identities then (keys and INS only); ``traits`` their current traits, for the
    PID and the FHIR resource."""

    id: int
    rri: str
    active: bool
    survivor_rri: str | None
    sources: list[SourceIdentity]
    traits: list[SourceIdentity]
    moved: list[SourceIdentity]  # a merge's retired patient: the identities that left it

    def held_by(self, authority: str | None) -> bool:
        return authority is None or any(s.authority == authority for s in self.sources)

    def alone(self, source_id: int) -> _Patient:
        """The patient seen through one of its identities only (the PIDs of an A24)."""
        keys = [s for s in self.sources if s.id == source_id]
        traits = [s for s in self.traits if s.id == source_id]
        return _Patient(self.id, self.rri, self.active, None, keys, traits, [])

    def as_row(self, updated_at: Any) -> RegionalPatient:
        """The patient as then, for :func:`regional_to_fhir` (not attached to any session)."""
        return RegionalPatient(id=self.id, rri=self.rri, active=self.active, updated_at=updated_at)


@dataclass
class Prepared:
    event: Event
    origin: str | None
    namespaces: Mapping[str, str]
    patients: dict[str, _Patient] = field(default_factory=dict)  # by role
    source: SourceIdentity | None = None  # linked, unlinked, identifier_changed, updated


@dataclass(frozen=True)
class _Selector:
    authority: str | None
    domains: frozenset[str]
    format: str
    application: str
    facility: str

    @classmethod
    def of(cls, dest: Destination) -> _Selector:
        s = dest.selector
        return cls(
            s.get("authority") or None,
            frozenset(s.get("domains") or ()),
            s.get("format") or "hl7v2",
            s.get("application") or "",
            s.get("facility") or "",
        )

    def wants(self, ident: Identifier) -> bool:
        return not self.domains or ident.system in self.domains


class IdentityRenderer:
    """The identity server's :class:`~enrs.kit.outbound.queue.Renderer`."""

    names: tuple[str, ...] = EVENTS

    def __init__(self, config: IdentityConfig, base_url: str) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")

    # -- reading, once per event -------------------------------------------------------------

    def prepare(self, session: Session, event: Event) -> Prepared | None:
        p = event.payload
        state: dict[str, dict[str, Any]] = p.get("state") or {}
        kind = event.name.removeprefix("identity.")
        roles: dict[str, Any] = {}
        if kind == "merged":
            roles = {"from": p["from_patient_id"], "into": p["into_patient_id"]}
        elif kind == "linked":
            former = state.get(str(p.get("from_patient_id")))
            joined = state.get(str(p["patient_id"]))
            if p.get("method") == "NEW" or joined is None:
                return None
            if former is not None and not former["active"] and former["survivor"] == joined["rri"]:
                return None  # the event identity.merged that follows says it
            roles = {"patient": p["patient_id"], "former": p.get("from_patient_id")}
        elif kind == "unlinked":
            roles = {"from": p["from_patient_id"], "to": p["to_patient_id"]}
        elif kind in ("identifier_changed", "updated"):
            roles = {"patient": p["patient_id"]}
        found = {role: state[str(pid)] for role, pid in roles.items() if str(pid) in state}
        if not found:
            return None
        ids = {key[0] for st in found.values() for key in st["sources"]}
        traits = {
            s.id: s
            for s in session.scalars(select(SourceIdentity).where(SourceIdentity.id.in_(ids)))
        }
        prepared = Prepared(event, p.get("origin"), domains.namespaces(session))
        for role, st in found.items():
            prepared.patients[role] = _patient(int(roles[role]), st, traits)
        if p.get("source_id"):
            prepared.source = session.get(SourceIdentity, p["source_id"])
        return prepared

    # -- writing, per destination ------------------------------------------------------------

    def render(
        self, prepared: Any, destination: Destination, control_prefix: str
    ) -> list[Outgoing]:
        sel = _Selector.of(destination)
        if sel.authority is not None and sel.authority == prepared.origin:
            return []
        if sel.format == "fhir":
            return self._fhir(prepared, sel, destination, control_prefix)
        return self._hl7(prepared, sel, control_prefix)

    def _ids(self, patient: _Patient, sel: _Selector) -> list[Identifier]:
        found = access.patient_identifiers(patient.sources, patient.rri, self.config)
        return [i for i in found if sel.wants(i)]

    def _pid(self, n: int, patient: _Patient, sel: _Selector, ns: Mapping[str, str]) -> str:
        own = [s for s in patient.traits if s.authority == sel.authority]
        source = own[0] if own else reference_source(patient.traits)
        ids = self._ids(patient, sel)
        if source is None:
            cx = "~".join(cx_out(i.value, i.system, i.type, ns) for i in ids)
            return f"PID|{n}||{cx}"
        return pid_segment(n, source, ids, ns)

    def _hl7(self, prepared: Prepared, sel: _Selector, prefix: str) -> list[Outgoing]:
        kind = prepared.event.name.removeprefix("identity.")
        pts, ns = prepared.patients, prepared.namespaces
        out: list[_Built] = []
        if kind == "merged" and "into" in pts:
            out += self._merged(prepared, sel)
        elif kind == "linked" and "patient" in pts:
            patient, source = pts["patient"], prepared.source
            twins = [s for s in patient.sources if s.authority == sel.authority]
            if source is not None and sel.authority == source.authority and len(twins) > 1:
                other = next(s for s in twins if s.id != source.id)
                first, second = patient.alone(other.id), patient.alone(source.id)
                segs = [self._pid(1, first, sel, ns), self._pid(2, second, sel, ns)]
                out.append(("A24", "ADT_A24", segs, patient))
            elif patient.held_by(sel.authority):
                out.append(_a31(self._pid(1, patient, sel, ns), patient))
            former = pts.get("former")
            if former is not None and former.active and former.held_by(sel.authority):
                out.append(_a31(self._pid(1, former, sel, ns), former))
        elif kind == "unlinked" and {"from", "to"} <= pts.keys():
            first, second = pts["from"], pts["to"]
            if first.held_by(sel.authority) or second.held_by(sel.authority):
                segs = [self._pid(1, first, sel, ns), self._pid(2, second, sel, ns)]
                out.append(("A37", "ADT_A37", segs, first))
        elif kind == "identifier_changed" and "patient" in pts:
            patient, p = pts["patient"], prepared.event.payload
            if patient.held_by(sel.authority) and (
                not sel.domains or p["authority"] in sel.domains
            ):
                old_cx = cx_out(p["old"], p["authority"], "PI", ns)
                segs = [self._pid(1, patient, sel, ns), f"MRG|{old_cx}"]
                out.append(("A47", "ADT_A30", segs, patient))
        elif kind == "updated" and pts["patient"].held_by(sel.authority):
            out.append(_a31(self._pid(1, pts["patient"], sel, ns), pts["patient"]))
        return [
            Outgoing(
                f"ADT^{trigger} Patient/{about.rri}",
                _message(trigger, structure, f"{prefix}.{n}", sel, segs),
                HL7_CONTENT,
                f"Patient/{about.rri}",
            )
            for n, (trigger, structure, segs, about) in enumerate(out, start=1)
        ]

    def _merged(self, prepared: Prepared, sel: _Selector) -> list[_Built]:
        into, gone, ns = (
            prepared.patients["into"],
            prepared.patients.get("from"),
            prepared.namespaces,
        )
        mine = [s for s in gone.moved if sel.authority in (None, s.authority)] if gone else []
        if sel.authority is not None:
            left = {s.id for s in mine}
            stayed = [s for s in into.sources if s.authority == sel.authority and s.id not in left]
            joined = [s for s in mine if s.active]
            if stayed and joined:  # two of X's identities on one patient now: X must merge
                first, second = into.alone(stayed[0].id), into.alone(joined[0].id)
                segs = [self._pid(1, first, sel, ns), self._pid(2, second, sel, ns)]
                return [("A24", "ADT_A24", segs, into)]
        if gone is not None and (sel.authority is None or mine):
            # What disappeared: the retired patient's RRI, and identities merged away (A40).
            old = [Identifier(s.ipp, s.authority, "PI") for s in mine if not s.active]
            old.append(Identifier(gone.rri, self.config.rri_authority, "RRI"))
            mrg = [cx_out(i.value, i.system, i.type, ns) for i in old if sel.wants(i)]
            if mrg:
                segs = [self._pid(1, into, sel, ns), "MRG|" + "~".join(mrg)]
                return [("A40", "ADT_A39", segs, into)]
        if into.held_by(sel.authority):
            return [_a31(self._pid(1, into, sel, ns), into)]
        return []

    def _concerned(self, prepared: Prepared, sel: _Selector) -> list[_Patient]:
        pts = prepared.patients
        held = [p for p in pts.values() if p.held_by(sel.authority)]
        gone = pts.get("from") if prepared.event.name == "identity.merged" else None
        held_gone = gone is not None and any(s.authority == sel.authority for s in gone.moved)
        if gone is not None and gone not in held and held_gone:
            held.insert(0, gone)  # the retired patient X held
        return held

    def _fhir(
        self, prepared: Prepared, sel: _Selector, dest: Destination, prefix: str
    ) -> list[Outgoing]:
        concerned = self._concerned(prepared, sel)
        if not concerned:
            return []
        entries = []
        for patient in concerned:
            resource = regional_to_fhir(
                patient.as_row(utcnow()),
                access.visible(patient.traits),
                self._ids(patient, sel),
                patient.survivor_rri,
            )
            if not patient.sources:
                resource["identifier"] = [
                    identifier_to_fhir(i, active=False)
                    for i in [Identifier(patient.rri, self.config.rri_authority, "RRI")]
                    if sel.wants(i)
                ]
            entries.append(
                {
                    "fullUrl": f"{self.base_url}/fhir/Patient/{patient.rri}",
                    "resource": resource,
                    "request": {"method": "PUT", "url": f"Patient/{patient.rri}"},
                    "response": {"status": "200"},
                }
            )
        bundle = _pmir_message(self.base_url, dest.endpoint, prefix, entries)
        about = concerned[-1]
        refs = ", ".join(f"Patient/{p.rri}" for p in concerned)
        return [
            Outgoing(
                f"pmir-feed {refs}",
                json.dumps(bundle, ensure_ascii=False),
                FHIR_CONTENT,
                f"Patient/{about.rri}",
            )
        ]


_Built = tuple[str, str, list[str], _Patient]  # trigger, structure, segments, about


def _a31(pid: str, patient: _Patient) -> _Built:
    return ("A31", "ADT_A05", [pid, "PV1|1|N"], patient)


def _message(
    trigger: str, structure: str, control: str, sel: _Selector, segs: Sequence[str]
) -> str:
    stamp = utcnow().strftime("%Y%m%d%H%M%S+0000")
    msh = (
        f"MSH|^~\\&|ENRS|ENRS|{sel.application}|{sel.facility}|{stamp}||"
        f"ADT^{trigger}^{structure}|{control}|P|2.5|||||FRA|UNICODE UTF-8"
    )
    return "\r".join([msh, f"EVN||{stamp}", *segs]) + "\r"


def _pmir_message(
    base_url: str, endpoint: str, control: str, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    history = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base_url}#history-{control}"))
    header = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base_url}#header-{control}"))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base_url}#message-{control}")),
        "meta": {"tag": [{"system": "urn:enrs:notification", "code": control}]},
        "type": "message",
        "timestamp": utcnow().isoformat(timespec="milliseconds"),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{header}",
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": header,
                    "eventUri": PMIR_EVENT,
                    "destination": [{"endpoint": endpoint}],
                    "source": {"endpoint": f"{base_url}/fhir"},
                    "focus": [{"reference": f"urn:uuid:{history}"}],
                },
            },
            {
                "fullUrl": f"urn:uuid:{history}",
                "resource": {
                    "resourceType": "Bundle",
                    "id": history,
                    "type": "history",
                    "entry": entries,
                },
            },
        ],
    }


def _patient(
    patient_id: int, state: dict[str, Any], traits: Mapping[int, SourceIdentity]
) -> _Patient:
    sources = [
        SourceIdentity(
            id=key[0],
            authority=key[1],
            ipp=key[2],
            ins=key[3],
            ins_system=key[4],
            status=key[5],
            other_identifiers=key[6] if len(key) > 6 else None,
            active=True,
        )
        for key in state["sources"]
    ]
    moved = [
        SourceIdentity(id=i, authority=a, ipp=ipp, active=active)
        for i, a, ipp, active in state.get("moved", [])
    ]
    current = [traits[s.id] for s in sources if s.id in traits]
    return _Patient(
        patient_id, state["rri"], state["active"], state["survivor"], sources, current, moved
    )
