"""The second pass of matching on a real database: the French phonetic keys, the phone and the
address find pairs the strict keys miss; complementary traits bring a pair to the cell but never
make a link automatic; a first name's typo is told from a twin's real first name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests.identity.test_service import CHU, CLINIC, CONFIG, GP, MATCHER, feed
from tests.support.identities import person

from enrs.identity import record, repository, service
from enrs.identity.matching.model import DEFAULT_MODEL, MatchModel
from enrs.identity.models import IdentityTask
from enrs.identity.schemas import SourceIdentityIn, Telecom
from enrs.identity.traits import normalize_address, normalize_city, normalize_phone, phonetic
from enrs.kit.db import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _open_tasks(db: Database, source_id: int) -> list[IdentityTask]:
    with db.transaction(write=False) as session:
        stmt = select(IdentityTask).where(
            IdentityTask.source_id == source_id, IdentityTask.status == "OPEN"
        )
        return list(session.scalars(stmt))


def _candidates(db: Database, data: SourceIdentityIn) -> set[int]:
    with db.transaction(write=False) as session:
        traits = service.prepare(data, CONFIG).traits
        return {c.id for c in repository.candidates(session, traits)}


def _home(**changes: Any) -> dict[str, Any]:
    """An address and a phone, as a facility sends them."""
    return {
        "address_line": "12 rue Schoelcher",
        "city": "Fort-de-France",
        "telecom": [Telecom(system="phone", value="0696 12 34 56")],
        **changes,
    }


def test_normalised_keys() -> None:
    assert phonetic("LEFEBVRE") == phonetic("LEFEVRE") and phonetic("") == ""
    assert phonetic("H") == "H"  # FONEM leaves nothing of it: its own key
    assert phonetic("GAUTHIER") == phonetic("GOTIER") != phonetic("GAUTIER ROSE")
    assert normalize_phone("+596 696 12-34-56") == normalize_phone("0696123456") == "696123456"
    assert normalize_phone("00 590 690 12 34 56") == "690123456"
    assert normalize_phone("12 34") == ""  # too short to be a number
    assert normalize_address("12, Bd St-Jean") == "12 BOULEVARD SAINT JEAN"
    assert normalize_city("Ste-Anne CEDEX 2") == "SAINTE ANNE"


def test_a_first_name_typo_links_but_a_twin_s_real_first_name_does_not(db: Database) -> None:
    """``INCOLAS`` is not a first name: a typo of ``NICOLAS``, linked automatically.
    ``MATHYS`` is one (INSEE lists it), so ``MATHIS`` and ``MATHYS``, born the same day to the
    same family, are two persons: the cell is asked."""
    born = {"birth_date": date(2012, 5, 3), "sex": "M", "birth_name": "ROSIER"}
    nicolas = feed(db, person(CHU, "1", given_names=["Nicolas"], **born, **_home()))
    typo = feed(db, person(CLINIC, "A1", given_names=["Incolas"], **born, **_home()))
    assert typo.link_method == "AUTO" and typo.rri == nicolas.rri

    twins = {**born, "birth_date": date(2015, 8, 21)}
    mathis = feed(db, person(CHU, "2", given_names=["Mathis"], **twins, **_home()))
    mathys = feed(db, person(CLINIC, "B2", given_names=["Mathys"], **twins, **_home()))
    assert mathys.link_method == "NEW" and mathys.rri != mathis.rri
    (task,) = _open_tasks(db, mathys.source_id)
    assert task.kind == "DUPLICATE"


def test_complementary_traits_bring_a_pair_to_the_cell_never_to_an_automatic_link(
    db: Database,
) -> None:
    """The same address, phone and e-mail add evidence enough to pass the automatic-link
    threshold, but only the strict traits count towards it: the cell decides."""
    strict = {"birth_name": "DESIRE", "birth_place": None, "given_names": ["Jean-Paul"]}
    mail = Telecom(system="email", value="jp.desire@example.org")
    home = _home(telecom=[Telecom(system="phone", value="0696 12 34 56"), mail])
    a = person(CHU, "1", **strict, **home)
    b_home = person(CLINIC, "B1", **{**strict, "birth_name": "DESIREE", "given_names": ["Jean"]},
                    **home)  # fmt: skip
    score = MATCHER.score(service.prepare(b_home, CONFIG).traits, service.prepare(a, CONFIG).traits)
    model = MATCHER.model
    assert score.auto_link_allowed and score.strict_weight < model.auto_link <= score.weight
    # a strict trait more (the same birth place) and the link would be automatic
    placed = [x.model_copy(update={"birth_place": "97209"}) for x in (b_home, a)]
    traits = [service.prepare(x, CONFIG).traits for x in placed]
    assert MATCHER.score(*traits).strict_weight >= model.auto_link

    first = feed(db, a)
    second = feed(db, b_home)
    assert second.link_method == "NEW" and second.rri != first.rri
    (task,) = _open_tasks(db, second.source_id)
    assert task.score is not None and task.score >= model.auto_link


def test_blocking_finds_a_pair_whose_birth_name_and_date_are_both_wrong(db: Database) -> None:
    """Neither the birth date nor the spelling of the birth name is shared: the phonetic keys
    of the names are (``GAUTHIER`` / ``GOTIER``)."""
    a = feed(db, person(CHU, "1", birth_name="Gauthier", given_names=["Philippe"], **_home()))
    probe = person(
        CLINIC, "B1", birth_name="Gotier", given_names=["Philippe"], birth_date=date(1958, 11, 30)
    )
    assert a.source_id in _candidates(db, probe)
    alone = person(
        CLINIC, "B1", birth_name="Gottier", given_names=["Paul"], birth_date=date(1958, 11, 30)
    )
    assert a.source_id not in _candidates(db, alone)  # nothing shared: not a candidate


def test_blocking_finds_the_same_phone_or_address_with_another_name_and_date(
    db: Database,
) -> None:
    """A woman registered under her husband's name, another birth date typed: the phone (in
    its international form) or the address still brings her identities together."""
    a = feed(db, person(CHU, "1", **_home()))
    other = {"birth_name": "LAVIOLETTE", "given_names": ["Line"], "birth_date": date(1916, 4, 9)}
    by_phone = person(
        CLINIC, "B1", **other, telecom=[Telecom(system="phone", value="+596 696 12 34 56")]
    )
    assert a.source_id in _candidates(db, by_phone)
    by_address = person(CLINIC, "B1", **other, address_line="12 r. Schoelcher", postal_code="97200")
    assert a.source_id in _candidates(db, by_address)
    elsewhere = person(CLINIC, "B1", **other, address_line="12 rue Schoelcher", postal_code="97232")
    assert a.source_id not in _candidates(db, elsewhere)  # another town's street of that name


def test_twins_are_told_apart_by_their_order_of_birth(db: Database) -> None:
    """``MARIE`` and ``MARIE ROSE`` born the same day would be linked (one list of first names
    is the other's start); given as the first and the second of a multiple birth, they never
    are: the cell is asked. The same order of birth does not stand in the way."""
    twin = {"birth_name": "ROSIER", "birth_date": date(2015, 8, 21)}
    first = feed(db, person(CHU, "1", given_names=["Marie"], **twin, record=_order(1)))
    second = feed(db, person(CLINIC, "B1", given_names=["Marie", "Rose"], **twin, record=_order(2)))
    assert second.link_method == "NEW" and second.rri != first.rri
    assert [t.kind for t in _open_tasks(db, second.source_id)] == ["DUPLICATE"]
    again = feed(db, person(GP, "G1", given_names=["Marie", "Rose"], **twin, record=_order(2)))
    assert again.link_method == "AUTO" and again.rri == second.rri


def _order(n: int) -> dict[str, Any]:
    return {"fhir": {"multipleBirthInteger": n}}


def test_the_order_of_birth_is_read_from_either_protocol() -> None:
    assert record.birth_order({"fhir": {"multipleBirthInteger": 2}}) == "2"
    assert record.birth_order({"v2": {"PID": {"24": "Y", "25": "3"}}}) == "3"
    assert record.birth_order({"fhir": {"multipleBirthBoolean": True}}) == ""
    assert record.birth_order({"fhir": {"multipleBirthInteger": True}}) == ""
    assert record.birth_order({"v2": {"PID": {"25": "x"}}}) == "" == record.birth_order(None)


def test_the_order_of_birth_may_forbid_an_automatic_link_never_help_one() -> None:
    """It is evidence only (the same order adds nothing towards the automatic threshold) and
    a veto (two orders: never automatic)."""
    twin = {"birth_name": "ROSIER", "birth_date": date(2015, 8, 21), "given_names": ["Marie"]}
    plain = service.prepare(person(CHU, "1", **twin), CONFIG).traits
    first = service.prepare(person(CHU, "1", **twin, record=_order(1)), CONFIG).traits
    second = service.prepare(person(CHU, "2", **twin, record=_order(2)), CONFIG).traits
    same, alone = MATCHER.score(first, first), MATCHER.score(plain, plain)
    assert same.strict_weight == alone.strict_weight and same.weight > alone.weight
    assert same.auto_link_allowed and not MATCHER.score(first, second).auto_link_allowed


def test_a_model_naming_an_unknown_evidence_comparison_is_refused() -> None:
    data = json.loads(DEFAULT_MODEL.read_text())
    data["evidence_only"] = [*data["evidence_only"], "fax"]
    with pytest.raises(ValueError, match="fax"):
        MatchModel.from_dict(data)


def test_a_placeholder_phone_or_address_is_no_key(db: Database) -> None:
    """``00 00 00 00 00`` and ``INCONNUE`` are what is typed when the phone or address is not
    known: as keys they would bring every such identity to every such probe (past the
    candidate limit, crowding out the real ones), and as evidence make strangers alike."""
    assert normalize_phone("00 00 00 00 00") == normalize_phone("0123456789") == ""
    assert normalize_address("Adresse inconnue") == normalize_address("SDF") == ""
    unknown = {
        "address_line": "INCONNUE",
        "telecom": [Telecom(system="phone", value="00 00 00 00 00")],
    }
    with db.transaction() as session:
        for i in range(repository.CANDIDATE_LIMIT + 20):
            stranger = person(
                CHU,
                f"S{i}",
                birth_name=f"INCONNU{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}",
                given_names=["Jean"],
                birth_date=date(1930, 1, 1) + timedelta(days=37 * i),
                **unknown,
            )
            service.feed(session, MATCHER, stranger, actor="test", config=CONFIG)
    mine = feed(db, person(CHU, "me", **unknown))
    found = _candidates(db, person(CLINIC, "B1", **unknown))
    assert mine.source_id in found and len(found) < repository.CANDIDATE_LIMIT
