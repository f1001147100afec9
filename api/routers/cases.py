"""Cases: start (idempotent), read, upload documents, decide."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import random
import uuid
import weakref
from typing import Annotated

import structlog
from fastapi import APIRouter, File, Form, Header, Response, UploadFile
from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.concurrency import run_in_threadpool
from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session, selectinload
from temporalio.client import (WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from aktenlauf.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.schemas import (
    NO_NUL,
    CaseCreate,
    CaseCreated,
    CaseOut,
    CaseRouted,
    CoSignIn,
    DeadlineIn,
    DeadlineOut,
    DecisionIn,
    DecisionOut,
    DocumentCreated,
    DocumentOut,
    RouteIn,
    TimelineOut,
    WithdrawIn,
    WithdrawOut,
)
from api.temporal_errors import TEMPORAL_ERRORS, bounded, is_contention, not_applied, translate
from api.uploads import discard_if_unreferenced, store_upload
from eakte import inbox, records
from eakte.inbox import access_code
from eakte.access import (Principal, can_add_document_vorgang, can_decide_vorgang, can_read_case,
                          can_read_vorgang)
from eakte.models import Akte, Dokument, TimelineEvent, Version, Vorgang, utcnow
from workflows import contracts as c
from workflows import search
from workflows.case import CaseWorkflow

router = APIRouter(prefix="/v1/cases", tags=["cases"])
log = structlog.get_logger(__name__)
CASE_NS = uuid.UUID("6f1c1d1e-8f7a-4d55-9d43-5a3b2f0e7a10")
REGISTER_ATTEMPTS = 6  # retries of a start that lost a race with the same submission (about 3 s in all)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$")]


def _actor(p: Principal) -> c.Actor:
    return c.Actor(sub=p.sub, roles=list(p.roles), departments=list(p.departments))


def _fingerprint(body: CaseCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


@router.post("", status_code=201, response_model=CaseCreated, dependencies=[require_role("integrator")],
             responses={409: {"description": "Idempotency-Key reused with a different body"}})
async def create_case(body: CaseCreate, ctx: Ctx, p: CurrentPrincipal, idempotency_key: IdempotencyKey = None) -> CaseCreated:
    service = None
    if body.service_key is not None:
        service = ctx.catalog.service(body.service_key)
        if service is None:
            raise InvalidInput(f"unknown service_key {body.service_key}; see GET /v1/services")
    fingerprint = _fingerprint(body)
    case_id = "case-" + (uuid.uuid5(CASE_NS, f"{p.sub}\x00{idempotency_key}").hex if idempotency_key else uuid.uuid4().hex)
    structlog.contextvars.bind_contextvars(case_id=case_id, workflow_id=case_id)
    inp = c.CaseInput(
        case_id=case_id, integrator=p.sub, fingerprint=fingerprint,
        applicant=c.Applicant(**body.applicant.model_dump()), service=service,
        requested_service_key=body.service_key, form=dict(body.form), notify_url=body.notify_url,
        payment_poll_s=ctx.settings.payment_poll_seconds,
    )
    sa = [SearchAttributePair(search.STATUS, c.RECEIVED), SearchAttributePair(search.STEP, "intake")]
    if service is not None:
        sa += [SearchAttributePair(search.SERVICE, service.key)]

    async def register() -> CaseCreated:
        # The same submission sent many times at once: in this process the repeats wait for the
        # first registration and are then answered from the read model (no Temporal call). Across
        # API replicas Temporal aborts racing starts and caps the updates in flight per workflow;
        # those losers retry shortly instead of failing.
        for attempt in range(REGISTER_ATTEMPTS):
            if idempotency_key:
                async with _single_flight(case_id):  # one registration per key at a time in this process
                    if (known := await _registered(ctx, case_id, fingerprint)) is not None:
                        return known
                    created = await _start_and_register(attempt)
                    if created is not None:
                        return created
            elif (created := await _start_and_register(attempt)) is not None:
                return created
            await asyncio.sleep(random.uniform(0.05, 0.1) * 2 ** attempt)
        raise AssertionError("unreachable")

    async def _start_and_register(attempt: int) -> CaseCreated | None:
        """None: Temporal turned the call away for contention on this workflow; retry."""
        op = WithStartWorkflowOperation(  # an operation is used once; each attempt needs its own
            CaseWorkflow.run, inp, id=case_id, task_queue=ctx.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, search_attributes=TypedSearchAttributes(sa),
        )
        try:
            reg: c.Registered = await ctx.client().execute_update_with_start_workflow(
                CaseWorkflow.register, c.Registration(fingerprint=fingerprint), start_workflow_operation=op)
            return CaseCreated(case_id=reg.case_id, aktenzeichen=reg.aktenzeichen, status=reg.status,
                               access_code=access_code(ctx.settings.certificate_code_secret, reg.case_id))
        except RPCError as exc:
            if not is_contention(exc) or attempt == REGISTER_ATTEMPTS - 1:
                raise
            log.info("case.register_retry", attempt=attempt, reason=exc.status.name, detail=exc.message)
            return None

    try:
        created = await asyncio.wait_for(register(), timeout=ctx.settings.register_timeout_s)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
        # (the SDK answers the cancellation by wait_for with its own error instead of CancelledError)
        if idempotency_key:
            raise Unavailable("the case was accepted but is not registered yet; repeat the request with the same "
                              "Idempotency-Key to get its Aktenzeichen", case_id=case_id) from exc
        # no key: a repeat would be a second case. Say which case this one is instead.
        raise Unavailable(f"the case {case_id} was accepted and will be registered once the backing service is "
                          f"back; do not send it again: GET /v1/cases/{case_id} shows it when it is registered "
                          "(send an Idempotency-Key to make repeats safe)", case_id=case_id) from exc
    except WorkflowAlreadyStartedError:
        return await _replay_closed(ctx, case_id, fingerprint)
    except TEMPORAL_ERRORS as exc:
        raise translate(exc) from exc
    structlog.contextvars.bind_contextvars(aktenzeichen=created.aktenzeichen)
    log.info("case.created")
    return created


_IN_FLIGHT: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def _single_flight(case_id: str) -> asyncio.Lock:
    """The lock of one Idempotency-Key's registration in this process (dropped when unused)."""
    lock = _IN_FLIGHT.get(case_id)
    if lock is None:
        lock = _IN_FLIGHT[case_id] = asyncio.Lock()
    return lock


async def _registered(ctx: Ctx, case_id: str, fingerprint: str) -> CaseCreated | None:
    """The case an Idempotency-Key already made, from the read model; None while it is not
    registered yet. A different body under the same key is refused (409)."""
    v = await ctx.db(lambda s: s.get(Vorgang, case_id))
    if v is None:
        return None
    if v.fingerprint != fingerprint:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return CaseCreated(case_id=v.id, aktenzeichen=v.aktenzeichen, status=v.status,
                       access_code=access_code(ctx.settings.certificate_code_secret, v.id))


async def _replay_closed(ctx: Ctx, case_id: str, fingerprint: str) -> CaseCreated:
    """The Idempotency-Key belongs to a case that has already finished."""
    v = await ctx.db(lambda s: s.get(Vorgang, case_id))
    if v is None:
        raise Conflict("this Idempotency-Key was already used")
    if v.fingerprint != fingerprint:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return CaseCreated(case_id=v.id, aktenzeichen=v.aktenzeichen, status=v.status,
                       access_code=access_code(ctx.settings.certificate_code_secret, v.id))


async def visible_case(ctx: Ctx, p: Principal, case_id: str) -> Vorgang:
    """The case if the caller may see it; 404 otherwise (existence is not revealed)."""
    v = await ctx.db(lambda s: s.get(Vorgang, case_id, options=[selectinload(Vorgang.akte)]))
    if v is None or not can_read_vorgang(p, v):
        raise NotFound(f"case {case_id} not found")
    structlog.contextvars.bind_contextvars(case_id=v.id, workflow_id=v.id, aktenzeichen=v.aktenzeichen)
    return v


def document_out(d: Dokument, v: Version) -> DocumentOut:
    return DocumentOut(id=d.id, kind=d.kind, title=d.title, filename=d.filename, content_type=d.content_type,
                       sha256=v.sha256, size=v.size, created_at=d.created_at,
                       download_url=f"/v1/documents/{d.id}/content")


# The status read is the API's hottest path (portals poll it): plain Core statements on the
# tables, built once here (no statement building, cache-key walk or ORM execution per request),
# three of them, no identity map, and no write unless a read audit event is due.
_V, _A, _T = Vorgang.__table__.c, Akte.__table__.c, TimelineEvent.__table__.c
_D, _VER = Dokument.__table__.c, Version.__table__.c
_CASE_COLS = (_V.id, _V.aktenzeichen, _V.applicant_ref, _V.service_key, _V.service_name, _V.department,
              _V.integrator, _V.applicant_id, _V.status, _V.step, _V.due_on,
              _V.fee_cents, _V.payment_status, _V.payment_url, _V.decision,
              _V.decision_reason, _V.created_at, _V.closed_at,
              _A.id.label("akte_id"), _A.confidential, _A.confidential_roles, _A.status.label("akte_status"))
_DOC_COLS = (_D.id, _D.kind, _D.title, _D.filename, _D.content_type,
             _D.created_at, _D.public, _D.created_by, _VER.number, _VER.sha256, _VER.size)
_CASE_Q = (select(*_CASE_COLS).select_from(Vorgang.__table__.outerjoin(Akte.__table__, _A.id == _V.akte_id))
           .where(_V.id == bindparam("case_id")))
_TIMELINE_ALL_Q = (select(_T.at, _T.step, _T.status, _T.message)
                   .where(_T.vorgang_id == bindparam("case_id")).order_by(_T.id))
_TIMELINE_PUBLIC_Q = _TIMELINE_ALL_Q.where(_T.public.is_(True))  # what a citizen's portal sees
_DOCS_Q = (select(*_DOC_COLS).select_from(Dokument.__table__.join(Version.__table__, _VER.dokument_id == _D.id))
           .where(_D.vorgang_id == bindparam("case_id")).order_by(_D.created_at, _D.id, _VER.number))


@router.get("/{case_id}", response_model=CaseOut)
async def get_case(case_id: str, ctx: Ctx, p: CurrentPrincipal) -> CaseOut:
    internal = p.has("clerk") or p.has("admin")
    read_key = (p.sub, "case.read", case_id)
    audit_due = ctx.read_audit.due(read_key)
    params = {"case_id": case_id}

    def load(s: Session) -> tuple[Row, list[Row], list[Row]]:  # type: ignore[type-arg]
        # one transaction for the access check, the read and its audit event
        conn = s.connection()
        v = conn.execute(_CASE_Q, params).one_or_none()
        if v is None or not can_read_case(p, department=v.department, integrator=v.integrator,
                                          confidential=bool(v.confidential), confidential_roles=v.confidential_roles,
                                          closed=v.akte_status == "closed"):
            raise NotFound(f"case {case_id} not found")
        events = list(conn.execute(_TIMELINE_ALL_Q if internal else _TIMELINE_PUBLIC_Q, params))
        latest: dict[str, Row] = {}  # type: ignore[type-arg]
        for d in conn.execute(_DOCS_Q, params):
            if internal or d.public or d.created_by == p.sub:
                latest[d.id] = d  # ordered by version number: the last one wins
        if audit_due:
            # a view of personal data is an audited read; repeated views by the same caller are
            # covered by this event for AUDIT_READ_WINDOW_S (see ReadAuditWindow)
            records.audit(s, actor=p.sub, role=p.primary_role, action="case.read", target_type="case",
                          target_id=case_id, case_id=case_id, subject_id=v.applicant_id,
                          details=ctx.read_audit.details())
        return v, events, list(latest.values())

    v, events, docs = await ctx.db(load)
    if audit_due:
        ctx.read_audit.mark(read_key)  # only once the event is committed
    structlog.contextvars.bind_contextvars(case_id=v.id, workflow_id=v.id, aktenzeichen=v.aktenzeichen)
    return CaseOut(
        case_id=v.id, aktenzeichen=v.aktenzeichen, applicant_ref=v.applicant_ref, service_key=v.service_key,
        service_name=v.service_name, department=v.department, status=v.status, current_step=v.step, due_on=v.due_on, fee_cents=v.fee_cents,
        payment_status=v.payment_status, payment_url=v.payment_url if v.payment_status == "open" else None,
        decision=v.decision, decision_reason=v.decision_reason, created_at=v.created_at, closed_at=v.closed_at,
        timeline=[TimelineOut(at=e.at, step=e.step, status=e.status, message=e.message) for e in events],
        documents=[DocumentOut(id=d.id, kind=d.kind, title=d.title, filename=d.filename, content_type=d.content_type,
                               sha256=d.sha256, size=d.size, created_at=d.created_at,
                               download_url=f"/v1/documents/{d.id}/content") for d in docs],
    )


@router.post("/{case_id}/documents", status_code=201, response_model=DocumentCreated,
             responses={413: {"description": "file too large"}, 415: {"description": "not PDF/PNG/TIFF/JPEG"}})
async def upload_document(
    case_id: str, ctx: Ctx, p: CurrentPrincipal,
    file: Annotated[UploadFile, File(description="PDF, PNG, TIFF or JPEG")],
    kind: Annotated[str, Form(pattern="^(Nachweis|Antrag|Schreiben)$")] = "Nachweis",
    title: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
) -> DocumentCreated:
    v = await visible_case(ctx, p, case_id)
    if not can_add_document_vorgang(p, v):
        raise Forbidden("you may not add documents to this case")
    if v.status in c.FINAL_STATUSES:
        raise Conflict(f"the case is closed ({v.status}); no documents can be added")
    ref = await store_upload(ctx, file)
    try:
        doc_id: str = await bounded(ctx.client().get_workflow_handle(case_id).execute_update(
            CaseWorkflow.add_document,
            c.AddDocument(actor=_actor(p), ref=ref, kind=kind, title=title, upload_id=uuid.uuid4().hex),
        ), ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        if not_applied(exc):  # otherwise the document may still be filed: the sweep's grace period decides
            await discard_if_unreferenced(ctx, ref)
        raise translate(exc, known_case=True) from exc
    return DocumentCreated(document_id=doc_id, sha256=ref.sha256, size=ref.size)


@router.post("/{case_id}/route", response_model=CaseRouted, dependencies=[require_role("mailroom")])
async def route_case(case_id: str, body: RouteIn, ctx: Ctx, p: CurrentPrincipal) -> CaseRouted:
    """Mailroom triage: give a case that arrived without a known service its service."""
    await visible_case(ctx, p, case_id)
    service = ctx.catalog.service(body.service_key)
    if service is None:
        raise InvalidInput(f"unknown service_key {body.service_key}; see GET /v1/services")
    status: str = await _update(ctx, case_id, CaseWorkflow.route, c.RouteCase(actor=_actor(p), service=service))
    return CaseRouted(case_id=case_id, service_key=service.key, department=service.department, status=status)


_DECISION_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "no such case, or not one of your departments'"},
    409: {"description": "the case is not waiting for this (already decided, claimed by another clerk, ...)"},
    422: {"description": "reason/missing documents/department missing or invalid"},
}


async def _decidable(ctx: Ctx, p: Principal, case_id: str) -> Vorgang:
    """The case if the caller is a clerk of its department; 404 otherwise (existence is not revealed)."""
    v = await visible_case(ctx, p, case_id)
    if not can_decide_vorgang(p, v):
        raise NotFound(f"case {case_id} not found")
    return v


async def _may_act(ctx: Ctx, p: Principal, case_id: str) -> Vorgang:
    """The case if the caller may act on it as a clerk: visible, their department, not claimed by someone
    else (eakte.inbox.check_may_act claims an unclaimed case for the caller)."""
    v = await _decidable(ctx, p, case_id)
    await ctx.db(lambda s: inbox.check_may_act(s, p, v, utcnow()))
    return v


async def _update(ctx: Ctx, case_id: str, update, arg):  # type: ignore[no-untyped-def]
    try:
        return await bounded(ctx.client().get_workflow_handle(case_id).execute_update(update, arg),
                             ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        raise translate(exc, known_case=True) from exc


@router.post("/{case_id}/decision", response_model=DecisionOut, dependencies=[require_role("clerk")],
             responses=_DECISION_ERRORS)
async def decide(case_id: str, body: DecisionIn, ctx: Ctx, p: CurrentPrincipal, response: Response) -> DecisionOut:
    """The clerk's decision: approve, reject (with reason), request missing documents (Nachforderung) or
    forward to another department. Four-eyes services answer ``awaiting_cosign``: a second clerk co-signs."""
    if body.decision in ("reject", "forward") and not (body.reason or "").strip():
        raise InvalidInput(f"{'a rejection' if body.decision == 'reject' else 'a forward'} needs a reason")
    if body.decision == "request_documents" and not body.missing:
        raise InvalidInput("say which documents are missing (missing: [...])")
    if body.decision == "forward":
        if not body.department or body.department not in ctx.catalog.departments:
            raise InvalidInput(f"unknown department {body.department!r}; known: {', '.join(ctx.catalog.departments)}")
    await _may_act(ctx, p, case_id)
    out: c.DecisionOutcome = await _update(ctx, case_id, CaseWorkflow.decide, c.Decision(
        actor=_actor(p), approve=body.decision == "approve", reason=body.reason, action=body.decision,
        missing=list(body.missing), days=body.days, department=body.department or ""))
    return DecisionOut(decision=out.decision, status=out.status, payment_url=out.payment_url)


@router.post("/{case_id}/cosign", response_model=DecisionOut, dependencies=[require_role("clerk")],
             responses=_DECISION_ERRORS)
async def cosign(case_id: str, body: CoSignIn, ctx: Ctx, p: CurrentPrincipal) -> DecisionOut:
    """Vier-Augen-Prinzip: a second clerk of the department co-signs (or refuses, with a reason) the
    first clerk's decision. The workflow refuses the first clerk (403)."""
    if not body.agree and not body.reason:
        raise InvalidInput("refusing to co-sign needs a reason")
    # no claim here: the case stays with the clerk who decided (a refusal goes back to them); the workflow
    # makes sure the co-signer is someone else
    await _decidable(ctx, p, case_id)
    out: c.DecisionOutcome = await _update(ctx, case_id, CaseWorkflow.cosign,
                                           c.CoSign(actor=_actor(p), agree=body.agree, reason=body.reason))
    return DecisionOut(decision=out.decision, status=out.status, payment_url=out.payment_url)


@router.post("/{case_id}/deadline", response_model=DeadlineOut, dependencies=[require_role("clerk", "teamlead", "admin")],
             responses=_DECISION_ERRORS)
async def extend_deadline(case_id: str, body: DeadlineIn, ctx: Ctx, p: CurrentPrincipal) -> DeadlineOut:
    """Extend the processing deadline (Fristverlängerung) by ``days``, with a reason."""
    v = await visible_case(ctx, p, case_id)
    if not (p.has("admin") or v.department in p.departments):
        raise NotFound(f"case {case_id} not found")
    due: str = await _update(ctx, case_id, CaseWorkflow.extend_deadline,
                             c.ExtendDeadline(actor=_actor(p), days=body.days, reason=body.reason))
    return DeadlineOut(case_id=case_id, deadline_at=dt.datetime.fromisoformat(due))


@router.post("/{case_id}/withdraw", response_model=WithdrawOut, responses=_DECISION_ERRORS)
async def withdraw(case_id: str, body: WithdrawIn, ctx: Ctx, p: CurrentPrincipal) -> WithdrawOut:
    """The applicant withdraws the application (Antragsrücknahme) before the decision, through the portal
    that submitted it. An open payment is cancelled, a fee paid in advance refunded; a confirmation is sent."""
    v = await visible_case(ctx, p, case_id)
    if not (p.has("integrator") and v.integrator == p.sub):
        raise NotFound(f"case {case_id} not found")
    status: str = await _update(ctx, case_id, CaseWorkflow.withdraw, c.Withdrawal(actor=_actor(p), reason=body.reason))
    return WithdrawOut(case_id=case_id, status=status)


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=NO_NUL)] = "Aktenvermerk"
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000, strip_whitespace=True, pattern=NO_NUL)]


@router.post("/{case_id}/notes", status_code=201, response_model=DocumentCreated, dependencies=[require_role("clerk")])
async def add_note(case_id: str, body: NoteIn, ctx: Ctx, p: CurrentPrincipal) -> DocumentCreated:
    """An internal note (Aktenvermerk) on the case: a document of kind Vermerk, never shown to
    the applicant or the integrator."""
    v = await _decidable(ctx, p, case_id)
    if v.status in c.FINAL_STATUSES:
        raise Conflict(f"the case is closed ({v.status}); no notes can be added")
    stamp = f"Aktenvermerk zu {v.aktenzeichen}\n{body.title}\nverfasst von {p.sub}\n\n{body.text}\n"
    blob = await run_in_threadpool(ctx.store.put_bytes, stamp.encode("utf-8"), "text/plain; charset=utf-8")
    ref = c.DocumentRef(bucket=blob.bucket, key=blob.key, sha256=blob.sha256, size=blob.size,
                        filename="aktenvermerk.txt", content_type="text/plain; charset=utf-8")
    try:
        doc_id: str = await bounded(ctx.client().get_workflow_handle(case_id).execute_update(
            CaseWorkflow.add_document,
            c.AddDocument(actor=_actor(p), ref=ref, kind="Vermerk", title=body.title, upload_id=uuid.uuid4().hex)), ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        if not_applied(exc):  # otherwise the document may still be filed: the sweep's grace period decides
            await discard_if_unreferenced(ctx, ref)
        raise translate(exc, known_case=True) from exc
    return DocumentCreated(document_id=doc_id, sha256=ref.sha256, size=ref.size)
