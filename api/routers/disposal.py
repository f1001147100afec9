"""Aussonderung: Akten past retention offered for archiving or destruction, the archivist's
confirmation (through the disposal round's workflow Update), legal holds, disposal records.

Archivists and admins only. The confirmation goes to the round (DisposalWorkflow) that holds
the offer, which executes it; a legal hold is an administrative marking on a closed Akte
(written and audited here, like the confidentiality marking) that also withdraws an open offer.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from aktenlauf.errors import Conflict, InvalidInput, NotFound
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.temporal_errors import translate
from eakte import retention
from eakte.access import Principal
from eakte.aktenplan import Aktenplan, load_aktenplan
from eakte.models import Akte, DisposalRecord
from workflows import contracts as c
from workflows import disposal_contracts as d
from workflows.disposal import DisposalWorkflow

router = APIRouter(tags=["disposal"], dependencies=[require_role("archivist", "admin")])
AkteId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9.\-]+$")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=5, max_length=1000)]


class OfferOut(BaseModel):
    akte_id: str
    aktenzeichen: str
    title: str
    file_plan: str
    department: str | None
    closed_at: dt.datetime | None
    retention_until: dt.date | None
    appraisal: str | None  # A archivwürdig | B bewerten | V vernichten
    proposed_action: str  # archive | destroy | appraise
    rule: str
    round_id: str | None  # None: the round that offered it has ended; the next round offers it again
    confirm_url: str


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["archive", "destroy", "keep"]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None
    retain_until: dt.date | None = None  # keep: the new end of retention (default: one year on)


class OutcomeOut(BaseModel):
    akte_id: str
    aktenzeichen: str
    action: str  # archived | destroyed | kept
    record_id: str | None
    documents: int
    versions: int
    bytes_removed: int
    objects_removed: int
    objects_kept_shared: int
    archive_key: str | None
    archive_sha256: str | None
    retention_until: dt.date | None


class LegalHoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class LegalHoldOut(BaseModel):
    akte_id: str
    aktenzeichen: str
    legal_hold: bool
    legal_hold_reason: str | None
    disposal_status: str | None
    retention_until: dt.date | None


class RecordOut(BaseModel):
    id: str
    akte_id: str
    aktenzeichen: str
    action: str
    rule: str
    file_plan: str
    retention_until: dt.date | None
    confirmed_by: str
    confirmed_at: dt.datetime
    executed_at: dt.datetime | None
    reason: str | None
    documents: int
    bytes_removed: int
    archive_key: str | None
    archive_sha256: str | None
    inventory: list[dict[str, object]]


async def _require_visible(ctx: Ctx, p: Principal, akte_id: str) -> None:
    """Archivists act only on Akten they may see (closed ones, eakte.access); others answer 404."""
    if not p.has("admin"):
        from api.routers.akten import _visible_akte

        await ctx.db(lambda s: _visible_akte(s, p, akte_id))


def _plan(ctx: Ctx) -> Aktenplan:
    return ctx.catalog.aktenplan or load_aktenplan(ctx.settings.aktenplan_path)


def _offer_out(o: retention.Offer) -> OfferOut:
    return OfferOut(**o.__dict__, confirm_url=f"/v1/admin/disposal/{o.akte_id}/confirm")


@router.get("/v1/admin/disposal", response_model=list[OfferOut])
async def list_offers(ctx: Ctx) -> list[OfferOut]:
    """Akten offered for disposal, with the rule and the action the Aktenplan's appraisal proposes."""
    plan = _plan(ctx)
    return [_offer_out(o) for o in await ctx.db(lambda s: retention.offered(s, plan))]


@router.post("/v1/admin/disposal/{akte_id}/confirm", response_model=OutcomeOut,
             responses={404: {"description": "unknown Akte"}, 409: {"description": "not offered, legal hold, "
                        "already decided or the round has ended"}, 422: {"description": "keep without reason"}})
async def confirm(akte_id: AkteId, body: ConfirmIn, ctx: Ctx, p: CurrentPrincipal) -> OutcomeOut:
    """Archive, destroy or keep an offered Akte. Executed by the disposal round at once."""
    if body.action == "keep" and not (body.reason or "").strip():
        raise InvalidInput("keeping an Akte beyond its retention needs a reason")
    await _require_visible(ctx, p, akte_id)

    def load(s: Session) -> Akte:
        akte = s.get(Akte, akte_id)
        if akte is None:
            raise NotFound(f"Akte {akte_id} not found")
        return akte

    akte = await ctx.db(load)
    if akte.legal_hold:
        raise retention.LegalHoldActive(f"Akte {akte.aktenzeichen} is under legal hold ({akte.legal_hold_reason})")
    if akte.disposal_status != retention.OFFERED:
        raise retention.NotOffered(f"Akte {akte.aktenzeichen} is not offered for disposal "
                                   f"(disposal status: {akte.disposal_status or 'kept'})")
    if akte.disposal_round is None:
        raise Conflict(f"the disposal round that offered Akte {akte.aktenzeichen} has ended; the next round "
                       "offers it again")
    decision = d.DisposalDecision(
        actor=c.Actor(sub=p.sub, roles=list(p.roles), departments=list(p.departments)), akte_id=akte.id,
        action=body.action, reason=body.reason or None,
        retain_until=body.retain_until.isoformat() if body.retain_until else None)
    handle = ctx.client().get_workflow_handle(akte.disposal_round)
    try:
        out: d.DisposalOutcome = await handle.execute_update(DisposalWorkflow.confirm, decision)
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise Conflict(f"the disposal round that offered Akte {akte.aktenzeichen} has ended; the next "
                           "round offers it again") from exc
        raise translate(exc) from exc
    except WorkflowUpdateFailedError as exc:
        raise translate(exc) from exc
    return OutcomeOut(**{**out.__dict__, "retention_until": out.retention_until})


@router.put("/v1/admin/akten/{akte_id}/legal-hold", response_model=LegalHoldOut)
async def place_legal_hold(akte_id: AkteId, body: LegalHoldIn, ctx: Ctx, p: CurrentPrincipal) -> LegalHoldOut:
    """Place a legal hold (litigation, audit, Auskunft pending): no disposal while it lasts."""
    await _require_visible(ctx, p, akte_id)
    akte, withdrawn_round = await ctx.db(lambda s: retention.set_legal_hold(
        s, akte_id, reason=body.reason, actor=p.sub, role=p.primary_role))
    if withdrawn_round is not None:  # tell the round, so it does not wait for a decision that cannot come
        try:
            await ctx.client().get_workflow_handle(withdrawn_round).signal(
                DisposalWorkflow.withdraw, d.Withdrawal(akte_id=akte.id, reason="legal hold"))
        except RPCError:
            pass  # the round has ended meanwhile: nothing waits for this Akte
    return _hold_out(akte)


@router.delete("/v1/admin/akten/{akte_id}/legal-hold", response_model=LegalHoldOut)
async def release_legal_hold(akte_id: AkteId, body: LegalHoldIn, ctx: Ctx, p: CurrentPrincipal) -> LegalHoldOut:
    """Release a legal hold; the Akte is offered again by the next round if it is past retention."""
    await _require_visible(ctx, p, akte_id)
    akte = await ctx.db(lambda s: retention.release_legal_hold(
        s, akte_id, reason=body.reason, actor=p.sub, role=p.primary_role))
    return _hold_out(akte)


def _hold_out(a: Akte) -> LegalHoldOut:
    return LegalHoldOut(akte_id=a.id, aktenzeichen=a.aktenzeichen, legal_hold=a.legal_hold,
                        legal_hold_reason=a.legal_hold_reason, disposal_status=a.disposal_status,
                        retention_until=a.retention_until)


@router.get("/v1/admin/disposal/records", response_model=list[RecordOut])
async def list_records(
    ctx: Ctx,
    aktenzeichen: Annotated[str | None, Query(max_length=40, pattern=r"^[0-9.\-]+$")] = None,
    action: Annotated[Literal["archived", "destroyed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RecordOut]:
    """What was disposed of: what, when, by whom, on which rule (with the removed versions' hashes)."""

    def load(s: Session) -> list[RecordOut]:
        q = select(DisposalRecord).order_by(DisposalRecord.executed_at.desc()).limit(limit)
        if aktenzeichen:
            q = q.where(DisposalRecord.aktenzeichen == aktenzeichen)
        if action:
            q = q.where(DisposalRecord.action == action)
        return [RecordOut.model_validate(r, from_attributes=True) for r in s.scalars(q)]

    return await ctx.db(load)
