"""``GET /metrics``: Prometheus text format, no authentication, aggregate figures only
(aktenlauf/metrics.py says which, and what a scrape costs)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from aktenlauf.metrics import CONTENT_TYPE, Metrics
from api.context import Ctx

router = APIRouter(tags=["metrics"])


def metrics_of(request: Request, ctx: Ctx) -> Metrics:
    """One Metrics per app (its cache and step-duration counters live as long as the process)."""
    m: Metrics | None = getattr(request.app.state, "metrics", None)
    if m is None:
        m = Metrics(ctx.sessions, ctx.settings.task_queue, ctx.settings.ocr_task_queue)
        request.app.state.metrics = m
    return m


@router.get("/metrics", response_class=Response, include_in_schema=True,
            responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format 0.0.4"}})
async def metrics(request: Request, ctx: Ctx) -> Response:
    body = await metrics_of(request, ctx).render(ctx.temporal)
    return Response(content=body, media_type=CONTENT_TYPE)
