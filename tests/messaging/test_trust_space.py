"""``enrs messaging trust-list FILE`` (issue 14): the national list imported with its
signature checked, the trust space replaced by it; a list that does not verify changes
nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from enrs.kit.db import Database
from enrs.messaging import policy
from enrs.messaging.models import TrustedDomain
from tests.support.live_server import enrs_command
from tests.support.trust_list import Domain, make_pki, signed_trust_list


def test_the_national_list_replaces_the_trust_space(tmp_path: Path, database_url: str) -> None:
    pki = make_pki()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca_cert.public_bytes(Encoding.PEM))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(
        ENRS_DATA_DIR=str(tmp_path / "var"),
        ENRS_DATABASE_URL=database_url,
        ENRS_MAIL_TRUST_CA=str(ca),
    )

    def load(content: bytes) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "liste.xml"
        path.write_bytes(content)
        return subprocess.run(
            enrs_command("messaging", "trust-list", str(path)),
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def listed() -> list[str]:
        with db.transaction(write=False) as session:
            return list(session.scalars(select(TrustedDomain.name).order_by(TrustedDomain.name)))

    db = Database(database_url)
    first = load(signed_trust_list([Domain("CHU.example"), Domain("clinique.example")], pki))
    assert first.returncode == 0, first.stderr
    assert "2 domain(s), 2 added, 0 removed, 0 kept" in first.stdout
    assert listed() == ["chu.example", "clinique.example"]
    with db.transaction(write=False) as session:
        assert policy.trusted(session, "CHU.example", "enrs.test")
        assert not policy.trusted(session, "ailleurs.example", "enrs.test")

    tampered = signed_trust_list([Domain("chu.example")], pki).replace(
        b"chu.example", b"pirate.example"
    )
    refused = load(tampered)
    assert refused.returncode == 1 and "the trust list is refused" in refused.stderr
    other = make_pki("Autre autorite")
    assert load(signed_trust_list([Domain("pirate.example")], other)).returncode == 1
    assert listed() == ["chu.example", "clinique.example"]  # nothing changed

    second = load(signed_trust_list([Domain("chu.example"), Domain("labo.example")], pki))
    assert second.returncode == 0, second.stderr
    assert "1 added, 1 removed, 1 kept" in second.stdout
    assert listed() == ["chu.example", "labo.example"]
    db.dispose()


def test_only_dovecot_2_3_configuration_is_written() -> None:
    from enrs.messaging import config

    assert config.dovecot_version()[:2] == (2, 3)  # Debian 12's, which make test-deps installs
    config.check_dovecot_version((2, 3))
    with pytest.raises(config.MailSetupError, match=r"2\.4 changed the format"):
        config.check_dovecot_version((2, 4))
