"""The clerk's inbox: open decisions of the caller's departments."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.schemas import TaskOut
from eakte.access import visible_cases
from eakte.models import Akte, Vorgang
from workflows import contracts as c

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("", response_model=list[TaskOut], dependencies=[require_role("clerk")])
async def list_tasks(
    ctx: Ctx, p: CurrentPrincipal,
    service_key: Annotated[str | None, Query(max_length=32)] = None,
    department: Annotated[str | None, Query(max_length=64)] = None,
    sort: Literal["due_on", "created_at"] = "due_on",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # past 64 bits the database overflowed → 500
) -> list[TaskOut]:
    departments = [d for d in p.departments if department is None or d == department]

    def load(s: Session) -> list[Row]:  # type: ignore[type-arg]
        # only the listed columns (Core): the wide rows with form and applicant are not loaded
        q = (select(Vorgang.id, Vorgang.aktenzeichen, Vorgang.service_key, Vorgang.service_name, Vorgang.department,
                    Vorgang.status, Vorgang.due_on, Vorgang.created_at)
             .join(Akte, Akte.id == Vorgang.akte_id)
             .where(Vorgang.status == c.AWAITING_DECISION, Vorgang.department.in_(departments), visible_cases(p)))
        if service_key:
            q = q.where(Vorgang.service_key == service_key)
        order = Vorgang.due_on if sort == "due_on" else Vorgang.created_at
        return list(s.execute(q.order_by(order, Vorgang.created_at).limit(limit).offset(offset)))

    rows = await ctx.db(load) if departments else []
    return [TaskOut(case_id=v.id, aktenzeichen=v.aktenzeichen, service_key=v.service_key, service_name=v.service_name,
                    department=v.department, status=v.status, due_on=v.due_on, created_at=v.created_at) for v in rows]
