"""The sandbox payment provider: behaves like a German e-payment platform.

- ``POST /sandbox-pay/api/payments`` creates a payment (idempotent per Idempotency-Key) and
  answers its id and the payment-page URL;
- ``GET /sandbox-pay/pay/{id}`` is the payment page; ``POST`` to it with ``action=pay`` or
  ``action=decline`` is what the citizen's browser does;
- the outcome is sent asynchronously to the merchant's callback URL as JSON, signed with
  HMAC-SHA256 (header ``X-Payment-Signature: t=<unix>,v1=<hex>``), retried with back-off
  until the merchant answers 2xx;
- ``GET /sandbox-pay/api/payments/{id}`` answers the status (the poll fallback) and
  ``POST .../cancel`` cancels an open payment.
It stands in for the external provider only; it keeps its own table.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
import uuid
from typing import Annotated

import httpx
import structlog
from fastapi import APIRouter, Form, Header, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from activities.payment import sign
from aktenlauf.errors import Conflict, NotFound
from api.context import ApiContext, Ctx
from eakte.models import SandboxPayment, utcnow

router = APIRouter(prefix="/sandbox-pay", tags=["sandbox payment provider"])
log = structlog.get_logger(__name__)
CALLBACK_DELAYS = (0.0, 0.5, 2.0, 5.0, 15.0, 60.0)


class PaymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # no NUL characters: PostgreSQL text cannot store them (it was a 500, found by the fuzzer)
    reference: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    amount_cents: int = Field(gt=0, le=10_000_000)
    currency: str = Field(pattern="^EUR$")
    purpose: str = Field(min_length=1, max_length=300, pattern=r"^[^\x00]+$")
    callback_url: str = Field(pattern=r"^https?://[^\x00]*$", max_length=2000)


class PaymentOut(BaseModel):
    payment_id: str
    payment_url: str
    status: str
    amount_cents: int
    reference: str


def _out(ctx: ApiContext, p: SandboxPayment) -> PaymentOut:
    base = ctx.settings.payment_base_url
    return PaymentOut(payment_id=p.id, payment_url=f"{base}/pay/{p.id}", status=p.status,
                      amount_cents=p.amount_cents, reference=p.reference)


@router.post("/api/payments", status_code=201, response_model=PaymentOut,
             responses={409: {"description": "Idempotency-Key reused with a different payment"}})
async def create_payment(body: PaymentCreate, ctx: Ctx,
                         idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=200)]) -> PaymentOut:
    def create(s: Session) -> SandboxPayment:
        existing = s.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == idempotency_key))
        if existing is not None:
            if (existing.reference, existing.amount_cents) != (body.reference, body.amount_cents):
                raise Conflict("Idempotency-Key reused with a different payment")
            return existing
        p = SandboxPayment(id=uuid.uuid4().hex, idempotency_key=idempotency_key, reference=body.reference,
                           amount_cents=body.amount_cents, currency=body.currency, purpose=body.purpose,
                           callback_url=body.callback_url)
        s.add(p)
        s.flush()
        return p

    return _out(ctx, await ctx.db(create))


async def _get(ctx: ApiContext, payment_id: str) -> SandboxPayment:
    p = await ctx.db(lambda s: s.get(SandboxPayment, payment_id))
    if p is None:
        raise NotFound("no such payment")
    return p


@router.get("/api/payments/{payment_id}", response_model=PaymentOut)
async def payment_status(payment_id: str, ctx: Ctx) -> PaymentOut:
    return _out(ctx, await _get(ctx, payment_id))


@router.post("/api/payments/{payment_id}/cancel", response_model=PaymentOut)
async def cancel_payment(payment_id: str, ctx: Ctx) -> PaymentOut:
    def cancel(s: Session) -> SandboxPayment:
        p = s.get(SandboxPayment, payment_id)
        if p is None:
            raise NotFound("no such payment")
        if p.status == "open":
            p.status, p.updated_at = "cancelled", utcnow()
        return p

    return _out(ctx, await ctx.db(cancel))


@router.get("/pay/{payment_id}", response_class=HTMLResponse)
async def payment_page(payment_id: str, ctx: Ctx) -> HTMLResponse:
    p = await _get(ctx, payment_id)
    amount = f"{p.amount_cents // 100},{p.amount_cents % 100:02d} EUR"
    if p.status != "open":
        body = f"<p>Diese Zahlung ist nicht mehr offen (Status: {html.escape(p.status)}).</p>"
    else:
        body = (f"<form method='post'><input type='hidden' name='action' value='pay'>"
                f"<button>{html.escape(amount)} bezahlen</button></form>"
                f"<form method='post'><input type='hidden' name='action' value='decline'>"
                f"<button>Abbrechen</button></form>")
    page = (f"<!doctype html><html lang='de'><meta charset='utf-8'><title>Sandbox-ePayment</title>"
            f"<h1>Sandbox-ePayment</h1><p>Verwendungszweck: {html.escape(p.purpose)}</p>"
            f"<p>Betrag: {html.escape(amount)}</p>{body}</html>")
    return HTMLResponse(page)


@router.post("/pay/{payment_id}", response_class=HTMLResponse)
async def submit_payment(payment_id: str, ctx: Ctx, request: Request,
                         action: Annotated[str, Form(pattern="^(pay|decline)$")]) -> HTMLResponse:
    def settle(s: Session) -> SandboxPayment:
        p = s.get(SandboxPayment, payment_id)
        if p is None:
            raise NotFound("no such payment")
        if p.status != "open":
            raise Conflict(f"this payment is no longer open (status: {p.status})")
        p.status, p.updated_at = ("paid" if action == "pay" else "declined"), utcnow()
        return p

    p = await ctx.db(settle)
    tasks: set[asyncio.Task[None]] = request.app.state.background_tasks
    task = asyncio.create_task(deliver_callback(ctx, p.id))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    text = "Zahlung erfolgreich." if p.status == "paid" else "Zahlung abgebrochen."
    return HTMLResponse(f"<!doctype html><html lang='de'><meta charset='utf-8'><p>{text}</p></html>")


async def deliver_callback(ctx: ApiContext, payment_id: str, delays: tuple[float, ...] = CALLBACK_DELAYS) -> bool:
    """Send the signed outcome to the merchant, retrying with back-off until it answers 2xx."""
    p = await _get(ctx, payment_id)
    event = {"event_id": uuid.uuid4().hex, "payment_id": p.id, "reference": p.reference, "status": p.status,
             "amount_cents": p.amount_cents}
    body = json.dumps(event).encode()
    async with httpx.AsyncClient(timeout=10) as http:
        for delay in delays:
            await asyncio.sleep(delay)
            headers = {"Content-Type": "application/json",
                       "X-Payment-Signature": sign(ctx.settings.payment_webhook_secret, int(time.time()), body)}
            try:
                resp = await http.post(p.callback_url, content=body, headers=headers)
                ok = resp.status_code < 300
            except httpx.HTTPError as exc:
                log.warning("sandbox_pay.callback_failed", payment_id=p.id, error=str(exc))
                ok = False
            await ctx.db(lambda s, delivered=ok: _count_attempt(s, p.id, delivered))
            if ok:
                return True
    log.error("sandbox_pay.callback_gave_up", payment_id=p.id)
    return False


def _count_attempt(s: Session, payment_id: str, ok: bool) -> None:
    p = s.get(SandboxPayment, payment_id)
    if p is not None:
        p.callback_attempts += 1
        p.callback_delivered = p.callback_delivered or ok


