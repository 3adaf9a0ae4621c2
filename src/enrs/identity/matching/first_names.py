"""How common a French first name is: births by first name in France, 1900–2021 (INSEE).

Provenance. The data is INSEE's « Fichier des prénoms » (état civil), national file, edition
published on 20 June 2022 (births 1900–2021; ``nat2021.csv`` in ``nat2021_csv.zip``, from
https://www.insee.fr/fr/statistiques/2540004, also on data.gouv.fr as « Fichier des prénoms
depuis 1900 »), under the Licence Ouverte / Open Licence 2.0 (Etalab): free reuse, the source
to be mentioned (« Source : Insee, Fichier des prénoms »). INSEE counts the first given name of
every person born in France (metropolitan France and the overseas departments but Mayotte) since
1900, from the birth registrations, by sex and year; names given too rarely are grouped under
``_PRENOMS_RARES``, and the births of the years where a name is rare under the year ``XXXX``.
The copy used comes from the public repository ``ramnathv/corise-r-for-ds``
(``data/nat2021_csv.zip``, commit ``befd4f4285df8a4f2c8cb8f9f5ee55f846703b59``, zip SHA-256
``cf452bd00484ad6910f36ad6f19fd68b36cdf6f5b205aebe06713f3b6954166a``: ``nat2021.csv`` of
12 486 486 bytes dated 2022-04-26, 686 538 rows), a copy of INSEE's download.

``first_names_fr.tsv.gz``, next to this module, is derived from it by
``bench/first_names_build.py``: each name normalised as
:func:`enrs.identity.traits.normalize_name` does (``LÉA`` and ``LEA`` → ``LEA``, ``JEAN-PIERRE``
→ ``JEAN PIERRE``), births summed over both sexes and all years (``XXXX`` included),
``_PRENOMS_RARES`` (1 718 677 births) left out: 32 957 names, 85 705 195 births, each name
counted at least 20 times. Its first line records source, licence, file, years and total. To
rebuild it from a newer INSEE edition:
``.venv/bin/python -m bench.first_names_build natYYYY_csv.zip --edition YYYY`` (the older
``sexe;preusuel;annais;nombre`` layout and the 2025 ``sexe;prenom;periode;valeur;rang`` one are
both read).

Use: :func:`count` tells a real first name (``MATHYS``, 27 826 births, beside ``MATHIS``'s
85 438) from a typo (``INCOLAS``, 0), and :func:`frequency` lets agreement on a rare name weigh
more than on a common one. A compound name is looked up whole (``JEAN PIERRE``), as INSEE lists
it.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import NamedTuple

from enrs.identity.traits import normalize_name

DATA_FILE = "first_names_fr.tsv.gz"


class FirstNames(NamedTuple):
    """The loaded file: births by normalised first name, and its provenance line."""

    counts: MappingProxyType[str, int]
    total: int
    source: str


@cache
def _load() -> FirstNames:
    """Read ``first_names_fr.tsv.gz`` (package data) once: ``NAME<TAB>COUNT`` lines after ``#``
    comment lines, the first of which is the provenance."""
    raw = resources.files("enrs.identity.matching").joinpath(DATA_FILE).read_bytes()
    counts: dict[str, int] = {}
    source = ""
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        if line.startswith("#"):
            source = source or line.lstrip("# ").strip()
            continue
        if line:
            name, births = line.split("\t")
            counts[name] = int(births)
    return FirstNames(MappingProxyType(counts), sum(counts.values()), source)


def count(name: str) -> int:
    """Births in France (1900–2021, INSEE) with this first name, normalised as
    :func:`enrs.identity.traits.normalize_name` does (``"Léna"`` → ``LENA``, ``"jean-pierre"``
    → ``JEAN PIERRE``, looked up whole); 0 for a name INSEE does not list (a typo such as
    ``INCOLAS``, or a name given fewer than about 20 times)."""
    return _load().counts.get(normalize_name(name), 0)


def births(normalised: str) -> int:
    """:func:`count` of a name already normalised (what the matcher holds), without
    normalising it again."""
    return _load().counts.get(normalised, 0)


def total() -> int:
    """All the births counted in the file (the sum of :func:`count` over its names)."""
    return _load().total


def frequency(name: str) -> float:
    """The share of births with this first name: ``count(name) / total()`` (0.0 if unknown)."""
    return count(name) / total()


def source() -> str:
    """The provenance line of the data file: source, licence, file, years, total births."""
    return _load().source
