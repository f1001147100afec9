"""Turn Temporal client errors (update rejections, unreachable server) into domain errors."""

from __future__ import annotations

from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError

from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from aktenlauf.errors import AktenlaufError, Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from workflows import contracts as c

#: every error a Temporal client call can raise that ``translate`` turns into a domain error
TEMPORAL_ERRORS = (WorkflowUpdateFailedError, RPCError, RPCTimeoutOrCancelledError)

_BY_TYPE: dict[str, type[AktenlaufError]] = {
    c.ERR_IDEMPOTENCY: Conflict,
    c.ERR_STATE: Conflict,
    c.ERR_FORBIDDEN: Forbidden,
    c.ERR_INVALID: InvalidInput,
}


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
        return Unavailable("the case did not answer in time (it may be waiting for a backing service); "
                           "retry shortly")
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
