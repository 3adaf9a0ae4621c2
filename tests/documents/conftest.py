"""Fixtures of the DMP tests: the structure's certificate (RSA and EC) and the fake DMP that
trusts it, over HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.dmp_pki import Pki, make_pki
from tests.support.fake_dmp import FakeDmp


@pytest.fixture(params=["rsa", "ec"])
def pki(request: pytest.FixtureRequest, tmp_path: Path) -> Pki:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if request.param == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return make_pki(tmp_path, key)


@pytest.fixture
def secure_dmp(pki: Pki) -> Iterator[FakeDmp]:
    """The fake DMP over HTTPS, checking the VIHF and signatures made with ``pki``."""
    with FakeDmp(vihf_cert=pki.signer.cert, tls=pki.server) as fake:
        yield fake
