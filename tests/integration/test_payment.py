"""The payment path: signed callbacks, replays, duplicates, declines — one payment per case."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from activities.payment import sign
from eakte.models import PaymentReceipt, SandboxPayment, Vorgang, WebhookDelivery
from tests.integration.helpers import MELDE, application, pay, wait_for_case


async def _case_awaiting_payment(stack, http) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    portal, clerk = stack.token("portal-pay", "integrator"), stack.token("clerk-bb", "clerk", "buergerbuero")
    case_id = (await http.post("/v1/cases", json=application(MELDE), headers=portal)).json()["case_id"]
    await wait_for_case(http, case_id, portal, status="awaiting_decision")
    d = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
    return case_id, d.json()["payment_url"]


def _event(stack, case_id: str, **over) -> dict:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        body = {"event_id": f"evt-{case_id}", "payment_id": v.payment_id, "reference": v.aktenzeichen,
                "status": "paid", "amount_cents": v.fee_cents}
    body.update(over)
    return body


async def test_webhook_refuses_bad_and_stale_signatures(stack) -> None:
    async with stack.client() as http:
        case_id, _ = await _case_awaiting_payment(stack, http)
        body = json.dumps(_event(stack, case_id)).encode()
        secret = stack.settings.payment_webhook_secret
        for header in ("", "t=1,v1=deadbeef", sign("wrong-secret", int(time.time()), body),
                       sign(secret, int(time.time()) - 3600, body)):
            r = await http.post("/v1/payments/webhook", content=body, headers={"X-Payment-Signature": header})
            assert r.status_code == 401, header
        # tampered body with a signature of the original
        good = sign(secret, int(time.time()), body)
        tampered = body.replace(b'"paid"', b'"PAID"')
        assert (await http.post("/v1/payments/webhook", content=tampered,
                                headers={"X-Payment-Signature": good})).status_code == 401
        assert (await http.get(f"/v1/cases/{case_id}", headers=stack.token("portal-pay", "integrator"))
                ).json()["status"] == "awaiting_payment"


async def test_a_callback_delivered_five_times_pays_once(stack) -> None:
    portal = stack.token("portal-pay", "integrator")
    async with stack.client() as http:
        case_id, _ = await _case_awaiting_payment(stack, http)
        body = json.dumps(_event(stack, case_id)).encode()
        answers = []
        for _ in range(5):
            r = await http.post("/v1/payments/webhook", content=body,
                                headers={"X-Payment-Signature": sign(stack.settings.payment_webhook_secret,
                                                                     int(time.time()), body)})
            assert r.status_code == 200
            answers.append(r.json()["duplicate"])
        assert answers == [False, True, True, True, True]
        # past the payment (what comes after it is the case workflow's business, not the provider's)
        done = await wait_for_case(http, case_id, portal, status=("issuing", "completed"))
        assert done["payment_status"] == "paid"
    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery).where(
            WebhookDelivery.event_id == f"evt-{case_id}")) == 1
        payment_id = s.get(Vorgang, case_id).payment_id
        [receipt] = s.scalars(select(PaymentReceipt).where(PaymentReceipt.case_id == case_id)).all()
        assert (receipt.payment_id, receipt.event_id, receipt.source) == (payment_id, f"evt-{case_id}", "callback")


async def test_a_wrong_amount_does_not_pay_the_case(stack) -> None:
    portal = stack.token("portal-pay", "integrator")
    async with stack.client() as http:
        case_id, payment_url = await _case_awaiting_payment(stack, http)
        body = json.dumps(_event(stack, case_id, event_id=f"cheap-{case_id}", amount_cents=1)).encode()
        r = await http.post("/v1/payments/webhook", content=body,
                            headers={"X-Payment-Signature": sign(stack.settings.payment_webhook_secret,
                                                                 int(time.time()), body)})
        assert r.status_code == 200
        await __import__("asyncio").sleep(1)
        assert (await http.get(f"/v1/cases/{case_id}", headers=portal)).json()["status"] == "awaiting_payment"
        await pay(http, payment_url)  # the real payment still pays it
        await wait_for_case(http, case_id, portal, status=("issuing", "completed"))
    with stack.sessions()() as s:
        outcomes = sorted(d.outcome for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.case_id == case_id)))
        assert outcomes == ["amount_mismatch", "signalled"]
        assert s.scalar(select(PaymentReceipt.amount_cents).where(PaymentReceipt.case_id == case_id)) == 1000


async def test_a_declined_payment_leaves_the_case_waiting_and_the_page_closed(stack) -> None:
    portal = stack.token("portal-pay", "integrator")
    async with stack.client() as http:
        case_id, payment_url = await _case_awaiting_payment(stack, http)
        await pay(http, payment_url, action="decline")
        await __import__("asyncio").sleep(1.5)
        case = (await http.get(f"/v1/cases/{case_id}", headers=portal)).json()
        assert case["status"] == "awaiting_payment"
        again = await http.post(payment_url, data={"action": "pay"})
        assert again.status_code == 409
    with stack.sessions()() as s:
        p = s.scalar(select(SandboxPayment).where(SandboxPayment.reference == case["aktenzeichen"]))
        assert p.status == "declined" and p.callback_delivered


async def test_unknown_payment_and_malformed_event_get_clear_answers(stack) -> None:
    secret = stack.settings.payment_webhook_secret
    async with stack.client() as http:
        body = json.dumps({"event_id": "e1", "payment_id": "nope", "reference": "x", "status": "paid",
                           "amount_cents": 1}).encode()
        r = await http.post("/v1/payments/webhook", content=body,
                            headers={"X-Payment-Signature": sign(secret, int(time.time()), body)})
        assert r.status_code == 404
        junk = b"{not json"
        r = await http.post("/v1/payments/webhook", content=junk,
                            headers={"X-Payment-Signature": sign(secret, int(time.time()), junk)})
        assert r.status_code == 422
