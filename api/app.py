"""The FastAPI application: API v1 for integrators, clerks, the mailroom and admins."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from aktenlauf.logging import register_secrets, secret_values
from aktenlauf.settings import Settings
from aktenlauf.temporal import connect
from aktenlauf.wiring import blob_store, session_factory
from api import problems
from api.context import ApiContext
from api.routers import (admin, akten, audit, cases, codec, disposal, documents, exchange, health, mailroom, payments,
                         sandbox_payment, search, services, tasks)
from aktenlauf import wiring

log = structlog.get_logger(__name__)

DESCRIPTION = """
The HTTP API of aktenlauf. Every citizen request is a durable case (a Temporal workflow);
every document lives in the S3-backed eAkte. Authenticate with a bearer token
(`aktenlauf token --sub NAME --role ROLE [--department D]`). Errors are RFC 9457
problem+json.
"""


def build_context(settings: Settings) -> ApiContext:
    return ApiContext(settings=settings, catalog=wiring.catalog(settings),
                      sessions=session_factory(settings), store=blob_store(settings))


async def _connect_temporal(ctx: ApiContext) -> None:
    delay = 0.5
    while ctx.temporal is None:
        try:
            ctx.temporal = await connect(ctx.settings)
            log.info("api.temporal_connected", address=ctx.settings.temporal_address)
        except Exception as exc:  # noqa: BLE001 - keep trying; /readyz reports it meanwhile
            log.warning("api.temporal_unreachable", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def create_app(settings: Settings | None = None, ctx: ApiContext | None = None) -> FastAPI:
    if settings is None and ctx is None:  # `uvicorn api.app:create_app --factory`: configure logging here
        from aktenlauf.logging import configure_logging

        settings = Settings()
        configure_logging(settings.log_level, settings.log_format)
    settings = settings or (ctx.settings if ctx else Settings())
    register_secrets(secret_values(settings))  # never logged (aktenlauf/logging.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = ctx or build_context(settings)
        app.state.ctx = context
        app.state.background_tasks = set()
        try:
            await run_in_threadpool(context.store.ensure_bucket)
        except Exception as exc:  # noqa: BLE001 - S3 may come later; /readyz tells
            log.warning("api.s3_unreachable", error=str(exc))
        connector = asyncio.create_task(_connect_temporal(context))
        yield
        connector.cancel()
        for t in list(app.state.background_tasks):
            t.cancel()

    app = FastAPI(title="aktenlauf API", version="1", description=DESCRIPTION, lifespan=lifespan)
    problems.install(app)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=request.method, path=request.url.path)
        limit = settings.max_upload_bytes + 1024 * 1024
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            resp: Response = problems.problem(413, "Payload too large", f"requests are limited to {limit} bytes",
                                              code="payload-too-large", instance=request.url.path)
        else:
            resp = await call_next(request)
        resp.headers["X-Request-ID"] = request_id
        log.info("request", status=resp.status_code)
        return resp

    for r in (health, services, cases, tasks, documents, payments, sandbox_payment, mailroom, admin, akten, audit,
              search, exchange, disposal):
        app.include_router(r.router)
    codec.install(app, settings)  # Temporal UI codec server (admins, audited; CORS on /v1/codec only)
    return app
