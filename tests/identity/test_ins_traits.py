"""A matricule INS is checked against the traits it encodes (sex, birth year, birth month),
and a malformed one says what is wrong with it."""

from __future__ import annotations

from datetime import date

import pytest

from enrs.identity.traits import INS_NIR_OID, InvalidTrait, check_ins, check_traits

ACCEPTED = frozenset({INS_NIR_OID})


def nir(first13: str) -> str:
    return f"{first13}{97 - int(first13.replace('2A', '19').replace('2B', '18')) % 97:02d}"


WOMAN_1961_04 = nir("2610497209001")  # a woman born in April 1961 in Fort-de-France


def traits(ins: str, *, sex: str = "F", born: date | None = date(1961, 4, 9)) -> None:
    check_traits(
        status="QUAL",
        attributes=frozenset(),
        sex=sex,
        birth_date=born,
        birth_place="97209",
        ins=ins,
    )


def refusal(ins: str, **changes: object) -> InvalidTrait:
    with pytest.raises(InvalidTrait) as caught:
        traits(ins, **changes)  # type: ignore[arg-type]
    return caught.value


def test_an_ins_that_agrees_with_its_traits_is_accepted() -> None:
    traits(WOMAN_1961_04)
    traits("279035121518989", born=date(1979, 3, 28))  # the ANS test patient
    traits(WOMAN_1961_04, sex="U")  # an unknown sex is not checked
    traits(WOMAN_1961_04, born=None)  # nor a birth date the facility does not have


def test_the_sex_digit_must_agree_with_the_sex() -> None:
    error = refusal(WOMAN_1961_04, sex="M")
    assert error.field == "sex"
    assert "sex F" in error.message and "the identity's sex is M" in error.message
    assert refusal(nir("1610497209001")).field == "sex"  # a man's INS on a woman


def test_the_birth_year_and_month_must_agree_with_the_birth_date() -> None:
    year = refusal(WOMAN_1961_04, born=date(1962, 4, 9))
    assert year.field == "birth_date" and "year ending in 61" in year.message
    month = refusal(WOMAN_1961_04, born=date(1961, 5, 9))
    assert month.field == "birth_date" and "month 04" in month.message
    assert "1961-05-09" in month.message


@pytest.mark.parametrize("month", ["20", "30", "42", "50", "99"])
def test_a_month_unknown_to_the_civil_register_is_not_checked(month: str) -> None:
    traits(nir(f"261{month}97209001"), born=date(1961, 1, 1))
    assert refusal(nir(f"262{month}97209001"), born=date(1961, 1, 1)).field == "birth_date"


def test_a_malformed_ins_says_what_is_wrong() -> None:
    with pytest.raises(InvalidTrait, match="an INS has 15 characters, not 14"):
        check_ins(WOMAN_1961_04[:-1], INS_NIR_OID, ACCEPTED)
    with pytest.raises(InvalidTrait, match="13 digits"):
        check_ins("2610497X09001" + WOMAN_1961_04[-2:], INS_NIR_OID, ACCEPTED)
    bad_key = WOMAN_1961_04[:-2] + f"{(int(WOMAN_1961_04[-2:]) + 1) % 97:02d}"
    with pytest.raises(InvalidTrait, match="its key does not check"):
        check_ins(bad_key, INS_NIR_OID, ACCEPTED)
    assert check_ins(" 2 53 07 2B 073 004 70", INS_NIR_OID, ACCEPTED) == "253072B07300470"
