"""Deadlines on the time-skipping test server: a payment deadline that passes cancels the case.

The workflow runs on Temporal's time-skipping test server with the real activities (real
database, real S3, the sandbox payment provider of the running test API)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from aktenlauf.temporal import data_converter
from eakte.models import SandboxPayment, Vorgang
from intake.catalog import load_catalog
from tests.servers import temporal_test_server_path
from workflows import contracts as c
from workflows.case import CaseWorkflow
from workflows.search import ALL as ALL_SEARCH_ATTRIBUTES
from worker import Dependencies, case_activities

MELDE = "99115005012000"


@pytest.fixture
async def env():  # type: ignore[no-untyped-def]
    from aktenlauf.settings import Settings

    e = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server_path(), data_converter=data_converter(Settings(environment="test")))
    # the test server knows only the search attributes registered on it (it has no List call)
    await e.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=e.client.namespace,
        search_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in ALL_SEARCH_ATTRIBUTES}))
    try:
        yield e
    finally:
        await e.shutdown()


@pytest.fixture
async def case_worker(env, stack):  # type: ignore[no-untyped-def]
    """A worker on the time-skipping server with the real case activities."""
    deps = Dependencies.build(stack.settings)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(env.client, task_queue="ts-cases", workflows=[CaseWorkflow],
                          activities=case_activities(deps), activity_executor=pool) as worker:
            yield worker


def _input(stack, case_id: str) -> c.CaseInput:  # type: ignore[no-untyped-def]
    service = load_catalog(stack.settings.catalog_path).service(MELDE)
    return c.CaseInput(case_id=case_id, integrator="portal-ts", fingerprint="f" * 64,
                       applicant=c.Applicant(name="Zeit Reisende", address_lines=["Uhrweg 1"]), service=service,
                       requested_service_key=MELDE, form={})


async def _start_until_decision(env, stack, case_id: str):  # type: ignore[no-untyped-def]
    handle = await env.client.start_workflow(CaseWorkflow.run, _input(stack, case_id), id=case_id,
                                             task_queue="ts-cases")
    for _ in range(200):
        if (await handle.query(CaseWorkflow.query_status)).status == c.AWAITING_DECISION:
            return handle
        await asyncio.sleep(0.05)
    raise AssertionError("the case never waited for a decision")


async def _run_until_payment(env, stack, case_id: str):  # type: ignore[no-untyped-def]
    handle = await _start_until_decision(env, stack, case_id)
    out = await handle.execute_update(CaseWorkflow.decide, c.Decision(
        actor=c.Actor(sub="clerk-ts", roles=["clerk"], departments=["buergerbuero"]), approve=True))
    assert out.status == c.AWAITING_PAYMENT and out.payment_url
    return handle


async def test_payment_deadline_passing_cancels_the_case_and_the_payment(env, stack, case_worker) -> None:
    case_id = "case-ts-" + uuid.uuid4().hex
    handle = await _run_until_payment(env, stack, case_id)
    await env.sleep(timedelta(days=13))
    assert (await handle.query(CaseWorkflow.query_status)).status == c.AWAITING_PAYMENT
    result: c.CaseResult = await handle.result()  # the remaining day passes by itself
    assert result.status == c.CANCELLED and result.issued_document_id is None
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v.status == c.CANCELLED and v.payment_status == "expired" and v.closed_at is not None
        assert s.get(SandboxPayment, v.payment_id).status == "cancelled"


async def test_a_decision_from_the_wrong_department_is_refused_by_the_workflow(env, stack, case_worker) -> None:
    case_id = "case-ts-" + uuid.uuid4().hex
    handle = await _start_until_decision(env, stack, case_id)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(CaseWorkflow.decide, c.Decision(
            actor=c.Actor(sub="clerk-x", roles=["clerk"], departments=["standesamt"]), approve=True))
    assert err.value.cause.type == c.ERR_FORBIDDEN  # type: ignore[union-attr]
    await handle.terminate("test done")
