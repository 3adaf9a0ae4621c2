"""Labelled French patient identities, as facilities send them to the regional identity server.

Each generated person gets 1..n source records (one per facility stay) sharing ``person_id``,
the ground truth. The first record of a person is clean; later ones carry the errors facilities
really make (``SourceRecord.errors`` names them, see ``DEFAULT_ERROR_PROBS``). Hard negatives
are distinct persons built to look alike (``negative`` = twin, homonym, sibling, parent_child,
spouse; ``related_to`` = the look-alike). Only RECUP / QUAL records carry the INS, with exact
traits. Deterministic for a seed (and a Faker version): name and street pools are drawn from
Faker once, then everything is sampled with ``random.Random(seed)``.

CLI: ``python -m bench.identity_data --persons 1000 --seed 1 --out file.jsonl [--stats]``.
"""

from __future__ import annotations

import argparse
import copy
import heapq
import importlib
import json
import random
import sys
import unicodedata
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, timedelta
from functools import cache
from itertools import combinations
from types import MappingProxyType
from typing import Any

INS_SYSTEM = "1.2.250.1.213.1.4.8"
AUTHORITY_ROOT = "1.2.250.1.71.4.2.2."
REFERENCE_DATE = date(2025, 1, 1)  # "today" of the data set, fixed for determinism
NEGATIVE_KINDS = ("twin", "homonym", "sibling", "parent_child", "spouse")
# Probability of each error per non-first record that can have it, in the order applied.
# Trait errors only hit PROV / VALI records (RECUP / QUAL traits come from INSi); "moved"
# (address and often phone changed) hits any; "status_prov" = kept PROV, so no INS, by a
# facility although the person has one. Date errors are exclusive, as are place and sex ones.
# fmt: off
DEFAULT_ERROR_PROBS: Mapping[str, float] = MappingProxyType({
    "status_prov": 0.15, "used_name_as_birth_name": 0.30, "used_name_missing": 0.15,
    "birth_name_typo": 0.06, "given_name_typo": 0.03,  # 1 substitution/deletion/insertion/swap
    "given_first_only": 0.20, "given_truncated": 0.25,  # JEAN for JEAN-PIERRE
    "given_order": 0.05, "hyphen_space": 0.25, "apostrophe_dropped": 0.40,
    "names_swapped": 0.01, "accents_dropped": 0.25, "case_changed": 0.05,
    "day_month_swap": 0.03, "date_jan1": 0.01, "year_off_by_one": 0.01,
    "year_digit_typo": 0.01, "birth_date_missing": 0.005,
    "birth_place_missing": 0.10, "birth_place_neighbour": 0.02,
    "sex_missing": 0.004, "sex_wrong": 0.004, "moved": 0.08,
})
DEFAULT_NEGATIVE_RATES: Mapping[str, float] = MappingProxyType(
    {"twin": 0.01, "homonym": 0.02, "sibling": 0.02, "parent_child": 0.015, "spouse": 0.03})
DEFAULT_RECORDS: Mapping[int, float] = MappingProxyType(
    {1: 0.40, 2: 0.30, 3: 0.17, 4: 0.09, 5: 0.04})
# fmt: on
ERROR_TYPES = tuple(DEFAULT_ERROR_PROBS)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One identity as a facility sends it. ``sex`` is M, F or U (unknown: an error only)."""

    person_id: int
    authority: str
    ipp: str
    birth_name: str
    used_name: str | None
    given_names: tuple[str, ...]
    birth_date: date | None
    sex: str
    birth_place: str | None
    address_line: str
    postal_code: str
    city: str
    phone: str
    ins: str | None
    ins_system: str | None
    status: str
    attributes: frozenset[str]
    errors: tuple[str, ...] = ()
    negative: str | None = None  # hard-negative kind of this person, if any
    related_to: int | None = None  # person_id of the person this hard negative resembles

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ISO dates, lists for tuples, sorted lists for sets."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["birth_date"] = self.birth_date.isoformat() if self.birth_date else None
        out["given_names"], out["errors"] = list(self.given_names), list(self.errors)
        out["attributes"] = sorted(self.attributes)
        return out


_FIELDS = tuple(f.name for f in fields(SourceRecord))


def _frozen(value: Mapping[Any, float]) -> Any:
    return field(default_factory=lambda: MappingProxyType(dict(value)))


@dataclass(frozen=True)
class IdentityConfig:
    """Generation options. ``records_per_person``: an inclusive ``(min, max)`` drawn uniformly
    or ``{count: weight}``; ``error_rate`` scales every error probability; rates are per
    person (a hard negative is an extra person built next to its look-alike)."""

    records_per_person: tuple[int, int] | Mapping[int, float] = _frozen(DEFAULT_RECORDS)
    error_rate: float = 1.0
    error_probs: Mapping[str, float] = _frozen({})  # overrides by error name
    no_ins_rate: float = 0.25  # persons without any INS (recent arrivals, Guyane...)
    negative_rates: Mapping[str, float] = _frozen(DEFAULT_NEGATIVE_RATES)
    dubious_rate: float = 0.01  # DOUT persons (always PROV)
    fictive_rate: float = 0.005  # FICT persons (PROV, one record each)
    n_authorities: int = 30
    spread: int = 1000  # a person's later records come up to this many persons later


# Communes: cluster, then "COG postal CITY" items; a neighbouring commune is one of the same
# department, else of the same cluster. Paris, Lyon, Marseille births carry arrondissements.
_COMMUNES = """
IDF 93066 93200 SAINT-DENIS|93048 93100 MONTREUIL|95018 95100 ARGENTEUIL|94028 94000 CRÉTEIL
IDF 92012 92100 BOULOGNE-BILLANCOURT|92050 92000 NANTERRE|94081 94400 VITRY-SUR-SEINE
AURA 69266 69100 VILLEURBANNE|38185 38000 GRENOBLE|42218 42000 SAINT-ÉTIENNE
AURA 63113 63000 CLERMONT-FERRAND
PACA 13001 13100 AIX-EN-PROVENCE|83137 83000 TOULON|06088 06000 NICE|84007 84000 AVIGNON
HDF 59350 59000 LILLE|59512 59100 ROUBAIX|59599 59200 TOURCOING|80021 80000 AMIENS
GE 67482 67000 STRASBOURG|68224 68100 MULHOUSE|68066 68000 COLMAR|57463 57000 METZ
GE 54395 54000 NANCY|51454 51100 REIMS
NOR 76540 76000 ROUEN|76351 76600 LE HAVRE|14118 14000 CAEN
OUEST 35238 35000 RENNES|29019 29200 BREST|44109 44000 NANTES|49007 49000 ANGERS
OUEST 72181 72000 LE MANS
NAQ 33063 33000 BORDEAUX|87085 87000 LIMOGES|86194 86000 POITIERS|17300 17000 LA ROCHELLE
NAQ 64445 64000 PAU|64102 64100 BAYONNE
OCC 31555 31000 TOULOUSE|34172 34000 MONTPELLIER|30189 30000 NÎMES|66136 66000 PERPIGNAN
CVL 37261 37000 TOURS|45234 45000 ORLÉANS|21231 21000 DIJON|25056 25000 BESANÇON
CORSE 2A004 20000 AJACCIO|2A247 20137 PORTO-VECCHIO|2A041 20169 BONIFACIO
CORSE 2B033 20200 BASTIA|2B096 20250 CORTE|2B050 20260 CALVI
GUADELOUPE 97101 97139 LES ABYMES|97120 97110 POINTE-À-PITRE|97113 97190 LE GOSIER
GUADELOUPE 97103 97122 BAIE-MAHAULT|97117 97160 LE MOULE|97118 97170 PETIT-BOURG
GUADELOUPE 97128 97180 SAINTE-ANNE|97105 97100 BASSE-TERRE|97124 97120 SAINT-CLAUDE
MARTINIQUE 97209 97200 FORT-DE-FRANCE|97213 97232 LE LAMENTIN|97229 97233 SCHŒLCHER
MARTINIQUE 97222 97231 LE ROBERT|97207 97224 DUCOS|97210 97240 LE FRANÇOIS
MARTINIQUE 97228 97230 SAINTE-MARIE|97230 97220 LA TRINITÉ
GUYANE 97302 97300 CAYENNE|97307 97351 MATOURY|97309 97354 REMIRE-MONTJOLY|97304 97310 KOUROU
GUYANE 97305 97355 MACOURIA|97311 97320 SAINT-LAURENT-DU-MARONI|97306 97360 MANA
GUYANE 97360 97317 APATOU|97353 97370 MARIPASOULA|97308 97313 SAINT-GEORGES
REUNION 97411 97400 SAINT-DENIS|97418 97438 SAINTE-MARIE|97415 97460 SAINT-PAUL
REUNION 97407 97420 LE PORT|97408 97419 LA POSSESSION|97416 97410 SAINT-PIERRE
REUNION 97422 97430 LE TAMPON|97414 97450 SAINT-LOUIS|97409 97440 SAINT-ANDRÉ
REUNION 97410 97470 SAINT-BENOÎT
MAYOTTE 97611 97600 MAMOUDZOU|97610 97690 KOUNGOU|97607 97660 DEMBENI|97608 97615 DZAOUDZI
MAYOTTE 97615 97615 PAMANDZI|97616 97640 SADA|97602 97650 BANDRABOUA|97606 97620 CHIRONGUI
"""
_ARRONDISSEMENTS = [("IDF", "751", "750", 20, "PARIS"), ("AURA", "6938", "6900", 9, "LYON")]
_ARRONDISSEMENTS.append(("PACA", "132", "130", 16, "MARSEILLE"))
# Births abroad: 99 + INSEE country code, by residence cluster: (share, codes).
_ABROAD_METRO = (0.08, "350 352 351 139 127 134 131 109 341 335 326 243")  # Maghreb, EU...
# fmt: off
_ABROAD = {"GUYANE": (0.35, "410 416 437 428"), "MAYOTTE": (0.40, "397 333"),  # Haïti, Brésil,
           "GUADELOUPE": (0.08, "410 438"), "MARTINIQUE": (0.06, "410 439"),  # Suriname...
           "REUNION": (0.06, "333 390 397")}  # Madagascar, Maurice, Comores
_MOBILE = {"GUADELOUPE": "0690", "MARTINIQUE": "0696", "GUYANE": "0694", "REUNION": "0692",
           "MAYOTTE": "0639"}
_EXTRA_LAST = ("D'ALMEIDA", "D'ARC", "D'ANGELO", "N'DIAYE", "L'HERMITE", "D'ORNANO",
               "N'GUESSAN", "D'AUBIGNÉ", "L'HUILLIER", "SAINT-PRIX", "LOUIS-JOSEPH",
               "JEAN-BAPTISTE", "PIERRE-LOUIS", "CÉSAIRE", "BELLEMARE", "SAINT-ÉLOI", "MADI",
               "ATTOUMANI", "AHAMADA", "SAÏD", "ABDALLAH", "SOILIHI", "HO-A-SIM", "LA FONTAINE")
_SIMILAR = (  # twin first names that look alike: (name, sex, name, sex)
    ("LÉO", "M", "LÉA", "F"), ("LOUIS", "M", "LOUISE", "F"), ("JEAN", "M", "JEANNE", "F"),
    ("EMMANUEL", "M", "EMMANUELLE", "F"), ("DANIEL", "M", "DANIELLE", "F"),
    ("MICHEL", "M", "MICHELLE", "F"), ("GABRIEL", "M", "GABRIELLE", "F"),
    ("RAPHAËL", "M", "RAPHAËLLE", "F"), ("MATHIS", "M", "MATHYS", "M"),
    ("LUCAS", "M", "LUKAS", "M"), ("EMMA", "F", "EMMY", "F"), ("LÉNA", "F", "LÉA", "F"),
    ("CHLOÉ", "F", "CLOÉ", "F"), ("YANIS", "M", "YANN", "M"))
# fmt: on
_FAKE_NAMES = ("INCONNU", "X", "ANONYME", "PATIENT", "SOUS X", "TEST")
Commune = tuple[str, str, str, str]  # COG code, postal code, city, cluster


@dataclass(frozen=True)
class _Pools:
    last_fr: tuple[str, ...]
    last_other: tuple[str, ...]
    male: tuple[str, ...]
    female: tuple[str, ...]
    streets: tuple[str, ...]
    communes: tuple[Commune, ...]
    by_cluster: dict[str, tuple[Commune, ...]]
    neighbours: dict[str, tuple[str, ...]]


def _faker_names(locales: Sequence[str], attr: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for loc in locales:
        provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        for name in getattr(provider, attr):
            if all(c.isalpha() or c in " -'" for c in str(name)):
                seen.setdefault(str(name).upper(), None)
    return tuple(seen)


@cache
def _pools() -> _Pools:
    """Draw the vocabularies once (Faker is not called again)."""
    from faker import Faker

    fake = Faker("fr_FR")
    fake.seed_instance(0)
    communes: list[Commune] = []
    for line in _COMMUNES.strip().splitlines():
        cluster, items = line.split(" ", 1)
        for item in items.split("|"):
            code, postal, city = item.split(" ", 2)
            communes.append((code, postal, city, cluster))
    for cluster, code, postal, n, city in _ARRONDISSEMENTS:
        width = 5 - len(code)
        communes += [(f"{code}{i:0{width}d}", f"{postal}{i:0{width}d}", city, cluster)
                     for i in range(1, n + 1)]  # fmt: skip
    by_cluster: dict[str, list[Commune]] = defaultdict(list)
    for c in communes:
        by_cluster[c[3]].append(c)
    neighbours: dict[str, tuple[str, ...]] = {}
    for code, _, _, cluster in communes:
        same = [c[0] for c in by_cluster[cluster] if c[0] != code]
        n = 3 if code.startswith("97") else 2
        neighbours[code] = tuple([c for c in same if c[:n] == code[:n]] or same)
    fr = ("fr_FR", "fr_CA", "fr_CH")
    return _Pools(
        last_fr=_faker_names(fr, "last_names"),
        last_other=_faker_names(("pt_PT", "es_ES", "it_IT"), "last_names"),
        male=_faker_names(fr, "first_names_male"),
        female=_faker_names(fr, "first_names_female"),
        streets=tuple(dict.fromkeys(fake.street_name() for _ in range(3000))),
        communes=tuple(communes),
        by_cluster={k: tuple(v) for k, v in by_cluster.items()},
        neighbours=neighbours,
    )


def nir_key(first13: str) -> int:
    """NIR key: 97 − (the first 13 characters as a number mod 97), 2A → 19 and 2B → 18."""
    return 97 - int(first13.replace("2A", "19").replace("2B", "18")) % 97


def make_nir(sex: str, birth_date: date, birth_place: str, order: int) -> str:
    """The 15-character NIR: sex, year, month, birth place (COG), order number, key."""
    body = f"{1 if sex == 'M' else 2}{birth_date.year % 100:02d}{birth_date.month:02d}"
    body += f"{birth_place}{order:03d}"
    return f"{body}{nir_key(body):02d}"


_STRIPPED: dict[str, str] = {}


def strip_accents(text: str) -> str:
    """``"LÉA"`` → ``"LEA"`` (cached)."""
    out = _STRIPPED.get(text)
    if out is None:
        decomposed = unicodedata.normalize("NFKD", text.replace("Œ", "OE"))
        out = _STRIPPED[text] = "".join(c for c in decomposed if not unicodedata.combining(c))
    return out


def typo(rng: random.Random, text: str) -> str:
    """One substitution, deletion, insertion or transposition of a letter (never a no-op)."""
    for _ in range(10):
        i, op = rng.randrange(len(text)), rng.randrange(4)
        if op == 0:
            out = text[:i] + rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + text[i + 1 :]
        elif op == 1 and len(text) > 2:
            out = text[:i] + text[i + 1 :]
        elif op == 2:
            out = text[:i] + rng.choice("AEINRSTU") + text[i:]
        else:
            out = text[:i] + text[i + 1 : i + 2] + text[i] + text[i + 2 :]
        if out != text and out.strip(" -'"):
            return out
    return text + "E"


def _safe_date(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, 28) if month == 2 else day)


class _Person:
    """Mutable traits of one person (or of one record's draft, copied from the person)."""

    name: str
    used: str | None
    given: tuple[str, ...]
    born: date
    sex: str
    place: str | None
    res: Commune  # residence
    address: str
    phone: str
    has_ins: bool

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.homa = False
        self.kind: str | None = None
        self.related: int | None = None
        self.attrs: frozenset[str] = frozenset()


class _Generator:
    def __init__(self, seed: int, cfg: IdentityConfig) -> None:
        unknown = set(cfg.error_probs) - set(ERROR_TYPES)
        if unknown | (set(cfg.negative_rates) - set(NEGATIVE_KINDS)):
            raise ValueError(f"unknown error or negative kinds in {cfg}")
        self.rng, self.cfg, self.pools = random.Random(seed), cfg, _pools()
        probs = {**DEFAULT_ERROR_PROBS, **cfg.error_probs}
        self.p = {k: min(1.0, v * cfg.error_rate) for k, v in probs.items()}
        self.neg = [(k, cfg.negative_rates.get(k, 0.0)) for k in NEGATIVE_KINDS]
        self.authorities = [f"{AUTHORITY_ROOT}{101 + i}" for i in range(cfg.n_authorities)]
        self.ipp_next = [self.rng.randrange(100_000, 900_000) * 10 for _ in self.authorities]
        self.nir_orders: dict[str, int] = {}
        self.next_pid = 0
        rpp = cfg.records_per_person
        rpp = dict.fromkeys(range(rpp[0], rpp[1] + 1), 1.0) if isinstance(rpp, tuple) else rpp
        self.counts, total, acc = list(rpp), sum(rpp.values()), 0.0
        self.cum = [acc := acc + rpp[k] / total for k in self.counts]

    def _last(self) -> str:
        r, pools, rng = self.rng.random(), self.pools, self.rng
        if r < 0.03:
            return rng.choice(_EXTRA_LAST)
        if r < 0.06:
            return f"{rng.choice(pools.last_fr)}-{rng.choice(pools.last_fr)}"
        return rng.choice(pools.last_fr if r < 0.80 else pools.last_other)

    def _given(self, sex: str, avoid: str = "") -> tuple[str, ...]:
        rng = self.rng
        pool = self.pools.male if sex == "M" else self.pools.female
        first = rng.choice(pool)
        if rng.random() < 0.10:
            first = f"{rng.choice(('JEAN', 'PIERRE') if sex == 'M' else ('MARIE', 'ANNE'))}-{first}"
        if first == avoid:
            return self._given(sex, avoid)
        r = rng.random()
        return (first, *(rng.choice(pool) for _ in range(0 if r < 0.45 else 1 if r < 0.8 else 2)))

    def _place(self, p: _Person) -> str:
        rng, pools = self.rng, self.pools
        share, codes = _ABROAD.get(p.res[3], _ABROAD_METRO)
        if rng.random() < share:
            return "99" + rng.choice(codes.split())
        while True:
            pool = pools.by_cluster[p.res[3]] if rng.random() < 0.75 else pools.communes
            code = rng.choice(pool)[0]
            if p.born.year >= 1976 or code[:2] not in ("2A", "2B"):  # Corsica split in 1976
                return code

    def _home(self, p: _Person, cluster: str | None = None) -> None:
        rng = self.rng
        p.res = rng.choice(self.pools.by_cluster[cluster] if cluster else self.pools.communes)
        p.address = f"{rng.randint(1, 180)} {rng.choice(self.pools.streets)}"
        prefix = _MOBILE.get(p.res[3]) or rng.choice(("06", "07"))
        p.phone = f"{prefix}{rng.randrange(10 ** (10 - len(prefix))):0{10 - len(prefix)}d}"

    def _person(self, sex: str | None = None, ages: tuple[int, int] | None = None) -> _Person:
        rng = self.rng
        p = _Person(self.next_pid)
        self.next_pid += 1
        p.sex = sex or ("M" if rng.random() < 0.5 else "F")
        lo, hi = ages or ((0, 4) if rng.random() < 0.1 else (5, 95))
        p.born = REFERENCE_DATE - timedelta(days=rng.randint(lo * 365 + 1, hi * 365 + 364))
        self._home(p)
        p.place, p.name, p.given = self._place(p), self._last(), self._given(p.sex)
        adult = p.born.year <= REFERENCE_DATE.year - 23
        p.used = self._last() if p.sex == "F" and adult and rng.random() < 0.45 else None
        p.has_ins = rng.random() >= self.cfg.no_ins_rate
        if rng.random() < self.cfg.dubious_rate:
            p.attrs = frozenset({"DOUT"})
        return p

    def _family(self, room: int) -> list[_Person]:
        """One person, or a person and its hard negative (when ``room`` allows two)."""
        rng = self.rng
        if rng.random() < self.cfg.fictive_rate:
            p = self._person()
            p.attrs, p.has_ins, p.used = frozenset({"FICT"}), False, None
            if rng.random() < 0.5:  # obviously fake; else a plausible pseudonym
                p.name, p.given = rng.choice(_FAKE_NAMES), (rng.choice(("X", "INCONNU")),)
                p.born, p.place = date(p.born.year, 1, 1), None
            return [p]
        r, acc, kind = rng.random(), 0.0, ""
        for k, rate in self.neg:
            acc += rate
            if r < acc and room >= 2:
                kind = k
                break
        if not kind:
            return [self._person()]
        ages = {"sibling": (0, 30), "parent_child": (27, 95), "spouse": (22, 95)}.get(kind)
        a = self._person("M" if kind == "spouse" else None, ages)
        b = self._person("F" if kind == "spouse" else a.sex)
        b.kind, b.related = kind, a.pid
        if kind != "homonym":  # same household
            b.res, b.address, b.phone = a.res, a.address, a.phone
        if kind in ("twin", "homonym", "sibling"):
            b.name, b.used = a.name, None
        if kind == "twin":
            b.born, b.place, b.has_ins = a.born, a.place, a.has_ins
            if rng.random() < 0.3:
                n1, a.sex, n2, b.sex = rng.choice(_SIMILAR)
                a.given, b.given, a.used = (n1,), (n2,), a.used if a.sex == "F" else None
            else:
                b.sex = a.sex if rng.random() < 0.5 else ("F" if a.sex == "M" else "M")
                b.given = self._given(b.sex, avoid=a.given[0])
        elif kind == "homonym":
            b.given = a.given if rng.random() < 0.5 else (a.given[0], *b.given[1:])
            while b.born == a.born:
                b.born -= timedelta(days=rng.randint(1, 9000))
            while b.place == a.place:
                b.place = self._place(b)
            a.homa = b.homa = True
        elif kind == "sibling":
            a.used = None
            gap = timedelta(days=rng.randint(400, 12 * 365))
            b.born = a.born + gap if a.born + gap < REFERENCE_DATE else a.born - gap
            b.given = self._given(b.sex, avoid=a.given[0])
            b.place = a.place if rng.random() < 0.5 else self._place(b)
        elif kind == "parent_child":
            age_days = (REFERENCE_DATE - a.born).days
            b.born = a.born + timedelta(days=rng.randint(25 * 365, min(40 * 365, age_days - 30)))
            b.name, b.used = (a.used or a.name) if a.sex == "F" else a.name, None
            b.given = (a.given[0], *b.given[1:])
            b.place = a.res[0] if rng.random() < 0.6 else self._place(b)
        else:  # spouse: the wife uses the husband's name
            b.born = a.born + timedelta(days=rng.randint(-8 * 365, 8 * 365))
            b.born = min(b.born, REFERENCE_DATE - timedelta(days=18 * 366))
            b.used = a.name
            while b.name == a.name:
                b.name = self._last()
        if b.place and b.place[:2] in ("2A", "2B") and b.born.year < 1976:
            b.place = self._place(b)
        return [a, b]

    def _nir(self, p: _Person) -> str:
        prefix = f"{1 if p.sex == 'M' else 2}{p.born.year % 100:02d}{p.born.month:02d}{p.place}"
        order = self.nir_orders.get(prefix, self.rng.randrange(300)) + self.rng.randint(1, 3)
        if order > 999:
            raise RuntimeError(f"NIR order numbers exhausted for {prefix}")
        self.nir_orders[prefix] = order
        return make_nir(p.sex, p.born, p.place or "", order)

    def records(self, p: _Person) -> list[SourceRecord]:
        n = 1 if "FICT" in p.attrs else self.rng.choices(self.counts, cum_weights=self.cum)[0]
        nir = self._nir(p) if p.has_ins and p.place else None
        return [self._record(p, nir, k == 0) for k in range(n)]

    def _record(self, p: _Person, nir: str | None, first: bool) -> SourceRecord:
        rng, pr = self.rng, self.p
        a = rng.randrange(len(self.authorities))
        ipp = self.ipp_next[a]
        self.ipp_next[a] += 1
        attrs = p.attrs | {"HOMA"} if p.homa and rng.random() < 0.5 else p.attrs
        r = rng.random()
        if p.attrs:
            status = "PROV"
        elif nir:
            status = "QUAL" if r < 0.45 else "RECUP" if r < 0.6 else "VALI" if r < 0.7 else "PROV"
        else:
            status = "VALI" if r < 0.35 else "PROV"
        t, errors = p, list[str]()
        if not first:
            t = copy.copy(p)
            if status != "PROV" and nir and rng.random() < pr["status_prov"]:
                status = "PROV"
                errors.append("status_prov")
            if status in ("PROV", "VALI") and "FICT" not in p.attrs:
                self._trait_errors(t, errors)
            if rng.random() < pr["moved"]:
                self._home(t, p.res[3] if rng.random() < 0.7 else None)
                t.phone = t.phone if rng.random() < 0.5 else p.phone
                errors.append("moved")
        ins = nir if status in ("RECUP", "QUAL") else None
        born = None if errors and "birth_date_missing" in errors else t.born
        return SourceRecord(
            p.pid, self.authorities[a], str(ipp), t.name, t.used, t.given, born, t.sex, t.place,
            t.address, t.res[1], t.res[2], t.phone, ins, INS_SYSTEM if ins else None, status,
            attrs, tuple(errors), p.kind, p.related,
        )  # fmt: skip

    def _trait_errors(self, t: _Person, errors: list[str]) -> None:
        rng, pr = self.rng, self.p

        def hit(error: str, applicable: object = True) -> bool:
            if applicable and rng.random() < pr[error]:
                errors.append(error)
                return True
            return False

        if hit("used_name_as_birth_name", t.used):
            t.name = t.used or t.name
        if hit("used_name_missing", t.used):
            t.used = None
        if hit("birth_name_typo"):
            t.name = typo(rng, t.name)
        if hit("given_name_typo"):
            t.given = (typo(rng, t.given[0]), *t.given[1:])
        if hit("given_first_only", len(t.given) > 1):
            t.given = t.given[:1]
        if hit("given_truncated", "-" in t.given[0]):
            t.given = (t.given[0].split("-")[0], *t.given[1:])
        if hit("given_order", len(t.given) > 1 and t.given[0] != t.given[1]):
            t.given = (*t.given[1:], t.given[0])
        if hit("hyphen_space", "-" in t.name or " " in t.name):
            t.name = t.name.replace("-", "\0").replace(" ", "-").replace("\0", " ")
        if hit("apostrophe_dropped", "'" in t.name):
            t.name = t.name.replace("'", "" if rng.random() < 0.5 else " ")
        if hit("names_swapped"):
            t.name, t.given = t.given[0], (t.name, *t.given[1:])
        names = (t.name, t.used or "", *t.given)
        if hit("accents_dropped", any(strip_accents(n) != n for n in names)):
            t.name, t.given = strip_accents(t.name), tuple(map(strip_accents, t.given))
            t.used = t.used and strip_accents(t.used)
        if hit("case_changed"):
            t.name, t.given = t.name.title(), tuple(g.title() for g in t.given)
            t.used = t.used and t.used.title()
        y, m, d = t.born.year, t.born.month, t.born.day
        tens, units, y_max = y // 10 % 10, y % 10, REFERENCE_DATE.year
        if hit("day_month_swap", d <= 12 and d != m):
            t.born = date(y, d, m)
        elif hit("date_jan1", (d, m) != (1, 1)):
            t.born = date(y, 1, 1)
        elif hit("year_off_by_one"):
            up = rng.random() < 0.5 and y < REFERENCE_DATE.year - 1
            t.born = _safe_date(y + 1 if up else y - 1, m, d)
        elif hit("year_digit_typo", units != tens and 1900 < y + 9 * (units - tens) < y_max):
            t.born = _safe_date(y + 9 * (units - tens), m, d)  # digits swapped: 1987 -> 1978
        else:
            hit("birth_date_missing")
        if hit("birth_place_missing", t.place):
            t.place = None
        elif hit("birth_place_neighbour", t.place and t.place[:2] != "99"):
            t.place = rng.choice(self.pools.neighbours[t.place or ""])
        if hit("sex_missing"):
            t.sex = "U"
        elif hit("sex_wrong"):
            t.sex = "F" if t.sex == "M" else "M"

    def run(self, n_persons: int) -> Iterator[SourceRecord]:
        rng, spread = self.rng, self.cfg.spread
        heap: list[tuple[int, int, SourceRecord]] = []
        seq = clock = 0
        while self.next_pid < n_persons:
            for person in self._family(n_persons - self.next_pid):
                for i, rec in enumerate(self.records(person)):
                    due = clock + rng.randint(1, spread) if i and spread else clock
                    heapq.heappush(heap, (due, seq, rec))
                    seq += 1
                clock += 1
            while heap and heap[0][0] < clock:
                yield heapq.heappop(heap)[2]
        while heap:
            yield heapq.heappop(heap)[2]


def generate(
    n_persons: int, *, seed: int = 0, config: IdentityConfig | None = None, **overrides: Any
) -> Iterator[SourceRecord]:
    """Records of ``n_persons`` persons (hard negatives included), deterministic for ``seed``.
    ``overrides`` are :class:`IdentityConfig` fields: ``generate(100, error_rate=2.0)``."""
    return _Generator(seed, replace(config or IdentityConfig(), **overrides)).run(n_persons)


def _by_person(records: Sequence[SourceRecord]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        out[rec.person_id].append(i)
    return out


def pairs_truth(records: Sequence[SourceRecord]) -> set[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of records of the same person."""
    return {pair for idx in _by_person(records).values() for pair in combinations(idx, 2)}


def negative_pairs(records: Sequence[SourceRecord]) -> dict[str, set[tuple[int, int]]]:
    """Per hard-negative kind, index pairs ``(i, j)``, ``i < j``, of the two look-alikes."""
    by_person, out = _by_person(records), {k: set[tuple[int, int]]() for k in NEGATIVE_KINDS}
    for idx in by_person.values():
        rec = records[idx[0]]
        if rec.negative and rec.related_to is not None:
            for j in by_person.get(rec.related_to, ()):
                out[rec.negative].update((min(i, j), max(i, j)) for i in idx)
    return out


def summary(records: Iterable[SourceRecord]) -> dict[str, Any]:
    """Counts of records, persons, statuses, attributes, errors (records having each) and hard
    negatives (persons of each kind)."""
    count: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    persons: set[int] = set()
    negatives: dict[str, set[int]] = {k: set() for k in NEGATIVE_KINDS}
    for rec in records:
        persons.add(rec.person_id)
        count.update(("records", f"status:{rec.status}", *(f"attr:{a}" for a in rec.attributes)))
        count["records_with_ins"] += rec.ins is not None
        count["records_with_errors"] += bool(rec.errors)
        errors.update(rec.errors)
        if rec.negative:
            negatives[rec.negative].add(rec.person_id)
    return {
        **{k: count[k] for k in ("records", "records_with_ins", "records_with_errors")},
        "persons": len(persons),
        "status": {k[7:]: v for k, v in sorted(count.items()) if k.startswith("status:")},
        "attributes": {k[5:]: v for k, v in sorted(count.items()) if k.startswith("attr:")},
        "errors": {k: errors[k] for k in ERROR_TYPES},
        "negatives": {k: len(v) for k, v in negatives.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write JSON lines; ``--stats`` prints the summary on stderr."""
    parser = argparse.ArgumentParser(description="Labelled French patient identities.")
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="-", help="JSON lines file ('-': stdout)")
    parser.add_argument("--error-rate", type=float, default=1.0)
    parser.add_argument("--stats", action="store_true")
    args = parser.parse_args(argv)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115

    def written() -> Iterator[SourceRecord]:
        for rec in generate(args.persons, seed=args.seed, error_rate=args.error_rate):
            out.write(json.dumps(rec.as_dict(), ensure_ascii=False) + "\n")
            yield rec

    try:
        if args.stats:
            print(json.dumps(summary(written()), indent=2), file=sys.stderr)
        else:
            deque(written(), maxlen=0)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
