"""The FastAPI application: API v1 for integrators, clerks, the mailroom and admins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from aktenlauf.logging import register_secrets, secret_values
from aktenlauf.settings import Settings
from aktenlauf.temporal import connect
from aktenlauf.wiring import blob_store, session_factory
from eakte.audit import ReadAuditWindow
from api import problems
from api.context import ApiContext
from api.middleware import RequestContext
from api.uploads import BodyLimit
from api.routers import mailroom_intake, status
from api.routers import dispatch
from api.routers import metrics, opendata
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
                      sessions=session_factory(settings), store=blob_store(settings),
                      read_audit=ReadAuditWindow(settings.audit_read_window_s))


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

    # a chunked body has no Content-Length for RequestContext's check: count it as it arrives
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 1024 * 1024)
    # outermost: request id, log context, the declared-size check (added last = runs first)
    app.add_middleware(RequestContext, limit=settings.max_upload_bytes + 1024 * 1024)
    for r in (health, services, cases, tasks, documents, payments, sandbox_payment, mailroom, admin, akten, audit,
              search, exchange, disposal):
        app.include_router(r.router)
    app.include_router(mailroom_intake.router)  # mailroom intake: scans and e-mails (intake/channels.py)
    app.include_router(dispatch.router)  # applicant messages, staff notifications, print batches
    app.include_router(tasks.deputies)  # Vertretung (deputies) beside the work lists
    app.include_router(status.router)  # the citizen's status page (public, access code)
    app.include_router(metrics.router)  # GET /metrics: Prometheus, aggregate figures only (aktenlauf/metrics.py)
    app.include_router(opendata.router)  # public statistics, small counts suppressed
    codec.install(app, settings)  # Temporal UI codec server (admins, audited; CORS on /v1/codec only)
    return app
