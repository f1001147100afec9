"""The payment provider's failure modes, at the provider and webhook level, against the real stack.

The sandbox is real HTTP (the stack's API), the callbacks really reach our webhook, and the
webhook really signals a workflow on the Temporal server: a probe workflow of this module that
only records the ``payment_event`` signals it gets, so that these tests say what the provider
and the webhook do, independent of the case workflow. The payment activities run in
temporalio's ActivityEnvironment against the same sandbox and database.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.payment import PaymentActivities, PaymentProvider, sign
from aktenlauf import devstack
from aktenlauf.embedded import ApiServer
from eakte import records
from eakte.db import transaction
from eakte.models import (AuditEvent, PaymentReceipt, PaymentRecord, PaymentRefund, SandboxPayment, SandboxRefund,
                          Vorgang, WebhookDelivery)
from workflows import contracts as c

FEE = 1000


@workflow.defn(name="PaymentProbe")
class PaymentProbe:
    """Stands where a case workflow stands: records every payment_event signal (no dedupe)."""

    def __init__(self) -> None:
        self.events: list[c.PaymentEvent] = []
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.signal(name="payment_event")
    def payment_event(self, ev: c.PaymentEvent) -> None:
        self.events.append(ev)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def seen(self) -> list[c.PaymentEvent]:
        return self.events


@dataclass
class Probe:
    client: Client
    task_queue: str


@pytest.fixture
async def probe(stack) -> AsyncIterator[Probe]:  # type: ignore[no-untyped-def]
    client = await stack.temporal()
    tq = f"payment-probe-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=tq, workflows=[PaymentProbe], workflow_runner=UnsandboxedWorkflowRunner()):
        yield Probe(client, tq)


@dataclass
class ProbeCase:
    case_id: str
    aktenzeichen: str
    handle: WorkflowHandle[Any, Any]


async def _case(stack, probe: Probe) -> ProbeCase:  # type: ignore[no-untyped-def]
    """A case read model (as open_case writes it) whose 'workflow' is a probe."""
    case_id = f"case-probe-{uuid.uuid4().hex}"
    handle = await probe.client.start_workflow(PaymentProbe.run, id=case_id, task_queue=probe.task_queue)

    def open_it() -> str:
        with transaction(stack.sessions()) as s:
            v = records.open_case(s, case_id=case_id, file_plan="32.10", year=2026, title="Meldebescheinigung",
                                  service_key="probe", service_name="Meldebescheinigung", integrator="portal-probe",
                                  applicant={"name": "Erika Probe"}, form={}, fingerprint=uuid.uuid4().hex,
                                  fee_cents=FEE, retention_years=5, status=c.AWAITING_PAYMENT)
            return v.aktenzeichen

    return ProbeCase(case_id, await asyncio.to_thread(open_it), handle)


def _activities(stack, *, return_url: str | None = None) -> PaymentActivities:  # type: ignore[no-untyped-def]
    s = stack.settings
    sessions = stack.sessions()

    def record_payment(case_id: str, payment_id: str, payment_url: str) -> None:
        with transaction(sessions) as db:
            v = records.get_case(db, case_id)
            v.payment_id, v.payment_url = payment_id, payment_url

    provider = PaymentProvider(s.payment_base_url, s.public_base_url + "/v1/payments/webhook", return_url=return_url)
    return PaymentActivities(provider, record_payment, sessions)


async def _run(case_id: str, fn, arg):  # type: ignore[no-untyped-def]
    """Run an activity as the case's workflow would (its workflow id is the case id)."""
    env = ActivityEnvironment()
    env.info = replace(env.info, workflow_id=case_id)
    return await asyncio.to_thread(env.run, fn, arg)


async def _request(stack, case: ProbeCase, acts: PaymentActivities | None = None,  # type: ignore[no-untyped-def]
                   attempt: int = 0) -> c.PaymentRequested:
    acts = acts or _activities(stack)
    return await _run(case.case_id, acts.request_payment,
                      c.PaymentParams(case_id=case.case_id, aktenzeichen=case.aktenzeichen, amount_cents=FEE,
                                      purpose=f"Meldebescheinigung {case.aktenzeichen}", attempt=attempt))


async def _pay_returning_to(stack, probe: Probe, return_url: str,  # type: ignore[no-untyped-def]
                            action: str) -> tuple[ProbeCase, c.PaymentRequested, httpx.Response]:
    """A case's payment with a return_url, settled on the payment page by ``action``."""
    case = await _case(stack, probe)
    req = await _request(stack, case, _activities(stack, return_url=return_url))
    async with httpx.AsyncClient(timeout=30) as http:
        return case, req, await http.post(req.payment_url, data={"action": action})


async def _signals(case: ProbeCase, count: int, timeout: float = 20) -> list[c.PaymentEvent]:
    deadline = time.monotonic() + timeout
    while True:
        seen = await case.handle.query(PaymentProbe.seen)
        if len(seen) >= count or time.monotonic() > deadline:
            return [ev if isinstance(ev, c.PaymentEvent) else c.PaymentEvent(**ev) for ev in seen]
        await asyncio.sleep(0.2)


def _db(stack, fn):  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return fn(s)


async def _until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_the_payment_page_offers_every_test_scenario(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    req = await _request(stack, case)
    async with httpx.AsyncClient(timeout=30) as http:
        page = (await http.get(req.payment_url)).text
    for action in ("pay", "decline", "pay_lost_callback", "pay_duplicate_callback", "pay_callback_first", "expire"):
        assert f"name='action' value='{action}'" in page
    with stack.sessions()() as s:
        rec = s.get(PaymentRecord, req.payment_id)
        assert (rec.case_id, rec.status, rec.amount_cents, rec.idempotency_key) == \
            (case.case_id, "open", FEE, f"{case.case_id}:payment")
        assert s.get(Vorgang, case.case_id).payment_amount_cents == FEE


async def test_a_declined_payment_is_signalled_as_declined(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    req = await _request(stack, case)
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(req.payment_url, data={"action": "decline"})).status_code == 200
    [ev] = await _signals(case, 1)
    assert (ev.payment_id, ev.status, ev.amount_cents) == (req.payment_id, "declined", FEE)
    polled = await _run(case.case_id, _activities(stack).poll_payment, req.payment_id)
    assert polled == c.PaymentPolled(payment_id=req.payment_id, status="declined", amount_cents=FEE)
    assert _db(stack, lambda s: s.get(PaymentRecord, req.payment_id).status) == "declined"
    assert _db(stack, lambda s: s.get(PaymentReceipt, req.payment_id)) is None


async def test_a_lost_callback_is_found_by_the_status_poll(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    req = await _request(stack, case)
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(req.payment_url, data={"action": "pay_lost_callback"})).status_code == 200
    await asyncio.sleep(1.5)
    assert await _signals(case, 1, timeout=0) == []
    p = _db(stack, lambda s: s.get(SandboxPayment, req.payment_id))
    assert (p.status, p.scenario, p.callback_attempts) == ("paid", "pay_lost_callback", 0)
    polled = await _run(case.case_id, _activities(stack).poll_payment, req.payment_id)
    assert (polled.status, polled.amount_cents) == ("paid", FEE)
    receipt = _db(stack, lambda s: s.get(PaymentReceipt, req.payment_id))
    assert (receipt.case_id, receipt.source, receipt.amount_cents) == (case.case_id, "poll", FEE)
    # polling again books nothing twice
    await _run(case.case_id, _activities(stack).poll_payment, req.payment_id)
    assert _db(stack, lambda s: s.scalar(select(func.count()).select_from(PaymentReceipt)
                                         .where(PaymentReceipt.payment_id == req.payment_id))) == 1


async def test_a_callback_delivered_five_times_is_signalled_and_booked_once(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    req = await _request(stack, case)
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(req.payment_url, data={"action": "pay_duplicate_callback"})).status_code == 200
    await _until(lambda: _db(stack, lambda s: s.get(SandboxPayment, req.payment_id).callback_attempts) >= 5)
    p = _db(stack, lambda s: s.get(SandboxPayment, req.payment_id))
    assert (p.callback_attempts, p.callback_delivered) == (5, True)  # every one answered 2xx
    await asyncio.sleep(0.5)
    events = await _signals(case, 2, timeout=1)
    assert [(e.status, e.amount_cents) for e in events] == [("paid", FEE)]
    with stack.sessions()() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.payment_id == req.payment_id)).all()
        assert [(r.event_id, r.outcome, r.case_id) for r in rows] == [(events[0].event_id, "signalled", case.case_id)]
        assert s.scalar(select(func.count()).select_from(PaymentReceipt)
                        .where(PaymentReceipt.payment_id == req.payment_id)) == 1
        assert s.get(PaymentReceipt, req.payment_id).event_id == events[0].event_id


async def test_the_callback_arrives_before_the_citizen_is_redirected_back(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case, req, r = await _pay_returning_to(stack, probe, "https://portal.example/antrag?step=4", "pay_callback_first")
    assert r.status_code == 303
    assert r.headers["location"] == f"https://portal.example/antrag?step=4&payment_id={req.payment_id}&status=paid"
    # by the time the browser is back, the case has been told and the payment booked
    events = await _signals(case, 1, timeout=0)
    assert [(e.payment_id, e.status) for e in events] == [(req.payment_id, "paid")]
    assert _db(stack, lambda s: s.get(PaymentReceipt, req.payment_id)).source == "callback"


async def test_a_plain_payment_redirects_to_the_return_url_after_paying(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case, req, r = await _pay_returning_to(stack, probe, "https://portal.example/back", "pay")
    assert r.status_code == 303
    assert r.headers["location"] == f"https://portal.example/back?payment_id={req.payment_id}&status=paid"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(req.payment_url, data={"action": "pay"})).status_code == 409  # paid once
    [ev] = await _signals(case, 1)
    assert ev.status == "paid"


async def test_an_open_payment_expires_on_read_and_the_callback_says_so(stack, probe) -> None:  # type: ignore[no-untyped-def]
    """The stack's sweep runs every 30 s: a read after the expiry time expires it at once."""
    case = await _case(stack, probe)
    async with httpx.AsyncClient(base_url=stack.settings.payment_base_url, timeout=30) as http:
        r = await http.post("/api/payments", headers={"Idempotency-Key": f"{case.case_id}:payment"}, json={
            "reference": case.aktenzeichen, "amount_cents": FEE, "currency": "EUR", "purpose": "Meldebescheinigung",
            "callback_url": stack.settings.public_base_url + "/v1/payments/webhook", "expires_in_seconds": 1})
        assert r.status_code == 201 and r.json()["status"] == "open"
        payment_id = r.json()["payment_id"]
    with transaction(stack.sessions()) as s:  # as request_payment would have booked it
        from eakte import payments as ledger
        ledger.register(s, case_id=case.case_id, payment_id=payment_id, payment_url=r.json()["payment_url"],
                        attempt=0, idempotency_key=f"{case.case_id}:payment", amount_cents=FEE)
    await asyncio.sleep(1.2)
    polled = await _run(case.case_id, _activities(stack).poll_payment, payment_id)
    assert (polled.status, polled.amount_cents) == ("expired", FEE)
    [ev] = await _signals(case, 1)
    assert (ev.payment_id, ev.status) == (payment_id, "expired")
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(r.json()["payment_url"], data={"action": "pay"})).status_code == 409
    assert _db(stack, lambda s: s.get(PaymentRecord, payment_id).status) == "expired"


async def test_the_sweep_expires_payments_after_the_configured_time(stack, probe) -> None:  # type: ignore[no-untyped-def]
    """SANDBOX_PAYMENT_EXPIRY_SECONDS: a second API process (same database) with 1 s expiry; nobody
    reads the payment, the sweep expires it and sends the 'expired' callback to our webhook."""
    from api.app import create_app

    port = devstack.free_port()
    settings = type(stack.settings)(**{**stack.settings.model_dump(), "sandbox_payment_expiry_seconds": 1,
                                       "public_base_url": f"http://127.0.0.1:{port}"})
    api = ApiServer(create_app(settings), port)
    api.start()
    try:
        case = await _case(stack, probe)
        provider = PaymentProvider(f"http://127.0.0.1:{port}/sandbox-pay", stack.base_url + "/v1/payments/webhook")
        acts = PaymentActivities(provider, _activities(stack)._record_payment, stack.sessions())
        req = await _request(stack, case, acts)
        [ev] = await _signals(case, 1, timeout=15)
        assert (ev.payment_id, ev.status, ev.amount_cents) == (req.payment_id, "expired", FEE)
        p = _db(stack, lambda s: s.get(SandboxPayment, req.payment_id))
        assert (p.status, p.callback_delivered) == ("expired", True)
        polled = await _run(case.case_id, acts.poll_payment, req.payment_id)
        assert polled.status == "expired"
    finally:
        api.stop()


async def test_a_new_attempt_gets_its_own_payment_and_late_events_of_the_old_one_still_arrive(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    first = await _request(stack, case)
    assert (await _request(stack, case)).payment_id == first.payment_id  # a retry: the same payment
    async with httpx.AsyncClient(timeout=30) as http:
        await http.post(first.payment_url, data={"action": "decline"})
        second = await _request(stack, case, attempt=1)
        assert second.payment_id != first.payment_id
        await http.post(second.payment_url, data={"action": "pay"})
    events = await _signals(case, 2)
    assert sorted((e.payment_id, e.status) for e in events) == sorted(
        [(first.payment_id, "declined"), (second.payment_id, "paid")])
    with stack.sessions()() as s:
        keys = {r.attempt: r.idempotency_key for r in s.scalars(
            select(PaymentRecord).where(PaymentRecord.case_id == case.case_id))}
        assert keys == {0: f"{case.case_id}:payment", 1: f"{case.case_id}:payment:1"}
        v = s.get(Vorgang, case.case_id)
        assert (v.payment_id, v.payment_url) == (second.payment_id, second.payment_url)


async def test_cancel_answers_the_status_the_payment_has(stack, probe) -> None:  # type: ignore[no-untyped-def]
    acts = _activities(stack)
    case = await _case(stack, probe)
    req = await _request(stack, case, acts)
    assert (await _run(case.case_id, acts.cancel_payment, req.payment_id)).status == "cancelled"
    assert _db(stack, lambda s: s.get(PaymentRecord, req.payment_id).status) == "cancelled"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(req.payment_url, data={"action": "pay"})).status_code == 409
    # paid a moment before the cancel: the cancel says so, and the payment is booked
    case2 = await _case(stack, probe)
    req2 = await _request(stack, case2, acts)
    async with httpx.AsyncClient(timeout=30) as http:
        await http.post(req2.payment_url, data={"action": "pay_lost_callback"})
    assert (await _run(case2.case_id, acts.cancel_payment, req2.payment_id)).status == "paid"
    assert _db(stack, lambda s: s.get(PaymentReceipt, req2.payment_id)).source == "poll"


async def _paid(stack, probe) -> tuple[ProbeCase, c.PaymentRequested, PaymentActivities]:  # type: ignore[no-untyped-def]
    acts = _activities(stack)
    case = await _case(stack, probe)
    req = await _request(stack, case, acts)
    async with httpx.AsyncClient(timeout=30) as http:
        await http.post(req.payment_url, data={"action": "pay"})
    await _signals(case, 1)
    return case, req, acts


async def test_a_refund_is_made_once_however_often_it_is_retried(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case, req, acts = await _paid(stack, probe)
    params = c.RefundParams(case_id=case.case_id, payment_id=req.payment_id, amount_cents=300,
                            reason="Antrag nach Zahlung zurückgenommen")
    # the provider refunded, but our booking was lost (a crash): the retry finds the same refund
    first = acts.provider.refund(req.payment_id, amount_cents=300, idempotency_key=f"{case.case_id}:{req.payment_id}:refund")
    done = await _run(case.case_id, acts.refund_payment, params)
    again = await _run(case.case_id, acts.refund_payment, params)
    assert done == again == c.Refunded(refund_id=first.refund_id, status="refunded")
    events = await _signals(case, 2)
    assert [(e.status, e.amount_cents) for e in events] == [("paid", FEE), ("refunded", 300)]
    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(SandboxRefund)
                        .where(SandboxRefund.payment_id == req.payment_id)) == 1
        p = s.get(SandboxPayment, req.payment_id)
        assert (p.status, p.refunded_cents) == ("paid", 300)  # partly refunded: still paid
        [row] = s.scalars(select(PaymentRefund).where(PaymentRefund.case_id == case.case_id)).all()
        assert (row.refund_id, row.amount_cents, row.reason) == (first.refund_id, 300, params.reason)
        assert s.get(PaymentRecord, req.payment_id).refunded_cents == 300
        v = s.get(Vorgang, case.case_id)
        assert v.refunded_cents == 300
        audits = s.scalars(select(AuditEvent).where(AuditEvent.case_id == case.case_id,
                                                    AuditEvent.action == "payment.refund")).all()
        assert [(a.target_id, a.reason) for a in audits] == [(req.payment_id, params.reason)]
    # the same case and payment with another amount is not a retry: refused, not refunded
    with pytest.raises(ApplicationError) as err:
        await _run(case.case_id, acts.refund_payment, replace(params, amount_cents=500))
    assert (err.value.type, err.value.non_retryable) == ("PaymentConflict", True)


async def test_a_full_refund_refunds_the_payment(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case, req, acts = await _paid(stack, probe)
    out = await _run(case.case_id, acts.refund_payment, c.RefundParams(case_id=case.case_id, payment_id=req.payment_id,
                                                                       amount_cents=FEE, reason="Gebührenbefreiung"))
    assert out.status == "refunded"
    polled = await _run(case.case_id, acts.poll_payment, req.payment_id)
    assert polled.status == "refunded"
    with stack.sessions()() as s:
        assert s.get(PaymentRecord, req.payment_id).status == "refunded"
        assert s.get(Vorgang, case.case_id).payment_status == "refunded"


async def test_the_provider_refuses_refunds_it_cannot_make(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case, req, acts = await _paid(stack, probe)
    base = stack.settings.payment_base_url
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        too_much = await http.post(f"/api/payments/{req.payment_id}/refunds", json={"amount_cents": FEE + 1},
                                   headers={"Idempotency-Key": "r-too-much"})
        assert too_much.status_code == 422
        assert (await http.post(f"/api/payments/{req.payment_id}/refunds", json={"amount_cents": 100},
                                headers={"Idempotency-Key": "r-1"})).status_code == 201
        replay = await http.post(f"/api/payments/{req.payment_id}/refunds", json={"amount_cents": 100},
                                 headers={"Idempotency-Key": "r-1"})
        assert replay.status_code == 200 and replay.json()["refunded_cents"] == 100
        assert (await http.post(f"/api/payments/{req.payment_id}/refunds", json={"amount_cents": 200},
                                headers={"Idempotency-Key": "r-1"})).status_code == 409
        assert (await http.post(f"/api/payments/{req.payment_id}/refunds", json={"amount_cents": FEE},
                                headers={"Idempotency-Key": "r-2"})).status_code == 422  # only 900 left
        assert (await http.post("/api/payments/nope/refunds", json={"amount_cents": 1},
                                headers={"Idempotency-Key": "r-3"})).status_code == 404
    open_case = await _case(stack, probe)
    open_req = await _request(stack, open_case, acts)
    with pytest.raises(ApplicationError) as err:  # nothing was paid
        await _run(open_case.case_id, acts.refund_payment, c.RefundParams(
            case_id=open_case.case_id, payment_id=open_req.payment_id, amount_cents=100, reason="x"))
    assert (err.value.type, err.value.non_retryable) == ("PaymentConflict", True)


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def test_provider_errors_are_retryable_or_permanent_by_kind(stack) -> None:  # type: ignore[no-untyped-def]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        down = PaymentProvider(f"http://127.0.0.1:{server.server_address[1]}", "http://x/cb")
        with pytest.raises(ApplicationError) as err:
            down.status("p1")
        assert (err.value.type, err.value.non_retryable) == ("PaymentProviderUnavailable", False)
    finally:
        server.shutdown()
    closed = PaymentProvider(f"http://127.0.0.1:{devstack.free_port()}", "http://x/cb", timeout=2)
    with pytest.raises(ApplicationError) as err:
        closed.create(reference="A", amount_cents=1, purpose="p", idempotency_key="k")
    assert (err.value.type, err.value.non_retryable) == ("PaymentProviderUnavailable", False)

    sandbox = PaymentProvider(stack.settings.payment_base_url, stack.settings.public_base_url + "/v1/payments/webhook")
    with pytest.raises(ApplicationError) as err:
        sandbox.status("no-such-payment")
    assert (err.value.type, err.value.non_retryable) == ("PaymentNotFound", True)
    with pytest.raises(ApplicationError) as err:
        sandbox.create(reference="A", amount_cents=0, purpose="p", idempotency_key=uuid.uuid4().hex)
    assert (err.value.type, err.value.non_retryable) == ("PaymentRefused", True)
    key = uuid.uuid4().hex
    sandbox.create(reference="A", amount_cents=100, purpose="p", idempotency_key=key)
    with pytest.raises(ApplicationError) as err:
        sandbox.create(reference="A", amount_cents=200, purpose="p", idempotency_key=key)
    assert (err.value.type, err.value.non_retryable) == ("PaymentConflict", True)


async def _post_event(http: httpx.AsyncClient, secret: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    return await http.post("/v1/payments/webhook", content=body,
                           headers={"X-Payment-Signature": sign(secret, int(time.time()), body)})


async def test_the_webhook_answers_bad_events_precisely(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    req = await _request(stack, case)
    secret = stack.settings.payment_webhook_secret
    good = {"event_id": uuid.uuid4().hex, "payment_id": req.payment_id, "reference": case.aktenzeichen,
            "status": "paid", "amount_cents": FEE}
    async with stack.client() as http:
        body = json.dumps(good).encode()
        for header in ("", "t=1,v1=deadbeef", sign("wrong-secret", int(time.time()), body),
                       sign(secret, int(time.time()) - 3600, body)):
            r = await http.post("/v1/payments/webhook", content=body, headers={"X-Payment-Signature": header})
            assert r.status_code == 401, header
        for bad in ({**good, "status": "failed"}, {**good, "amount_cents": -1}, {**good, "event_id": ""},
                    {k: v for k, v in good.items() if k != "payment_id"}):
            assert (await _post_event(http, secret, bad)).status_code == 422, bad
        assert (await _post_event(http, secret, {**good, "payment_id": "unknown"})).status_code == 404
        # paid, but not what we asked for: recorded, never counted
        cheap = await _post_event(http, secret, {**good, "event_id": "cheap-" + uuid.uuid4().hex, "amount_cents": 1})
        assert cheap.status_code == 200 and cheap.json()["outcome"] == "amount_mismatch"
        assert _db(stack, lambda s: s.get(PaymentReceipt, req.payment_id)) is None
        ok = await _post_event(http, secret, good)
        assert ok.json() == {"accepted": True, "duplicate": False, "outcome": "signalled"}
    events = await _signals(case, 1)
    assert [(e.status, e.amount_cents) for e in events] == [("paid", FEE)]
    with stack.sessions()() as s:
        assert s.get(PaymentReceipt, req.payment_id).amount_cents == FEE
        outcomes = sorted(r.outcome for r in s.scalars(select(WebhookDelivery)
                                                        .where(WebhookDelivery.payment_id == req.payment_id)))
        assert outcomes == ["amount_mismatch", "signalled"]
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.case_id == case.case_id, AuditEvent.action == "payment.amount_mismatch")) == 1


async def test_an_event_for_a_finished_case_is_accepted_and_not_retried(stack, probe) -> None:  # type: ignore[no-untyped-def]
    case = await _case(stack, probe)
    req = await _request(stack, case)
    await case.handle.signal(PaymentProbe.finish)
    await case.handle.result()
    async with stack.client() as http:
        r = await _post_event(http, stack.settings.payment_webhook_secret, {
            "event_id": uuid.uuid4().hex, "payment_id": req.payment_id, "reference": case.aktenzeichen,
            "status": "expired", "amount_cents": FEE})
    assert r.status_code == 200 and r.json()["outcome"] == "case_closed"
