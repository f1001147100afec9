"""The sandbox payment provider: behaves like a German e-payment platform (ePayBL, pmPayment).

The merchant's API (JSON):
- ``POST /sandbox-pay/api/payments`` creates a payment (idempotent per ``Idempotency-Key``):
  reference (the Aktenzeichen), amount, purpose, callback_url, optional return_url and
  expires_in_seconds; answers its id and the payment-page URL;
- ``GET /sandbox-pay/api/payments/{id}`` answers the status (the poll fallback);
- ``POST .../{id}/cancel`` cancels an open payment (answers the status it has: a payment paid
  a moment earlier stays paid);
- ``POST .../{id}/refunds`` refunds (part of) a paid payment, idempotent per ``Idempotency-Key``;
  confirmed at once (status ``refunded``) and by a ``refunded`` callback.

The citizen's side: ``GET /sandbox-pay/pay/{id}`` is the payment page. Like real sandboxes it
offers the test scenarios as buttons (``POST`` with ``action=``):

==========================  ===========================================================
``pay``                     paid; the callback is sent (retried with back-off)
``decline``                 declined by the citizen or the bank; 'declined' callback
``pay_lost_callback``       paid, but every callback of this payment is dropped: only the
                            status poll finds out
``pay_duplicate_callback``  paid; the same signed event is delivered five times
``pay_callback_first``      paid; the callback is delivered and acknowledged before the
                            browser is sent back (the merchant learns first)
``expire``                  the session runs out now (as after the expiry time)
==========================  ===========================================================

After an action the page redirects (303) to the return_url (with ``payment_id`` and ``status``
added to its query) when the merchant gave one.

Expiry: an open payment expires ``SANDBOX_PAYMENT_EXPIRY_SECONDS`` after its creation (or
``expires_in_seconds``). Two ways get it there, both through one conditional UPDATE (only the
one that moves it from open sends the 'expired' callback, also with several API replicas):
a sweep task in each API process (started by this router's lifespan, every quarter of the
expiry time, at most every 30 s) and, so that no reader ever sees a stale 'open', every read
of the payment (status poll, page, cancel) expires it first when it is due.

Callbacks are JSON, signed with HMAC-SHA256 (``X-Payment-Signature: t=<unix>,v1=<hex>`` over
``"<t>." + body``), retried with back-off until the merchant answers 2xx. It stands in for the
external provider only and keeps its own tables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import html
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import structlog
from fastapi import APIRouter, FastAPI, Form, Header, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from activities.payment import sign
from aktenlauf.errors import Conflict, InvalidInput, NotFound
from api.context import ApiContext, Ctx
from eakte.models import SandboxPayment, SandboxRefund, utcnow
from intake.fees import euro

log = structlog.get_logger(__name__)
CALLBACK_DELAYS = (0.0, 0.5, 2.0, 5.0, 15.0, 60.0)
DUPLICATE_DELIVERIES = 5
#: how long pay_callback_first holds the browser back while the callback is delivered
CALLBACK_FIRST_WAIT_S = 15.0
#: the test scenarios of the payment page: action -> the status it leads to
SCENARIOS = {
    "pay": "paid",
    "decline": "declined",
    "pay_lost_callback": "paid",
    "pay_duplicate_callback": "paid",
    "pay_callback_first": "paid",
    "expire": "expired",
}
SCENARIO_LABELS = {
    "pay": "{amount} bezahlen",
    "decline": "Zahlung abbrechen (abgelehnt)",
    "pay_lost_callback": "Bezahlen – Rückmeldung geht verloren",
    "pay_duplicate_callback": "Bezahlen – Rückmeldung kommt fünfmal",
    "pay_callback_first": "Bezahlen – Rückmeldung vor der Rückleitung",
    "expire": "Sitzung ablaufen lassen",
}


def _sweep_interval(expiry_s: int) -> float:
    return min(30.0, max(0.5, expiry_s / 4))


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's lifespan (FastAPI merges router lifespans): the expiry sweep."""
    sweeper = asyncio.create_task(_sweep_forever(app))
    try:
        yield
    finally:
        sweeper.cancel()


router = APIRouter(prefix="/sandbox-pay", tags=["sandbox payment provider"], lifespan=_lifespan)


class PaymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # no NUL characters: PostgreSQL text cannot store them (it was a 500, found by the fuzzer)
    reference: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    amount_cents: int = Field(gt=0, le=10_000_000)
    currency: str = Field(pattern="^EUR$")
    purpose: str = Field(min_length=1, max_length=300, pattern=r"^[^\x00]+$")
    callback_url: str = Field(pattern=r"^https?://[^\x00]*$", max_length=2000)
    return_url: str | None = Field(default=None, pattern=r"^https?://[^\x00]*$", max_length=2000)
    #: this payment's expiry instead of SANDBOX_PAYMENT_EXPIRY_SECONDS
    expires_in_seconds: int | None = Field(default=None, ge=1, le=30 * 86400)


class PaymentOut(BaseModel):
    payment_id: str
    payment_url: str
    status: str
    amount_cents: int
    reference: str
    refunded_cents: int = 0
    expires_at: dt.datetime | None = None


class RefundCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_cents: int = Field(gt=0, le=10_000_000)
    reason: str | None = Field(default=None, max_length=300, pattern=r"^[^\x00]*$")


class RefundOut(BaseModel):
    refund_id: str
    payment_id: str
    amount_cents: int
    status: str
    payment_status: str
    refunded_cents: int


def _out(ctx: ApiContext, p: SandboxPayment) -> PaymentOut:
    base = ctx.settings.payment_base_url
    return PaymentOut(payment_id=p.id, payment_url=f"{base}/pay/{p.id}", status=p.status,
                      amount_cents=p.amount_cents, reference=p.reference, refunded_cents=p.refunded_cents or 0,
                      expires_at=p.expires_at)


def _spawn(app: FastAPI, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A background task the app cancels at shutdown."""
    tasks: set[asyncio.Task[Any]] = app.state.background_tasks
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def _event(p: SandboxPayment, status: str, amount_cents: int, **extra: Any) -> dict[str, Any]:
    """A callback event; its id stays the same over every retry and duplicate of it."""
    return {"event_id": uuid.uuid4().hex, "payment_id": p.id, "reference": p.reference, "status": status,
            "amount_cents": amount_cents, "occurred_at": utcnow().isoformat(), **extra}


# -- expiry ------------------------------------------------------------------------------

def _due(p: SandboxPayment | None, now: dt.datetime) -> bool:
    return p is not None and p.status == "open" and p.expires_at is not None and p.expires_at <= now


def _expire(s: Session, payment_id: str, now: dt.datetime) -> dict[str, Any] | None:
    """Move one due open payment to 'expired'; the event to send when this call did it."""
    done = s.execute(update(SandboxPayment)
                     .where(SandboxPayment.id == payment_id, SandboxPayment.status == "open",
                            SandboxPayment.expires_at.is_not(None), SandboxPayment.expires_at <= now)
                     .values(status="expired", updated_at=now))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    p = s.get(SandboxPayment, payment_id, populate_existing=True)  # one SELECT, also when already loaded
    assert p is not None
    log.info("sandbox_pay.expired", payment_id=payment_id)
    return _event(p, "expired", p.amount_cents)


def _expire_due(s: Session, limit: int = 200) -> list[dict[str, Any]]:
    now = utcnow()
    due = s.scalars(select(SandboxPayment.id).where(SandboxPayment.status == "open",
                                                    SandboxPayment.expires_at <= now).limit(limit)).all()
    return [ev for pid in due if (ev := _expire(s, pid, now)) is not None]


async def _sweep_forever(app: FastAPI) -> None:
    ctx: ApiContext = app.state.ctx
    interval = _sweep_interval(ctx.settings.sandbox_payment_expiry_seconds)
    while True:
        await asyncio.sleep(interval)
        try:
            for ev in await ctx.db(_expire_due):
                _spawn(app, deliver_callback(ctx, ev["payment_id"], ev))
        except Exception as exc:  # noqa: BLE001 - the database may be away for a while: sweep again later
            log.warning("sandbox_pay.sweep_failed", error=str(exc)[:200])


async def _get(ctx: ApiContext, request: Request, payment_id: str) -> SandboxPayment:
    """The payment, expired first when its time has run out (and then the callback is sent)."""
    def read(s: Session) -> tuple[SandboxPayment | None, dict[str, Any] | None]:
        p, now = s.get(SandboxPayment, payment_id), utcnow()
        ev = _expire(s, payment_id, now) if _due(p, now) else None  # reads stay reads unless it is due
        return p, ev

    p, ev = await ctx.db(read)
    if p is None:
        raise NotFound("no such payment")
    if ev is not None:
        _spawn(request.app, deliver_callback(ctx, p.id, ev))
    return p


# -- the merchant's API ----------------------------------------------------------------------

@router.post("/api/payments", status_code=201, response_model=PaymentOut,
             responses={409: {"description": "Idempotency-Key reused with a different payment"}})
async def create_payment(body: PaymentCreate, ctx: Ctx,
                         idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1,
                                                                max_length=200)]) -> PaymentOut:
    expiry = body.expires_in_seconds or ctx.settings.sandbox_payment_expiry_seconds

    def create(s: Session) -> SandboxPayment:
        existing = s.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == idempotency_key))
        if existing is not None:
            if (existing.reference, existing.amount_cents) != (body.reference, body.amount_cents):
                raise Conflict("Idempotency-Key reused with a different payment")
            return existing
        now = utcnow()
        p = SandboxPayment(id=uuid.uuid4().hex, idempotency_key=idempotency_key, reference=body.reference,
                           amount_cents=body.amount_cents, currency=body.currency, purpose=body.purpose,
                           callback_url=body.callback_url, return_url=body.return_url, created_at=now, updated_at=now,
                           expires_at=now + dt.timedelta(seconds=expiry), refunded_cents=0)
        s.add(p)
        s.flush()
        return p

    return _out(ctx, await ctx.db(create))


@router.get("/api/payments/{payment_id}", response_model=PaymentOut)
async def payment_status(payment_id: str, ctx: Ctx, request: Request) -> PaymentOut:
    return _out(ctx, await _get(ctx, request, payment_id))


@router.post("/api/payments/{payment_id}/cancel", response_model=PaymentOut)
async def cancel_payment(payment_id: str, ctx: Ctx, request: Request) -> PaymentOut:
    await _get(ctx, request, payment_id)  # a due expiry happens (and is told) first

    def cancel(s: Session) -> SandboxPayment:
        now = utcnow()
        s.execute(update(SandboxPayment).where(SandboxPayment.id == payment_id, SandboxPayment.status == "open")
                  .values(status="cancelled", updated_at=now))
        p = s.get(SandboxPayment, payment_id, populate_existing=True)
        assert p is not None
        return p

    return _out(ctx, await ctx.db(cancel))


@router.post("/api/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut,
             responses={200: {"model": RefundOut, "description": "the same refund again (Idempotency-Key seen)"},
                        404: {"description": "no such payment"},
                        409: {"description": "not paid, or Idempotency-Key reused for another refund"},
                        422: {"description": "more than was paid and not yet refunded"}})
async def refund_payment(payment_id: str, body: RefundCreate, ctx: Ctx, request: Request, response: Response,
                         idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1,
                                                                max_length=200)]) -> RefundOut:
    def refund(s: Session) -> tuple[RefundOut, dict[str, Any] | None]:
        p = s.get(SandboxPayment, payment_id, with_for_update=True)  # one refund at a time per payment
        if p is None:
            raise NotFound("no such payment")
        existing = s.scalar(select(SandboxRefund).where(SandboxRefund.idempotency_key == idempotency_key))
        if existing is not None:
            if (existing.payment_id, existing.amount_cents) != (payment_id, body.amount_cents):
                raise Conflict("Idempotency-Key reused with a different refund")
            return RefundOut(refund_id=existing.id, payment_id=p.id, amount_cents=existing.amount_cents,
                             status=existing.status, payment_status=p.status, refunded_cents=p.refunded_cents), None
        if p.status not in ("paid",):
            raise Conflict(f"only a paid payment can be refunded (status: {p.status})")
        left = p.amount_cents - (p.refunded_cents or 0)
        if body.amount_cents > left:
            raise InvalidInput(f"the refund exceeds what was paid and not yet refunded ({left} cents)")
        r = SandboxRefund(id=uuid.uuid4().hex, payment_id=p.id, idempotency_key=idempotency_key,
                          amount_cents=body.amount_cents, reason=body.reason, status="refunded")
        s.add(r)
        p.refunded_cents = (p.refunded_cents or 0) + body.amount_cents
        if p.refunded_cents >= p.amount_cents:
            p.status = "refunded"
        p.updated_at = utcnow()
        s.flush()
        log.info("sandbox_pay.refunded", payment_id=p.id, refund_id=r.id, amount_cents=r.amount_cents)
        return (RefundOut(refund_id=r.id, payment_id=p.id, amount_cents=r.amount_cents, status=r.status,
                          payment_status=p.status, refunded_cents=p.refunded_cents),
                _event(p, "refunded", r.amount_cents, refund_id=r.id))

    out, ev = await ctx.db(refund)
    if ev is None:
        response.status_code = 200  # the same refund again: nothing new happened
    else:
        _spawn(request.app, deliver_callback(ctx, payment_id, ev))
    return out


# -- the citizen's payment page --------------------------------------------------------------

@router.get("/pay/{payment_id}", response_class=HTMLResponse)
async def payment_page(payment_id: str, ctx: Ctx, request: Request) -> HTMLResponse:
    p = await _get(ctx, request, payment_id)
    amount = euro(p.amount_cents)
    if p.status != "open":
        body = f"<p>Diese Zahlung ist nicht mehr offen (Status: {html.escape(p.status)}).</p>"
    else:
        buttons = "".join(
            f"<form method='post'><button name='action' value='{action}'>"
            f"{html.escape(label.format(amount=amount))}</button></form>"
            for action, label in SCENARIO_LABELS.items())
        body = f"<h2>Testszenarien</h2>{buttons}"
    page = (f"<!doctype html><html lang='de'><meta charset='utf-8'><title>Sandbox-ePayment</title>"
            f"<h1>Sandbox-ePayment</h1><p>Verwendungszweck: {html.escape(p.purpose)}</p>"
            f"<p>Betrag: {html.escape(amount)}</p>{body}</html>")
    return HTMLResponse(page)


def _return_to(url: str, payment_id: str, status: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("payment_id", payment_id), ("status", status)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@router.post("/pay/{payment_id}", response_class=HTMLResponse,
             responses={303: {"description": "back to the merchant's return_url"},
                        409: {"description": "the payment is no longer open"}})
async def submit_payment(payment_id: str, ctx: Ctx, request: Request,
                         action: Annotated[str, Form(pattern="^(" + "|".join(SCENARIOS) + ")$")]) -> Response:
    await _get(ctx, request, payment_id)  # a due expiry happens (and is told) first

    def settle(s: Session) -> tuple[SandboxPayment, dict[str, Any]]:
        p = s.get(SandboxPayment, payment_id, with_for_update=True)  # a double click settles once
        if p is None:
            raise NotFound("no such payment")
        if p.status != "open":
            raise Conflict(f"this payment is no longer open (status: {p.status})")
        p.status, p.scenario, p.updated_at = SCENARIOS[action], action, utcnow()
        s.flush()
        log.info("sandbox_pay.settled", payment_id=p.id, scenario=action, status=p.status)
        return p, _event(p, p.status, p.amount_cents)

    p, ev = await ctx.db(settle)
    task = _spawn(request.app, deliver_callback(ctx, p.id, ev))
    if action == "pay_callback_first":  # the merchant hears of it before the citizen is back
        await asyncio.wait({task}, timeout=CALLBACK_FIRST_WAIT_S)
    if p.return_url:
        return RedirectResponse(_return_to(p.return_url, p.id, p.status), status_code=303)
    text = {"paid": "Zahlung erfolgreich.", "declined": "Zahlung abgebrochen.",
            "expired": "Die Zahlungssitzung ist abgelaufen."}[p.status]
    return HTMLResponse(f"<!doctype html><html lang='de'><meta charset='utf-8'><p>{text}</p></html>")


# -- callbacks -------------------------------------------------------------------------------

async def deliver_callback(ctx: ApiContext, payment_id: str, event: dict[str, Any],
                           delays: tuple[float, ...] = CALLBACK_DELAYS) -> bool:
    """Send the signed event to the merchant, retrying with back-off until it answers 2xx.

    The payment's scenario bends it: ``pay_lost_callback`` drops every callback of the payment,
    ``pay_duplicate_callback`` delivers the very same signed event five times."""
    p = await ctx.db(lambda s: s.get(SandboxPayment, payment_id))
    if p is None:
        return False
    if p.scenario == "pay_lost_callback":
        log.info("sandbox_pay.callback_dropped", payment_id=p.id, status=event["status"])
        return False
    copies = DUPLICATE_DELIVERIES if p.scenario == "pay_duplicate_callback" and event["status"] == "paid" else 1
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json",
               "X-Payment-Signature": sign(ctx.settings.payment_webhook_secret, int(time.time()), body)}
    delivered = False
    async with httpx.AsyncClient(timeout=10, verify=_tls_context()) as http:
        for _ in range(copies):
            delivered = await _post_with_retries(ctx, http, p.id, p.callback_url, body, headers, delays)
    if not delivered:
        log.error("sandbox_pay.callback_gave_up", payment_id=p.id, status=event["status"])
    return delivered


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One TLS context for all callbacks: httpx builds (and loads the CA bundle into) a new one
    for every client otherwise, which costs more than delivering the callback."""
    return httpx.create_ssl_context()


async def _post_with_retries(ctx: ApiContext, http: httpx.AsyncClient, payment_id: str, url: str, body: bytes,
                             headers: dict[str, str], delays: tuple[float, ...]) -> bool:
    for attempt, delay in enumerate(delays):
        await asyncio.sleep(delay)
        if attempt:  # a retry is signed anew (its timestamp must stay within the merchant's tolerance)
            headers = {**headers, "X-Payment-Signature": sign(ctx.settings.payment_webhook_secret,
                                                              int(time.time()), body)}
        try:
            resp = await http.post(url, content=body, headers=headers)
            ok = resp.status_code < 300
        except httpx.HTTPError as exc:
            log.warning("sandbox_pay.callback_failed", payment_id=payment_id, error=str(exc))
            ok = False
        await ctx.db(lambda s, delivered=ok: _count_attempt(s, payment_id, delivered))
        if ok:
            return True
    return False


def _count_attempt(s: Session, payment_id: str, ok: bool) -> None:
    p = s.get(SandboxPayment, payment_id)
    if p is not None:
        p.callback_attempts += 1
        p.callback_delivered = p.callback_delivered or ok
