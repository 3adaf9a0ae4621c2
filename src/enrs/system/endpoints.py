"""Platform endpoints: liveness, readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from enrs.kit.http import TransactionalRoute

log = logging.getLogger(__name__)
router = APIRouter(route_class=TransactionalRoute, tags=["platform"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database and blob storage reachable")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, probe in (
        ("database", request.app.state.db.ping),
        ("storage", request.app.state.storage.check),
    ):
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness: %s unavailable: %s", name, exc)
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
