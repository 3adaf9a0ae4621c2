"""National directory extractions (Annuaire Santé, MSSanté, FINESS), generated in their real
published formats, at national size, deterministically and line by line.

Usage::

    python -m bench.directory_data OUTDIR [--activities 2500000] [--seed 0] [--zip]
    python -m bench.directory_data OUT2 --seed 1 --extraction-of 0 --changes 0.02  # next day
    python -m bench.directory_data OUT --activities 2000 --bad-lines 3 --truncate

and from Python: ``generate(outdir, activities, seed=0, **options) -> Manifest``. The same
seed and options give byte-identical files. Nothing is held per professional: professional
``i`` is drawn from a random stream seeded by ``(seed, i // 512)``, so any of them can be made
again; only the FINESS establishments (about one per 25 activity lines) are kept, as one
pre-joined string each, for the activity lines that name them. At national size (2.5 M activity
lines, 1.9 M professionals, about 1.5 GB of files) it takes about 40 s and 140 MB on one core.

Files written (``TS`` = ``AAAAMMJJhhmm``, the extraction time; the next extraction is a day
later):

- ``PS_LibreAcces_Personne_activite_TS.txt``: ``|``-separated, one header row of the 52 column
  names (``ACTIVITY_COLUMNS``), a trailing ``|`` on every line, UTF-8 (``--encoding latin-1``
  for an older extraction: ``Œ``, ``œ`` and the like are then transliterated). One line per
  activity: a professional with three activities has three lines, the professional's columns
  repeated. Type 8 (RPPS, 11 digits with a Luhn key) or 0 (ADELI, 9 characters);
  ``Identification nationale PP`` = type + number. About 1.3 lines per professional (1 to 5),
  nurses and doctors the largest groups, about 3 % of lines overseas (971-974, 976), about 5 %
  of professionals with a single line whose structure columns are empty (no declared site),
  about half the lines naming a FINESS establishment of the FINESS file below (hospitals,
  clinics, EHPAD, officines); liberal cabinets (``R1…`` ids) and other employers (``C`` +
  SIRET) fill the rest. RPPS numbers, SIRENs and SIRETs have valid Luhn keys, from
  ``enrs.directory.identifiers.luhn_key`` (tabulated by blocks of digits: the Luhn sum adds up
  over digit positions).
- ``PS_LibreAcces_SavoirFaire_TS.txt`` (13 columns, ``SAVOIR_FAIRE_COLUMNS``, about 0.55 lines
  per professional) and ``PS_LibreAcces_Dipl_AutExerc_TS.txt`` (13 columns,
  ``DIPLOMA_COLUMNS``, about one line per professional): same conventions.
  ``--zip`` also writes ``PS_LibreAcces_TS.zip`` holding the three files.
- ``Extraction_Correspondance_MSSante_TS.txt``: 31 columns (``MSSANTE_COLUMNS``), same
  conventions, UTF-8: the organisational (``ORG``) and applicative (``APP``) mailboxes of
  FINESS establishments, then personal ones (``PER``, about 0.5 per professional).
  ``--zip`` also writes ``Extraction_Correspondance_MSSante_TS.zip``.
- ``etalab-cs1100507-stock-AAAAMMJJ-hhmm.csv`` (FINESS establishments, geolocated): ``;``,
  Windows-1252, a first line ``finess;etalab;<n>;<AAAA-MM-JJ>``, then ``structureet`` lines (32
  fields, ``STRUCTUREET_FIELDS``, the last one ``numuai`` empty, hence a line ending in ``;``)
  and then one ``geolocalisation;nofinesset;coordxet;coordyet;sourcecoordet;datemaj`` line per
  establishment, in Lambert 93 (EPSG:2154) in metropolitan France and in the local UTM zone
  overseas (EPSG:5490 Antilles, 2972 Guyane, 2975 La Réunion, 4471 Mayotte), projected with
  pyproj from the commune's position. A few names hold a ``"`` and are quoted CSV-style, as in
  the real file. About 100 000 establishments at national size (one per 25 activity lines).

Next extraction (``--extraction-of P --changes F``): the population of seed ``P`` (give the same
``--activities``), of which a fraction ``F`` of professionals changed (name, cabinet address, a
new activity, an activity ended), ``F / 2`` new ones (appended) and ``F / 4`` gone, drawn with
``--seed``; the FINESS file is unchanged but for its date. The exact counts are printed and
returned (``Diff``): professionals new / gone / changed (by kind) / unchanged, activity lines
added / removed, and activities added / removed / modified, an activity being known by the
professional and its structure (``Identifiant technique de la structure``): a cabinet's new
address modifies one activity, a new name changes the professional, not its activities.

Faults (activity file only): ``--bad-lines K`` replaces K lines, at positions drawn from the
seed, by lines of 20 fields (their 1-based line numbers, header = 1, are printed);
``--truncate`` cuts the file in the middle of a line after its middle, with no final newline;
``--wrong-header renamed`` writes ``Numero FINESS site`` (no accent) in the header;
``--wrong-header missing`` leaves the ``Code profession`` column out of the header and lines.

Where the formats come from (public repositories read through the code search; "not
confirmed" means only one source, a test fixture, or none was found):

- Activity columns: ``shared/reference/directory.md``; the same 52 names and order in the
  header parsed by a Python test (``PersonneActiviteParser``), and a pandas read of the real
  file naming a 53rd column ``Unnamed: 52`` (the trailing ``|``; ``Unnamed: 13`` for the
  diploma and savoir-faire files). Value forms (``M``/``MME``, ``DR``/``Docteur``, ``C``/``Civil``,
  ``L``/``S``, ``SA07``, ``CNOM/CNOM/CNOM``, ``ARS/CPAM/CPAM``, ``C`` + SIRET structure ids,
  old ids ``3`` + SIRET, ``99132``-style country codes, ``CP CITY`` in ``Bureau cedex``) come
  from real lines quoted in that test. Recent extractions reportedly add ``Code rôle``,
  ``Libellé rôle``, ``Code genre activité``, ``Libellé genre activité`` (QrCommunication/
  rppsapi-js ``docs/data-sources.md``, and a generator script): ``--role-columns`` appends
  them (role empty, genre ``GENR01``); not confirmed, and off by default.
- SavoirFaire and Dipl_AutExerc headers: ``flrt/ref-rpps-ne`` ``practitioner.py``
  (``KEYS_SAV_FAIRE``, ``KEYS_DIPLOME``: 13 columns each, in this order) for the order; the
  French labels from QrCommunication/rppsapi-php ``src/Dto/DiplomeEtAutorisation.php``,
  QrCommunication/rppsapi-js ``src/sources/diplomes.ts`` / ``docs/data-sources.md``, a Laravel
  migration listing the 13 diploma labels and a generator script listing both headers.
- MSSanté header (31 columns): ``flrt/ref-rpps-ne`` ``practitioner.py`` ``KEYS_MSSANTE`` (order,
  31 names) and an ANS-format test fixture listing the 31 French labels (repository not shown
  by the search), whose labels also appear in QrCommunication/rppsapi-js
  ``src/sources/mssante.ts``. Types ``PER``/``ORG``/``APP``: rppsapi-js
  ``docs/data-sources.md``. Not confirmed: the trailing ``|`` (that fixture has none; this
  file follows directory.md's "same conventions"), the ``Dématérialisation`` values
  (``True``/``False`` here), ``Type identifiant structure`` (``1`` FINESS, ``3`` SIRET here),
  civility as a code, ``Pays structure BAL`` (``France``), the national ``*.mssante.fr``
  domains by profession.
- FINESS: the first line ``finess;etalab;<n>;<date>`` (n seen as 96, 98, 106, 111) in several
  parsers, and fifteen lines copied verbatim from ``etalab-cs1100502-stock-20260512-0339.csv``
  in sister-software/mailwoman's FINESS adapter test (structureet layout, ISO dates, ``9A``-
  ``9F`` overseas department codes, overseas FINESS numbers ``9701``-``9704``, Mayotte
  ``9805``, quoted names, categories 355/101/365/146/500/189/223 with their aggregates and
  tariff modes). ``sourcecoordet``: ``2,ATLASANTE,100,BDADRESSE,EPSG:2154 RGF93 / Lambert-93
  (Métropole)``, ``2,ATLASANTE,96,BAN,EPSG:5490 RGAF09/UTM Zone 20N (Antilles)`` and
  ``2,ATLASANTE,89,BAN,EPSG:4471 RGM04/UTM zone 38S (Mayotte)`` in two 2026 test fixtures; the
  Guyane (EPSG:2972) and Réunion (EPSG:2975) labels are built the same way, not confirmed.
  Older files wrote ``1,ATLASANTE,100,IGN,BD_ADRESSE,V2.2,LAMBERT_93`` (``UTM_N20``,
  ``UTM_N22``, ``UTM_S40``, ``UTM_S38``), seen in several parsers: ``geo_style="legacy"``.
  The file name ``etalab-cs1100507-stock-*`` (the geolocated extraction) is from parsers too.
  Pharmacy category 620 / 3301 is not confirmed.
- Nomenclatures: ANS terminologies IG (``ansforge``, interop.esante.gouv.fr/terminologies):
  TRE_G15 professions (95 is Diététicien, 96 Psychomotricien, 98 Manipulateur ERM), TRE_R38
  specialties and TRE_R39 competences (JDV_J107), TRE_R04 savoir-faire types, TRE_R02
  sectors, TRE_R48 state diplomas. The extraction writes labels without the ``(SM)`` suffix
  and with its own capitals (``Qualifié en Médecine Générale``, seen in parsers of the real
  file); other labels follow the nomenclature. Not confirmed: the diploma and pharmacist
  section labels, the ``F`` + FINESS structure ids, the ``E``/``M`` categories, the
  registration authorities other than CNOM and ARS/CPAM, line endings (``\\n`` here).

Data pools: family and given names and street names from ``bench.identity_data`` (Faker,
drawn once), one to four communes per department with their INSEE and postal codes and an
approximate position; all persons are made up.
"""

from __future__ import annotations

import argparse
import bisect
import codecs
import json
import random
import shutil
import sys
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import IO, Any, NamedTuple

from enrs.directory.identifiers import luhn_key

# ------------------------------------------------------------------ formats

ACTIVITY_COLUMNS = (
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Code civilité d'exercice",
    "Libellé civilité d'exercice",
    "Code civilité",
    "Libellé civilité",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Code profession",
    "Libellé profession",
    "Code catégorie professionnelle",
    "Libellé catégorie professionnelle",
    "Code type savoir-faire",
    "Libellé type savoir-faire",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Code mode exercice",
    "Libellé mode exercice",
    "Numéro SIRET site",
    "Numéro SIREN site",
    "Numéro FINESS site",
    "Numéro FINESS établissement juridique",
    "Identifiant technique de la structure",
    "Raison sociale site",
    "Enseigne commerciale site",
    "Complément destinataire (coord. structure)",
    "Complément point géographique (coord. structure)",
    "Numéro Voie (coord. structure)",
    "Indice répétition voie (coord. structure)",
    "Code type de voie (coord. structure)",
    "Libellé type de voie (coord. structure)",
    "Libellé Voie (coord. structure)",
    "Mention distribution (coord. structure)",
    "Bureau cedex (coord. structure)",
    "Code postal (coord. structure)",
    "Code commune (coord. structure)",
    "Libellé commune (coord. structure)",
    "Code pays (coord. structure)",
    "Libellé pays (coord. structure)",
    "Téléphone (coord. structure)",
    "Téléphone 2 (coord. structure)",
    "Télécopie (coord. structure)",
    "Adresse e-mail (coord. structure)",
    "Code Département (structure)",
    "Libellé Département (structure)",
    "Ancien identifiant de la structure",
    "Autorité d'enregistrement",
    "Code secteur d'activité",
    "Libellé secteur d'activité",
    "Code section tableau pharmaciens",
    "Libellé section tableau pharmaciens",
)
ROLE_COLUMNS = ("Code rôle", "Libellé rôle", "Code genre activité", "Libellé genre activité")
SAVOIR_FAIRE_COLUMNS = (
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Code profession",
    "Libellé profession",
    "Code catégorie professionnelle",
    "Libellé catégorie professionnelle",
    "Code type savoir-faire",
    "Libellé type savoir-faire",
    "Code savoir-faire",
    "Libellé savoir-faire",
)
DIPLOMA_COLUMNS = (
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Code type diplôme obtenu",
    "Libellé type diplôme obtenu",
    "Code diplôme obtenu",
    "Libellé diplôme obtenu",
    "Code type autorisation",
    "Libellé type autorisation",
    "Code discipline autorisation",
    "Libellé discipline autorisation",
)
MSSANTE_COLUMNS = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
)
STRUCTUREET_FIELDS = (
    "section",
    "nofinesset",
    "nofinessej",
    "rs",
    "rslongue",
    "complrs",
    "compldistrib",
    "numvoie",
    "typvoie",
    "voie",
    "compvoie",
    "lieuditbp",
    "commune",
    "departement",
    "libdepartement",
    "ligneacheminement",
    "telephone",
    "telecopie",
    "categetab",
    "libcategetab",
    "categagretab",
    "libcategagretab",
    "siret",
    "codeape",
    "codemft",
    "libmft",
    "codesph",
    "libsph",
    "dateouv",
    "dateautor",
    "maj",
    "numuai",
)
GEOLOCALISATION_FIELDS = (
    "section",
    "nofinesset",
    "coordxet",
    "coordyet",
    "sourcecoordet",
    "datemaj",
)

REFERENCE_TIME = datetime(2026, 11, 30, 8, 39)  # the extraction time of every base extraction
BLOCK = 512  # professionals per random stream
ACTIVITIES_PER_ESTABLISHMENT = 25  # 2.5 M activity lines → 100 000 FINESS establishments

# ------------------------------------------------------------------ departments and communes

# code|label|FINESS code|population (thousands), then its communes, "INSEE postal Name@lat,lon"
# fmt: off
_DEPARTMENTS = """
01|Ain|01|660
    01053 01000 Bourg-en-Bresse@46.21,5.23
    01451 01440 Viriat@46.25,5.22
02|Aisne|02|530
    02408 02000 Laon@49.56,3.62
    02691 02100 Saint-Quentin@49.85,3.29
03|Allier|03|335
    03190 03000 Moulins@46.57,3.33
    03310 03100 Montluçon@46.34,2.60
04|Alpes-de-Haute-Provence|04|165
    04070 04000 Digne-les-Bains@44.09,6.24
05|Hautes-Alpes|05|141
    05061 05000 Gap@44.56,6.08
06|Alpes-Maritimes|06|1095
    06088 06000 Nice@43.70,7.27
    06029 06400 Cannes@43.55,7.01
07|Ardèche|07|330
    07186 07000 Privas@44.74,4.60
    07010 07100 Annonay@45.24,4.67
08|Ardennes|08|270
    08105 08000 Charleville-Mézières@49.77,4.72
09|Ariège|09|153
    09122 09000 Foix@42.97,1.61
10|Aube|10|310
    10387 10000 Troyes@48.30,4.08
11|Aude|11|375
    11069 11000 Carcassonne@43.21,2.35
    11262 11100 Narbonne@43.18,3.00
12|Aveyron|12|280
    12202 12000 Rodez@44.35,2.57
13|Bouches-du-Rhône|13|2045
    13055 13001 Marseille@43.30,5.37
    13001 13100 Aix-en-Provence@43.53,5.45
14|Calvados|14|700
    14118 14000 Caen@49.18,-0.37
15|Cantal|15|144
    15014 15000 Aurillac@44.93,2.44
16|Charente|16|352
    16015 16000 Angoulême@45.65,0.16
17|Charente-Maritime|17|655
    17300 17000 La Rochelle@46.16,-1.15
    17299 17300 Rochefort@45.94,-0.96
18|Cher|18|300
    18033 18000 Bourges@47.08,2.40
19|Corrèze|19|240
    19272 19000 Tulle@45.27,1.77
    19031 19100 Brive-la-Gaillarde@45.16,1.53
2A|Corse-du-Sud|2A|160
    2A004 20000 Ajaccio@41.93,8.74
    2A247 20137 Porto-Vecchio@41.59,9.28
2B|Haute-Corse|2B|182
    2B033 20200 Bastia@42.70,9.45
    2B096 20250 Corte@42.31,9.15
21|Côte-d'Or|21|535
    21231 21000 Dijon@47.32,5.04
22|Côtes-d'Armor|22|602
    22278 22000 Saint-Brieuc@48.51,-2.76
23|Creuse|23|116
    23096 23000 Guéret@46.17,1.87
24|Dordogne|24|413
    24322 24000 Périgueux@45.18,0.72
25|Doubs|25|545
    25056 25000 Besançon@47.24,6.02
26|Drôme|26|520
    26362 26000 Valence@44.93,4.89
27|Eure|27|600
    27229 27000 Évreux@49.02,1.15
28|Eure-et-Loir|28|430
    28085 28000 Chartres@48.45,1.49
29|Finistère|29|920
    29019 29200 Brest@48.39,-4.49
    29232 29000 Quimper@48.00,-4.10
30|Gard|30|755
    30189 30000 Nîmes@43.84,4.36
    30007 30100 Alès@44.13,4.08
31|Haute-Garonne|31|1420
    31555 31000 Toulouse@43.60,1.44
32|Gers|32|192
    32013 32000 Auch@43.65,0.59
33|Gironde|33|1650
    33063 33000 Bordeaux@44.84,-0.58
    33281 33700 Mérignac@44.84,-0.65
34|Hérault|34|1200
    34172 34000 Montpellier@43.61,3.88
    34032 34500 Béziers@43.34,3.22
35|Ille-et-Vilaine|35|1100
    35238 35000 Rennes@48.11,-1.68
36|Indre|36|217
    36044 36000 Châteauroux@46.81,1.69
37|Indre-et-Loire|37|610
    37261 37000 Tours@47.39,0.69
38|Isère|38|1280
    38185 38000 Grenoble@45.19,5.72
39|Jura|39|258
    39300 39000 Lons-le-Saunier@46.67,5.55
40|Landes|40|415
    40192 40000 Mont-de-Marsan@43.89,-0.50
    40088 40100 Dax@43.71,-1.05
41|Loir-et-Cher|41|330
    41018 41000 Blois@47.59,1.33
42|Loire|42|765
    42218 42000 Saint-Étienne@45.44,4.39
    42187 42300 Roanne@46.04,4.07
43|Haute-Loire|43|228
    43157 43000 Le Puy-en-Velay@45.04,3.88
44|Loire-Atlantique|44|1450
    44109 44000 Nantes@47.22,-1.55
    44184 44600 Saint-Nazaire@47.27,-2.21
45|Loiret|45|680
    45234 45000 Orléans@47.90,1.91
46|Lot|46|174
    46042 46000 Cahors@44.45,1.44
47|Lot-et-Garonne|47|330
    47001 47000 Agen@44.20,0.62
48|Lozère|48|76
    48095 48000 Mende@44.52,3.50
49|Maine-et-Loire|49|820
    49007 49000 Angers@47.47,-0.55
    49099 49300 Cholet@47.06,-0.88
50|Manche|50|495
    50502 50000 Saint-Lô@49.12,-1.09
    50129 50100 Cherbourg-en-Cotentin@49.64,-1.62
51|Marne|51|565
    51454 51100 Reims@49.26,4.03
    51108 51000 Châlons-en-Champagne@48.96,4.36
52|Haute-Marne|52|170
    52121 52000 Chaumont@48.11,5.14
53|Mayenne|53|307
    53130 53000 Laval@48.07,-0.77
54|Meurthe-et-Moselle|54|730
    54395 54000 Nancy@48.69,6.18
55|Meuse|55|182
    55029 55000 Bar-le-Duc@48.77,5.16
56|Morbihan|56|760
    56260 56000 Vannes@47.66,-2.76
    56121 56100 Lorient@47.75,-3.37
57|Moselle|57|1045
    57463 57000 Metz@49.12,6.18
    57672 57100 Thionville@49.36,6.17
58|Nièvre|58|200
    58194 58000 Nevers@46.99,3.16
59|Nord|59|2610
    59350 59000 Lille@50.63,3.06
    59512 59100 Roubaix@50.69,3.18
    59599 59200 Tourcoing@50.72,3.16
    59183 59140 Dunkerque@51.03,2.38
60|Oise|60|830
    60057 60000 Beauvais@49.43,2.08
    60159 60200 Compiègne@49.42,2.83
61|Orne|61|280
    61001 61000 Alençon@48.43,0.09
62|Pas-de-Calais|62|1460
    62041 62000 Arras@50.29,2.78
    62193 62100 Calais@50.95,1.86
    62160 62200 Boulogne-sur-Mer@50.73,1.61
63|Puy-de-Dôme|63|665
    63113 63000 Clermont-Ferrand@45.78,3.08
64|Pyrénées-Atlantiques|64|690
    64445 64000 Pau@43.30,-0.37
    64102 64100 Bayonne@43.49,-1.47
65|Hautes-Pyrénées|65|230
    65440 65000 Tarbes@43.23,0.08
66|Pyrénées-Orientales|66|480
    66136 66000 Perpignan@42.70,2.90
67|Bas-Rhin|67|1150
    67482 67000 Strasbourg@48.58,7.75
68|Haut-Rhin|68|770
    68224 68100 Mulhouse@47.75,7.34
    68066 68000 Colmar@48.08,7.36
69|Rhône|69|1900
    69123 69003 Lyon@45.76,4.84
    69266 69100 Villeurbanne@45.77,4.88
70|Haute-Saône|70|233
    70550 70000 Vesoul@47.62,6.15
71|Saône-et-Loire|71|550
    71270 71000 Mâcon@46.31,4.83
    71076 71100 Chalon-sur-Saône@46.78,4.85
72|Sarthe|72|565
    72181 72000 Le Mans@48.00,0.20
73|Savoie|73|440
    73065 73000 Chambéry@45.57,5.92
74|Haute-Savoie|74|830
    74010 74000 Annecy@45.90,6.13
75|Paris|75|2130
    75056 75013 Paris@48.83,2.36
    75056 75015 Paris@48.84,2.29
    75056 75018 Paris@48.89,2.34
    75056 75011 Paris@48.86,2.38
76|Seine-Maritime|76|1255
    76540 76000 Rouen@49.44,1.10
    76351 76600 Le Havre@49.49,0.11
77|Seine-et-Marne|77|1420
    77288 77000 Melun@48.54,2.66
    77284 77100 Meaux@48.96,2.88
78|Yvelines|78|1450
    78646 78000 Versailles@48.80,2.13
79|Deux-Sèvres|79|375
    79191 79000 Niort@46.32,-0.46
80|Somme|80|570
    80021 80000 Amiens@49.89,2.30
81|Tarn|81|390
    81004 81000 Albi@43.93,2.15
    81065 81100 Castres@43.61,2.24
82|Tarn-et-Garonne|82|260
    82121 82000 Montauban@44.02,1.35
83|Var|83|1080
    83137 83000 Toulon@43.12,5.93
    83061 83600 Fréjus@43.43,6.74
84|Vaucluse|84|560
    84007 84000 Avignon@43.95,4.81
85|Vendée|85|690
    85191 85000 La Roche-sur-Yon@46.67,-1.43
86|Vienne|86|440
    86194 86000 Poitiers@46.58,0.34
87|Haute-Vienne|87|370
    87085 87000 Limoges@45.83,1.26
88|Vosges|88|360
    88160 88000 Épinal@48.17,6.45
89|Yonne|89|335
    89024 89000 Auxerre@47.80,3.57
90|Territoire de Belfort|90|140
    90010 90000 Belfort@47.64,6.86
91|Essonne|91|1300
    91228 91000 Évry-Courcouronnes@48.63,2.44
92|Hauts-de-Seine|92|1630
    92050 92000 Nanterre@48.89,2.21
    92012 92100 Boulogne-Billancourt@48.84,2.24
93|Seine-Saint-Denis|93|1650
    93066 93200 Saint-Denis@48.94,2.36
    93048 93100 Montreuil@48.86,2.44
94|Val-de-Marne|94|1410
    94028 94000 Créteil@48.79,2.46
    94081 94400 Vitry-sur-Seine@48.79,2.39
95|Val-d'Oise|95|1250
    95018 95100 Argenteuil@48.95,2.25
    95127 95000 Cergy@49.04,2.06
971|Guadeloupe|9A|380
    97101 97139 Les Abymes@16.27,-61.50
    97120 97110 Pointe-à-Pitre@16.24,-61.53
    97105 97100 Basse-Terre@16.00,-61.73
    97113 97190 Le Gosier@16.21,-61.49
972|Martinique|9B|350
    97209 97200 Fort-de-France@14.60,-61.07
    97213 97232 Le Lamentin@14.61,-61.00
    97229 97233 Schœlcher@14.61,-61.09
973|Guyane|9C|290
    97302 97300 Cayenne@4.94,-52.33
    97304 97310 Kourou@5.16,-52.65
    97311 97320 Saint-Laurent-du-Maroni@5.50,-54.03
974|La Réunion|9D|870
    97411 97400 Saint-Denis@-20.88,55.45
    97416 97410 Saint-Pierre@-21.34,55.48
    97415 97460 Saint-Paul@-21.01,55.27
    97422 97430 Le Tampon@-21.28,55.52
976|Mayotte|9F|300
    97611 97600 Mamoudzou@-12.78,45.23
    97610 97690 Koungou@-12.73,45.20
    97608 97615 Dzaoudzi@-12.78,45.28
"""
# Overseas: FINESS number prefix, projection (EPSG, sourcecoordet label, legacy token), phone.
_OVERSEAS = {
    "971": ("9701", 5490, "RGAF09/UTM Zone 20N (Antilles)", "UTM_N20", "0590"),
    "972": ("9702", 5490, "RGAF09/UTM Zone 20N (Antilles)", "UTM_N20", "0596"),
    "973": ("9703", 2972, "RGFG95/UTM zone 22N (Guyane)", "UTM_N22", "0594"),
    "974": ("9704", 2975, "RGR92/UTM zone 40S (Réunion)", "UTM_S40", "0262"),
    "976": ("9805", 4471, "RGM04/UTM zone 38S (Mayotte)", "UTM_S38", "0269"),
}
_METROPOLE = (2154, "RGF93 / Lambert-93 (Métropole)", "LAMBERT_93")
# fmt: on


@dataclass(frozen=True, slots=True)
class Commune:
    insee: str
    postal: str
    name: str  # official spelling, mixed case
    routing: str  # "CP NAME" as La Poste writes it: upper case, no accents
    x: float  # projected position (metres) in the department's projection
    y: float


@dataclass(frozen=True, slots=True)
class Department:
    code: str  # 01…95, 2A, 2B, 971…976
    label: str
    finess_code: str  # 01…95, 2A, 2B, 9A…9F
    finess_label: str  # upper case, no accents
    weight: int
    communes: tuple[Commune, ...]
    finess_prefix: str  # first characters of its FINESS numbers
    epsg: int
    projection: str
    legacy_projection: str
    phone_prefix: str  # first digits of a landline


@cache
def plain(text: str) -> str:
    """Upper case without accents (``Saint-Étienne`` → ``SAINT-ETIENNE``)."""
    decomposed = unicodedata.normalize("NFKD", text.replace("œ", "oe").replace("Œ", "OE"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _routing(postal: str, name: str) -> str:
    city = plain(name).replace("-", " ").replace("'", " ")
    city = city.replace("SAINT ", "ST ").replace("SAINTE ", "STE ")
    return f"{postal} {city}"


@cache
def departments() -> tuple[Department, ...]:
    """The departments with their communes, projected once with pyproj."""
    from pyproj import Transformer

    transformers: dict[int, Transformer] = {}
    out = []
    blocks: list[tuple[list[str], list[str]]] = []
    for line in _DEPARTMENTS.strip().splitlines():
        if line.startswith(" "):
            blocks[-1][1].append(line.strip())
        else:
            blocks.append((line.split("|"), []))
    for (code, label, finess_code, weight), items in blocks:
        if code in _OVERSEAS:
            prefix, epsg, projection, legacy, phone = _OVERSEAS[code]
        else:
            prefix, (epsg, projection, legacy) = code, _METROPOLE
            phone = "0" + _metro_phone_digit(code)
        if epsg not in transformers:
            transformers[epsg] = Transformer.from_crs(4326, epsg, always_xy=True)
        communes = []
        for item in items:
            head, position = item.split("@")
            insee, postal, name = head.split(" ", 2)
            lat, lon = (float(v) for v in position.split(","))
            x, y = transformers[epsg].transform(lon, lat)
            communes.append(Commune(insee, postal, name, _routing(postal, name), x, y))
        out.append(
            Department(
                code,
                label,
                finess_code,
                plain(label),
                int(weight),
                tuple(communes),
                prefix,
                epsg,
                projection,
                legacy,
                phone,
            )
        )
    return tuple(out)


def _metro_phone_digit(code: str) -> str:
    if code in ("75", "77", "78", "91", "92", "93", "94", "95"):
        return "1"
    west = {"14", "18", "22", "27", "28", "29", "35", "36", "37", "41", "44", "45", "49", "50"}
    west |= {"53", "56", "61", "72", "76", "85"}
    east = {"02", "08", "10", "21", "25", "39", "51", "52", "54", "55", "57", "58", "59", "60"}
    east |= {"62", "67", "68", "70", "71", "80", "88", "89", "90"}
    south_east = {"01", "03", "04", "05", "06", "07", "13", "15", "2A", "2B", "26", "30", "38"}
    south_east |= {"42", "43", "63", "69", "73", "74", "83", "84"}
    if code in west:
        return "2"
    if code in east:
        return "3"
    return "4" if code in south_east else "5"


# ------------------------------------------------------------------ nomenclatures

# TRE_G15 profession: code, label, share of professionals, share of women, share with an
# RPPS number (the rest ADELI), civility of practice, registration authority, MSSanté domain,
# TRE_R48 diploma (code, label), activity profile.
# fmt: off
_PROFESSION_TABLE = """
60|Infirmier|33|0.87|1|-|CNOI/CNOI/CNOI|infirmier|DE09|DE Infirmier|nurse
10|Médecin|18|0.50|1|DR|CNOM/CNOM/CNOM|medecin|DE05|DE Docteur en médecine|doctor
70|Masseur-Kinésithérapeute|8|0.50|1|-|CNOMK/CNOMK/CNOMK|masseur-kinesitherapeute|DE11
    |DE Masseur-Kinésithérapeute|cabinet
21|Pharmacien|6|0.68|1|-|CNOP/CNOP/CNOP|pharmacien|DE02|DE Docteur en pharmacie|pharmacist
40|Chirurgien-Dentiste|4|0.48|1|DR|CNOCD/CNOCD/CNOCD|chirurgien-dentiste|DE03
    |DE Docteur en chirurgie dentaire|dentist
98|Manipulateur ERM|3|0.70|0.6|-|ARS/CPAM/CPAM|manipulateur|DE18|DE Manipulateur ERM|salaried
28|Opticien-Lunetier|3|0.55|0.5|-|ARS/Variable/Variable|opticien|DE08|DE Opticien-Lunetier|store
50|Sage-Femme|2|0.97|1|-|CNOSF/CNOSF/CNOSF|sagefemme|DE06|DE Sage-Femme|midwife
91|Orthophoniste|2|0.96|0.6|-|ARS/CPAM/CPAM|orthophoniste|DE13|DE Orthophoniste|cabinet
86|Technicien de laboratoire médical|2|0.75|0.6|-|ARS/Variable/Variable|technicien|-|-|salaried
94|Ergothérapeute|1.3|0.85|0.6|-|ARS/CPAM/CPAM|ergotherapeute|DE16|DE Ergothérapeute|salaried
80|Pédicure-Podologue|1.2|0.70|1|-|CNOPP/CNOPP/CNOPP|pedicure-podologue|DE12
    |DE Pédicure-Podologue|cabinet
96|Psychomotricien|1|0.88|0.6|-|ARS/CPAM/CPAM|psychomotricien|DE17|DE Psychomotricien|salaried
95|Diététicien|1|0.90|0.6|-|ARS/CPAM/CPAM|dieteticien|-|-|salaried
92|Orthoptiste|0.5|0.85|0.6|-|ARS/CPAM/CPAM|orthoptiste|DE14|DE Orthoptiste|cabinet
26|Audioprothésiste|0.4|0.45|0.5|-|ARS/Variable/Variable|audioprothesiste|DE07
    |DE Audioprothésiste|store
"""
# Where a profile works: (weight, kind); kinds: cab (liberal cabinet), hosp (salaried in a
# FINESS hospital or clinic), medsoc (salaried in a FINESS EHPAD, CMPP, PMI), pharmacy (FINESS
# officine), other (salaried in a non-FINESS company, with a SIRET).
_PROFILES: dict[str, tuple[tuple[float, str], ...]] = {
    "doctor": ((0.50, "cab"), (0.38, "hosp"), (0.04, "medsoc"), (0.08, "other")),
    "nurse": ((0.25, "cab"), (0.50, "hosp"), (0.20, "medsoc"), (0.05, "other")),
    "pharmacist": ((0.72, "pharmacy"), (0.12, "hosp"), (0.16, "other")),
    "dentist": ((0.88, "cab"), (0.05, "hosp"), (0.07, "other")),
    "midwife": ((0.35, "cab"), (0.60, "hosp"), (0.05, "other")),
    "cabinet": ((0.82, "cab"), (0.10, "hosp"), (0.05, "medsoc"), (0.03, "other")),
    "salaried": ((0.60, "hosp"), (0.20, "medsoc"), (0.05, "cab"), (0.15, "other")),
    "store": ((1.0, "other"),),
}
# Sector of a non-FINESS employer by profile: (code, label, name stem).
_OTHER_SECTORS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "doctor": (("SA13", "Prévention et soins en entreprise", "SANTE TRAVAIL"),
               ("SA05", "Centre de santé", "CENTRE DE SANTE"),
               ("SA29", "Laboratoire d'analyses et de biologie médicale", "LABORATOIRE")),
    "nurse": (("SA13", "Prévention et soins en entreprise", "SANTE TRAVAIL"),
              ("SA05", "Centre de santé", "CENTRE DE SANTE")),
    "pharmacist": (("SA29", "Laboratoire d'analyses et de biologie médicale", "LABORATOIRE"),
                   ("SA32", "Fabrication, Exploitation et Importation de médicaments et "
                    "dispositifs médicaux", "LABORATOIRES"),
                   ("SA31", "Répartition et Distribution de médicaments et dispositifs médicaux",
                    "REPARTITION PHARMACEUTIQUE")),
    "store": (("SA42", "Appareillage médical", "OPTIQUE"),
              ("SA42", "Appareillage médical", "AUDITION")),
    "default": (("SA05", "Centre de santé", "CENTRE DE SANTE"),
                ("SA29", "Laboratoire d'analyses et de biologie médicale", "LABORATOIRE"),
                ("SA13", "Prévention et soins en entreprise", "SANTE TRAVAIL")),
}
_CABINET_SECTORS = (("SA07", "Cabinet individuel", 0.60), ("SA08", "Cabinet de groupe", 0.30),
                    ("SA09", "Exercice en société", 0.05),
                    ("SA52", "Maison de santé ou Pôle de santé", 0.05))
# TRE_R38 specialties of doctors (labels as the extraction writes them), with weights.
_DOCTOR_SPECIALTIES = (
    ("SM26", "Qualifié en Médecine Générale", 22), ("SM54", "Médecine Générale", 18),
    ("SM53", "Spécialiste en Médecine Générale", 5), ("SM02", "Anesthésie-réanimation", 5),
    ("SM42", "Psychiatrie", 6), ("SM40", "Pédiatrie", 4),
    ("SM04", "Cardiologie et maladies vasculaires", 4), ("SM44", "Radio-diagnostic", 4),
    ("SM38", "Ophtalmologie", 3), ("SM20", "Gynécologie-obstétrique", 3),
    ("SM15", "Dermatologie et Vénéréologie", 2), ("SM24", "Gastro-entérologie et Hépatologie", 2),
    ("SM59", "Médecine d'urgence", 2), ("SM25", "Médecine du travail", 2),
    ("SM32", "Neurologie", 1.5), ("SM41", "Pneumologie", 1.5), ("SM27", "Médecine interne", 1.5),
    ("SM18", "Gériatrie", 1.5), ("SM03", "Biologie médicale", 1.5),
    ("SM08", "Chirurgie orthopédique et Traumatologie", 1.5),
    ("SM34", "ORL et Chirurgie cervico-faciale", 1.5),
    ("SM29", "Médecine physique et de réadaptation", 1),
    ("SM30", "Néphrologie", 1), ("SM48", "Rhumatologie", 1),
    ("SM16", "Endocrinologie et Métabolisme", 1), ("SM14", "Chirurgie viscérale et digestive", 1),
    ("SM49", "Santé publique et médecine sociale", 0.5), ("SM21", "Hématologie", 0.5),
    ("SM12", "Chirurgie urologique", 0.5), ("SM36", "Oncologie, option médicale", 0.5),
)
# TRE_R39 competences (type C) a doctor may add.
_DOCTOR_COMPETENCES = (
    ("C05", "Médecine appliquée aux sports"), ("C07", "Cardiologie"),
    ("C03", "Anesthésie-réanimation"), ("C15", "Dermato-vénéréologie"), ("C13", "Urologie"),
)
_NURSE_SPECIALTIES = (
    ("SI06", "Infirmier(ère) de bloc opératoire"), ("SI07", "Infirmier(ère) anesthésiste"),
    ("SI08", "Infirmier(ère) puériculteur(trice)"),
    ("SI01", "Exercice infirmier en pratique avancée pathologies chroniques stabilisées"),
)
_NURSE_DIPLOMAS = {"SI06": ("DE19", "DE Infirmier de bloc opératoire"),
                   "SI07": ("DE20", "DE Infirmier anesthésiste"),
                   "SI08": ("DE21", "DE Infirmier puériculteur"),
                   "SI01": ("DE23", "DE IPA pathologies chroniques stabilisées")}
_DENTIST_SPECIALTIES = (("SCD01", "Orthopédie dento-faciale"), ("SCD02", "Chirurgie orale"),
                        ("SCD03", "Médecine bucco-dentaire"))
# Pharmacist sections (code, label): not confirmed.
_SECTIONS = {"pharmacy_owner": ("A", "Pharmacien titulaire d'officine"),
             "pharmacy_staff": ("D", "Pharmacien adjoint d'officine"),
             "hosp": ("H", "Pharmacien des établissements de santé"),
             "SA29": ("G", "Pharmacien biologiste"),
             "SA32": ("B", "Pharmacien de l'industrie"),
             "SA31": ("C", "Pharmacien de la distribution en gros")}
_STREET_TYPES = {"rue": ("R", "Rue"), "avenue": ("AV", "Avenue"), "boulevard": ("BD", "Boulevard"),
                 "chemin": ("CHE", "Chemin"), "place": ("PL", "Place"), "allée": ("ALL", "Allée"),
                 "impasse": ("IMP", "Impasse"), "route": ("RTE", "Route"), "quai": ("QUAI", "Quai")}
# FINESS establishment kinds: weight, group, categetab, libcategetab, categagretab,
# libcategagretab, codemft, libmft, codesph, libsph, codeape, sector, name stem, MSSanté stem.
_KIND_TABLE = """
0.22|pharmacy|620|Pharmacie d'Officine|3301|Pharmacie d'Officine|01|Etablissement Tarif Libre|-|-
    |4773Z|SA33|Pharmacie d'officine|PHARMACIE|pharmacie
0.18|medsoc|500|Etablissement d'hébergement pour personnes âgées dépendantes|4401
    |Etablissements d'Hébergement pour Personnes Âgées|40
    |ARS/PCD, Tarif global, habilité aide sociale, recours PUI|-|-|8710A|SA17
    |Etablissement pour personnes âgées|EHPAD|ehpad
0.08|hosp|355|Centre Hospitalier (C.H.)|1102|Centres Hospitaliers|03
    |ARS établissements Publics de santé dotation globale|1|Etablissement public de santé|8610Z
    |SA01|Etablissement public de santé|CENTRE HOSPITALIER|ch
0.006|hosp|101|Centre Hospitalier Régional (C.H.R.)|1101|Centres Hospitaliers Régionaux|03
    |ARS établissements Publics de santé dotation globale|1|Etablissement public de santé|8610Z
    |SA01|Etablissement public de santé|CHU|chu
0.06|hosp|365|Etablissement de Soins Pluridisciplinaire|1110
    |Etablissements de Soins de Courte Durée|07
    |ARS établissements de santé non financés dotation globale|0|Non concerné|8610Z|SA04
    |Etablissement privé non PSPH|CLINIQUE|clinique
0.03|hosp|146|Structure d'Alternative à la dialyse en centre|1203|Dialyse Ambulatoire|07
    |ARS établissements de santé non financés dotation globale|0|Non concerné|-|SA34
    |Centre de dialyse|UNITE DE DIALYSE|dialyse
0.10|medsoc|189|Centre Médico-Psycho-Pédagogique (C.M.P.P.)|4106
    |Services à Domicile ou Ambulatoires pour Handicapés|57|DGS ARS & hébergement PCD - sous CPOM
    |-|-|-|SA16|Etablissement pour personnes handicapées|CMPP|cmpp
0.10|medsoc|223|Protection Maternelle et Infantile (P.M.I.)|2202
    |Etablissements de PMI et de Planification Familiale|01|Etablissement Tarif Libre|-|-|-
    |SA15|PMI et Planification familiale|PMI|pmi
"""
_ESTABLISHMENT_NAMES = ("DES TILLEULS", "SAINT-JOSEPH", "LES GLYCINES", "DU PARC", "DE LA GARE",
                        "SAINTE-MARIE", "LES ORCHIDEES", "DU CENTRE", "PASTEUR", "LES CEDRES",
                        "DU MARCHE", "DE L'EGLISE", "LES MIMOSAS", "DU LAC", "BEAUSEJOUR")
_SERVICES = ("secretariat", "cardiologie", "urgences", "pediatrie", "imagerie", "laboratoire",
             "pharmacie", "maternite", "psychiatrie", "dim", "accueil", "medecine")
_MAIL_DOMAINS = ("orange.fr", "wanadoo.fr", "gmail.com", "free.fr", "laposte.net")
# fmt: on


def _table(text: str) -> list[tuple[str, ...]]:
    """Rows of a ``|`` table; an indented line continues the row above; ``-`` is empty."""
    rows: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith(" "):
            rows[-1] += line.strip()
        else:
            rows.append(line)
    return [tuple("" if v == "-" else v for v in row.split("|")) for row in rows]


class Profession(NamedTuple):
    code: str  # TRE_G15
    label: str
    share: float  # of professionals
    women: float  # share of women
    rpps: float  # share with an RPPS number (the others have an ADELI one)
    civility: str  # of practice: DR or nothing
    authority: str  # "Autorité d'enregistrement"
    domain: str  # national MSSanté domain
    diploma_code: str  # TRE_R48
    diploma_label: str
    profile: str  # key of _PROFILES


_PROFESSIONS = tuple(
    Profession(
        r[0], r[1], float(r[2]), float(r[3]), float(r[4]), r[5], r[6], r[7], r[8], r[9], r[10]
    )
    for r in _table(_PROFESSION_TABLE)
)
# weight, group, categetab, libcategetab, categagretab, libcategagretab, codemft, libmft,
# codesph, libsph, codeape, sector code, sector label, name stem, MSSanté stem
_KINDS: tuple[tuple[str, ...], ...] = tuple(_table(_KIND_TABLE))
_CIVILITY = {"F": ("MME", "Madame"), "M": ("M", "Monsieur")}
# The newer columns (--role-columns): role not known, genre seen as GENR01 in a client's docs.
_ROLE = "|||GENR01|Activité standard de soin ou de pharmacien"
_MODES = {"L": "Libéral", "S": "Salarié", "B": "Bénévole"}
_CATEGORIES = (("C", "Civil", 0.96), ("E", "Etudiant", 0.035), ("M", "Militaire", 0.005))
_ACTIVITY_COUNTS = ((1, 0.78), (2, 0.15), (3, 0.05), (4, 0.015), (5, 0.005))
_CHANGE_KINDS = (
    ("name", 0.15),
    ("address", 0.35),
    ("activity_added", 0.30),
    ("activity_ended", 0.20),
)
MODE_CABINET_SLOTS = 5  # structure slots 0-4 for an extraction's activities, 5-7 for added ones
_RPPS_MULT, _SEQ_MULT = 387_420_489, 1_594_323  # odd, not multiples of 5: bijections mod 10^k


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, acc, out = sum(weights), 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def _mix(seed: int, stream: int, n: int) -> int:
    """A seed for the random stream ``stream``, block ``n``, of seed ``seed``."""
    return ((seed * 1_000_003 + stream) * 1_000_000_007 + n) & 0xFFFF_FFFF_FFFF_FFFF


@cache
def _slug(text: str) -> str:
    out = plain(text).lower()
    for char in " '’()/.,":
        out = out.replace(char, "-")
    return "-".join(p for p in out.split("-") if p)


class _Luhn:
    """``identifiers.luhn_key`` for digit strings of one length, tabulated: the Luhn sum is a
    sum over digit positions, so the key of a number is the sum, modulo 10, of the keys of its
    3-digit blocks each padded with zeros (a few thousand calls instead of one per number)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.blocks: list[list[int]] = []
        for start in range(width, 0, -3):  # blocks from the right
            size = min(3, start)
            left, right = "0" * (start - size), "0" * (width - start)
            self.blocks.append([luhn_key(f"{left}{v:0{size}d}{right}") for v in range(10**size)])

    def key(self, number: int) -> int:
        total = 0
        for table in self.blocks:
            number, block = divmod(number, 1000)
            total += table[block]
        return total % 10

    def append(self, number: int) -> str:
        """``number`` written on ``width`` digits, then its key."""
        return f"{number:0{self.width}d}{self.key(number)}"


@cache
def _luhn(width: int) -> _Luhn:
    return _Luhn(width)


def _finess(prefix: str, sequence: int) -> str:
    """A FINESS number: department prefix, sequence, Luhn key over the first 8 characters
    (Corsica's ``2A``/``2B`` read as ``20`` for it; the key of those is not checked)."""
    body = f"{prefix}{sequence:0{8 - len(prefix)}d}"
    return body + str(_luhn(8).key(int(body.replace("A", "0").replace("B", "0"))))


def _siret(siren8: int, nic4: int = 1) -> tuple[str, str]:
    """A SIREN (8 digits + key) and a SIRET of it (+ 4-digit NIC + key), both Luhn-valid."""
    siren = _luhn(8).append(siren8)
    return _luhn(13).append(int(siren) * 10_000 + nic4), siren


# ------------------------------------------------------------------ pools


@dataclass(frozen=True)
class _Pools:
    departments: tuple[Department, ...]
    dept_cum: list[float]
    dept_by_code: dict[str, Department]
    last: tuple[str, ...]
    female: tuple[str, ...]
    male: tuple[str, ...]
    streets: tuple[tuple[str, str, str], ...]  # code, label, name (upper, no accents)
    professions: tuple[Profession, ...]
    prof_cum: list[float]
    kind_cum: list[float]
    spec_cum: list[float]
    count_cum: list[float]
    profile_cum: dict[str, tuple[list[float], tuple[str, ...]]]
    cabinet_cum: list[float]


@cache
def _pools() -> _Pools:
    from bench.identity_data import _pools as identity_pools

    ip = identity_pools()
    streets = []
    for street in ip.streets:
        head, _, rest = street.partition(" ")
        code, _label = _STREET_TYPES.get(head.lower(), ("R", "Rue"))
        streets.append((code, _label, plain(rest or head)))
    deps = departments()
    profiles = {
        name: (_cumulative([w for w, _ in items]), tuple(k for _, k in items))
        for name, items in _PROFILES.items()
    }
    return _Pools(
        departments=deps,
        dept_cum=_cumulative([d.weight for d in deps]),
        dept_by_code={d.code: d for d in deps},
        last=ip.last_fr + ip.last_other[: len(ip.last_fr) // 8],
        female=ip.female,
        male=ip.male,
        streets=tuple(streets),
        professions=_PROFESSIONS,
        prof_cum=_cumulative([p.share for p in _PROFESSIONS]),
        kind_cum=_cumulative([float(k[0]) for k in _KINDS]),
        spec_cum=_cumulative([s[2] for s in _DOCTOR_SPECIALTIES]),
        count_cum=_cumulative([w for _, w in _ACTIVITY_COUNTS]),
        profile_cum=profiles,
        cabinet_cum=_cumulative([w for _, _, w in _CABINET_SECTORS]),
    )


# ------------------------------------------------------------------ FINESS establishments


@dataclass(slots=True)
class _Establishments:
    """What activity and MSSanté lines need of each establishment, pre-joined."""

    site: list[str]  # fields 20-47 of an activity line, joined by "|"
    sector: list[str]  # "SAxx|label"
    group: list[str]
    dept: list[str]
    structure: list[str]  # MSSanté "Type identifiant structure|Identification Structure"
    mss_address: list[str]  # the 13 MSSanté "structure BAL" fields, joined
    by_group: dict[tuple[str, str], list[int]]  # (department, group) → indices
    national: dict[str, list[int]]  # group → indices


def _establishment_count(activities: int) -> int:
    return max(40, round(activities / ACTIVITIES_PER_ESTABLISHMENT))


def _phone(rng: random.Random, dept: Department) -> str:
    prefix = dept.phone_prefix
    return prefix + str(rng.randrange(10 ** (10 - len(prefix)))).zfill(10 - len(prefix))


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if '"' in value or ";" in value else value


def _build_finess(
    seed: int,
    n: int,
    stamp: datetime,
    out: IO[str] | None,
    geo_out: IO[str] | None,
    mss_out: IO[str] | None,
    geo_style: str,
) -> tuple[_Establishments, int]:
    """Draw the ``n`` establishments of seed ``seed``; write their ``structureet`` lines to
    ``out``, their ``geolocalisation`` lines to ``geo_out`` and their organisational mailboxes
    to ``mss_out`` when given. Returns the pool and the number of mailbox lines."""
    pools = _pools()
    est = _Establishments([], [], [], [], [], [], {}, {})
    seq: Counter[str] = Counter()
    ej_seq: Counter[str] = Counter()
    buf: list[str] = []
    geo: list[str] = []
    mss: list[str] = []
    mss_count = 0
    rng = random.Random()
    ej = dept = ""
    kind = _KINDS[0]
    maj = stamp.date().isoformat()
    for j in range(n):
        if j % BLOCK == 0:
            rng = random.Random(_mix(seed, 4, j // BLOCK))
        new_kind = _KINDS[bisect.bisect(pools.kind_cum, rng.random())]
        shares_ej = j % 2 == 1 and kind[1] != "pharmacy" and new_kind[1] != "pharmacy"
        kind = new_kind
        if not shares_ej:
            dept_obj = pools.departments[bisect.bisect(pools.dept_cum, rng.random())]
            dept = dept_obj.code
        d = pools.dept_by_code[dept]
        commune = d.communes[int(rng.random() * len(d.communes))]
        prefix = d.finess_prefix
        width = 8 - len(prefix)
        seq[dept] += 1
        if seq[dept] + 10 >= (780_000 if width == 6 else 5000):
            raise ValueError(f"too many FINESS establishments for department {dept}")
        finess = _finess(prefix, seq[dept] + 10)
        if not shares_ej:
            ej_seq[dept] += 1
            ej = _finess(prefix, (780_000 if width == 6 else 5000) + ej_seq[dept])
        street_code, street_label, street = pools.streets[int(rng.random() * len(pools.streets))]
        numvoie = str(1 + int(rng.random() * 180)) if rng.random() < 0.85 else ""
        compvoie = "B" if rng.random() < 0.03 else ""
        bp = f"BP {10 + int(rng.random() * 900)}" if rng.random() < 0.12 else ""
        cedex = bp != "" and rng.random() < 0.5
        routing = commune.routing + (" CEDEX" if cedex else "")
        name_part = _ESTABLISHMENT_NAMES[int(rng.random() * len(_ESTABLISHMENT_NAMES))]
        city = plain(commune.name)
        stem = kind[13]
        if stem == "PHARMACIE":
            rs = f"PHARMACIE {name_part}" if rng.random() < 0.6 else f"PHARMACIE {street}"
        elif stem in ("CENTRE HOSPITALIER", "CHU"):
            rs = f"{stem} DE {city}" if rng.random() < 0.7 else f"{stem} {name_part} {city}"
        else:
            rs = f"{stem} {name_part}"
        if rng.random() < 0.003:
            rs = f'LIEU DE VIE "{name_part}"'  # a quoted field, as in the real file
        rs = rs[:38]
        rslongue = rs if rng.random() < 0.5 else f"{rs} {city}"[:60]
        phone = _phone(rng, d)
        fax = _phone(rng, d) if rng.random() < 0.6 else ""
        siren8 = 20_000_000 + (j * _SEQ_MULT + seed * 7919) % 10**7  # public bodies: 2…
        siret, _siren = _siret(siren8, 1 + j % 9)
        if rng.random() < 0.25:
            siret = ""
        year = 1950 + int(rng.random() * 75)
        opened = f"{year}-{1 + int(rng.random() * 12):02d}-{1 + int(rng.random() * 28):02d}"
        since = max(year, 2010)
        updated_year = since + int(rng.random() * (stamp.year - since))
        updated = max(opened, f"{updated_year}-{1 + int(rng.random() * 12):02d}-15")
        x = commune.x + (rng.random() - 0.5) * 6000
        y = commune.y + (rng.random() - 0.5) * 6000
        score = 80 + int(rng.random() * 21)
        source = "BAN" if rng.random() < 0.7 else "BDADRESSE"
        if out is not None:
            fields = (
                "structureet",
                finess,
                ej,
                _quote(rs),
                _quote(rslongue),
                "",
                "",
                numvoie,
                street_code,
                street,
                compvoie,
                bp,
                commune.insee[-3:],
                d.finess_code,
                d.finess_label,
                routing,
                phone,
                fax,
                kind[2],
                kind[3],
                kind[4],
                kind[5],
                siret,
                kind[10],
                kind[6],
                kind[7],
                kind[8],
                kind[9],
                opened,
                opened,
                updated,
                "",
            )
            buf.append(";".join(fields) + "\n")
            if geo_style == "legacy":
                src = f"1,ATLASANTE,100,IGN,BD_ADRESSE,V2.2,{d.legacy_projection}"
            else:
                src = f"{1 + (score < 90)},ATLASANTE,{score},{source},EPSG:{d.epsg} {d.projection}"
            geo.append(f"geolocalisation;{finess};{x:.1f};{y:.1f};{src};{maj}\n")
            if len(buf) >= 4096:
                out.write("".join(buf))
                buf.clear()
                if geo_out is not None:
                    geo_out.write("".join(geo))
                geo.clear()
        # What an activity line at this site says (fields 20-47).
        country = ("99100", "France")
        site = (
            siret,
            "",
            finess,
            ej,
            f"F{finess}",
            rslongue,
            "",
            rslongue,
            "",
            numvoie,
            compvoie,
            street_code,
            street_label,
            street,
            bp,
            routing,
            commune.postal,
            commune.insee,
            commune.name,
            *country,
            phone,
            "",
            fax,
            "",
            d.code,
            d.label,
            f"1{finess}",
        )
        group = kind[1]
        est.site.append("|".join(site))
        est.sector.append(f"{kind[11]}|{kind[12]}")
        est.group.append(group)
        est.dept.append(dept)
        est.structure.append(f"1|1{finess}")
        mss_fields = (
            rslongue,
            "",
            "",
            bp,
            numvoie,
            compvoie,
            street_code,
            street,
            "",
            routing,
            commune.postal,
            d.code,
            "France",
        )
        mss_address = "|".join(mss_fields)
        est.mss_address.append(mss_address)
        est.by_group.setdefault((dept, group), []).append(j)
        est.national.setdefault(group, []).append(j)
        # Organisational and applicative mailboxes of the establishment.
        if group != "pharmacy" and rng.random() < 0.45:
            domain = f"{kind[14]}-{_slug(commune.name)}-{finess}.mssante.fr"
            n_boxes = 1 + int(rng.random() * 3)
            first = int(rng.random() * len(_SERVICES))
            for k in range(n_boxes):
                service = _SERVICES[(first + k) % len(_SERVICES)]
                kind_box = "APP" if service == "dim" else "ORG"
                demat = "True" if rng.random() < 0.7 else "False"
                person = "|" * 9  # no professional: civility … savoir-faire empty
                mss.append(
                    f"{kind_box}|{service}@{domain}||||1|1{finess}|{service.upper()}|{person}"
                    f"{demat}|{mss_address}|\n"
                )
                mss_count += 1
            if mss_out is not None and len(mss) >= 4096:
                mss_out.write("".join(mss))
                mss.clear()
    if out is not None:
        out.write("".join(buf))
        if geo_out is not None:
            geo_out.write("".join(geo))
    if mss_out is not None:
        mss_out.write("".join(mss))
    return est, mss_count


# ------------------------------------------------------------------ professionals


@dataclass(slots=True)
class _Activity:
    sf: str  # fields 14-17
    mode: str  # fields 18-19
    site: str  # fields 20-47
    tail: str  # fields 48-52
    structure_id: str
    dept: str
    finess: bool
    cabinet: tuple[str, ...] | None = None  # the site fields of a cabinet, to move it
    mss_structure: str = "|"
    mss_address: str = "|" * 12  # 13 empty fields


@dataclass(slots=True)
class _Professional:
    index: int
    kind: str
    number: str
    nat: str
    family: str
    given: str
    profession: Profession
    sex: str
    category: tuple[str, str]
    civility_practice: tuple[str, str]
    activities: list[_Activity]
    savoir_faire: list[tuple[str, str, str, str]]  # type code, type label, code, label
    diplomas: list[tuple[str, str]]
    mss: list[str]  # mailbox addresses
    mss_sf: tuple[str, str]
    demat: str

    def prefix(self) -> str:
        p = self.profession
        civ_code, civ_label = _CIVILITY[self.sex]
        return (
            f"{self.kind}|{self.number}|{self.nat}|{self.civility_practice[0]}|"
            f"{self.civility_practice[1]}|{civ_code}|{civ_label}|{self.family}|{self.given}|"
            f"{p[0]}|{p[1]}|{self.category[0]}|{self.category[1]}"
        )


class _Maker:
    """Draws professionals from a random stream, their activities from the establishments."""

    def __init__(self, pop_seed: int, est: _Establishments, role_columns: bool) -> None:
        self.pools = _pools()
        self.pop_seed = pop_seed
        self.est = est
        self.role_columns = role_columns
        self.number_offset = (pop_seed * 104_729) % 10**9

    def numbers(self, i: int, rpps: bool, dept: str) -> tuple[str, str, str]:
        spread = (i * _RPPS_MULT + self.number_offset) % 10**9
        if rpps:
            number = _luhn(10).append(10**9 + spread)
            return "8", number, "8" + number
        adeli = f"{dept[:2] if not dept.startswith('97') else '97'}{spread % 10**7:07d}"
        return "0", adeli, "0" + adeli

    def professional(self, rng: random.Random, i: int) -> _Professional:
        pools = self.pools
        r = rng.random
        prof = pools.professions[bisect.bisect(pools.prof_cum, r())]
        sex = "F" if r() < prof[3] else "M"
        family = pools.last[int(r() * len(pools.last))]
        names = pools.female if sex == "F" else pools.male
        given = names[int(r() * len(names))]
        if r() < 0.5:
            given = plain(given)
        home = pools.departments[bisect.bisect(pools.dept_cum, r())]
        rpps = r() < prof[4]
        kind, number, nat = self.numbers(i, rpps, home.code)
        u = r()
        category = _CATEGORIES[0] if u < 0.96 else _CATEGORIES[1] if u < 0.995 else _CATEGORIES[2]
        civ = (prof[5], "Docteur") if prof[5] else ("", "")
        if prof[5] and r() < 0.02:
            civ = ("PR", "Professeur")
        profile = prof[10]
        # Savoir-faire (file and activity columns).
        sf: list[tuple[str, str, str, str]] = []
        diplomas = [(prof[8], prof[9])] if prof[8] else []
        if profile == "doctor":
            code, label, _w = _DOCTOR_SPECIALTIES[bisect.bisect(pools.spec_cum, r())]
            sf.append(("S", "Spécialité ordinale", code, label))
            extra = r()
            for k in range(0 if extra < 0.35 else 1 if extra < 0.75 else 2 if extra < 0.9 else 3):
                c_code, c_label = _DOCTOR_COMPETENCES[(int(r() * 5) + k) % 5]
                sf.append(("C", "Compétence de médecine", c_code, c_label))
        elif profile == "nurse" and r() < 0.3:
            code, label = _NURSE_SPECIALTIES[int(r() * len(_NURSE_SPECIALTIES))]
            sf.append(("S", "Spécialité ordinale", code, label))
            if r() < 0.2:
                diplomas.append(_NURSE_DIPLOMAS[code])
        elif profile == "dentist" and r() < 0.13:
            code, label = _DENTIST_SPECIALTIES[int(r() * 3)]
            sf.append(("S", "Spécialité ordinale", code, label))
        if diplomas and r() < 0.03:
            diplomas = []  # foreign-trained: no French state diploma line
        activity_sf = "|".join(sf[0]) if sf and sf[0][0] == "S" else "|||"
        # Activities.
        n = _ACTIVITY_COUNTS[bisect.bisect(pools.count_cum, r())][0]
        activities: list[_Activity] = []
        if r() < 0.05:
            tail = f"{prof[6]}||||" + ("||||" if self.role_columns else "")
            activities.append(_Activity("|||", "|", "|" * 27, tail, "", "", False))
        else:
            seen: set[str] = set()
            for slot in range(n):
                act = self.activity(rng, i, slot, prof, home, family, activity_sf, kind, seen)
                activities.append(act)
        # Mailboxes.
        mss: list[str] = []
        share = {"doctor": 0.75, "pharmacist": 0.6, "midwife": 0.6, "dentist": 0.4}
        if r() < share.get(profile, 0.35 if profile in ("nurse", "cabinet") else 0.2):
            local = f"{_slug(given)}.{_slug(family)}.{(i * _SEQ_MULT) % 10**7:07d}"
            mss.append(f"{local}@{prof[7]}.mssante.fr")
            if r() < 0.12:  # a second box, at another operator
                mss.append(f"{local}@pro.mssante.fr")
        demat = "True" if r() < 0.6 else "False"
        mss_sf = (sf[0][2], sf[0][3]) if sf else ("", "")
        return _Professional(
            i,
            kind,
            number,
            nat,
            family,
            given,
            prof,
            sex,
            (category[0], category[1]),
            civ,
            activities,
            sf,
            diplomas,
            mss,
            mss_sf,
            demat,
        )

    def activity(
        self,
        rng: random.Random,
        i: int,
        slot: int,
        prof: Profession,
        home: Department,
        family: str,
        activity_sf: str,
        id_kind: str,
        seen: set[str],
        force_cabinet: bool = False,
    ) -> _Activity:
        pools, est, r = self.pools, self.est, rng.random
        profile = prof[10]
        cum, kinds = pools.profile_cum[profile]
        where = kinds[bisect.bisect(cum, r())]
        if force_cabinet:
            where = "cab"
        dept = home if r() < 0.88 else pools.departments[bisect.bisect(pools.dept_cum, r())]
        role = _ROLE if self.role_columns else ""
        group = {"hosp": "hosp", "medsoc": "medsoc", "pharmacy": "pharmacy"}.get(where)
        if group is not None and est.national.get(group):
            candidates = est.by_group.get((dept.code, group)) or est.national[group]
            for _ in range(4):
                j = candidates[int(r() * len(candidates))]
                if f"F{j}" not in seen:
                    break
            if f"F{j}" not in seen:
                seen.add(f"F{j}")
                if where == "pharmacy":
                    owner = r() < 0.45
                    mode = "L|Libéral" if owner else "S|Salarié"
                    section = _SECTIONS["pharmacy_owner" if owner else "pharmacy_staff"]
                else:
                    mode = "S|Salarié"
                    section = _SECTIONS["hosp"] if profile == "pharmacist" else ("", "")
                tail = f"{prof[6]}|{est.sector[j]}|{section[0]}|{section[1]}{role}"
                site = est.site[j]
                return _Activity(
                    activity_sf,
                    mode,
                    site,
                    tail,
                    site.split("|", 5)[4],
                    est.dept[j],
                    True,
                    None,
                    est.structure[j],
                    est.mss_address[j],
                )
            where = "cab"
        commune = dept.communes[int(r() * len(dept.communes))]
        street_code, street_label, street = pools.streets[int(r() * len(pools.streets))]
        numvoie = str(1 + int(r() * 150))
        phone = _phone(rng, dept)
        email = f"{_slug(family)}{int(r() * 100)}@{_MAIL_DOMAINS[int(r() * 5)]}"
        email = email if r() < 0.2 else ""
        cab_seq = (i * 8 + slot) * _SEQ_MULT % 10**13
        siren8 = 30_000_000 + (i * 8 + slot) * _SEQ_MULT % 70_000_000  # unique up to 8.75 M
        country = ("99100", "France") if id_kind == "8" else ("", "")
        if where == "cab":
            sector_code, sector_label, _w = _CABINET_SECTORS[bisect.bisect(pools.cabinet_cum, r())]
            doctorish = prof[5] != ""
            rs = f"CABINET DU DR {family}" if doctorish else f"CABINET {family}"
            if sector_code == "SA52":
                rs = f"MAISON DE SANTE {plain(commune.name)}"
            siret = siren = ""
            if r() < 0.6:
                siret, siren = _siret(siren8)
                siren = siren if r() < 0.3 else ""
            structure_id = f"R1{cab_seq:013d}"
            old_id = f"3{siret}" if siret else f"0{cab_seq % 10**11:011d}"
            mode, section = "L|Libéral", ("", "")
            if profile == "pharmacist":
                section = _SECTIONS["pharmacy_owner"]
        else:
            options = _OTHER_SECTORS.get(profile, _OTHER_SECTORS["default"])
            if profile == "store":  # opticians in optical shops, the others in hearing centres
                options = tuple(o for o in options if (o[2] == "OPTIQUE") == (prof.code == "28"))
            sector_code, sector_label, stem = options[int(r() * len(options))]
            rs = f"{stem} {family if stem in ('OPTIQUE', 'LABORATOIRE') else plain(commune.name)}"
            siret, siren = _siret(siren8, 1 + slot)
            siren = ""
            structure_id = f"C{siret}"
            old_id = f"3{siret}"
            mode = "S|Salarié" if r() < 0.9 else "B|Bénévole"
            section = _SECTIONS.get(sector_code, ("", "")) if profile == "pharmacist" else ("", "")
        cabinet = (
            siret,
            siren,
            "",
            "",
            structure_id,
            rs,
            "",
            rs,
            "",
            numvoie,
            "",
            street_code,
            street_label,
            street,
            "",
            commune.routing,
            commune.postal,
            commune.insee,
            commune.name,
            *country,
            phone,
            "",
            "",
            email,
            dept.code,
            dept.label,
            old_id,
        )
        tail = f"{prof[6]}|{sector_code}|{sector_label}|{section[0]}|{section[1]}{role}"
        mss_structure = f"3|3{siret}" if siret else "|"
        mss_address = (
            f"{rs}||||{numvoie}||{street_code}|{street}||{commune.routing}|{commune.postal}|"
            f"{dept.code}|France"
        )
        return _Activity(
            activity_sf,
            mode,
            "|".join(cabinet),
            tail,
            structure_id,
            dept.code,
            False,
            cabinet,
            mss_structure,
            mss_address,
        )


# ------------------------------------------------------------------ manifest


@dataclass
class Diff:
    """What changed from the extraction of ``previous_seed`` to this one, exactly."""

    previous_seed: int
    professionals_new: int = 0
    professionals_gone: int = 0
    professionals_changed: int = 0
    professionals_unchanged: int = 0
    changes_by_kind: dict[str, int] = field(default_factory=dict)
    activity_lines_added: int = 0
    activity_lines_removed: int = 0
    activities_added: int = 0  # by (Identification nationale PP, structure id)
    activities_removed: int = 0
    activities_modified: int = 0  # same key, other activity columns (a cabinet moved)


@dataclass
class Manifest:
    """The files written and what they hold."""

    outdir: Path
    seed: int
    extraction_time: str
    paths: dict[str, Path] = field(default_factory=dict)
    professionals: int = 0
    activities: int = 0  # activity lines (bad lines not included)
    activities_with_finess: int = 0
    activities_without_structure: int = 0
    activities_by_department: dict[str, int] = field(default_factory=dict)
    savoir_faire_lines: int = 0
    diploma_lines: int = 0
    mssante_lines: int = 0
    establishments: int = 0
    bad_line_numbers: list[int] = field(default_factory=list)
    truncated_line: int | None = None
    diff: Diff | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outdir"] = str(self.outdir)
        out["paths"] = {k: str(v) for k, v in self.paths.items()}
        return out


# ------------------------------------------------------------------ writing


_LATIN1 = {"Œ": "OE", "œ": "oe", "’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "–": "-"}


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """Older extractions were Latin-1: what it cannot write is transliterated."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = []
    for char in error.object[error.start : error.end]:
        decomposed = unicodedata.normalize("NFKD", _LATIN1.get(char, char))
        bare = "".join(c for c in decomposed if not unicodedata.combining(c))
        out.append(bare if bare.isascii() else "?")
    return "".join(out), error.end


codecs.register_error("directory_latin1", _latin1_fallback)


def _open(path: Path, encoding: str) -> IO[str]:
    latin1 = codecs.lookup(encoding).name in ("latin-1", "iso8859-1")
    errors = "directory_latin1" if latin1 else "strict"
    return path.open("w", encoding=encoding, errors=errors, newline="", buffering=1 << 20)


def _header(columns: Sequence[str]) -> str:
    return "|".join(columns) + "|\n"


def generate(
    outdir: Path,
    activities: int = 2_500_000,
    seed: int = 0,
    *,
    extraction_of: int | None = None,
    changes: float = 0.02,
    new_rate: float | None = None,
    gone_rate: float | None = None,
    zip_files: bool = False,
    zip_only: bool = False,
    encoding: str = "utf-8",
    bad_lines: int = 0,
    truncate: bool = False,
    wrong_header: str | None = None,
    role_columns: bool = False,
    geo_style: str = "epsg",
) -> Manifest:
    """Write the extraction of ``seed`` to ``outdir`` (the files: see the module's doc).

    ``extraction_of``: write instead the next day's extraction after that of seed
    ``extraction_of`` (made with the same ``activities``): ``changes`` of its professionals
    changed, ``new_rate`` (default ``changes / 2``) new, ``gone_rate`` (``changes / 4``) gone,
    drawn with ``seed``; ``Manifest.diff`` counts them. ``zip_files`` also writes the published
    zips, ``zip_only`` instead of the text files. ``encoding`` is that of the three PS files.
    Faults, in the activity file: ``bad_lines`` lines of 20 fields, ``truncate``,
    ``wrong_header`` (``"renamed"`` or ``"missing"``). ``role_columns`` adds the four newer
    columns; ``geo_style="legacy"`` writes the older ``sourcecoordet`` form."""
    if activities < 1:
        raise ValueError("activities must be positive")
    if wrong_header not in (None, "renamed", "missing"):
        raise ValueError("wrong_header: 'renamed' or 'missing'")
    if geo_style not in ("epsg", "legacy"):
        raise ValueError("geo_style: 'epsg' or 'legacy'")
    outdir.mkdir(parents=True, exist_ok=True)
    pop_seed = seed if extraction_of is None else extraction_of
    stamp = REFERENCE_TIME + timedelta(days=0 if extraction_of is None else 1)
    ts = stamp.strftime("%Y%m%d%H%M")
    man = Manifest(outdir, seed, stamp.isoformat(timespec="minutes"))
    paths = {
        "activities": outdir / f"PS_LibreAcces_Personne_activite_{ts}.txt",
        "savoir_faire": outdir / f"PS_LibreAcces_SavoirFaire_{ts}.txt",
        "diplomas": outdir / f"PS_LibreAcces_Dipl_AutExerc_{ts}.txt",
        "mssante": outdir / f"Extraction_Correspondance_MSSante_{ts}.txt",
        "finess": outdir / f"etalab-cs1100507-stock-{stamp.strftime('%Y%m%d-%H%M')}.csv",
    }
    man.paths.update(paths)
    n_est = _establishment_count(activities)
    man.establishments = n_est
    geo_tmp = outdir / ".geolocalisation.tmp"
    with (
        _open(paths["finess"], "cp1252") as fin,
        _open(geo_tmp, "cp1252") as geo,
        _open(paths["mssante"], "utf-8") as mss,
    ):
        fin.write(f"finess;etalab;111;{stamp.date().isoformat()}\n")
        mss.write(_header(MSSANTE_COLUMNS))
        est, man.mssante_lines = _build_finess(pop_seed, n_est, stamp, fin, geo, mss, geo_style)
        geo.close()
        with geo_tmp.open(encoding="cp1252", newline="") as geo_in:
            shutil.copyfileobj(geo_in, fin, 1 << 20)
        geo_tmp.unlink()
        opts = _Options(
            seed,
            extraction_of,
            changes,
            changes / 2 if new_rate is None else new_rate,
            changes / 4 if gone_rate is None else gone_rate,
            bad_lines,
            wrong_header,
            role_columns,
        )
        _write_people(man, paths, est, pop_seed, activities, encoding, mss, opts)
    if truncate:
        man.truncated_line = _truncate(paths["activities"])
    if zip_files or zip_only:
        date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, 0)
        ps = [paths["activities"], paths["savoir_faire"], paths["diplomas"]]
        man.paths["ps_zip"] = outdir / f"PS_LibreAcces_{ts}.zip"
        man.paths["mssante_zip"] = outdir / f"Extraction_Correspondance_MSSante_{ts}.zip"
        _zip(man.paths["ps_zip"], ps, date_time)
        _zip(man.paths["mssante_zip"], [paths["mssante"]], date_time)
        if zip_only:
            for p in [*ps, paths["mssante"]]:
                p.unlink()
                del man.paths[next(k for k, v in man.paths.items() if v == p)]
    return man


@dataclass(frozen=True)
class _Options:
    seed: int
    extraction_of: int | None
    changes: float
    new_rate: float
    gone_rate: float
    bad_lines: int
    wrong_header: str | None
    role_columns: bool


def _write_people(
    man: Manifest,
    paths: dict[str, Path],
    est: _Establishments,
    pop_seed: int,
    activities: int,
    encoding: str,
    mss: IO[str],
    opts: _Options,
) -> None:
    seed, extraction_of, changes = opts.seed, opts.extraction_of, opts.changes
    new_rate, gone_rate = opts.new_rate, opts.gone_rate
    wrong_header, role_columns = opts.wrong_header, opts.role_columns
    maker = _Maker(pop_seed, est, role_columns)
    next_mode = extraction_of is not None
    diff = Diff(extraction_of) if extraction_of is not None else None
    change_cum = _cumulative([w for _, w in _CHANGE_KINDS])
    # Bad lines: 1-based file line numbers (header = 1) among lines sure to exist.
    bad: list[int] = []
    if opts.bad_lines:
        limit = activities if not next_mode else max(1, activities // 2)
        if opts.bad_lines > limit:
            raise ValueError(f"at most {limit} bad lines")
        bad_rng = random.Random(_mix(seed, 7, opts.bad_lines))
        bad = sorted(bad_rng.sample(range(2, limit + 2), opts.bad_lines))
    man.bad_line_numbers = bad
    bad_set = set(bad)
    columns = list(ACTIVITY_COLUMNS) + (list(ROLE_COLUMNS) if role_columns else [])
    drop: int | None = None
    if wrong_header == "renamed":
        columns[columns.index("Numéro FINESS site")] = "Numero FINESS site"
    elif wrong_header == "missing":
        drop = columns.index("Code profession")
        del columns[drop]
    by_dept: Counter[str] = Counter()
    counts = {"lines": 0, "finess": 0, "empty": 0, "sf": 0, "dipl": 0, "mss": 0}
    with (
        _open(paths["activities"], encoding) as act_f,
        _open(paths["savoir_faire"], encoding) as sf_f,
        _open(paths["diplomas"], encoding) as dip_f,
    ):
        act_f.write(_header(columns))
        sf_f.write(_header(SAVOIR_FAIRE_COLUMNS))
        dip_f.write(_header(DIPLOMA_COLUMNS))
        abuf: list[str] = []
        sbuf: list[str] = []
        dbuf: list[str] = []
        mbuf: list[str] = []
        line_no = 1  # lines written to the activity file so far, header included

        def emit(p: _Professional) -> None:
            nonlocal line_no
            prefix = p.prefix()
            for a in p.activities:
                line = f"{prefix}|{a.sf}|{a.mode}|{a.site}|{a.tail}|\n"
                if drop is not None:
                    parts = line.split("|")
                    del parts[drop]
                    line = "|".join(parts)
                line_no += 1
                if line_no in bad_set:
                    line = "|".join(line.split("|")[:20]) + "|\n"
                else:
                    counts["lines"] += 1
                    by_dept[a.dept] += 1
                    counts["finess"] += a.finess
                    counts["empty"] += a.structure_id == ""
                abuf.append(line)
            names = f"{p.kind}|{p.number}|{p.nat}|{p.family}|{p.given}"
            prof_cat = f"{p.profession[0]}|{p.profession[1]}|{p.category[0]}|{p.category[1]}"
            for s in p.savoir_faire:
                sbuf.append(f"{names}|{prof_cat}|{s[0]}|{s[1]}|{s[2]}|{s[3]}|\n")
            for code, label in p.diplomas:
                dbuf.append(f"{names}|DE|Diplôme d'Etat français|{code}|{label}|||||\n")
            counts["sf"] += len(p.savoir_faire)
            counts["dipl"] += len(p.diplomas)
            if p.mss:
                first = p.activities[0]
                person = (
                    f"{p.kind}|{p.number}|{p.nat}|{first.mss_structure}||"
                    f"{p.civility_practice[0]}|{p.family}|{p.given}|{p.category[0]}|"
                    f"{p.category[1]}|{p.profession[0]}|{p.profession[1]}|{p.mss_sf[0]}|"
                    f"{p.mss_sf[1]}|{p.demat}|{first.mss_address}|\n"
                )
                for address in p.mss:
                    mbuf.append(f"PER|{address}|{person}")
                counts["mss"] += len(p.mss)
            if len(abuf) >= 8192:
                flush()

        def flush() -> None:
            act_f.write("".join(abuf))
            sf_f.write("".join(sbuf))
            dip_f.write("".join(dbuf))
            mss.write("".join(mbuf))
            for b in (abuf, sbuf, dbuf, mbuf):
                b.clear()

        base_lines = 0
        n_prof = 0
        rng = random.Random()
        change_rng = random.Random()
        i = 0
        while base_lines < activities:
            if i % BLOCK == 0:
                rng = random.Random(_mix(pop_seed, 1, i // BLOCK))
                change_rng = random.Random(_mix(seed, 3, i // BLOCK))
            p = maker.professional(rng, i)
            if base_lines + len(p.activities) > activities:
                del p.activities[activities - base_lines :]
            base_lines += len(p.activities)
            if diff is not None:
                p = _change(maker, p, change_rng, change_cum, gone_rate, changes, diff)
            if p.activities:
                emit(p)
                n_prof += 1
            i += 1
        if diff is not None:
            n_new = round(i * new_rate)
            diff.professionals_new = n_new
            for k in range(n_new):
                index = i + k
                if k % BLOCK == 0:
                    rng = random.Random(_mix(seed, 2, index // BLOCK))
                p = maker.professional(rng, index)
                diff.activity_lines_added += len(p.activities)
                diff.activities_added += len(p.activities)
                emit(p)
                n_prof += 1
        flush()
    man.professionals = n_prof
    man.activities = counts["lines"]
    man.activities_with_finess = counts["finess"]
    man.activities_without_structure = counts["empty"]
    man.activities_by_department = dict(sorted(by_dept.items()))
    man.savoir_faire_lines = counts["sf"]
    man.diploma_lines = counts["dipl"]
    man.mssante_lines += counts["mss"]
    man.diff = diff


def _change(
    maker: _Maker,
    p: _Professional,
    rng: random.Random,
    change_cum: list[float],
    gone_rate: float,
    changes: float,
    diff: Diff,
) -> _Professional:
    """Apply this professional's change of the next extraction (drawn from ``rng``, always the
    same number of draws) and count it."""
    u, v, w, x = rng.random(), rng.random(), rng.random(), rng.random()
    n = len(p.activities)
    if n == 0:
        return p
    if u < gone_rate:
        diff.professionals_gone += 1
        diff.activity_lines_removed += n
        diff.activities_removed += n
        p.activities = []
        return p
    if u >= gone_rate + changes:
        diff.professionals_unchanged += 1
        return p
    kind = _CHANGE_KINDS[bisect.bisect(change_cum, v)][0]
    cabinets = [k for k, a in enumerate(p.activities) if a.cabinet is not None]
    if kind == "address" and not cabinets:
        kind = "activity_added"
    if kind == "activity_ended" and n < 2:
        kind = "name"
    if kind == "activity_added" and p.activities[0].structure_id == "":
        kind = "name"  # no declared site: a new activity would not be an added line only
    diff.professionals_changed += 1
    diff.changes_by_kind[kind] = diff.changes_by_kind.get(kind, 0) + 1
    if kind == "name":
        pools = maker.pools
        family = p.family
        for k in range(8):
            family = pools.last[(int(w * len(pools.last)) + k) % len(pools.last)]
            if family != p.family:
                break
        p.family = family
        diff.activity_lines_added += n
        diff.activity_lines_removed += n
    elif kind == "address":
        k = cabinets[int(w * len(cabinets))]
        a = p.activities[k]
        assert a.cabinet is not None
        cab = list(a.cabinet)
        code, label, street = maker.pools.streets[int(x * len(maker.pools.streets))]
        number = str(1 + (int(cab[9]) + 1 + int(w * 50)) % 200)
        cab[9], cab[11], cab[12], cab[13] = number, code, label, street
        a.site = "|".join(cab)
        a.cabinet = tuple(cab)
        diff.activity_lines_added += 1
        diff.activity_lines_removed += 1
        diff.activities_modified += 1
    elif kind == "activity_ended":
        del p.activities[int(w * n)]
        diff.activity_lines_removed += 1
        diff.activities_removed += 1
    else:
        home = maker.pools.dept_by_code.get(p.activities[0].dept) or maker.pools.departments[0]
        sub = random.Random(_mix(int(x * 2**32), 5, p.index))
        for attempt in range(3):  # a site it has already, twice: then a new cabinet
            act = maker.activity(
                sub,
                p.index,
                MODE_CABINET_SLOTS + attempt,
                p.profession,
                home,
                p.family,
                p.activities[0].sf,
                p.kind,
                set(),
                force_cabinet=attempt == 2,
            )
            if all(a.structure_id != act.structure_id for a in p.activities):
                break
        p.activities.append(act)
        diff.activity_lines_added += 1
        diff.activities_added += 1
    return p


def _truncate(path: Path) -> int:
    """Cut ``path`` in the middle of the first line past its middle, after a ``|`` (no final
    newline). Returns that line's 1-based number."""
    size = path.stat().st_size
    with path.open("rb+") as f:
        f.seek(size // 2)
        chunk = f.read(1 << 16)
        start = size // 2 + chunk.index(b"\n") + 1
        f.seek(start)
        line = f.readline()
        cut = start + line.index(b"|", len(line) // 2) + 1
        f.seek(0)
        line_number = 1
        pos = 0
        while pos < start:
            block = f.read(min(1 << 20, start - pos))
            line_number += block.count(b"\n")
            pos += len(block)
        f.truncate(cut)
    return line_number


def _zip(
    target: Path, files: Sequence[Path], date_time: tuple[int, int, int, int, int, int]
) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in files:
            info = zipfile.ZipInfo(path.name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with path.open("rb") as src, z.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


# ------------------------------------------------------------------ command line


def _summary(man: Manifest) -> str:
    lines = [f"{k}: {v}" for k, v in man.paths.items()]
    lines.append(
        f"professionals {man.professionals}, activity lines {man.activities} "
        f"({man.activities_with_finess} at a FINESS site, {man.activities_without_structure} "
        f"without structure), savoir-faire {man.savoir_faire_lines}, diplomas "
        f"{man.diploma_lines}, MSSanté {man.mssante_lines}, FINESS establishments "
        f"{man.establishments}"
    )
    overseas = {k: v for k, v in man.activities_by_department.items() if k.startswith("97")}
    lines.append(f"overseas activity lines: {overseas}")
    if man.bad_line_numbers:
        lines.append(f"bad lines (1-based): {' '.join(map(str, man.bad_line_numbers))}")
    if man.truncated_line is not None:
        lines.append(f"truncated in line {man.truncated_line}")
    if man.diff is not None:
        d = man.diff
        lines.append(
            f"next extraction after seed {d.previous_seed}: professionals new "
            f"{d.professionals_new}, gone {d.professionals_gone}, changed "
            f"{d.professionals_changed} {d.changes_by_kind}, unchanged "
            f"{d.professionals_unchanged}; activity lines added {d.activity_lines_added}, "
            f"removed {d.activity_lines_removed}; activities added {d.activities_added}, "
            f"removed {d.activities_removed}, modified {d.activities_modified}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.directory_data", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--activities", type=int, default=2_500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extraction-of", type=int, metavar="PREVIOUS_SEED")
    parser.add_argument("--changes", type=float, default=0.02, help="share of changed pros")
    parser.add_argument("--new", type=float, help="share of new professionals (changes / 2)")
    parser.add_argument("--gone", type=float, help="share of gone professionals (changes / 4)")
    parser.add_argument("--zip", action="store_true", help="also write the published zips")
    parser.add_argument("--zip-only", action="store_true", help="the zips instead of the .txt")
    parser.add_argument("--encoding", default="utf-8", help="of the PS files (latin-1: older)")
    parser.add_argument("--bad-lines", type=int, default=0, metavar="K")
    parser.add_argument("--truncate", action="store_true")
    parser.add_argument(
        "--wrong-header", nargs="?", const="renamed", choices=("renamed", "missing")
    )
    parser.add_argument("--role-columns", action="store_true", help="the 4 newer columns")
    parser.add_argument("--geo-style", choices=("epsg", "legacy"), default="epsg")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = parser.parse_args(argv)
    man = generate(
        args.outdir,
        args.activities,
        args.seed,
        extraction_of=args.extraction_of,
        changes=args.changes,
        new_rate=args.new,
        gone_rate=args.gone,
        zip_files=args.zip,
        zip_only=args.zip_only,
        encoding=args.encoding,
        bad_lines=args.bad_lines,
        truncate=args.truncate,
        wrong_header=args.wrong_header,
        role_columns=args.role_columns,
        geo_style=args.geo_style,
    )
    print(json.dumps(man.as_dict(), indent=1) if args.json else _summary(man))
    return 0


if __name__ == "__main__":
    sys.exit(main())
