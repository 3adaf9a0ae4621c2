"""The imaging viewer in the browser, under ``/imagerie/visionneuse``: OHIF's prebuilt viewer
(``@ohif/app``, fetched at a pinned version by ``make viewer``, pointed at by
``ENRS_VIEWER_DIR``), served by the platform and reading the archive over its own DICOMweb
(:mod:`.web`: QIDO-RS, WADO-RS metadata and frames), same origin, with the user's portal
session cookie, or with the session an access code opened (:mod:`.share`: the patient or GP
without an account, who reads that one study). The study itself is checked by ``/dicomweb``'s
rule (:mod:`.access`).

What is served:

- the viewer's pages (``/imagerie/visionneuse/``, ``.../viewer?StudyInstanceUIDs=…``, any path
  that is not a file of the viewer): its ``index.html``, for a logged-in portal user or an
  access code's session only (redirected to ``/login`` otherwise), rewritten at serve time: the
  assets' absolute ``/…`` paths and ``window.PUBLIC_URL`` moved under the prefix, the service
  worker left out, French as the default language (i18next's stored choice, or ``?lng=``, still
  wins), and a Content Security Policy that allows the page's own inline scripts by their
  hashes, WebAssembly (``'wasm-unsafe-eval'``) and the ``blob:`` workers the image decoders use,
  nothing from another origin;
- ``app-config.js``: OUR configuration (:func:`app_config`), never the package's: one
  DICOMweb data source, ``/dicomweb`` of the same origin, no study list, no other source;
- the viewer's files (bundles, WebAssembly, fonts, translations): the public code of the
  package, without a session; the content-hashed ones cached for a year (``immutable``), the
  others revalidated. The bundles' webpack public path (``"/"`` in the build) and the style
  sheets' ``url(/…)`` are rewritten to the prefix, so the chunks, workers and fonts they load
  come from here.

Without ``ENRS_VIEWER_DIR`` (or with a folder holding no ``index.html``) the pages answer 503
with a French page saying the viewer is not installed; the rest of the platform is unaffected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session

from enrs.imaging import share
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.portal.auth import LoginRequired, portal_user
from enrs.portal.endpoints import render_error

PREFIX = "/imagerie/visionneuse"
NOT_INSTALLED = (
    "La visionneuse d'imagerie n'est pas installée sur cette plateforme "
    "(ENRS_VIEWER_DIR ; « make viewer » l'installe)."
)
# A content hash in the file name (webpack's [contenthash]): such a file never changes.
HASHED = re.compile(r"(^|[./])[0-9a-f]{16}\.(js|css|wasm|woff2?)$")
PUBLIC_PATH = b'__webpack_require__.p = "/";'
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
# Before the bundle: French unless the user chose a language (OHIF keeps it in localStorage).
DEFAULT_LANGUAGE = (
    "try{localStorage.getItem('i18nextLng')||localStorage.setItem('i18nextLng','fr')}catch(e){}"
)
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".html": "text/html; charset=utf-8",
}

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


def csp(script_hashes: list[str]) -> str:
    """The viewer's Content Security Policy: its own origin only; the page's inline scripts by
    hash; WebAssembly compilation and ``blob:`` workers (the image decoders); inline styles
    (the React components set them)."""
    scripts = " ".join(f"'sha256-{h}'" for h in script_hashes)
    return (
        "default-src 'self'; "
        f"script-src 'self' 'wasm-unsafe-eval' {scripts}; "
        "worker-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


def app_config() -> str:
    """OHIF's ``window.config``: the router under :data:`PREFIX`, one DICOMweb source (the
    archive's ``/dicomweb``, same origin: the portal cookie goes with each request), images by
    WADO-RS frames, no study list (a search names no patient, so would find nothing for most
    users: :func:`enrs.imaging.access.visible_clause`), nothing loadable from the URL."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "enrs",
        "configuration": {
            "friendlyName": "Archive régionale",
            "name": "enrs",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": False,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": False},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "name": "enrs",
        "routerBasename": PREFIX,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": False,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "showErrorDetails": "production",
        "defaultDataSourceName": "enrs",
        "dataSources": [source],
    }
    root = "window.location.origin + '/dicomweb'"
    return (
        "// Generated by the platform (enrs.imaging.viewer.app_config).\n"
        f"window.config = {json.dumps(config, ensure_ascii=False, indent=1)};\n"
        "(function (c) {\n"
        f"  var root = {root};\n"
        "  c.qidoRoot = root; c.wadoRoot = root; c.wadoUriRoot = root;\n"
        "})(window.config.dataSources[0].configuration);\n"
    )


def rewrite_index(html: str) -> tuple[str, list[str]]:
    """The package's ``index.html`` under :data:`PREFIX`, and the sha256 of its inline
    scripts (for the CSP)."""
    base = PREFIX + "/"
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"')
    html = re.sub(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", html)
    html = re.sub(r'(\s(?:href|src))="/(?!/)', rf'\1="{base}', html)
    html = html.replace('<html lang="en">', '<html lang="fr">')
    html = html.replace("<head>", f"<head><script>{DEFAULT_LANGUAGE}</script>", 1)
    html = html.replace("<title>OHIF Viewer</title>", "<title>Visionneuse d'imagerie</title>")
    hashes = [
        base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        for body in INLINE_SCRIPT.findall(html)
    ]
    return html, hashes


class Viewer:
    """The installed viewer's folder, and the files rewritten for :data:`PREFIX` (kept in
    memory once made: the folder does not change while the platform runs)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder.resolve() if folder is not None else None
        self._lock = threading.Lock()
        self._index: tuple[str, list[str]] | None = None
        self._bundles: dict[Path, bytes | None] = {}

    @property
    def installed(self) -> bool:
        return self.folder is not None and (self.folder / "index.html").is_file()

    def index(self) -> tuple[str, list[str]]:
        assert self.folder is not None
        with self._lock:
            if self._index is None:
                self._index = rewrite_index((self.folder / "index.html").read_text("utf-8"))
            return self._index

    def file(self, path: str) -> Path | None:
        """The viewer's file at ``path``, if it is one (never outside the folder)."""
        if self.folder is None or not path or path.endswith("/"):
            return None
        found = (self.folder / path).resolve()
        if not found.is_relative_to(self.folder) or not found.is_file():
            return None
        return found

    def bundle(self, found: Path) -> bytes | None:
        """A script whose webpack public path is set to ``/``, or a style sheet with absolute
        ``url(/…)``, rewritten to the prefix; ``None`` for any other file (served as it is)."""
        if found.suffix == ".js":
            old, new = PUBLIC_PATH, f'__webpack_require__.p = "{PREFIX}/";'.encode()
        elif found.suffix == ".css":
            old, new = b"url(/", f"url({PREFIX}/".encode()
        else:
            return None
        with self._lock:
            if found not in self._bundles:
                content = found.read_bytes()
                self._bundles[found] = content.replace(old, new) if old in content else None
            return self._bundles[found]


def viewer_of(request: Request) -> Viewer:
    state = request.app.state
    viewer: Viewer | None = getattr(state, "viewer", None)
    if viewer is None:
        viewer = state.viewer = Viewer(state.settings.viewer_dir)
    return viewer


def _cache(path: Path) -> str:
    return "public, max-age=31536000, immutable" if HASHED.search(path.name) else "no-cache"


@router.get(PREFIX)
def viewer_root() -> Response:
    return Response(status_code=307, headers={"Location": PREFIX + "/"})


def viewer_user(request: Request, session: Session) -> Principal:
    """Who opens the viewer: a logged-in portal user, else the holder of an access code's
    session (:mod:`.share`: it reads its one study through ``/dicomweb``); else the login."""
    try:
        return portal_user(request, session)
    except LoginRequired:
        found = share.principal_of_request(request, session)
        if found is None:
            raise
        request.state.principal = found
        return found


@router.get(PREFIX + "/app-config.js")
def viewer_config(request: Request, session: DbSession) -> Response:
    """OUR configuration of the viewer (:func:`app_config`)."""
    viewer_user(request, session)
    if not viewer_of(request).installed:
        return render_error(request, 503, NOT_INSTALLED)
    return Response(
        app_config(), media_type="text/javascript", headers={"Cache-Control": "no-store"}
    )


@router.get(PREFIX + "/{path:path}")
def viewer_file(request: Request, path: str, session: DbSession) -> Response:
    """A file of the viewer, else (a route of the viewer's own) its page, for a logged-in
    portal user (the files need no session: the database is not touched for them)."""
    viewer = viewer_of(request)
    found = viewer.file(path) if path != "index.html" else None
    if found is None:
        viewer_user(request, session)
        return _page(request)
    media = MEDIA_TYPES.get(found.suffix)
    headers = {"Cache-Control": _cache(found)}
    rewritten = viewer.bundle(found)
    if rewritten is not None:
        return Response(rewritten, media_type=media, headers=headers)
    return FileResponse(found, media_type=media, headers=headers)


def _page(request: Request) -> Response:
    viewer = viewer_of(request)
    if not viewer.installed:
        return render_error(request, 503, NOT_INSTALLED)
    html, hashes = viewer.index()
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": csp(hashes)}
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)
