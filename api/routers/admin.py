"""Admin views: cases over Temporal's search attributes, one case with its workflow history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from google.protobuf.json_format import MessageToDict
from temporalio.client import WorkflowExecution
from temporalio.service import RPCError

from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.routers.cases import get_case
from api.schemas import AdminCaseOut, CaseOut
from api.temporal_errors import translate
from workflows import search

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[require_role("admin")])
_KEYWORD = r"^[A-Za-z0-9_.\-]+$"


def _sa(wf: WorkflowExecution, key: Any) -> Any:
    return wf.typed_search_attributes.get(key)


@router.get("/cases", response_model=list[AdminCaseOut])
async def list_cases(
    ctx: Ctx,
    status: Annotated[str | None, Query(pattern=_KEYWORD, max_length=40)] = None,
    service: Annotated[str | None, Query(pattern=_KEYWORD, max_length=40)] = None,
    department: Annotated[str | None, Query(pattern=_KEYWORD, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AdminCaseOut]:
    # Values are restricted to a safe alphabet above, so they can be quoted into the query.
    clauses = ["WorkflowType = 'CaseWorkflow'"]
    for key, value in ((search.STATUS, status), (search.SERVICE, service), (search.DEPARTMENT, department)):
        if value:
            clauses.append(f"{key.name} = '{value}'")
    out: list[AdminCaseOut] = []
    try:
        async for wf in ctx.client().list_workflows(" AND ".join(clauses), limit=limit):
            out.append(AdminCaseOut(
                case_id=wf.id, workflow_status=wf.status.name if wf.status else "UNKNOWN",
                status=_sa(wf, search.STATUS), service_key=_sa(wf, search.SERVICE),
                department=_sa(wf, search.DEPARTMENT), step=_sa(wf, search.STEP),
                aktenzeichen=_sa(wf, search.AKTENZEICHEN), started_at=wf.start_time, closed_at=wf.close_time))
    except RPCError as exc:
        raise translate(exc) from exc
    return out


@router.get("/cases/{case_id}")
async def admin_case(case_id: str, ctx: Ctx, p: CurrentPrincipal) -> dict[str, Any]:
    case: CaseOut = await get_case(case_id, ctx, p)
    handle = ctx.client().get_workflow_handle(case_id)
    try:
        desc = await handle.describe()
        history = await handle.fetch_history()
    except RPCError as exc:
        raise translate(exc) from exc
    events = []
    for e in history.events:
        d = MessageToDict(e)
        etype = d.get("eventType", "")
        attrs = next((v for k, v in d.items() if k.endswith("EventAttributes")), {})
        summary = {k: attrs[k] for k in ("activityType", "signalName", "failure", "timeoutType") if k in attrs}
        if "acceptedRequest" in attrs:
            summary["update"] = attrs["acceptedRequest"].get("input", {}).get("name")
        events.append({"id": e.event_id, "time": e.event_time.ToDatetime().isoformat() + "Z",
                       "type": etype.removeprefix("EVENT_TYPE_"), **summary})
    return {
        "case": case.model_dump(mode="json"),
        "workflow": {"id": desc.id, "run_id": desc.run_id, "status": desc.status.name if desc.status else None,
                     "task_queue": desc.task_queue, "history_length": desc.history_length,
                     "start_time": desc.start_time.isoformat(),
                     "close_time": desc.close_time.isoformat() if desc.close_time else None},
        "history": events,
    }
