"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.context import Ctx

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


_READINESS = {"type": "object", "required": ["status", "checks"], "properties": {
    "status": {"type": "string", "enum": ["ready", "not ready"]},
    "checks": {"type": "object", "additionalProperties": {"type": "string"}}}}


@router.get("/readyz", responses={
    200: {"description": "every backing service answers", "content": {"application/json": {"schema": _READINESS}}},
    503: {"description": "not ready; `checks` names what is unavailable",
          "headers": {"Retry-After": {"schema": {"type": "integer"}}},
          "content": {"application/json": {"schema": _READINESS}}}})
async def readyz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, str] = {}

    async def temporal() -> None:
        await asyncio.wait_for(ctx.client().service_client.check_health(), 5)

    async def s3() -> None:
        await asyncio.wait_for(run_in_threadpool(ctx.store.ping), 5)

    async def db() -> None:
        await asyncio.wait_for(ctx.db(lambda s: s.execute(text("SELECT 1")).scalar_one()), 5)

    for name, check in (("temporal", temporal), ("s3", s3), ("database", db)):
        try:
            await check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503, headers=None if ready else {"Retry-After": "5"})
