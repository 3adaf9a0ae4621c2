"""The national MSSanté trust list: a valid list is read, each fault is refused.

Every faulty list here really has the fault: signed by a test PKI made in the session, then
changed, stripped or re-signed; nothing of the parser is mocked.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import SignatureMethod
from signxml.signer import XMLSigner

from enrs.messaging.trustlist import (
    NAMESPACE,
    TrustList,
    TrustListError,
    dn_equal,
    parse_trust_list,
)
from tests.support.trust_list import (
    Domain,
    Pki,
    make_pki,
    sign,
    signed_trust_list,
    trust_list_xml,
)

_DS = "http://www.w3.org/2000/09/xmldsig#"
OPERATOR_DN = "CN=mail.operateur.test,OU=123456789,O=Operateur test,ST=Paris (75),C=FR"
DOMAINS = [
    Domain("hopital.mssante.fr", operator_dn=OPERATOR_DN),
    Domain("Medecin.MSSante.fr", description="Cabinets libéraux"),
    Domain("patient.mssante.fr"),
]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def other_pki() -> Pki:
    return make_pki("Autre signataire")


@pytest.fixture(scope="module")
def signed(pki: Pki) -> bytes:
    return signed_trust_list(DOMAINS, pki)


def refused(data: bytes, trusted: list[x509.Certificate], match: str) -> TrustListError:
    with pytest.raises(TrustListError, match=match) as caught:
        parse_trust_list(data, trusted)
    return caught.value


# --- a valid list ---------------------------------------------------------------------------


def test_a_signed_list_is_read(pki: Pki, signed: bytes) -> None:
    trust = parse_trust_list(signed, [pki.ca_cert])

    assert trust.generated == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert [d.name for d in trust.domains] == [
        "hopital.mssante.fr",
        "medecin.mssante.fr",
        "patient.mssante.fr",
    ]
    hopital = trust.domains[0]
    assert hopital.operator_dn == OPERATOR_DN
    assert hopital.description == "Opérateur de test"
    assert hopital.responsible_contact == "responsable@operateur.test"
    assert hopital.support_contact == "support@operateur.test"
    assert hopital.updated == datetime(2026, 1, 15, 8, 30, tzinfo=UTC)
    assert trust.warnings == ()


def test_lookup_ignores_case_and_a_trailing_dot(pki: Pki, signed: bytes) -> None:
    trust = parse_trust_list(signed, [pki.ca_cert])

    found = trust.lookup("MEDECIN.mssante.FR.")
    assert found is not None
    assert found.description == "Cabinets libéraux"
    assert trust.lookup("hopital.mssante.fr") is trust.domains[0]
    assert trust.lookup("inconnu.mssante.fr") is None
    assert trust.lookup("mssante.fr") is None
    assert trust.lookup("evil-hopital.mssante.fr") is None


def test_the_signer_may_be_trusted_directly_or_as_pem(pki: Pki, signed: bytes) -> None:
    by_signer = parse_trust_list(signed, [pki.signer_cert])
    by_pem = parse_trust_list(signed, [pki.ca_cert.public_bytes(Encoding.PEM)])
    assert by_signer.domains == by_pem.domains
    assert len(by_pem.domains) == 3


def test_a_signature_carrying_its_chain_verifies(pki: Pki) -> None:
    data = sign(trust_list_xml(DOMAINS), pki, chain=True)
    assert len(parse_trust_list(data, [pki.ca_cert]).domains) == 3


def test_optional_fields_missing_are_reported_not_refused(pki: Pki) -> None:
    data = signed_trust_list(
        [
            Domain("a.mssante.fr", support_contact=None, operator_dn=None),
            Domain("b.mssante.fr", updated="01/02/2026 10:15"),
            Domain("c.mssante.fr", updated="hier"),
        ],
        pki,
    )
    trust = parse_trust_list(data, [pki.ca_cert])

    a, b, c = trust.domains
    assert a.support_contact is None and a.operator_dn is None
    assert b.updated == datetime(2026, 2, 1, 9, 15, tzinfo=UTC)  # Paris, winter time
    assert c.updated is None
    assert trust.warnings == (
        "a.mssante.fr: no DNCertificatOperateur",
        "a.mssante.fr: no SupportContact",
        "c.mssante.fr: DateMAJ is not a date ('hier'), ignored",
    )
    assert not trust.operator_dn_matches("a.mssante.fr", OPERATOR_DN)


# --- the document ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"   ", b"not xml at all", b"<ListeBlanche><Domaine>", b"\x89PNG\r\n\x1a\n"]
)
def test_not_xml_is_refused(pki: Pki, data: bytes) -> None:
    refused(data, [pki.ca_cert], "not XML")


def test_a_wrong_root_element_is_refused(pki: Pki) -> None:
    data = sign(trust_list_xml(DOMAINS, root="ListeNoire"), pki)
    refused(data, [pki.ca_cert], "the root element is 'ListeNoire', 'ListeBlanche' is expected")


@pytest.mark.parametrize(
    ("namespace", "where"),
    [("urn:example:autre", "in the namespace 'urn:example:autre'"), ("", "in no namespace")],
)
def test_a_wrong_namespace_is_refused(pki: Pki, namespace: str, where: str) -> None:
    if namespace:
        data = sign(trust_list_xml(DOMAINS, namespace=namespace), pki)
    else:
        data = trust_list_xml(DOMAINS).replace(f' xmlns="{NAMESPACE}"'.encode(), b"")
    refused(data, [pki.ca_cert], f"its root is {where}")


def test_a_document_over_the_limit_is_refused_before_parsing(pki: Pki, signed: bytes) -> None:
    padding = b"<!--" + b"x" * 6_000_000 + b"-->"
    big = signed.replace(b"</ListeBlanche>", padding + b"</ListeBlanche>")
    refused(big, [pki.ca_cert], "the trust list has 6,00.* bytes; at most 5,000,000 are accepted")
    with pytest.raises(TrustListError, match="at most 1,000 are accepted"):
        parse_trust_list(signed, [pki.ca_cert], max_bytes=1_000)


def test_an_external_entity_is_never_read(pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE-CONTENT")
    data = (
        f'<?xml version="1.0"?>\n<!DOCTYPE ListeBlanche [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<ListeBlanche xmlns="{NAMESPACE}"><DateDeGeneration>2026-12-01</DateDeGeneration>'
        "<Domaine><Nom>a.mssante.fr</Nom><Description>&x;</Description></Domaine>"
        "</ListeBlanche>"
    ).encode()
    error = refused(data, [pki.ca_cert], "DOCTYPE")
    assert "PRIVATE-CONTENT" not in str(error)


def test_a_billion_laughs_is_refused_without_expansion(pki: Pki) -> None:
    entities = '<!ENTITY lol0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    data = (
        f'<?xml version="1.0"?>\n<!DOCTYPE ListeBlanche [{entities}]>'
        f'<ListeBlanche xmlns="{NAMESPACE}"><DateDeGeneration>2026-12-01</DateDeGeneration>'
        "<Domaine><Nom>a.mssante.fr</Nom><Description>&lol9;</Description></Domaine>"
        "</ListeBlanche>"
    ).encode()
    started = time.perf_counter()
    refused(data, [pki.ca_cert], "DOCTYPE")
    assert time.perf_counter() - started < 1.0  # 3 * 10**9 characters were not built


def test_an_internal_subset_without_entities_is_refused_too(pki: Pki, signed: bytes) -> None:
    body = signed.split(b"?>", 1)[1]
    data = b'<?xml version="1.0"?><!DOCTYPE ListeBlanche [<!ELEMENT Nom ANY>]>' + body
    refused(data, [pki.ca_cert], "DOCTYPE")


# --- the signature --------------------------------------------------------------------------


def test_an_unsigned_list_is_refused(pki: Pki) -> None:
    refused(trust_list_xml(DOMAINS), [pki.ca_cert], "not signed")


def test_a_list_whose_signature_was_removed_is_refused(pki: Pki, signed: bytes) -> None:
    root = etree.fromstring(signed)
    signature = root.find(f"{{{_DS}}}Signature")
    assert signature is not None
    root.remove(signature)
    refused(etree.tostring(root), [pki.ca_cert], "not signed")


def test_a_name_changed_after_signing_is_refused(pki: Pki, signed: bytes) -> None:
    tampered = signed.replace(b"<Nom>patient.mssante.fr</Nom>", b"<Nom>pirate.example.fr</Nom>")
    assert tampered != signed
    refused(tampered, [pki.ca_cert], "changed after it was signed")


def test_a_domain_added_after_signing_is_refused(pki: Pki, signed: bytes) -> None:
    extra = b"<Domaine><Nom>pirate.example.fr</Nom></Domaine>"
    tampered = signed.replace(b"<Domaine>", extra + b"<Domaine>", 1)
    refused(tampered, [pki.ca_cert], "changed after it was signed")


def test_a_list_signed_by_an_untrusted_signer_is_refused(pki: Pki, other_pki: Pki) -> None:
    data = signed_trust_list(DOMAINS, other_pki)
    refused(data, [pki.ca_cert], "signer is not trusted")
    assert parse_trust_list(data, [other_pki.ca_cert]).domains  # the same list, its own CA


def test_a_list_resigned_by_another_key_under_the_trusted_certificate_is_refused(
    pki: Pki, other_pki: Pki
) -> None:
    data = signed_trust_list(DOMAINS, other_pki)
    theirs = base64.b64encode(other_pki.signer_cert.public_bytes(Encoding.DER))
    ours = base64.b64encode(pki.signer_cert.public_bytes(Encoding.DER))
    root = etree.fromstring(data)
    (cert,) = root.iter(f"{{{_DS}}}X509Certificate")
    assert "".join(cert.text.split()).encode() == theirs
    cert.text = ours.decode()
    refused(etree.tostring(root), [pki.ca_cert], "signature is not valid")


def test_a_corrupted_signature_value_is_refused(pki: Pki, signed: bytes) -> None:
    root = etree.fromstring(signed)
    (value,) = root.iter(f"{{{_DS}}}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[10] ^= 0x01
    value.text = base64.b64encode(bytes(raw)).decode()
    refused(etree.tostring(root), [pki.ca_cert], "signature is not valid")


def test_an_expired_signer_is_refused_unless_checked_at_its_time(pki: Pki) -> None:
    expired = make_pki("Signataire expire", lifetime=-timedelta(hours=1))
    data = signed_trust_list(DOMAINS, expired)
    refused(data, [expired.ca_cert], "signer is not trusted.*expired")
    then = datetime.now(UTC) - timedelta(days=1, hours=12)
    assert parse_trust_list(data, [expired.ca_cert], at=then).domains


def test_a_signature_over_part_of_the_document_is_refused(pki: Pki) -> None:
    root = etree.fromstring(trust_list_xml(DOMAINS))
    first = root.find(f"{{{NAMESPACE}}}Domaine")
    first.set("Id", "d1")
    signer = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA256)
    signed = signer.sign(
        root, key=pki.signer_key, cert=[pki.signer_cert], reference_uri="#d1", id_attribute="Id"
    )
    refused(etree.tostring(signed), [pki.ca_cert], "does not cover the whole document")


# --- the content ----------------------------------------------------------------------------


def test_a_list_without_domains_is_refused(pki: Pki) -> None:
    refused(signed_trust_list([], pki), [pki.ca_cert], "has no domain")


def test_a_domain_listed_twice_is_refused(pki: Pki) -> None:
    data = signed_trust_list([Domain("a.mssante.fr"), Domain("A.MSSante.fr.")], pki)
    refused(data, [pki.ca_cert], "names the domain 'a.mssante.fr' twice")


@pytest.mark.parametrize(
    "name",
    [
        "exa mple.mssante.fr",
        "-tiret.mssante.fr",
        "tiret-.mssante.fr",
        "localhost",
        "hôpital.mssante.fr",
        "*.mssante.fr",
        "a..mssante.fr",
        "under_score.mssante.fr",
        "192.168.0.1",
        "x" * 64 + ".mssante.fr",
    ],
)
def test_a_name_that_is_not_a_dns_name_is_refused(pki: Pki, name: str) -> None:
    data = signed_trust_list([Domain("a.mssante.fr"), Domain(name)], pki)
    refused(data, [pki.ca_cert], "Domaine #2 has a Nom that is not a DNS name")


def test_a_domain_without_a_name_is_refused(pki: Pki) -> None:
    data = signed_trust_list([Domain("a.mssante.fr"), Domain("")], pki)
    refused(data, [pki.ca_cert], "Domaine #2 has no Nom")


def test_a_list_without_a_generation_date_is_refused(pki: Pki) -> None:
    refused(signed_trust_list(DOMAINS, pki, generated=None), [pki.ca_cert], "no generation date")


def test_a_generation_date_that_is_not_a_date_is_refused(pki: Pki) -> None:
    data = signed_trust_list(DOMAINS, pki, generated="demain")
    refused(data, [pki.ca_cert], "DateDeGeneration is not a date: 'demain'")


def test_an_idn_in_its_ascii_form_is_accepted(pki: Pki) -> None:
    data = signed_trust_list([Domain("xn--hpital-dva.mssante.fr")], pki)
    assert parse_trust_list(data, [pki.ca_cert]).lookup("XN--HPITAL-DVA.mssante.fr")


# --- operator DN ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trust(pki: Pki, signed: bytes) -> TrustList:
    return parse_trust_list(signed, [pki.ca_cert])


def test_a_certificate_subject_matches_the_listed_dn(trust: TrustList) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Paris (75)"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Operateur test"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "123456789"),
            x509.NameAttribute(NameOID.COMMON_NAME, "mail.operateur.test"),
        ]
    )
    assert subject.rfc4514_string() == OPERATOR_DN
    assert trust.operator_dn_matches("hopital.mssante.fr", subject)
    assert trust.operator_dn_matches("HOPITAL.mssante.fr.", subject.rfc4514_string())


@pytest.mark.parametrize(
    "dn",
    [
        "C=FR, ST=Paris (75), O=Operateur test, OU=123456789, CN=mail.operateur.test",
        "cn = MAIL.operateur.test ; ou=123456789 ; o=OPERATEUR  TEST ; s=paris (75) ; c=fr",
        "/C=FR/ST=Paris (75)/O=Operateur test/OU=123456789/CN=mail.operateur.test",
        "2.5.4.3=mail.operateur.test,OU=123456789,O=Operateur\\20test,ST=Paris (75),C=FR",
        "CN=mail.operateur.test+OU=123456789,O=Operateur test,ST=Paris (75),OID.2.5.4.6=FR",
    ],
)
def test_tolerated_dn_differences(trust: TrustList, dn: str) -> None:
    assert trust.operator_dn_matches("hopital.mssante.fr", dn)


@pytest.mark.parametrize(
    "dn",
    [
        "CN=autre.operateur.test,OU=123456789,O=Operateur test,ST=Paris (75),C=FR",
        "CN=mail.operateur.test,OU=123456789,O=Operateur test,C=FR",
        "CN=mail.operateur.test,OU=123456789,O=Operateur test,ST=Paris (75),C=FR,L=Paris",
        "CN=mail.operateur.test,OU=987654321,O=Operateur test,ST=Paris (75),C=FR",
        "",
        "not a dn",
    ],
)
def test_other_dns_do_not_match(trust: TrustList, dn: str) -> None:
    assert not trust.operator_dn_matches("hopital.mssante.fr", dn)


def test_no_dn_matches_a_domain_that_is_not_listed(trust: TrustList) -> None:
    assert not trust.operator_dn_matches("inconnu.mssante.fr", OPERATOR_DN)


def test_escaped_separators_are_values_not_separators() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Editeur, SA")])
    assert subject.rfc4514_string() == "O=Editeur\\, SA"
    assert dn_equal("O=Editeur\\2C SA", subject)
    assert dn_equal("O=Editeur\\, SA", "o=editeur\\,  sa")
    assert not dn_equal("O=Editeur\\, SA", "O=Editeur,OU=SA")
