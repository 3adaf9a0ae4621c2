"""Calibration of the matching model's probability (what ``$match`` returns as
``search.score`` and the workbench shows): a logistic function of the match weight fitted on
labelled candidate pairs, measured on the project's generator and on FEBRL 4 (not ours).

    .venv/bin/python -m bench.identity_calibration [--persons 3000] [--seed 11]
        [--febrl 2000] [--write-model F]

Pairs: every record, before it is fed, is matched against the registry fed so far
(``service.best_candidates``, each regional patient's best identity: what ``$match`` ranks);
each candidate is a pair (weight, same person?). Then the record is fed, as a facility would.
The fit (Platt scaling: p = 1 / (1 + exp(-(a·w + b))), Newton's method on the log loss) uses the
generator's pairs; FEBRL's pairs only measure it. Printed: a and b; per data set the Brier
score and log loss of the uncalibrated posterior (prior 1/2: a = ln 2, b = 0) and of the
calibrated one; a reliability table by weight band (mean predicted vs observed frequency).
``--write-model`` writes the model with its calibration (and a new version) to F.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from datetime import date
from itertools import pairwise
from pathlib import Path

from bench.identity_data import SourceRecord, generate
from bench.identity_febrl import FACILITY_A, FACILITY_B, febrl_file, to_record
from bench.identity_quality import CONFIG, to_input
from enrs.identity import service
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import DEFAULT_MODEL, MatchModel
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head

Pair = tuple[float, int]  # weight, 1 when the same person
BANDS = (-math.inf, 0.0, 7.0, 14.0, 20.0, 26.0, math.inf)


def candidate_pairs(records: Sequence[SourceRecord], model: MatchModel, folder: Path) -> list[Pair]:
    url = f"sqlite:///{folder / 'calibration.db'}"
    upgrade_head(url)
    db, matcher = Database(url), EmbeddedMatcher(model)
    person: dict[int, int] = {}  # source id -> person id
    pairs: list[Pair] = []
    for rec in records:
        data = to_input(rec)
        with db.transaction() as session:
            traits = service.prepare(data, CONFIG).traits
            for scored in service.best_candidates(session, matcher, traits):
                pairs.append((scored.score.weight, int(person[scored.source.id] == rec.person_id)))
            result = service.feed(session, matcher, data, actor="bench", config=CONFIG)
            person[result.source_id] = rec.person_id
    db.dispose()
    return pairs


def fit(pairs: Sequence[Pair], iterations: int = 100) -> tuple[float, float]:
    """Logistic regression of the label on the weight: Newton's method with step halving
    (a near-separable set makes plain Newton overshoot)."""
    a, b = math.log(2), 0.0
    loss = scores(pairs, a, b)[1]
    for _ in range(iterations):
        ga = gb = haa = hab = hbb = 0.0
        for w, y in pairs:
            p = _sigmoid(a * w + b)
            ga += (p - y) * w
            gb += p - y
            v = p * (1 - p)
            haa, hab, hbb = haa + v * w * w, hab + v * w, hbb + v
        haa, hbb = haa + 1e-3, hbb + 1e-3
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        step = 1.0
        while step > 1e-6:
            trial = scores(pairs, a - step * da, b - step * db)[1]
            if trial < loss:
                break
            step /= 2
        else:
            break
        a, b, loss = a - step * da, b - step * db, trial
    return a, b


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def scores(pairs: Sequence[Pair], a: float, b: float) -> tuple[float, float]:
    """Brier score and log loss."""
    eps = 1e-12
    brier = sum((_sigmoid(a * w + b) - y) ** 2 for w, y in pairs) / len(pairs)
    loss = -sum(
        math.log(max(eps, p if y else 1 - p)) for w, y in pairs for p in [_sigmoid(a * w + b)]
    ) / len(pairs)
    return brier, loss


def reliability(pairs: Sequence[Pair], a: float, b: float) -> list[str]:
    out = []
    for low, high in pairwise(BANDS):
        band = [(w, y) for w, y in pairs if low <= w < high]
        if not band:
            continue
        old = sum(_sigmoid(math.log(2) * w) for w, _ in band) / len(band)
        new = sum(_sigmoid(a * w + b) for w, _ in band) / len(band)
        seen = sum(y for _, y in band) / len(band)
        out.append(f"  weight [{low:>5}, {high:>5}): {len(band):>6} pairs, observed {seen:.4f}, "
                   f"predicted uncalibrated {old:.4f}, calibrated {new:.4f}")  # fmt: skip
    return out


def _febrl(first: int, count: int) -> list[SourceRecord]:
    originals = febrl_file("dataset4a.csv")[first : first + count]
    kept = {r["rec_id"].split("-")[1] for r in originals}
    dups = [r for r in febrl_file("dataset4b.csv") if r["rec_id"].split("-")[1] in kept]
    records = [x for x in (to_record(r, FACILITY_A) for r in originals) if x]
    return records + [x for x in (to_record(r, FACILITY_B) for r in dups) if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--febrl", type=int, default=2000, help="FEBRL 4 originals per half")
    parser.add_argument("--fit-on", choices=("generator", "both"), default="both")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--write-model", type=Path)
    args = parser.parse_args(argv)
    model = MatchModel.load(args.model)
    sets = {
        "generator, fit half": list(generate(args.persons, seed=args.seed)),
        "generator, held out": list(generate(args.persons, seed=args.seed + 1)),
        "FEBRL 4, fit half": _febrl(0, args.febrl),
        "FEBRL 4, held out": _febrl(args.febrl, args.febrl),
    }
    pairs: dict[str, list[Pair]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, records) in enumerate(sets.items()):
            (Path(tmp) / str(n)).mkdir()
            pairs[name] = candidate_pairs(records, model, Path(tmp) / str(n))
    train = pairs["generator, fit half"]
    if args.fit_on == "both":
        train = train + pairs["FEBRL 4, fit half"]
    a, b = fit(train)
    same = sum(y for _, y in train)
    print(f"model {model.version}: fitted on {len(train)} pairs ({same} same person, "
          f"{args.fit_on}): slope {a:.4f}, intercept {b:.4f}")  # fmt: skip
    for name, found in pairs.items():
        old, new = scores(found, math.log(2), 0.0), scores(found, a, b)
        print(f"{name}: {len(found)} pairs ({sum(y for _, y in found)} same person); Brier "
              f"{old[0]:.4f} -> {new[0]:.4f}, log loss {old[1]:.4f} -> {new[1]:.4f}")  # fmt: skip
        print("\n".join(reliability(found, a, b)))
    for w in (14.0, 20.0, 26.0, 30.0, 40.0):
        print(f"  weight {w:>4}: uncalibrated {_sigmoid(math.log(2) * w):.6f}, "
              f"calibrated {_sigmoid(a * w + b):.6f}")  # fmt: skip
    if args.write_model:
        data = json.loads((args.model or DEFAULT_MODEL).read_text())
        data["version"] = f"{date.today().isoformat()}.1"
        data["calibration"] = {
            "slope": round(a, 6),
            "intercept": round(b, 6),
            "fitted_on": f"bench/identity_calibration.py --fit-on {args.fit_on}: "
            f"{len(train)} candidate pairs of the generator ({args.persons} persons, seed "
            f"{args.seed})"
            + (f" and of FEBRL 4 (originals 0-{args.febrl - 1})" if args.fit_on == "both" else ""),
        }
        args.write_model.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        print(f"written: {args.write_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
