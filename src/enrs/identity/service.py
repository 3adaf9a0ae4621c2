"""The regional identity server's logic: receive a facility's identity, match it, link it.

Rules (RNIV, and the identity issue):
- exact INS → same regional patient;
- otherwise blocking + Fellegi–Sunter scoring: above the auto-link threshold (with the strict
  traits close enough) → link; between the thresholds → a *potential duplicate* task for the
  cell and the identity stays on its own; below → a new regional patient;
- a douteuse or fictive identity is never linked automatically; two identities with different
  INS are never linked automatically;
- an update that no longer fits the regional patient raises a *potential collision* task;
- nothing is deleted: links end, previous versions are kept. Services only flush.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

from sqlalchemy.orm import Session

from enrs.identity import access, others, pamfr, record, repository, snapshots, xref
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import Matcher, PairScore
from enrs.identity.models import (
    IdentityLink,
    IdentityTask,
    RegionalPatient,
    SourceIdentity,
    SourceIdentityVersion,
)
from enrs.identity.repository import Candidate
from enrs.identity.schemas import FeedResult, SourceIdentityIn, first_telecom
from enrs.identity.traits import (
    INS_NIR_OID,
    check_ins,
    check_traits,
    normalize_address,
    normalize_city,
    normalize_email,
    normalize_name,
    normalize_phone,
    phonetic,
)
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict
from enrs.kit.events import emit, enrich_at_commit, set_origin
from enrs.kit.hl7v2 import Segment

NEVER_AUTO = frozenset({"DOUT", "FICT"})

enrich_at_commit("identity.", snapshots.enrich)  # each event with its commit's state


def traits_of(source: SourceIdentity | Candidate) -> Traits:
    return Traits(
        birth_name=source.n_birth_name,
        used_name=source.n_used_name,
        given_names=tuple(source.n_given_names.split("|")) if source.n_given_names else (),
        birth_date=source.birth_date,
        sex=source.sex,
        birth_place=source.birth_place,
        postal_code=source.postal_code,
        ins=source.ins,
        address=source.n_address or "",
        city=source.n_city or "",
        phone=source.n_phone or "",
        email=source.n_email or "",
        birth_order=source.birth_order or "",
    )


def _columns(data: SourceIdentityIn, ins: str | None) -> dict[str, Any]:
    """The columns of an identity that ``data`` sets (all but key, link, state and creation)."""
    birth_date = data.birth_date
    return {
        "birth_name": data.birth_name,
        "used_name": data.used_name,
        "given_names": " ".join(data.given_names),
        "birth_date": birth_date,
        "sex": data.sex,
        "birth_place": data.birth_place,
        "address_line": data.address_line,
        "postal_code": data.postal_code,
        "city": data.city,
        "country": data.country,
        "telecom": json.dumps([t.model_dump() for t in data.telecom]) if data.telecom else None,
        "ins": ins,
        "ins_system": (data.ins_system or INS_NIR_OID) if ins else None,
        "status": data.status,
        "attributes": " ".join(sorted(data.attributes)),
        "method_collection": data.method_collection,
        "validation_mode": data.validation_mode,
        "n_birth_name": normalize_name(data.birth_name),
        "n_used_name": normalize_name(data.used_name),
        "n_given_names": "|".join(normalize_name(g) for g in data.given_names),
        "n_first_given": normalize_name(data.given_names[0]),
        "birth_year": birth_date.year if birth_date else None,
        **matching_keys(data),
        "updated_at": utcnow(),
        "record": record.dump(data.record),
        "death_date": record.death_date(data.record),
    }


def matching_keys(data: SourceIdentityIn) -> dict[str, str | None]:
    """The matching keys of an identity (``SourceIdentity.p_birth_name`` …), NULL when empty."""
    keys = {
        "p_birth_name": phonetic(normalize_name(data.birth_name)),
        "p_first_given": phonetic(normalize_name(data.given_names[0])),
        "n_address": normalize_address(data.address_line),
        "n_city": normalize_city(data.city),
        "n_phone": normalize_phone(first_telecom(data.telecom, "phone")),
        "n_email": normalize_email(first_telecom(data.telecom, "email")),
        "birth_order": record.birth_order(data.record),
    }
    return {k: v or None for k, v in keys.items()}


def _apply(source: SourceIdentity, data: SourceIdentityIn, ins: str | None) -> None:
    for key, value in _columns(data, ins).items():
        setattr(source, key, value)


def snapshot(source: SourceIdentity) -> str:
    fields = (
        "birth_name",
        "used_name",
        "given_names",
        "birth_date",
        "sex",
        "birth_place",
        "address_line",
        "postal_code",
        "city",
        "country",
        "telecom",
        "ins",
        "ins_system",
        "status",
        "attributes",
        "method_collection",
        "validation_mode",
        "patient_id",
        "record",
        "other_identifiers",
    )
    return json.dumps({f: getattr(source, f) for f in fields}, default=str)


def keep_version(session: Session, source: SourceIdentity, *, actor: str) -> None:
    """Keep the current state of ``source`` as a previous version (``identity_source_version``:
    its traits, link, key and state) before it changes; its version number goes up."""
    data = {**json.loads(snapshot(source)), "authority": source.authority, "ipp": source.ipp}
    data["active"] = source.active
    session.add(
        SourceIdentityVersion(
            source_id=source.id,
            version=source.version,
            data=json.dumps(data, default=str),
            actor=actor,
            recorded_at=utcnow(),
        )
    )
    source.version += 1
    source.updated_at = utcnow()


def new_patient(session: Session) -> RegionalPatient:
    patient = RegionalPatient(
        rri=secrets.token_hex(8).upper(), active=True, created_at=utcnow(), updated_at=utcnow()
    )
    session.add(patient)
    session.flush()
    return patient


def link_source(
    session: Session,
    source: SourceIdentity,
    patient_id: int,
    method: str,
    *,
    actor: str,
    score: float | None = None,
    model_version: str | None = None,
    reason: str | None = None,
    announce: bool = True,
) -> None:
    """Link ``source`` to the regional patient ``patient_id``: its current link ends, the new
    one keeps method, score and reason (event ``identity.linked``, unless ``announce`` is
    false: an unlink announces the move itself, ``identity.unlinked``)."""
    now = utcnow()
    current = repository.current_link(session, source.id) if source.id else None
    former = current.patient_id if current is not None else None
    if current is not None:
        current.ended_at, current.ended_by = now, actor
    source.patient_id = patient_id
    session.flush()
    session.add(
        IdentityLink(
            source_id=source.id,
            patient_id=patient_id,
            method=method,
            score=score,
            model_version=model_version,
            actor=actor,
            reason=reason,
            created_at=now,
        )
    )
    if announce:
        payload = {"source_id": source.id, "patient_id": patient_id, "method": method}
        emit(session, "identity.linked", {**payload, "from_patient_id": former})


def retire_if_empty(session: Session, patient_id: int, *, into: int) -> bool:
    """A regional patient left without active identities is retired: inactive, merged into
    ``into`` (event ``identity.merged``). Whether it was."""
    if repository.sources_of_patient(session, patient_id):
        return False
    patient = repository.patient(session, patient_id)
    if patient is None or not patient.active:
        return False
    patient.active, patient.merged_into_id, patient.updated_at = False, into, utcnow()
    emit(session, "identity.merged", {"from_patient_id": patient_id, "into_patient_id": into})
    return True


def _task(
    session: Session,
    kind: str,
    source_id: int,
    other_patient: int,
    best: tuple[int, PairScore] | None,
) -> IdentityTask | None:
    """Open a task for the cell (unless one is open, or the cell kept the pair apart);
    ``best``: the other patient's identity closest to ``source_id`` and its score."""
    existing = repository.open_task(session, kind, source_id, other_patient)
    if existing is not None:
        return existing
    if repository.kept_apart(session, source_id, other_patient):
        return None  # the cell already said these are two people
    task = IdentityTask(
        kind=kind,
        status="OPEN",
        source_id=source_id,
        other_patient_id=other_patient,
        other_source_id=best[0] if best else None,
        score=best[1].weight if best else None,
        levels=json.dumps(best[1].levels) if best else None,
        created_at=utcnow(),
    )
    session.add(task)
    session.flush()
    return task


@dataclass(frozen=True)
class Scored:
    source: SourceIdentity
    score: PairScore


@dataclass(frozen=True)
class Ranked:
    """A blocked candidate (the columns matching needs) and its score."""

    candidate: Candidate
    score: PairScore

    @property
    def best(self) -> tuple[int, PairScore]:
        return self.candidate.id, self.score


@dataclass
class Ahead:
    """What :func:`prescore` read ahead of the write transaction: the position of the change
    log (SQLite), the blocked candidates then, and their scores."""

    seen: int | None = None
    candidates: list[Candidate] = field(default_factory=list)
    scores: dict[Candidate, PairScore] = field(default_factory=dict)


def _blocked(session: Session, traits: Traits, ahead: Ahead | None) -> list[Candidate]:
    if ahead is not None and ahead.seen is not None:
        since = repository.candidates_since(session, traits, ahead.seen, ahead.candidates)
        if since is not None:
            return since
    return repository.candidates(session, traits)


def rank(
    session: Session,
    matcher: Matcher,
    traits: Traits,
    *,
    exclude_patient: int | None = None,
    apart: frozenset[int] = frozenset(),
    ahead: Ahead | None = None,
) -> list[Ranked]:
    """Per regional patient, its best-scoring active identity, best first (ties: the lowest
    identity id first). Patients holding an identity with another INS than ``traits.ins`` are
    left out (never the same person). ``ahead``: candidates read and scored ahead
    (:func:`prescore`); only what changed since is read and scored again."""
    scores = ahead.scores if ahead is not None else {}
    best: dict[int, Ranked] = {}
    other_ins: set[int] = set()
    kept_cands: list[Candidate] = []
    for cand in sorted(_blocked(session, traits, ahead)):
        if cand.patient_id == exclude_patient or cand.patient_id in apart:
            continue
        if traits.ins and cand.ins and cand.ins != traits.ins:
            other_ins.add(cand.patient_id)
            continue
        kept_cands.append(cand)
    unscored = [c for c in kept_cands if c not in scores]
    fresh = dict(zip(unscored, matcher.score_rows(traits, unscored), strict=True))
    for cand in kept_cands:
        scored = Ranked(cand, scores.get(cand) or fresh[cand])
        kept = best.get(cand.patient_id)
        if kept is None or scored.score.weight > kept.score.weight:
            best[cand.patient_id] = scored
    ranked = [s for pid, s in best.items() if pid not in other_ins]
    return sorted(ranked, key=lambda s: s.score.weight, reverse=True)


def best_candidates(
    session: Session, matcher: Matcher, traits: Traits, *, exclude_patient: int | None = None
) -> list[Scored]:
    """:func:`rank` with each patient's best identity loaded whole."""
    ranked = rank(session, matcher, traits, exclude_patient=exclude_patient)
    sources = repository.sources_by_ids(session, [r.candidate.id for r in ranked])
    return [Scored(sources[r.candidate.id], r.score) for r in ranked]


@dataclass(frozen=True)
class Decision:
    """``method``: INS or AUTO (join ``patient_id``), or NEW (stay alone); ``review_patient``:
    the regional patient the cell should compare with (a potential duplicate)."""

    method: str
    patient_id: int | None = None
    score: float | None = None
    review: Ranked | None = None
    review_patient: int | None = None


def decide(
    session: Session,
    matcher: Matcher,
    traits: Traits,
    attributes: frozenset[str],
    *,
    own_patient: int | None,
    own_source: int | None,
    authority: str,
    ahead: Ahead | None = None,
) -> Decision:
    """Where an identity belongs, without changing anything. An identity of ``authority`` is
    never linked automatically to a patient holding another identity of that authority (two
    IPPs of one facility: the facility merges them itself, A40); the cell gets the pair."""
    model = matcher.model
    never_auto = bool(attributes & NEVER_AUTO)

    def same_facility(patient_id: int) -> bool:
        return repository.holds_authority(session, patient_id, authority, own_source)

    if traits.ins:
        same = [
            s
            for s in repository.ins_holders(session, traits.ins)
            if s.id != own_source and s.patient_id != own_patient
        ]
        if (
            same
            and not never_auto
            and not (same[0].attribute_set & NEVER_AUTO)
            and not same_facility(same[0].patient_id)
        ):
            return Decision("INS", same[0].patient_id)
        if same:
            return Decision("NEW", review_patient=same[0].patient_id)
    apart = frozenset(repository.ruled_apart(session, own_source)) if own_source else frozenset()
    ranked = rank(session, matcher, traits, exclude_patient=own_patient, apart=apart, ahead=ahead)
    if not ranked:
        return Decision("NEW")
    top = ranked[0]
    weight = top.score.weight
    if (
        top.score.strict_weight >= model.auto_link
        and top.score.auto_link_allowed
        and not never_auto
        and not (top.candidate.attribute_set & NEVER_AUTO)
        and not same_facility(top.candidate.patient_id)
    ):
        return Decision("AUTO", top.candidate.patient_id, weight)
    if weight >= model.review:
        return Decision("NEW", score=weight, review=top, review_patient=top.candidate.patient_id)
    return Decision("NEW", score=weight)


def _result(
    session: Session,
    source_id: int,
    patient_id: int,
    *,
    created: bool,
    method: str,
    score: float | None,
    task: IdentityTask | None,
    rri: str | None = None,
) -> FeedResult:
    rri = rri or repository.patient_rri(session, patient_id)
    assert rri is not None
    kind: Literal["DUPLICATE", "COLLISION"] | None = None
    if task is not None:
        kind = "COLLISION" if task.kind == "COLLISION" else "DUPLICATE"
    return FeedResult(
        source_id=source_id,
        rri=rri,
        created=created,
        link_method=method,
        score=score,
        task=kind,
        task_id=task.id if task else None,
    )


@dataclass(frozen=True)
class Prepared:
    """An identity checked and normalised before its transaction: the columns of a new
    ``identity_source`` row (but ``patient_id``), its matching traits, and the candidates
    scored ahead (:func:`prescore`)."""

    data: SourceIdentityIn
    ins: str | None
    values: dict[str, Any]
    traits: Traits
    attributes: frozenset[str]
    config: IdentityConfig
    ahead: Ahead = field(default_factory=Ahead)


def prepare(data: SourceIdentityIn, config: IdentityConfig) -> Prepared:
    """Check ``data`` (INS key and OID, one of ``config.accepted_ins``; RNIV coherence: raises
    :class:`~enrs.identity.traits.InvalidTrait`) and normalise it."""
    ins = (
        check_ins(data.ins, data.ins_system or INS_NIR_OID, config.accepted_ins)
        if data.ins
        else None
    )
    check_traits(
        status=data.status,
        attributes=data.attributes,
        sex=data.sex,
        birth_date=data.birth_date,
        birth_place=data.birth_place,
        ins=ins,
    )
    columns = _columns(data, ins)
    values = dict.fromkeys(repository.SOURCE_COLUMNS)
    values |= {"authority": data.authority, "ipp": data.ipp, "active": True, "version": 1}
    values |= {**columns, "created_at": columns["updated_at"]}
    traits = Traits(
        birth_name=columns["n_birth_name"],
        used_name=columns["n_used_name"],
        given_names=tuple(given.split("|")) if (given := columns["n_given_names"]) else (),
        birth_date=data.birth_date,
        sex=data.sex,
        birth_place=data.birth_place,
        postal_code=data.postal_code,
        ins=ins,
        address=columns["n_address"] or "",
        city=columns["n_city"] or "",
        phone=columns["n_phone"] or "",
        email=columns["n_email"] or "",
        birth_order=columns["birth_order"] or "",
    )
    return Prepared(data, ins, values, traits, frozenset(data.attributes), config)


def prescore(session: Session, matcher: Matcher, prepared: Prepared) -> None:
    """Read and score ahead, in a read-only transaction, the candidates that a new identity
    will be ranked against: its own transaction then reads again only the identities changed
    since (on SQLite, from the change log; elsewhere all of them) and scores only the rows
    that changed or appeared (a candidate is scored again unless it is, column for column, one
    scored here), so the decision is the same. Where writers take turns (SQLite), this keeps
    reading and scoring out of the turn."""
    t = prepared.traits
    if t.ins and repository.ins_holders(session, t.ins):
        return  # decided on the INS, without ranking
    ahead = prepared.ahead
    ahead.seen = repository.last_change(session)
    ahead.candidates = repository.candidates(session, t)
    cands = [c for c in ahead.candidates if not (t.ins and c.ins and c.ins != t.ins)]
    ahead.scores.update(zip(cands, matcher.score_rows(t, cands), strict=True))


def feed(
    session: Session,
    matcher: Matcher,
    data: SourceIdentityIn,
    *,
    actor: str,
    config: IdentityConfig,
) -> FeedResult:
    """Create or update a source identity and match it (ITI-104 / ADT A28, A31, A01, A04, A08).

    Raises ``InvalidTrait`` (``Unprocessable``) for an INS whose key does not check or whose OID
    is not accepted (a test INS outside development), or incoherent statuses."""
    prepared = prepare(data, config)
    existing = repository.source_by_key(session, data.authority, data.ipp)
    return feed_prepared(session, matcher, prepared, existing, actor=actor)


def feed_prepared(
    session: Session,
    matcher: Matcher,
    prepared: Prepared,
    existing: SourceIdentity | None,
    *,
    actor: str,
) -> FeedResult:
    """:func:`feed` in two steps: ``prepared`` before the transaction (:func:`prepare`), then
    this, given the identity of the same key (``repository.source_by_key``) or ``None``. The
    identifiers sent besides the IPP and the INS are kept or ignored as :mod:`.others` says
    (``FeedResult.ignored``)."""
    set_origin(session, prepared.data.authority)
    data = prepared.data
    kept, ignored = others.sort(session, prepared.config, data.authority, data.other_identifiers)
    rows = [(str(o.system), o.value, o.type) for o in kept]
    column = json.dumps(rows) if rows else None
    had = existing is not None and existing.other_identifiers is not None
    prepared = replace(prepared, values={**prepared.values, "other_identifiers": column})
    result = _feed_prepared(session, matcher, prepared, existing, actor=actor)
    if rows or had:
        repository.replace_others(session, result.source_id, rows, fresh=existing is None)
    result.ignored = ignored
    task = session.get(IdentityTask, result.task_id) if result.task_id is not None else None
    if task is not None and task.kind == "DUPLICATE":
        result.same_facility = repository.authority_ipps(
            session, task.other_patient_id, data.authority, result.source_id
        )
    return result


def same_facility_note(result: FeedResult) -> str | None:
    """What the sender is told when the cell gets a pair of two of its own IPPs (an
    intra-facility duplicate is never linked by the server: the facility merges them, A40)."""
    if not result.same_facility:
        return None
    ipps = ", ".join(result.same_facility)
    return (
        f"possibly the same person as IPP {ipps} of this facility (an intra-facility duplicate): "
        f"task {result.task_id} for the identitovigilance cell; if it is, merge them (A40)"
    )


def _feed_prepared(
    session: Session,
    matcher: Matcher,
    prepared: Prepared,
    existing: SourceIdentity | None,
    *,
    actor: str,
) -> FeedResult:
    if existing is not None:
        others_column = prepared.values["other_identifiers"]
        return _update(
            session, matcher, existing, prepared.data, prepared.ins, others_column, actor=actor
        )
    decision = decide(
        session,
        matcher,
        prepared.traits,
        prepared.attributes,
        own_patient=None,
        own_source=None,
        authority=prepared.data.authority,
        ahead=prepared.ahead,
    )
    auto = decision.method == "AUTO"
    source_id, patient_id, rri = repository.create_identity(
        session,
        prepared.values,
        patient_id=decision.patient_id,
        rri=secrets.token_hex(8).upper(),
        method=decision.method,
        score=decision.score if auto else None,
        model_version=matcher.model.version if auto else None,
        actor=actor,
    )
    task = None
    if decision.review_patient is not None:
        review = decision.review.best if decision.review else None
        task = _task(session, "DUPLICATE", source_id, decision.review_patient, review)
    return _result(
        session,
        source_id,
        patient_id,
        created=True,
        method=decision.method,
        score=decision.score,
        task=task,
        rri=rri,
    )


def _update(
    session: Session,
    matcher: Matcher,
    source: SourceIdentity,
    data: SourceIdentityIn,
    ins: str | None,
    others_column: str | None,
    *,
    actor: str,
) -> FeedResult:
    """A new version of a known identity: keep the old one; if it shares its regional patient,
    check it still fits (else a potential collision); if it is alone, match it again."""
    keep_version(session, source, actor=actor)
    before = snapshot(source)
    _apply(source, data, ins)
    source.other_identifiers = others_column
    session.flush()
    if snapshot(source) != before:
        emit(session, "identity.updated", {"source_id": source.id, "patient_id": source.patient_id})
    traits = traits_of(source)
    siblings = [
        s for s in repository.sources_of_patient(session, source.patient_id) if s.id != source.id
    ]
    task: IdentityTask | None = None
    method, score = "UPDATE", None
    if siblings:
        scored = [(s.id, matcher.score(traits, traits_of(s))) for s in siblings]
        best = max(scored, key=lambda s: s[1].weight)
        score = best[1].weight
        same_ins = bool(ins) and any(s.ins == ins for s in siblings)
        other_ins = bool(ins) and any(s.ins and s.ins != ins for s in siblings)
        if other_ins or (not same_ins and score < matcher.model.review):
            task = _task(session, "COLLISION", source.id, source.patient_id, best)
    else:
        decision = decide(
            session,
            matcher,
            traits,
            source.attribute_set,
            own_patient=source.patient_id,
            own_source=source.id,
            authority=source.authority,
        )
        score = decision.score
        if decision.patient_id is not None:
            former = source.patient_id
            link_source(
                session,
                source,
                decision.patient_id,
                decision.method,
                actor=actor,
                score=decision.score,
                model_version=matcher.model.version,
            )
            retire_if_empty(session, former, into=decision.patient_id)
            method = decision.method
        elif decision.review_patient is not None:
            review = decision.review.best if decision.review else None
            task = _task(session, "DUPLICATE", source.id, decision.review_patient, review)
    return _result(
        session, source.id, source.patient_id, created=False, method=method, score=score, task=task
    )


# --- for the other services: which regional patient, who has them in care ------------------


@dataclass(frozen=True)
class PatientRef:
    """A regional patient as other services key on it: its row id and its RRI."""

    id: int
    rri: str


def resolve_patient(session: Session, config: IdentityConfig, oid: str, value: str) -> PatientRef:
    """The active regional patient that the identifier ``value`` of the domain ``oid`` (an
    IPP of a registered domain, an INS of a qualified identity, the RRI) designates, merges
    followed. Raises :class:`enrs.identity.xref.UnknownDomain` (400),
    :class:`enrs.identity.xref.UnknownPatient` (404), or
    :class:`enrs.kit.errors.Conflict` when an INS designates two patients (the cell has to
    merge them first)."""
    found = xref.resolve(session, config, oid, value)
    if len(found) > 1:
        raise Conflict(f"the identifier {value} of {oid} designates {len(found)} patients")
    return PatientRef(found[0].id, found[0].rri)


def authority_by_namespace(session: Session, namespace: str) -> str | None:
    """The OID of the registered domain named ``namespace`` (its HL7 v2 CX-4.1, as a DICOM
    Issuer of Patient ID may give it), ``None`` if no domain has that namespace."""
    found = repository.domain_by_namespace(session, namespace)
    return found.oid if found is not None else None


def current_patient(session: Session, patient_id: int) -> PatientRef | None:
    """The active regional patient ``patient_id`` now is (itself, or the one it was merged
    into), ``None`` if there is none."""
    patient = repository.patient(session, patient_id)
    current = xref.follow_merges(session, patient) if patient is not None else None
    return PatientRef(current.id, current.rri) if current is not None else None


def patient_by_rri(session: Session, rri: str) -> PatientRef | None:
    """The active regional patient of the RRI ``rri`` (merges followed), else ``None``."""
    patient = repository.patient_by_rri(session, rri)
    current = xref.follow_merges(session, patient) if patient is not None else None
    return PatientRef(current.id, current.rri) if current is not None else None


def merged_patient_ids(session: Session, patient_id: int) -> list[int]:
    """``patient_id`` and every regional patient merged into it, directly or through
    others: what was filed for any of them is the patient's now."""
    return repository.merged_into(session, patient_id)


def deaths_before(session: Session, day: date) -> dict[int, date]:
    """The regional patients whose active identities give a day of death (HL7 v2 PID-29, FHIR
    ``deceasedDateTime``), the latest of them before ``day``: patient id → that day."""
    return repository.deaths_before(session, day)


def life_dates(
    session: Session, patient_ids: list[int]
) -> list[tuple[int, date | None, date | None]]:
    """(patient id, birth date, day of death) that each active identity of ``patient_ids``
    gives (``None``: not given)."""
    return repository.life_dates(session, patient_ids)


def records_of(session: Session, patient_ids: list[int]) -> dict[int, list[int]]:
    """The records (what was filed for them is one patient's now) ``patient_ids`` are part of,
    by the regional patient each ends in (the active one they were merged into, or the last of
    their merges): that patient first, then every patient merged into it. For many patients at
    once (:func:`current_patient` and :func:`merged_patient_ids` take one)."""
    return repository.records_of(session, patient_ids)


def facilities_in_care(session: Session, patient_ids: list[int]) -> frozenset[str]:
    """The member facilities (FINESS) that have the patient in care: those owning a domain
    in which an active identity of one of ``patient_ids`` was fed (their ADT feed)."""
    return frozenset(repository.facilities_of_patients(session, patient_ids))


def pid_patient_keys(config: IdentityConfig, pid: Segment) -> list[tuple[str, str]]:
    """``(domain OID, value)`` of each identifier of an HL7 v2 PID-3 that can name a regional
    patient (for :func:`resolve_patient`): the facility identifiers (PAM-FR CX-4) first, then
    the INS."""
    cxs = pamfr.identifiers(pid, 3)
    keys = [
        (authority, cx.value)
        for cx in cxs
        if not cx.is_ins and cx.type_code != "INS-C" and (authority := cx.authority(config))
    ]
    return keys + [(cx.ins_system, cx.value) for cx in cxs if cx.is_ins]


def qualified_ins(session: Session, patient_ids: list[int]) -> tuple[str, str] | None:
    """``(INS, its OID)`` of the patient's qualified identity (the first, by id), the only
    INS shared with the national services; ``None`` when no identity is qualified."""
    for patient_id in patient_ids:
        for source in access.patient_sources(session, patient_id):
            if access.ins_trusted(source) and source.ins:
                return source.ins, source.ins_system or INS_NIR_OID
    return None


@dataclass(frozen=True)
class PatientName:
    """How a patient is named to a professional where identity may be shown (an MSSanté
    mail): birth name, first given name, birth date."""

    family: str
    given: str
    birth_date: date | None


def patient_name(session: Session, patient_id: int) -> PatientName | None:
    """The name of a regional patient (merges included): its qualified identity's, else the
    oldest readable identity's; ``None`` when none can be read."""
    ids = merged_patient_ids(session, patient_id)
    sources = [s for pid in ids for s in access.patient_sources(session, pid)]
    if not sources:
        return None
    chosen = next((s for s in sources if access.ins_trusted(s)), sources[0])
    first = (chosen.given_names or "").split()
    return PatientName(chosen.birth_name, first[0] if first else "", chosen.birth_date)


def patient_card(session: Session, patient: PatientRef) -> access.Card | None:
    """How a care team names the patient (names, birth date, the INS once qualified:
    :func:`enrs.identity.access.card`); whether a reader is shown the INS is the caller's
    rule (:func:`enrs.coordination.auth.shows_ins`)."""
    return access.card(session, merged_patient_ids(session, patient.id))
