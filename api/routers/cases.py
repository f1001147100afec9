"""Cases: start (idempotent), read, upload documents, decide."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, File, Form, Header, Response, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from aktenlauf.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.schemas import (
    CaseCreate,
    CaseCreated,
    CaseOut,
    CaseRouted,
    DecisionIn,
    DecisionOut,
    DocumentCreated,
    DocumentOut,
    RouteIn,
    TimelineOut,
)
from api.temporal_errors import translate
from api.uploads import discard_if_unreferenced, store_upload
from eakte.access import Principal, can_add_document, can_decide, can_read_case
from eakte.models import Dokument, TimelineEvent, Version, Vorgang
from workflows import contracts as c
from workflows import search
from workflows.case import CaseWorkflow

router = APIRouter(prefix="/v1/cases", tags=["cases"])
log = structlog.get_logger(__name__)
CASE_NS = uuid.UUID("6f1c1d1e-8f7a-4d55-9d43-5a3b2f0e7a10")
REGISTER_TIMEOUT_S = 30
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
        requested_service_key=body.service_key, form=dict(body.form),
    )
    sa = [SearchAttributePair(search.STATUS, c.RECEIVED), SearchAttributePair(search.STEP, "intake")]
    if service is not None:
        sa += [SearchAttributePair(search.SERVICE, service.key)]
    op = WithStartWorkflowOperation(
        CaseWorkflow.run, inp, id=case_id, task_queue=ctx.settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, search_attributes=TypedSearchAttributes(sa),
    )
    try:
        reg: c.Registered = await asyncio.wait_for(
            ctx.client().execute_update_with_start_workflow(
                CaseWorkflow.register, c.Registration(fingerprint=fingerprint), start_workflow_operation=op),
            timeout=REGISTER_TIMEOUT_S,
        )
    except TimeoutError as exc:
        raise Unavailable("the case was accepted but is not registered yet; repeat the request with the same "
                          "Idempotency-Key to get its Aktenzeichen") from exc
    except WorkflowAlreadyStartedError:
        return await _replay_closed(ctx, case_id, fingerprint)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise translate(exc) from exc
    structlog.contextvars.bind_contextvars(aktenzeichen=reg.aktenzeichen)
    log.info("case.created")
    return CaseCreated(case_id=reg.case_id, aktenzeichen=reg.aktenzeichen, status=reg.status)


async def _replay_closed(ctx: Ctx, case_id: str, fingerprint: str) -> CaseCreated:
    """The Idempotency-Key belongs to a case that has already finished."""
    v = await ctx.db(lambda s: s.get(Vorgang, case_id))
    if v is None:
        raise Conflict("this Idempotency-Key was already used")
    if v.fingerprint != fingerprint:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return CaseCreated(case_id=v.id, aktenzeichen=v.aktenzeichen, status=v.status)


async def visible_case(ctx: Ctx, p: Principal, case_id: str) -> Vorgang:
    """The case if the caller may see it; 404 otherwise (existence is not revealed)."""
    v = await ctx.db(lambda s: s.get(Vorgang, case_id))
    if v is None or not can_read_case(p, department=v.department, integrator=v.integrator):
        raise NotFound(f"case {case_id} not found")
    structlog.contextvars.bind_contextvars(case_id=v.id, workflow_id=v.id, aktenzeichen=v.aktenzeichen)
    return v


def document_out(d: Dokument, v: Version) -> DocumentOut:
    return DocumentOut(id=d.id, kind=d.kind, title=d.title, filename=d.filename, content_type=d.content_type,
                       sha256=v.sha256, size=v.size, created_at=d.created_at,
                       download_url=f"/v1/documents/{d.id}/content")


@router.get("/{case_id}", response_model=CaseOut)
async def get_case(case_id: str, ctx: Ctx, p: CurrentPrincipal) -> CaseOut:
    v = await visible_case(ctx, p, case_id)
    internal = p.has("clerk") or p.has("admin")

    def load(s: Session) -> tuple[list[TimelineEvent], list[tuple[Dokument, Version]]]:
        q = select(TimelineEvent).where(TimelineEvent.vorgang_id == case_id).order_by(TimelineEvent.id)
        if not internal:
            q = q.where(TimelineEvent.public.is_(True))
        events = list(s.scalars(q))
        docs = []
        q_docs = (select(Dokument).where(Dokument.vorgang_id == case_id).order_by(Dokument.created_at)
                  .options(selectinload(Dokument.versions)))
        for d in s.scalars(q_docs):
            if not internal and not d.public and d.created_by != p.sub:
                continue
            latest = max(d.versions, key=lambda x: x.number)
            docs.append((d, latest))
        return events, docs

    events, docs = await ctx.db(load)
    return CaseOut(
        case_id=v.id, aktenzeichen=v.aktenzeichen, service_key=v.service_key, service_name=v.service_name,
        department=v.department, status=v.status, current_step=v.step, due_on=v.due_on, fee_cents=v.fee_cents,
        payment_status=v.payment_status, payment_url=v.payment_url if v.payment_status == "open" else None,
        decision=v.decision, decision_reason=v.decision_reason, created_at=v.created_at, closed_at=v.closed_at,
        timeline=[TimelineOut(at=e.at, step=e.step, status=e.status, message=e.message) for e in events],
        documents=[document_out(d, ver) for d, ver in docs],
    )


@router.post("/{case_id}/documents", status_code=201, response_model=DocumentCreated,
             responses={413: {"description": "file too large"}, 415: {"description": "not PDF/PNG/TIFF/JPEG"}})
async def upload_document(
    case_id: str, ctx: Ctx, p: CurrentPrincipal,
    file: Annotated[UploadFile, File(description="PDF, PNG, TIFF or JPEG")],
    kind: Annotated[str, Form(pattern="^(Nachweis|Antrag|Schreiben)$")] = "Nachweis",
    title: Annotated[str, Form(max_length=200)] = "",
) -> DocumentCreated:
    v = await visible_case(ctx, p, case_id)
    if not can_add_document(p, department=v.department, integrator=v.integrator):
        raise Forbidden("you may not add documents to this case")
    if v.status in c.FINAL_STATUSES:
        raise Conflict(f"the case is closed ({v.status}); no documents can be added")
    ref = await store_upload(ctx, file)
    try:
        doc_id: str = await ctx.client().get_workflow_handle(case_id).execute_update(
            CaseWorkflow.add_document,
            c.AddDocument(actor=_actor(p), ref=ref, kind=kind, title=title, upload_id=uuid.uuid4().hex),
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
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
    try:
        status: str = await ctx.client().get_workflow_handle(case_id).execute_update(
            CaseWorkflow.route, c.RouteCase(actor=_actor(p), service=service))
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise translate(exc, known_case=True) from exc
    return CaseRouted(case_id=case_id, service_key=service.key, department=service.department, status=status)


@router.post("/{case_id}/decision", response_model=DecisionOut, dependencies=[require_role("clerk")])
async def decide(case_id: str, body: DecisionIn, ctx: Ctx, p: CurrentPrincipal, response: Response) -> DecisionOut:
    v = await visible_case(ctx, p, case_id)
    if not can_decide(p, department=v.department):
        raise NotFound(f"case {case_id} not found")
    if body.decision == "reject" and not (body.reason or "").strip():
        raise InvalidInput("a rejection needs a reason")
    try:
        out: c.DecisionOutcome = await ctx.client().get_workflow_handle(case_id).execute_update(
            CaseWorkflow.decide, c.Decision(actor=_actor(p), approve=body.decision == "approve", reason=body.reason))
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise translate(exc, known_case=True) from exc
    return DecisionOut(decision=out.decision, status=out.status, payment_url=out.payment_url)
