"""Safe defaults outside development: the API description behind a login, secrets never shown."""

from __future__ import annotations

import pytest

from enrs.settings import Settings


@pytest.mark.parametrize("how", [repr, str])
def test_settings_never_show_their_secrets(how: object) -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+psycopg://enrs:db-pass-1234@db.example:5432/enrs",
        oidc_client_secret="oidc-secret-5678",
        s3_secret_access_key="s3-secret-9012",
    )
    assert callable(how)
    shown = how(settings)
    assert "enrs:***@db.example" in shown
    for dump in (shown, str(settings.model_dump()), settings.model_dump_json()):
        assert "oidc-secret-5678" not in dump and "s3-secret-9012" not in dump
    assert "db-pass-1234" not in shown
    assert settings.oidc_client_secret.get_secret_value() == "oidc-secret-5678"
    assert settings.s3_secret_access_key.get_secret_value() == "s3-secret-9012"
    assert settings.database_url.endswith("enrs:db-pass-1234@db.example:5432/enrs")
