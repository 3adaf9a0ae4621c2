"""The HL7 v2 message model of the protocol edges: lenient parsing with its repairs, escaping,
character sets, and answers that the ``hl7`` package reads back."""

from __future__ import annotations

import hl7
import pytest

from enrs.kit.hl7v2 import V2Error, build_response, parse_message

MSG = (
    "MSH|^~\\&|APP|FAC|ENRS|REGION|20240101120000||ADT^A28^ADT_A05|{ctl}|P|2.5\r"
    "PID|1||42^^^&1.2.3&ISO^PI||DOE^JOHN\r"
)


def test_parser_repairs_separators_and_unescapes() -> None:
    text = (
        "\ufeffMSH|^~\\&|A|B|C|D|2024||ADT^A28|1|P|2.5\n"
        "PID|1||7^^^&1.2&ISO^PI||O\\T\\BRIEN\\S\\X^ANNE\r\n"
    )
    msg = parse_message(text.encode())
    pid = msg.segment("PID")
    assert pid is not None and pid.get(5) == "O&BRIEN^X" and pid.get(5, 2) == "ANNE"
    assert pid.get(3, 4, 2) == "1.2" and msg.event == "A28" and msg.control_id == "1"
    assert any("LF" in r for r in msg.repairs)


def test_parser_refuses_what_has_no_header() -> None:
    with pytest.raises(V2Error) as err:
        parse_message(b"PID|1||42")
    assert err.value.code == 100 and err.value.ack == "AR"


def test_charset_from_msh18() -> None:
    latin = (
        "MSH|^~\\&|A|B|C|D|2024||ADT^A28|1|P|2.5||||||8859/1\rPID|1||1^^^&1.2&ISO^PI||LÉA^ÉLODIE\r"
    )
    msg = parse_message(latin.encode("latin-1"))
    assert msg.codec == "latin-1" and msg.segment("PID").get(5) == "LÉA"  # type: ignore[union-attr]
    ack = build_response(msg, "AE", errors=[V2Error(102, "Élodie refusée", ack="AE")])
    assert "Élodie".encode("latin-1") in ack and b"|8859/1" in ack
    undeclared = parse_message(latin.replace("8859/1", "").encode("latin-1"))
    assert undeclared.codec == "latin-1" and undeclared.repairs


def test_answer_is_valid_hl7() -> None:
    request = parse_message(MSG.format(ctl="C1").encode())
    answer = hl7.parse(
        build_response(request, "AE", errors=[V2Error(204, "unknown | key", ack="AE")]).decode()
    )
    assert str(answer.segment("MSA")[1]) == "AE" and str(answer.segment("MSA")[2]) == "C1"
    msh = answer.segment("MSH")
    assert str(msh[3]) == "ENRS" and str(msh[5]) == "APP" and str(msh[10]) != "C1"
    err = answer.segment("ERR")
    assert str(err[3][0][0]) == "204" and answer.unescape(str(err[8])) == "unknown | key"
