"""Build ``src/enrs/identity/matching/first_names_fr.tsv.gz`` from INSEE's « Fichier des prénoms ».

The source is INSEE's national file of first names (« Fichier des prénoms », fichier national,
Licence Ouverte / Etalab 2.0): https://www.insee.fr/fr/statistiques/2540004 (editions up to 2024,
``natYYYY.csv`` / ``natYYYY.txt``) and https://www.insee.fr/fr/statistiques/8595130 (edition 2025,
``prenoms-2025-nat.csv``); also on data.gouv.fr (« Fichier des prénoms depuis 1900 »). One row per
sex, first name and birth year with the number of births; the derived file keeps one line per
first name: the births over all years and both sexes.

    .venv/bin/python -m bench.first_names_build nat2021_csv.zip --edition 2022
        [--out FILE] [--page URL]

The source may be the ``.csv`` / ``.txt`` or the ``.zip`` INSEE publishes (one member). Read as a
stream, whichever layout: the header names the columns, ``sexe;preusuel;annais;nombre`` (editions
up to 2024; the oldest ``.txt`` ones tab-separated and Latin-1) or
``sexe;prenom;periode;valeur;rang`` (2025 edition onwards). Every name is normalised with
:func:`enrs.identity.traits.normalize_name` (upper case, no accents, hyphens and apostrophes as
spaces), names with the same key are merged (``LÉA`` and ``LEA``), ``_PRENOMS_RARES`` (the names
given too rarely, grouped by INSEE) is left out, births of an unknown year (``XXXX``) are kept.
Output: a first comment line ``# source: …, licence: …, built from FILE (YEAR range), total births
N``, a second one with what was left out, then ``NAME<TAB>COUNT`` sorted by name; gzip with a fixed
timestamp, so the same source gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from enrs.identity.traits import normalize_name

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "src/enrs/identity/matching/first_names_fr.tsv.gz"
)
SOURCE = "INSEE, Fichier des prénoms, fichier national"
PAGE = "https://www.insee.fr/fr/statistiques/2540004"
LICENCE = "Licence Ouverte / Etalab 2.0"
RARE = "_PRENOMS_RARES"
NAME_COLUMNS = ("preusuel", "prenom")
YEAR_COLUMNS = ("annais", "periode")
COUNT_COLUMNS = ("nombre", "valeur")


@contextmanager
def _open_binary(path: Path) -> Iterator[tuple[IO[bytes], str]]:
    """The source as bytes and its name: the file itself, or the single data member of INSEE's
    zip (named ``member in archive``)."""
    if path.suffix.lower() != ".zip":
        with path.open("rb") as stream:
            yield stream, path.name
        return
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.namelist() if m.lower().endswith((".csv", ".txt"))]
        if len(members) != 1:
            raise SystemExit(f"{path}: expected one .csv/.txt member, found {members}")
        with archive.open(members[0]) as stream:
            yield stream, f"{members[0]} in {path.name}"


def _decode(raw: bytes) -> str:
    """UTF-8 (recent editions), else Latin-1 (the oldest ``.txt`` ones)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _column(header: list[str], names: tuple[str, ...]) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise SystemExit(f"no column among {names} in the header {header}")


def read_counts(path: Path) -> tuple[Counter[str], dict[str, int], str]:
    """Births by normalised first name, the name of the file read, and what was seen: ``rows``,
    ``first_year``,
    ``last_year``, ``unknown_year`` (births of year ``XXXX``, kept), ``rare`` (births under
    ``_PRENOMS_RARES``, left out), ``empty`` (births whose name normalises to nothing)."""
    counts: Counter[str] = Counter()
    seen = {"rows": 0, "first_year": 9999, "last_year": 0, "unknown_year": 0, "rare": 0}
    seen["empty"] = 0
    with _open_binary(path) as (stream, source_name):
        lines = (_decode(raw).rstrip("\r\n") for raw in stream)
        first = next(lines)
        separator = ";" if ";" in first else "\t"
        header = [h.strip().lower() for h in first.split(separator)]
        i_name = _column(header, NAME_COLUMNS)
        i_year = _column(header, YEAR_COLUMNS)
        i_count = _column(header, COUNT_COLUMNS)
        for line in lines:
            if not line.strip():
                continue
            fields = line.split(separator)
            name, year, births = fields[i_name], fields[i_year].strip(), int(fields[i_count])
            seen["rows"] += 1
            if name.strip().upper() == RARE:
                seen["rare"] += births
                continue
            if year.isdigit():
                seen["first_year"] = min(seen["first_year"], int(year))
                seen["last_year"] = max(seen["last_year"], int(year))
            else:
                seen["unknown_year"] += births
            key = normalize_name(name)
            if key:
                counts[key] += births
            else:
                seen["empty"] += births
    return counts, seen, source_name


def write(
    counts: Counter[str],
    seen: dict[str, int],
    source_name: str,
    edition: str,
    out: Path,
    page: str = PAGE,
) -> None:
    """The derived file: two comment lines, then ``NAME<TAB>COUNT`` sorted by name."""
    total = sum(counts.values())
    edition_text = f" (édition {edition})" if edition else ""
    lines = [
        f"# source: {SOURCE}{edition_text} ({page}), licence: {LICENCE}, built from {source_name} "
        f"({seen['first_year']}-{seen['last_year']} range), total births {total}",
        f"# {len(counts)} names (normalised, sexes and years summed, births of unknown year "
        f"included: {seen['unknown_year']}); left out: {RARE} ({seen['rare']} births), "
        f"names normalising to nothing ({seen['empty']} births)",
    ]
    lines += [f"{name}\t{counts[name]}" for name in sorted(counts)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as packed,
    ):
        packed.write(("\n".join(lines) + "\n").encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path, help="INSEE national file (.csv, .txt or .zip)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--edition", default="", help='INSEE edition, e.g. "2022"')
    parser.add_argument("--page", default=PAGE, help="INSEE page the source was downloaded from")
    args = parser.parse_args(argv)
    counts, seen, source_name = read_counts(args.source)
    write(counts, seen, source_name, args.edition, args.out, args.page)
    print(
        f"{args.out}: {len(counts)} names, {sum(counts.values())} births "
        f"({seen['first_year']}-{seen['last_year']}, {seen['rows']} rows read, "
        f"{seen['rare']} rare births left out), {args.out.stat().st_size} bytes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
