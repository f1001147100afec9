"""A worker killed with SIGKILL mid-case: a new worker finishes the case, and every side effect
happened exactly once (one Akte, one payment, one certificate, one dispatch)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from eakte.models import Akte, Dispatch, Dokument, SandboxPayment, Vorgang
from intake.catalog import load_catalog
from tests.integration.helpers import MELDE, pay
from workflows import contracts as c
from workflows.case import CaseWorkflow

ROOT = Path(__file__).resolve().parents[2]


def _env(settings, task_queue: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None and name != "catalog_path":
            env[name.upper()] = str(value)
    env["TASK_QUEUE"] = task_queue
    # a worker of its own: its own (paused) disposal schedule, never the stack's
    env["DISPOSAL_SCHEDULE_ID"] = f"{settings.disposal_schedule_id}-{task_queue}"
    env["DISPOSAL_SCHEDULE_ENABLED"] = "false"
    env["LOG_FORMAT"] = "json"
    return env


def _start_worker(settings, task_queue: str, log: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "aktenlauf.cli", "worker", "--queues", "cases"],
                            env=_env(settings, task_queue), cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


async def _wait_db(stack, case_id: str, pred, timeout: float = 60) -> Vorgang:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.sessions()() as s:
            v = s.get(Vorgang, case_id)
            if v is not None and pred(v):
                return v
        await asyncio.sleep(0.05)
    raise AssertionError(f"case {case_id} did not reach the expected state")


async def test_worker_killed_mid_case_finishes_with_exactly_one_of_everything(stack, tmp_path) -> None:
    queue = "crash-" + uuid.uuid4().hex[:8]
    log = tmp_path / "worker.log"
    client = await stack.temporal()
    case_id = "case-crash-" + uuid.uuid4().hex
    service = load_catalog(stack.settings.catalog_path).service(MELDE)
    inp = c.CaseInput(case_id=case_id, integrator="portal-crash", fingerprint="0" * 64,
                      applicant=c.Applicant(name="Kim Absturz", address_lines=["Ringstraße 9"]), service=service,
                      requested_service_key=MELDE)
    w1 = _start_worker(stack.settings, queue, log)
    try:
        handle = await client.start_workflow(CaseWorkflow.run, inp, id=case_id, task_queue=queue)
        # kill during intake/routing, as soon as the Akte exists
        await _wait_db(stack, case_id, lambda v: True)
        _kill(w1)
        w2 = _start_worker(stack.settings, queue, log)
        await _wait_db(stack, case_id, lambda v: v.status == c.AWAITING_DECISION)
        out = await handle.execute_update(CaseWorkflow.decide, c.Decision(
            actor=c.Actor(sub="clerk-bb", roles=["clerk"], departments=["buergerbuero"]), approve=True))
        _kill(w2)  # no worker while the citizen pays: the signal waits in Temporal
        async with stack.client() as http:
            await pay(http, out.payment_url)
        w3 = _start_worker(stack.settings, queue, log)
        # kill while the certificate is being made
        await _wait_db(stack, case_id, lambda v: v.step in ("certificate", "dispatch", "archive"))
        _kill(w3)
        w4 = _start_worker(stack.settings, queue, log)
        try:
            result: c.CaseResult = await asyncio.wait_for(handle.result(), 120)
        finally:
            w4.terminate()
            w4.wait(30)
    finally:
        for p in (w1,):
            if p.poll() is None:
                p.kill()
    assert result.status == c.COMPLETED
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert s.scalar(select(func.count()).select_from(Akte).where(Akte.id == v.akte_id)) == 1
        assert s.scalar(select(func.count()).select_from(Dokument).where(
            Dokument.vorgang_id == case_id, Dokument.kind == "Urkunde")) == 1
        assert s.scalar(select(func.count()).select_from(Dispatch).where(Dispatch.vorgang_id == case_id)) == 1
        assert s.scalar(select(func.count()).select_from(SandboxPayment).where(
            SandboxPayment.reference == v.aktenzeichen)) == 1
        assert v.status == c.COMPLETED and v.payment_status == "paid"
