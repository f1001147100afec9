"""RFC 9457 problem+json for every error the API answers with."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from aktenlauf.errors import AktenlaufError

log = structlog.get_logger(__name__)
MEDIA_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str, *, code: str, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"urn:aktenlauf:problem:{code}", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    from api import problem_docs

    problem_docs.install(app)  # declare these problem+json answers in /openapi.json

    @app.exception_handler(AktenlaufError)
    async def _domain(request: Request, exc: AktenlaufError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        if exc.status >= 500:
            log.error("request.failed", error=exc.code, detail=exc.detail)
        return problem(exc.status, exc.title, exc.detail, code=exc.code, instance=request.url.path, headers=headers,
                       **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return problem(422, "Invalid request", "the request does not match the schema", code="invalid-request",
                       instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail), code=f"http-{exc.status_code}",
                       instance=request.url.path, headers=getattr(exc, "headers", None))

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # connection refused or lost, pool exhausted, SQLite locked: nothing was changed (the
        # transaction rolled back), so the client may simply repeat the request
        log.warning("request.database_unavailable", error=type(exc).__name__)
        return problem(503, "A backing service is unavailable", "the database is unavailable; retry shortly",
                       code="database-unavailable", instance=request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(sa_exc.DataError)
    async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
        # a value the database refuses (a NUL character in text on PostgreSQL, an out-of-range
        # number): the client's input, not our fault; nothing was stored
        return problem(422, "Invalid input", "a value in the request cannot be stored (e.g. a NUL character "
                       "or a number out of range)", code="invalid-input", instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.crashed")
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged",
                       code="internal-error", instance=request.url.path)
