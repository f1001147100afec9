"""The service catalog (public) and certificate verification (public)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from aktenlauf.errors import NotFound
from api.context import Ctx
from eakte import records
from eakte.models import Dokument

router = APIRouter(tags=["public"])


class ServiceOut(BaseModel):
    key: str
    name: str
    department: str
    department_name: str
    required_documents: list[str]
    fee_cents: int
    decision_required: bool
    certificate: bool
    processing_days: int
    payment_days: int
    retention_years: int


class VerificationOut(BaseModel):
    valid: bool
    kind: str
    title: str
    issued_at: dt.datetime
    sha256: str
    issuer: str


@router.get("/v1/services", response_model=list[ServiceOut])
async def list_services(ctx: Ctx) -> list[ServiceOut]:
    cat = ctx.catalog
    return [
        ServiceOut(key=s.key, name=s.name, department=s.department, department_name=cat.departments[s.department].name,
                   required_documents=s.required_documents, fee_cents=s.fee_cents,
                   decision_required=s.decision_required, certificate=s.certificate,
                   processing_days=s.processing_days, payment_days=s.payment_days, retention_years=s.retention_years)
        for s in cat.services.values()
    ]


@router.get("/v1/verify/{code}", response_model=VerificationOut,
            responses={404: {"description": "no document carries this code"}})
async def verify(code: str, ctx: Ctx) -> VerificationOut:
    """Is a certificate with this code genuine? Answers without personal data."""

    def find(s: Session) -> VerificationOut:
        d = s.scalar(select(Dokument).where(Dokument.verification_code == code.strip().upper()[:20]))
        if d is None:
            raise NotFound("no document carries this verification code")
        v = records.latest_version(s, d.id)
        return VerificationOut(valid=True, kind=d.kind, title=d.title, issued_at=d.created_at, sha256=v.sha256,
                               issuer=ctx.catalog.authority_name)

    return await ctx.db(find)
