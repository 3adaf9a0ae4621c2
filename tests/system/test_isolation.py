"""The suite is immune to the developer's configuration (``ENRS_*`` variables, a ``.env`` where
pytest starts) and imports Playwright only when a browser test runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_CONTROL

from enrs.settings import PLACEHOLDER_OID_ROOT, Settings

ROOT = Path(__file__).parents[2]
BAD = {
    "ENRS_DATA_DIR": "/nonexistent/enrs-developer",
    "ENRS_DATABASE_URL": "postgresql+psycopg://developer@127.0.0.1:1/production",
    "ENRS_BASE_URL": "https://enrs.region.example",
    "ENRS_OID_ROOT": "1.2.250.1.71.9",
    "ENRS_DEV": "true",
    "ENRS_SIGNING_ALG": "RS256",
    "ENRS_ACCESS_TOKEN_TTL": "61",
    "ENRS_STORAGE_BACKEND": "s3",
}
BAD_DOTENV = {
    "ENRS_OIDC_ISSUER": "https://psc.example",
    "ENRS_SESSION_TTL": "301",
    "ENRS_MLLP_PORT": "1",
    "ENRS_LOG_LEVEL": "debug",
}


def _pytest(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    config = ("--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *config, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fixture_settings_are_the_suites_own(settings: Settings, tmp_path: Path) -> None:
    """Run normally, and by the test below under a developer's bad configuration."""
    assert settings.data_dir == (tmp_path / "var").resolve()
    assert settings.base_url == "http://testserver" and not settings.dev
    assert settings.oid_root == PLACEHOLDER_OID_ROOT and settings.signing_alg == "ES256"
    assert settings.access_token_ttl == 3600 and settings.storage_backend == "fs"
    assert settings.session_ttl == 8 * 3600 and settings.oidc_issuer == ""
    assert settings.mllp_port == 2575 and settings.log_level == "info"
    plain = Settings()  # as tests and the commands they start build theirs
    assert plain.oid_root == PLACEHOLDER_OID_ROOT and not plain.dev and plain.mllp_port == 2575
    assert plain.data_dir == Path("var").resolve() and Path.cwd() != ROOT
    assert not [n for n in os.environ if n.startswith("ENRS_") and n not in TEST_CONTROL]


def test_a_developers_environment_and_dotenv_are_not_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in BAD_DOTENV.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_") or k in TEST_CONTROL}
    env.update(BAD)
    node = f"{Path(__file__).resolve()}::test_fixture_settings_are_the_suites_own"
    done = _pytest(tmp_path, env, node)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_collecting_the_suite_does_not_import_playwright() -> None:
    probe = (
        "import sys, pytest\n"
        "code = pytest.main(['-p', 'no:cacheprovider', '--collect-only', '-q', 'tests/kit'])\n"
        "print('playwright loaded:', any(m.split('.')[0] == 'playwright' for m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "playwright loaded: False"
