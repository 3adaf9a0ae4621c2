"""The XAdES signature of the submission set sent to the DMP with every ITI-41 (IHE DSG): its
metadata, its verification by xmlsec1 (libxmlsec, a verifier nobody here wrote) and by the
fake DMP, and the fake DMP's refusals of a missing, foreign or stale signature."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from enrs.documents import vihf, xades, xds
from enrs.documents.dmp import DmpOutcome, Verdict, XdsDmpAdapter, classify
from enrs.documents.xds import XdsDocument, XdsSignature
from tests.documents.test_dmp_adapter import make_document
from tests.support.dmp_pki import Pki, make_pki
from tests.support.fake_dmp import FakeDmp

CDA = Path(__file__).parent / "data" / "n3_structured.xml"
NS = {"rim": xds.RIM, "lcm": xds.LCM, "ds": xades.DS, "xades": xades.XADES}


@pytest.fixture
def dmp(secure_dmp: FakeDmp) -> FakeDmp:
    return secure_dmp


def _cda_document() -> XdsDocument:
    content = CDA.read_bytes()
    return make_document(
        content,
        mime_type="text/xml",
        size=len(content),
        sha1_hex=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        format_code=xds.XdsCode("urn:asip:ci-sis:2010", "1.2.250.1.213.1.1.4.2.282", "CDA"),
    )


def _post(dmp: FakeDmp, pki: Pki, doc: XdsDocument, signature: XdsSignature | None) -> DmpOutcome:
    """ITI-41 of ``doc`` with a good VIHF and the given ``signature`` document."""
    header = vihf.security_header(doc, pki.signer, datetime.now(UTC))
    body, content_type = xds.provide_and_register(
        doc, to=dmp.url, header=[header], signature=signature
    )
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(str(pki.cert_file), str(pki.key_file))
    with httpx.Client(verify=context, timeout=5) as client:
        answer = client.post(dmp.url, content=body, headers={"Content-Type": content_type})
    return classify(answer, doc.unique_id)


def _xmlsec_verify(signature: bytes, pki: Pki, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "signature.xml"
    path.write_bytes(signature)
    return subprocess.run(
        [
            "xmlsec1",
            "--verify",
            "--trusted-pem",
            str(pki.ca_file),
            "--id-attr:Id",
            "Manifest",
            "--id-attr:Id",
            f"{xades.XADES}:SignedProperties",
            "--ignore-manifests",  # its references name XDS objects by OID: the DMP checks them
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


# --- the signature itself ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pdf", "cda"])
def test_xmlsec1_verifies_the_signature_and_its_manifest_names_the_set(
    pki: Pki, tmp_path: Path, kind: str
) -> None:
    doc = make_document() if kind == "pdf" else _cda_document()
    signature = xades.sign_submission(doc, pki.signer, datetime.now(UTC))
    run = _xmlsec_verify(signature.content, pki, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "SignedInfo References (ok/all): 2/2" in run.stderr + run.stdout

    root = etree.fromstring(signature.content)
    references = root.xpath("ds:Object/ds:Manifest[@Id='IHEManifest']/ds:Reference", namespaces=NS)
    assert [ref.get("URI") for ref in references] == [
        f"urn:oid:{doc.submission_unique_id}",
        f"urn:oid:{doc.unique_id}",
    ]
    digest = base64.b64decode(references[1].findtext("ds:DigestValue", "", NS))
    if kind == "pdf":  # the bytes as they are
        assert digest == hashlib.sha256(doc.content).digest()
        assert references[1].find("ds:Transforms", NS) is None
    else:  # the CDA canonicalised: another serialisation of the same XML has the same digest
        reserialised = etree.tostring(etree.fromstring(doc.content).getroottree())
        assert reserialised != doc.content
        assert digest == xades.content_digest(reserialised, "text/xml")[0]
    assert signature.unique_id == f"{doc.submission_unique_id}.1"
    purpose = root.xpath(
        "string(ds:Object/ds:SignatureProperties/ds:SignatureProperty)", namespaces=NS
    )
    assert purpose == "1.2.840.10065.1.12.1.14"
    issuer = root.xpath("string(.//ds:X509IssuerName)", namespaces=NS)
    assert issuer == pki.signer.cert.issuer.rfc4514_string()


def test_xmlsec1_refuses_a_tampered_signature(pki: Pki, tmp_path: Path) -> None:
    signature = xades.sign_submission(make_document(), pki.signer, datetime.now(UTC))
    root = etree.fromstring(signature.content)
    root.find(".//xades:SigningTime", NS).text = "2020-01-01T00:00:00Z"
    run = _xmlsec_verify(etree.tostring(root), pki, tmp_path)
    assert run.returncode != 0


def test_the_request_carries_the_signature_document(pki: Pki) -> None:
    doc = make_document()
    signature = xades.sign_submission(doc, pki.signer, datetime(2026, 3, 4, 10, tzinfo=UTC))
    request = xds.submit_objects_request(doc, signature=signature)
    entry = request.find(f".//rim:ExtrinsicObject[@id='{signature.entry_uuid}']", NS)
    assert entry is not None and entry.get("mimeType") == "text/xml"

    def codes(scheme: str) -> list[tuple[str, str]]:
        found = entry.iterfind(f"rim:Classification[@classificationScheme='{scheme}']", NS)
        return [
            (
                item.get("nodeRepresentation"),
                item.xpath("string(rim:Slot/rim:ValueList/rim:Value)", namespaces=NS),
            )
            for item in found
        ]

    rim = "urn:uuid:"
    assert codes(f"{rim}41a5887f-8865-4c09-adf7-e362475b143a") == [
        ("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN")
    ]
    assert codes(f"{rim}f0306f51-975f-434e-a61c-c59651d33983") == [("E1762", "ASTM")]
    assert codes(f"{rim}a09d5840-386c-46f2-b5ad-9c3699a4309d") == [
        ("http://www.w3.org/2000/09/xmldsig#", "URN")
    ]
    assert codes(f"{rim}2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4") == [
        ("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12")
    ]
    confidentiality = {code for code, _ in codes(f"{rim}f4f85eac-e6cb-4883-b524-f2705394840f")}
    assert confidentiality == {"N", "INVISIBLE_PATIENT", "MASQUE_PS"}
    slots = {
        slot.get("name"): slot.xpath("rim:ValueList/rim:Value/text()", namespaces=NS)
        for slot in entry.iterfind("rim:Slot", NS)
    }
    assert slots["hash"] == [hashlib.sha1(signature.content, usedforsecurity=False).hexdigest()]
    assert slots["size"] == [str(len(signature.content))]
    assert slots["creationTime"] == ["20260304100000"] and slots["languageCode"] == ["art"]
    assert slots["legalAuthenticator"] == [xds.author_person_xcn(doc.author)]
    associations = {
        (a.get("associationType"), a.get("sourceObject"), a.get("targetObject"))
        for a in request.iterfind(".//rim:Association", NS)
    }
    assert (xds.HAS_MEMBER, xds.SUBMISSION_SET_ID, signature.entry_uuid) in associations
    assert (xds.SIGNS, signature.entry_uuid, xds.SUBMISSION_SET_ID) in associations


# --- through the adapter, to the fake DMP over HTTPS -----------------------------------------


@pytest.mark.parametrize("kind", ["pdf", "cda"])
def test_the_adapter_signs_what_it_sends_and_the_dmp_accepts_it(
    dmp: FakeDmp, pki: Pki, kind: str
) -> None:
    doc = make_document() if kind == "pdf" else _cda_document()
    adapter = XdsDmpAdapter(
        dmp.url,
        client_cert=(str(pki.cert_file), str(pki.key_file)),
        ca_bundle=str(pki.ca_file),
        timeout=5,
        vihf_signer=pki.signer,
    )
    with adapter:
        outcome = adapter.send(doc)
    assert outcome.verdict is Verdict.ACCEPTED, outcome.detail
    assert [stored.unique_id for stored in dmp.documents()] == [doc.unique_id]


def test_a_submission_without_signature_is_refused(dmp: FakeDmp, pki: Pki) -> None:
    outcome = _post(dmp, pki, make_document(), None)
    assert outcome.verdict is Verdict.REFUSED
    assert "0 signature documents" in outcome.detail
    assert dmp.documents() == []


def test_a_signature_by_another_key_is_refused(dmp: FakeDmp, pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other", ec.generate_private_key(ec.SECP256R1()))
    doc = make_document()
    outcome = _post(dmp, pki, doc, xades.sign_submission(doc, other.signer, datetime.now(UTC)))
    assert outcome.verdict is Verdict.REFUSED
    assert "does not verify" in outcome.detail
    assert dmp.documents() == []


def test_a_signature_of_other_content_is_refused(dmp: FakeDmp, pki: Pki) -> None:
    doc = make_document()
    stale = dataclasses.replace(doc, content=doc.content + b"%% other version\n")
    signature = xades.sign_submission(stale, pki.signer, datetime.now(UTC))
    outcome = _post(dmp, pki, doc, signature)
    assert outcome.verdict is Verdict.REFUSED
    assert f"the digest of {doc.unique_id} is wrong" in outcome.detail
    assert dmp.documents() == []


def test_a_signature_of_another_submission_set_is_refused(dmp: FakeDmp, pki: Pki) -> None:
    doc = make_document()
    other_set = dataclasses.replace(doc, submission_unique_id="1.2.250.1.999.1.1.5.77")
    signature = xades.sign_submission(other_set, pki.signer, datetime.now(UTC))
    outcome = _post(dmp, pki, doc, signature)
    assert outcome.verdict is Verdict.REFUSED
    assert "the submission set is not in it" in outcome.detail
    assert dmp.documents() == []
