"""Time-skipping fixtures: Temporal's test server that jumps over timers, with the real case
activities (real database, real S3, the sandbox payment provider of the running test API)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from aktenlauf.devstack import _indexed_value_type
from aktenlauf.temporal import data_converter
from intake.catalog import load_catalog
from workflows import contracts as c
from tests.servers import temporal_test_server_path
from workflows.case import CaseWorkflow
from workflows.search import ALL as ALL_SEARCH_ATTRIBUTES
from worker import Dependencies, case_activities


async def start_time_skipping() -> WorkflowEnvironment:
    """Temporal's time-skipping test server with our data converter and search attributes."""
    from aktenlauf.settings import Settings

    e = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server_path(), data_converter=data_converter(Settings(environment="test")))
    # the test server knows only the search attributes registered on it (it has no List call)
    await e.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=e.client.namespace,
        search_attributes={n: _indexed_value_type(t) for n, t in ALL_SEARCH_ATTRIBUTES.items()}))  # type: ignore[misc]
    return e


@pytest.fixture
async def env():  # type: ignore[no-untyped-def]
    e = await start_time_skipping()
    try:
        yield e
    finally:
        await e.shutdown()


@asynccontextmanager
async def case_worker_on(env: WorkflowEnvironment, stack, task_queue: str = "ts-cases") -> AsyncIterator[Worker]:  # type: ignore[no-untyped-def]
    """A worker on the time-skipping server with the real case activities."""
    deps = Dependencies.build(stack.settings)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(env.client, task_queue=task_queue, workflows=[CaseWorkflow],
                          activities=case_activities(deps), activity_executor=pool) as worker:
            yield worker


@pytest.fixture
async def case_worker(env, stack):  # type: ignore[no-untyped-def]
    async with case_worker_on(env, stack) as worker:
        yield worker


async def start_until_decision(env: WorkflowEnvironment, stack, *, service_key: str = "99115005012000",  # type: ignore[no-untyped-def]
                               name: str = "Zeit Reisende", address_lines: tuple[str, ...] = ("Uhrweg 1",),
                               fingerprint: str = "f" * 64, task_queue: str = "ts-cases",
                               integrator: str = "portal-ts") -> tuple[str, Any]:
    """Start a case of ``service_key`` on the time-skipping server and wait (real time) until it waits for
    its decision: (case id, workflow handle)."""
    case_id = "case-ts-" + uuid.uuid4().hex
    service = load_catalog(stack.settings.catalog_path).service(service_key)
    handle = await env.client.start_workflow(CaseWorkflow.run, c.CaseInput(
        case_id=case_id, integrator=integrator, fingerprint=fingerprint,
        applicant=c.Applicant(name=name, address_lines=list(address_lines)), service=service,
        requested_service_key=service_key, form={}), id=case_id, task_queue=task_queue)
    for _ in range(300):
        if (await handle.query(CaseWorkflow.query_status)).status == c.AWAITING_DECISION:
            return case_id, handle
        await asyncio.sleep(0.05)
    raise AssertionError("the case never waited for a decision")
