"""The identity server's data in the cell's words (French): facilities by name, dates as
JJ/MM/AAAA, a task's score as a probability and each trait's agreement as a sentence, a decision
as "Rattachement par <name>"."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from enrs.identity.matching.model import MatchModel

# What each level of each comparison (identity/matching/definition.py) means, for the cell.
LEVELS: dict[str, dict[str, str]] = {
    "name": {
        "exact": "Nom de naissance identique",
        "swapped": "Nom et prénom inversés",
        "swapped_close": "Nom et prénom inversés, l'un mal orthographié",
        "used_name": "Le nom de naissance de l'une est le nom utilisé de l'autre",
        "jaro_winkler": "Noms de naissance d'orthographe proche",
        "token": "Un nom de naissance contenu dans l'autre (nom composé)",
        "phonetic": "Noms de naissance qui se prononcent de même",
        "else": "Noms de naissance différents",
    },
    "given": {
        "swapped": "Prénom et nom inversés",
        "swapped_close": "Prénom et nom inversés, l'un mal orthographié",
        "exact_rare": "Premier prénom identique, et rare",
        "exact": "Premier prénom identique",
        "in_list": "Le premier prénom de l'une figure parmi les prénoms de l'autre",
        "reordered": "Mêmes prénoms dans un autre ordre",
        "typo": "Faute de frappe dans le premier prénom (l'un n'est pas un prénom)",
        "jaro_winkler": "Premiers prénoms proches, mais deux prénoms distincts",
        "phonetic": "Premiers prénoms qui se prononcent de même",
        "else": "Prénoms différents",
    },
    "birth_date": {
        "null": "Date de naissance inconnue d'un côté",
        "exact": "Date de naissance identique",
        "day_month_swapped": "Jour et mois inversés",
        "jan_first": "Même année, l'une au 1er janvier (date approximative)",
        "one_digit": "Dates de naissance différant d'un seul chiffre",
        "one_part": "Dates de naissance différant du jour, du mois ou de l'année seul",
        "else": "Dates de naissance différentes",
    },
    "sex": {
        "null": "Sexe inconnu d'un côté",
        "exact": "Même sexe",
        "else": "Sexes différents",
    },
    "birth_place": {
        "null": "Lieu de naissance inconnu d'un côté",
        "exact": "Même lieu de naissance",
        "same_department": "Lieux de naissance du même département",
        "else": "Lieux de naissance différents",
    },
    "birth_order": {
        "null": "Rang de naissance (naissance multiple) inconnu d'un côté",
        "exact": "Même rang de naissance (naissance multiple)",
        "else": "Rangs de naissance différents : jumeaux ?",
    },
    "residence": {
        "null": "Adresse inconnue d'un côté",
        "same_address": "Même adresse",
        "close_address": "Adresses proches dans la même commune",
        "same_place": "Même commune ou code postal, autre adresse",
        "else": "Adresses dans des communes différentes",
    },
    "phone": {
        "null": "Téléphone inconnu d'un côté",
        "exact": "Même numéro de téléphone",
        "one_digit": "Numéros de téléphone différant d'un chiffre",
        "else": "Numéros de téléphone différents",
    },
    "email": {
        "null": "Courriel inconnu d'un côté",
        "exact": "Même adresse de courriel",
        "else": "Adresses de courriel différentes",
    },
    # the comparison of models before 2026-12-05 (tasks created then keep its levels)
    "postal_code": {
        "null": "Code postal inconnu d'un côté",
        "exact": "Même code postal",
        "else": "Codes postaux différents",
    },
}
DECISIONS_DONE = {
    "LINK": "Rattachement",
    "MERGE": "Fusion des deux patients",
    "KEEP_APART": "Maintien séparé",
    "UNLINK": "Détachement",
    "CONFIRM": "Confirmation du rattachement",
}
SEXES = {"M": "Masculin", "F": "Féminin", "U": "Inconnu"}
STATUSES = {
    "PROV": "Provisoire",
    "RECUP": "Récupérée",
    "VALI": "Validée",
    "QUAL": "Qualifiée",
}
ATTRIBUTES = {"DOUT": "Douteuse", "FICT": "Fictive", "HOMA": "Homonymie avérée"}
# A level weighs for or against the same person beyond this (bits of evidence); between, it
# says little either way.
_CLEAR = 1.0


@dataclass(frozen=True)
class TraitEvidence:
    text: str  # what agrees or differs, in French
    effect: str  # "pour", "contre" or "neutre"


def day(value: date | datetime | None) -> str:
    """JJ/MM/AAAA (a date) or JJ/MM/AAAA HH:MM (a time), empty for none."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    return value.strftime("%d/%m/%Y")


def percent(probability: float) -> str:
    """A probability as the cell reads it: ``99,8 %``; ``> 99,9 %`` near certainty."""
    if probability > 0.999:
        return "> 99,9 %"
    if probability < 0.001:
        return "< 0,1 %"
    return f"{probability * 100:.1f} %".replace(".", ",")


def evidence(model: MatchModel, levels_json: str | None) -> list[TraitEvidence]:
    """Each comparison of a task, in French, and whether it speaks for or against."""
    levels: dict[str, str] = json.loads(levels_json) if levels_json else {}
    out = []
    for name, level in levels.items():
        text = LEVELS.get(name, {}).get(level, f"{name} : {level}")
        try:
            weight = model.comparison(name).level(level).weight
        except (KeyError, ValueError):
            weight = 0.0
        effect = "pour" if weight > _CLEAR else "contre" if weight < -_CLEAR else "neutre"
        out.append(TraitEvidence(text, effect))
    return out


def facility(labels: Mapping[str, str], oid: str | None) -> str:
    """A facility by its registered name (or namespace), else its OID."""
    if not oid:
        return ""
    return labels.get(oid, oid)
