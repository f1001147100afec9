"""Turn Temporal client errors (update rejections, unreachable server) into domain errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError

from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from aktenlauf.errors import AktenlaufError, Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from workflows import contracts as c

#: every error a Temporal client call can raise that ``translate`` turns into a domain error
TEMPORAL_ERRORS = (WorkflowUpdateFailedError, RPCError, RPCTimeoutOrCancelledError)

T = TypeVar("T")

_BY_TYPE: dict[str, type[AktenlaufError]] = {
    c.ERR_IDEMPOTENCY: Conflict,
    c.ERR_STATE: Conflict,
    c.ERR_FORBIDDEN: Forbidden,
    c.ERR_INVALID: InvalidInput,
}


async def bounded(call: Awaitable[T], timeout_s: float) -> T:
    """Wait for a workflow Update's outcome at most ``timeout_s``. The SDK would wait for as long
    as the case needs — through a database or S3 outage — and the caller's proxy would give up
    first. On timeout the SDK's own timeout error is raised, which ``translate`` makes a 503 that
    says the change may still be carried out."""
    try:
        return await asyncio.wait_for(call, timeout=timeout_s)
    except TimeoutError as exc:
        raise WorkflowUpdateRPCTimeoutOrCancelledError() from exc


def not_applied(exc: BaseException) -> bool:
    """Is it certain that the failed Update was not (and will not be) carried out? Only then may
    the caller remove what it stored for it; otherwise the orphan sweep's grace period decides."""
    if isinstance(exc, WorkflowUpdateFailedError):
        return True  # refused by the validator or failed in the handler
    return isinstance(exc, RPCError) and exc.status in (
        RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION)


def is_contention(exc: RPCError) -> bool:
    """Temporal turned the call away because of other calls on the same workflow at the same
    moment (racing starts aborted, the cap on updates in flight reached): worth a retry."""
    if exc.status in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED):
        return True
    return exc.status == RPCStatusCode.UNAVAILABLE and "aborted" in (exc.message or "").lower()


def translate(exc: BaseException, *, known_case: bool = False) -> AktenlaufError:
    """`known_case`: the case exists in the read model, so a missing workflow means it has
    finished (the case is closed), not that it never existed."""
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = cause.cause
        if isinstance(cause, ApplicationError):
            return _BY_TYPE.get(cause.type or "", Conflict)(cause.message)
        return Conflict(str(exc.cause or exc))
    if isinstance(exc, (WorkflowUpdateRPCTimeoutOrCancelledError, RPCTimeoutOrCancelledError)):
        return Unavailable("the case did not answer in time (it may be waiting for a backing service); the "
                           "change may still be carried out, so look at the case before repeating it")
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND:
            if known_case:
                return Conflict("the case is closed and accepts no further changes")
            return NotFound("the case's workflow was not found")
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return Unavailable(f"Temporal is unavailable: {exc.message}")
        if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
            return Unavailable(f"too many requests for this case at once; retry shortly ({exc.message})")
        if exc.status == RPCStatusCode.FAILED_PRECONDITION:
            return Conflict(f"the case no longer accepts this: {exc.message}")
        return Unavailable(f"Temporal error: {exc.message}")
    return Unavailable(str(exc))
