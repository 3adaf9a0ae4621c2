"""Run the test OpenID Provider (``tests/oidc_provider/provider.mjs``) and drive its login pages.

The provider is panva/oidc-provider run by Node; install it once with
``npm ci --prefix tests/oidc_provider``. :func:`run_oidc_provider` starts it on 127.0.0.1 (the OS
picks a free port unless one is given) and stops it on exit; :func:`login_with_http` logs in
through its HTML pages with a plain HTTP client, the way a browser would, and returns the
redirect to the relying party (``?code=...&state=...&iss=...``) without following it.

Pages, for browser tests:

* ``GET /interaction/{uid}``: login page, ``form#login-form`` with ``input[name=login]``
  (``#login``), ``input[name=password]`` (``#password``), ``button#login-submit``; a wrong
  password shows the form again with ``p#login-error``. ``form#cancel-form`` /
  ``button#cancel`` aborts: the relying party gets ``error=access_denied``.
* With ``consent="form"``, a consent page follows: ``form#consent-form`` /
  ``button#consent-submit`` (and the same cancel form). With ``consent="auto"`` (default) there
  is no consent page.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx

PROVIDER_DIR = Path(__file__).resolve().parent.parent / "oidc_provider"
READY_PREFIX = "ENRS_OIDC_PROVIDER_READY "


class OidcProviderError(RuntimeError):
    """The test provider could not be started."""


class LoginFailed(AssertionError):
    """Driving the provider's login pages did not reach the relying party."""


@dataclass(frozen=True)
class ProviderAccount:
    """A person who can log in at the test provider (``id`` is the login and the ``sub``)."""

    id: str
    password: str
    rpps: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderHandle:
    """A running provider. ``base_url`` is where it listens; ``issuer`` what it calls itself."""

    issuer: str
    port: int
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]
    accounts: tuple[ProviderAccount, ...]
    process: subprocess.Popen[str] = field(repr=False)
    output: collections.deque[str] = field(repr=False)

    def logs(self) -> str:
        """What the provider printed so far (stdout and stderr)."""
        return "".join(self.output)


def _account_json(account: ProviderAccount | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(account, ProviderAccount):
        data = asdict(account)
        data["claims"] = dict(account.claims)
        return {key: value for key, value in data.items() if value is not None}
    return dict(account)


def _account(account: ProviderAccount | Mapping[str, Any]) -> ProviderAccount:
    return account if isinstance(account, ProviderAccount) else ProviderAccount(**account)


@contextmanager
def run_oidc_provider(
    *,
    client_id: str,
    client_secret: str,
    redirect_uris: Sequence[str],
    accounts: Sequence[ProviderAccount | Mapping[str, Any]],
    port: int | None = None,
    issuer: str | None = None,
    consent: Literal["auto", "form"] = "auto",
    token_endpoint_auth_method: Literal[
        "client_secret_basic", "client_secret_post"
    ] = "client_secret_basic",
    rpps_in_id_token: bool = True,
    id_token_claims: bool = False,
    userinfo: bool = True,
    rpps_claim: str = "SubjectNameID",
    signing_keys: Sequence[Mapping[str, Any]] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[ProviderHandle]:
    """Start ``node provider.mjs`` on 127.0.0.1, wait until it listens, stop it on exit.

    ``port=None`` lets the OS pick a free port (the provider reports it). ``issuer`` defaults to
    ``http://127.0.0.1:{port}``; give another value to get a provider whose metadata names an
    issuer that is not where it is served. The RPPS claim (``rpps_claim``) belongs to the
    ``openid`` scope, so it is in the ID token and in UserInfo; ``rpps_in_id_token=False`` moves
    it to the ``profile`` scope (UserInfo only). ``id_token_claims=True`` puts all the scope
    claims (names too) in the ID token; ``userinfo=False`` removes the UserInfo endpoint.
    ``signing_keys`` are private JWKs (with ``kid``) to sign with; by default a fresh RSA key is
    made on every start.
    """
    node = shutil.which("node")
    if node is None:
        raise OidcProviderError("node is not on PATH: the test OpenID Provider needs Node.js")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        raise OidcProviderError(
            f"{PROVIDER_DIR / 'node_modules'} is missing: run "
            "`npm ci --prefix tests/oidc_provider` once to install the test OpenID Provider"
        )
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port or 0,
        "client": {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": list(redirect_uris),
            "token_endpoint_auth_method": token_endpoint_auth_method,
        },
        "accounts": [_account_json(account) for account in accounts],
        "consent": consent,
        "rpps_claim": rpps_claim,
        "rpps_in_id_token": rpps_in_id_token,
        "id_token_claims": id_token_claims,
        "userinfo": userinfo,
    }
    if issuer is not None:
        config["issuer"] = issuer
    if signing_keys is not None:
        config["jwks"] = {"keys": [dict(key) for key in signing_keys]}
    env = {**os.environ, "OIDC_PROVIDER_CONFIG": json.dumps(config)}
    process = subprocess.Popen(
        [node, "provider.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    output: collections.deque[str] = collections.deque(maxlen=500)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name="oidc-provider-output", daemon=True)
    reader.start()
    try:
        ready = _wait_ready(lines, output, startup_timeout)
        handle = ProviderHandle(
            issuer=ready["issuer"],
            port=ready["port"],
            base_url=f"http://127.0.0.1:{ready['port']}",
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=tuple(redirect_uris),
            accounts=tuple(_account(account) for account in accounts),
            process=process,
            output=output,
        )
        yield handle
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        reader.join(timeout=5)


def _wait_ready(
    lines: queue.Queue[str | None], output: collections.deque[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OidcProviderError(
                f"the test OpenID Provider did not start within {timeout:.0f} s; output:\n"
                + "".join(output)
            )
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise OidcProviderError(
                "the test OpenID Provider exited before it was ready; output:\n" + "".join(output)
            )
        if line.startswith(READY_PREFIX):
            ready: dict[str, Any] = json.loads(line[len(READY_PREFIX) :])
            return ready


# -- driving the login pages -----------------------------------------------------------------


@dataclass
class _Form:
    id: str | None
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.ids: set[str] = set()
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "form":
            self._current = _Form(
                id=attributes.get("id"),
                action=attributes.get("action", ""),
                method=attributes.get("method", "get").lower(),
            )
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and attributes.get("name"):
            self._current.fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _drive(
    handle: ProviderHandle,
    authorization_url: str,
    *,
    username: str | None,
    password: str | None,
    consent: bool,
) -> str:
    """Follow the provider's redirects and submit its forms until it redirects elsewhere."""
    provider = _origin(handle.base_url)
    logged_in = False
    with httpx.Client(follow_redirects=False, timeout=10.0) as browser:
        response = browser.get(authorization_url)
        for _ in range(20):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if _origin(location) != provider:
                    return location
                response = browser.get(location)
                continue
            if response.status_code != 200:
                raise LoginFailed(
                    f"the provider answered HTTP {response.status_code} at {response.url}:\n"
                    f"{response.text[:2000]}"
                )
            parser = _FormParser()
            parser.feed(response.text)
            forms = {form.id: form for form in parser.forms}
            if username is None and "cancel-form" in forms:
                form, data = forms["cancel-form"], {}
            elif "login-form" in forms:
                if logged_in or "login-error" in parser.ids:
                    raise LoginFailed(f"the provider refused login {username!r} and its password")
                form = forms["login-form"]
                data = {**form.fields, "login": username or "", "password": password or ""}
                logged_in = True
            elif "consent-form" in forms:
                form = forms["consent-form"] if consent else forms["cancel-form"]
                data = dict(form.fields)
            else:
                raise LoginFailed(f"unexpected page at {response.url}:\n{response.text[:2000]}")
            response = browser.post(urljoin(str(response.url), form.action), data=data)
    raise LoginFailed("too many redirects or pages while logging in at the provider")


def login_with_http(
    handle: ProviderHandle,
    authorization_url: str,
    username: str,
    password: str,
    *,
    consent: bool = True,
) -> str:
    """Log in at the provider like a browser; return the redirect URL back to the relying party.

    Fills ``form#login-form`` (and, when the provider shows one, approves ``form#consent-form``;
    ``consent=False`` refuses it instead). The returned URL carries ``code``, ``state`` and
    ``iss`` (or ``error``); it is not followed. Raises :class:`LoginFailed` when the password is
    refused or a page is not the expected one.
    """
    return _drive(handle, authorization_url, username=username, password=password, consent=consent)


def cancel_login_with_http(handle: ProviderHandle, authorization_url: str) -> str:
    """Press "Cancel" on the login page; return the redirect (``error=access_denied``)."""
    return _drive(handle, authorization_url, username=None, password=None, consent=False)
