"""A change through a workflow Update waits a bounded time; only a certain refusal lets the API
remove what it stored for the change."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from aktenlauf.errors import Unavailable
from api.temporal_errors import bounded, not_applied, translate


async def test_an_update_that_does_not_finish_in_time_becomes_a_503_that_says_it_may_still_happen() -> None:
    started = asyncio.Event()

    async def never() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "late"

    with pytest.raises(WorkflowUpdateRPCTimeoutOrCancelledError) as info:
        await bounded(never(), 0.05)
    assert started.is_set()
    err = translate(info.value, known_case=True)
    assert isinstance(err, Unavailable) and "may still be carried out" in str(err)


async def test_an_update_that_finishes_in_time_returns_its_result() -> None:
    async def quick() -> str:
        return "done"

    assert await bounded(quick(), 1.0) == "done"


def test_only_a_certain_refusal_counts_as_not_applied() -> None:
    assert not_applied(WorkflowUpdateFailedError(RuntimeError("refused by the validator")))
    assert not_applied(RPCError("gone", RPCStatusCode.NOT_FOUND, b""))
    assert not not_applied(RPCError("down", RPCStatusCode.UNAVAILABLE, b""))
    assert not not_applied(WorkflowUpdateRPCTimeoutOrCancelledError())
