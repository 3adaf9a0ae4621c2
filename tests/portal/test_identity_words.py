"""The workbench explains every level of the matching model in French."""

from __future__ import annotations

import json

from enrs.identity.matching.definition import COMPARISONS
from enrs.identity.matching.model import MatchModel
from enrs.portal.identity_words import LEVELS, evidence


def test_every_level_of_the_definition_has_words_for_the_cell() -> None:
    missing = [
        f"{comp.name}.{lvl.label}"
        for comp in COMPARISONS
        for lvl in comp.levels
        if lvl.label not in LEVELS.get(comp.name, {})
    ]
    assert missing == []


def test_evidence_says_which_way_each_trait_weighs() -> None:
    levels = {"name": "exact", "given": "typo", "birth_date": "one_part", "phone": "else"}
    shown = evidence(MatchModel.load(), json.dumps(levels))
    assert [(e.text, e.effect) for e in shown] == [
        ("Nom de naissance identique", "pour"),
        ("Faute de frappe dans le premier prénom (l'un n'est pas un prénom)", "pour"),
        ("Dates de naissance différant du jour, du mois ou de l'année seul", "pour"),
        ("Numéros de téléphone différents", "contre"),
    ]
