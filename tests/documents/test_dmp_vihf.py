"""The VIHF (SAML 2.0 Assertion, VIHF 3.0) in the header of ITI-41 and ITI-57: what it says,
its signature, and the fake DMP that checks it over HTTPS with the structure's certificate."""

from __future__ import annotations

import copy
import dataclasses
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.exceptions import InvalidSignature
from signxml.verifier import XMLVerifier

from enrs.documents import vihf, xds
from enrs.documents.dmp import Verdict, XdsDmpAdapter, classify
from enrs.documents.xds import XdsCode
from tests.documents.test_dmp_adapter import NIR, deprecation, make_document
from tests.support.dmp_pki import Pki, make_pki
from tests.support.fake_dmp import FakeDmp

SAML_NS = {"saml": vihf.SAML, "hl7": vihf.HL7, "ds": vihf.DS}
OTHER_NIR = "180012A00100067"  # not the document's patient


@pytest.fixture
def dmp(secure_dmp: FakeDmp) -> FakeDmp:
    return secure_dmp


def _adapter(dmp: FakeDmp, pki: Pki, **options: object) -> XdsDmpAdapter:
    return XdsDmpAdapter(
        dmp.url,
        client_cert=(str(pki.cert_file), str(pki.key_file)),
        ca_bundle=str(pki.ca_file),
        timeout=5,
        **options,  # type: ignore[arg-type]
    )


def _values(assertion: etree._Element, name: str) -> list[etree._Element]:
    return list(
        assertion.xpath(
            "saml:AttributeStatement/saml:Attribute[@Name=$n]/saml:AttributeValue",
            namespaces=SAML_NS,
            n=name,
        )
    )


def _text(assertion: etree._Element, name: str) -> list[str]:
    return [value.text or "" for value in _values(assertion, name)]


# --- the assertion ----------------------------------------------------------------------------


def test_the_assertion_carries_each_attribute(pki: Pki) -> None:
    now = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    role = XdsCode("10", vihf.PROFESSION_OID, "Médecin")
    specialty = XdsCode("SM26", vihf.SPECIALTY_OID, "Qualifié en médecine générale")
    doc = make_document()
    doc = dataclasses.replace(
        doc, author=dataclasses.replace(doc.author, role=role, specialty=specialty)
    )
    signed = vihf.signed_assertion(doc, pki.signer, now)

    assert signed.get("Version") == "2.0"
    assert signed.get("ID", "").startswith("_")
    assert signed.get("IssueInstant") == "2026-03-04T10:00:00Z"
    issuer = signed.find("saml:Issuer", SAML_NS)
    assert issuer is not None and issuer.get("Format") == vihf.X509_SUBJECT_NAME
    assert issuer.text == "CN=enrs.ch-brive.test,OU=190000364,O=CH de Brive,C=FR"
    assert signed.findtext("saml:Subject/saml:NameID", None, SAML_NS) == "810001234567"
    confirmation = signed.find("saml:Subject/saml:SubjectConfirmation", SAML_NS)
    assert confirmation is not None and confirmation.get("Method") == vihf.SENDER_VOUCHES
    conditions = signed.find("saml:Conditions", SAML_NS)
    assert conditions is not None
    assert conditions.get("NotBefore") == "2026-03-04T10:00:00Z"
    assert conditions.get("NotOnOrAfter") == "2026-03-04T11:00:00Z"
    authn = signed.find("saml:AuthnStatement", SAML_NS)
    assert authn is not None and authn.get("AuthnInstant") == "2026-03-04T10:00:00Z"
    assert authn.findtext(".//saml:AuthnContextClassRef", None, SAML_NS) == vihf.PASSWORD_CLASS
    # the signature sits right after the Issuer, as SAML 2.0 requires
    assert [etree.QName(child).localname for child in signed][:3] == [
        "Issuer",
        "Signature",
        "Subject",
    ]
    assert _text(signed, "VIHF_Version") == ["3.0"]
    assert _text(signed, "Identifiant_Structure") == ["1190000364"]
    assert _text(signed, "Secteur_Activite") == ["SA01^1.2.250.1.71.4.2.4"]
    assert _text(signed, vihf.SUBJECT_ID) == ["Jeanne D'ARC^MARTIN"]
    roles = [value.find("hl7:Role", SAML_NS) for value in _values(signed, vihf.SUBJECT_ROLE)]
    coded = [
        (r.get("code"), r.get("codeSystem"), r.get("displayName")) for r in roles if r is not None
    ]
    assert coded == [
        ("10", "1.2.250.1.71.1.2.7", "Médecin"),
        ("SM26", "1.2.250.1.71.4.2.5", "Qualifié en médecine générale"),
    ]
    assert _text(signed, "Authentification_mode") == ["INDIRECTE"]
    assert _text(signed, vihf.RESOURCE_ID) == [f"{NIR}^^^&1.2.250.1.213.1.4.10&ISO"]
    assert _text(signed, "Ressource_URN") == ["urn:dmp"]
    (purpose,) = _values(signed, vihf.PURPOSE_OF_USE)
    use = purpose.find("hl7:PurposeOfUse", SAML_NS)
    assert use is not None
    assert (use.get("code"), use.get("codeSystem"), use.get("displayName")) == (
        "normal",
        "1.2.250.1.213.1.1.4.248",
        "Accès normal",
    )
    assert _text(signed, "LPS_Nom") == ["ENRS"]
    assert _text(signed, "LPS_Version") and _text(signed, "LPS_Version")[0]
    assert _text(signed, "LPS_ID_HOMOLOGATION_DMP") == ["HOMOL-TEST-01"]


def test_a_facility_type_of_another_system_falls_back_to_the_sector_setting(pki: Pki) -> None:
    signer = dataclasses.replace(pki.signer, sector="SA07^1.2.250.1.71.4.2.4")
    other = XdsCode("X", "1.2.250.1.999", "Autre")
    doc = make_document(healthcare_facility_type=other)
    unsigned = vihf.assertion(doc, signer, datetime.now(UTC))
    assert _text(unsigned, "Secteur_Activite") == ["SA07^1.2.250.1.71.4.2.4"]


def test_the_signature_verifies_and_fails_after_tampering(pki: Pki) -> None:
    signed = vihf.signed_assertion(make_document(), pki.signer, datetime.now(UTC))
    method = signed.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", SAML_NS)
    assert method is not None
    expected = "rsa-sha256" if isinstance(pki.signer.key, rsa.RSAPrivateKey) else "ecdsa-sha256"
    assert (method.get("Algorithm") or "").endswith(expected)
    c14n = signed.find("ds:Signature/ds:SignedInfo/ds:CanonicalizationMethod", SAML_NS)
    assert c14n is not None and c14n.get("Algorithm") == "http://www.w3.org/2001/10/xml-exc-c14n#"
    reference = signed.find("ds:Signature/ds:SignedInfo/ds:Reference", SAML_NS)
    assert reference is not None and reference.get("URI") == f"#{signed.get('ID')}"
    # carried in a SOAP header and read back, it still verifies (exclusive c14n)
    wire = etree.tostring(vihf.security_header(make_document(), pki.signer, datetime.now(UTC)))
    carried = etree.fromstring(wire)[0]
    XMLVerifier().verify(carried, x509_cert=pki.signer.cert, id_attribute="ID")
    XMLVerifier().verify(copy.deepcopy(signed), x509_cert=pki.signer.cert, id_attribute="ID")

    tampered = copy.deepcopy(signed)
    _values(tampered, vihf.RESOURCE_ID)[0].text = f"{OTHER_NIR}^^^&1.2.250.1.213.1.4.10&ISO"
    with pytest.raises(InvalidSignature):
        XMLVerifier().verify(tampered, x509_cert=pki.signer.cert, id_attribute="ID")


# --- through the adapter, to the fake DMP over HTTPS -----------------------------------------


def test_iti41_and_iti57_with_the_vihf_are_accepted(dmp: FakeDmp, pki: Pki) -> None:
    doc = make_document()
    with _adapter(dmp, pki, vihf_signer=pki.signer) as adapter:
        outcome = adapter.send(doc)
        assert outcome.verdict is Verdict.ACCEPTED, outcome.detail
        assert dmp.held(doc.unique_id) is not None
        withdrawn = adapter.update(deprecation(doc.entry_uuid))
    assert withdrawn.verdict is Verdict.ACCEPTED, withdrawn.detail
    assert dmp.url.startswith("https://")


@pytest.mark.parametrize(
    "case, reason",
    [
        ("none", "no SAML Assertion"),
        ("expired", "expired"),
        ("other key", "signature does not verify"),
    ],
)
def test_a_missing_or_bad_vihf_is_refused(
    dmp: FakeDmp, pki: Pki, tmp_path: Path, case: str, reason: str
) -> None:
    options: dict[str, object] = {}
    if case == "expired":
        options = {
            "vihf_signer": pki.signer,
            "clock": lambda: datetime.now(UTC) - timedelta(hours=2),
        }
    elif case == "other key":
        (tmp_path / "other").mkdir()
        other = make_pki(tmp_path / "other", ec.generate_private_key(ec.SECP256R1()))
        options = {"vihf_signer": other.signer}
    with _adapter(dmp, pki, **options) as adapter:
        outcome = adapter.send(make_document())
    assert outcome.verdict is Verdict.REFUSED
    assert reason in outcome.detail
    assert dmp.documents() == []


def test_a_vihf_naming_another_patient_is_refused(dmp: FakeDmp, pki: Pki) -> None:
    doc = make_document()
    other_patient = make_document(patient_ins=OTHER_NIR)
    header = vihf.security_header(other_patient, pki.signer, datetime.now(UTC))
    body, content_type = xds.provide_and_register(doc, to=dmp.url, header=[header])
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(str(pki.cert_file), str(pki.key_file))
    with httpx.Client(verify=context, timeout=5) as client:
        answer = client.post(dmp.url, content=body, headers={"Content-Type": content_type})
    outcome = classify(answer, doc.unique_id)
    assert outcome.verdict is Verdict.REFUSED
    assert "resource-id" in outcome.detail and OTHER_NIR in outcome.detail
    assert dmp.documents() == []


def test_an_author_without_rpps_is_refused_without_sending(dmp: FakeDmp, pki: Pki) -> None:
    doc = make_document()
    doc = dataclasses.replace(doc, author=dataclasses.replace(doc.author, rpps=None))
    with _adapter(dmp, pki, vihf_signer=pki.signer) as adapter:
        outcome = adapter.send(doc)
        withdrawal = deprecation(doc.entry_uuid)
        no_rpps = dataclasses.replace(withdrawal.doc, author=doc.author)
        update = adapter.update(dataclasses.replace(withdrawal, doc=no_rpps))
    assert outcome.verdict is Verdict.REFUSED and update.verdict is Verdict.REFUSED
    assert "no VIHF" in outcome.detail and "RPPS" in outcome.detail
    assert dmp.calls == 0
