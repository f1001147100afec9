"""Open data: ``GET /v1/opendata/statistics?format=json|csv`` — public, no authentication.

Per service and calendar month (Europe/Berlin): cases received, cases closed, the median
processing time of the closed ones (days from receipt to closing) and the share of received
cases handled fully online.

*Fully online* means: the application came in digitally (the portal/API, or a letter that
arrived by e-mail), no paper letter was filed into the case (scans and the watched scanner
folder count as paper), and nothing was dispatched by post. How a case came in is recorded on
its application document (``Dokument.channel`` of ``<case>:application``: ``api`` from a
portal, ``post`` for a case started from a letter), letters in ``mail_item.channel``
(``email``/``imap`` digital, ``api``/``folder`` scanned paper), dispatches in ``dispatch``.

Cases terminated by an admin are counted as received but not as closed (they were not
processed). So that no person can be singled out, every count from 1 to 4 is suppressed
(``null`` in JSON, empty in CSV) together with the figures derived from it: the median of fewer
than 5 closed cases, and the online share when fewer than 5 cases were, or were not, handled
online. No totals are published, so suppressed cells cannot be recovered by subtraction.
Figures are computed at most every ``CACHE_S`` seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.context import Ctx
from eakte.models import Dispatch, Dokument, MailItem, Vorgang
from workflows import contracts as c

router = APIRouter(prefix="/v1/opendata", tags=["open data"])

MIN_COUNT = 5
CACHE_S = 600.0
TZ = ZoneInfo("Europe/Berlin")
DIGITAL_MAIL = frozenset({"email", "imap"})  # intake/channels.py: EMAIL, IMAP
NOTE = (f"Counts from 1 to {MIN_COUNT - 1} are suppressed (null), with the median and online share derived "
        f"from them, so that no person can be singled out.")
CSV_MEDIA = "text/csv; charset=utf-8"

#: database url → (computed at, statistics)
CACHE: dict[str, tuple[float, Statistics]] = {}


class StatRow(BaseModel):
    service_key: str = Field(description="'unassigned' for cases without a service")
    service_name: str
    month: str = Field(description="YYYY-MM (Europe/Berlin)")
    received: int | None
    closed: int | None
    median_processing_days: float | None
    online_share_percent: float | None
    suppressed: list[str] = Field(description="the figures withheld in this row")


class Statistics(BaseModel):
    generated_at: dt.datetime
    min_count: int = MIN_COUNT
    notes: list[str]
    rows: list[StatRow]


@dataclass
class _Cell:
    received: int = 0
    online: int = 0
    durations: list[float] = field(default_factory=list)


def _month(at: dt.datetime) -> str:
    return at.astimezone(TZ).strftime("%Y-%m")


def _small(n: int) -> bool:
    return 0 < n < MIN_COUNT


def compute(s: Session, names: dict[str, str]) -> Statistics:
    intake_channel = dict(s.execute(
        select(Dokument.vorgang_id, Dokument.channel)
        .join(Vorgang, Dokument.idempotency_key == Vorgang.id + ":application")).all())
    letters: dict[str, set[str]] = defaultdict(set)
    for case_id, channel in s.execute(select(MailItem.case_id, MailItem.channel).where(MailItem.case_id.is_not(None))
                                      .distinct()):
        letters[case_id].add(channel)
    by_post = set(s.scalars(select(Dispatch.vorgang_id).where(Dispatch.channel == "post").distinct()))
    cells: dict[tuple[str, str], _Cell] = defaultdict(_Cell)
    for v in s.execute(select(Vorgang.id, Vorgang.service_key, Vorgang.service_name, Vorgang.status,
                              Vorgang.created_at, Vorgang.closed_at)):
        key = v.service_key or "unassigned"
        if v.service_key and v.service_name:
            names.setdefault(key, v.service_name)
        came = letters.get(v.id, set())
        digital_in = intake_channel.get(v.id, "api") != "post" or bool(came & DIGITAL_MAIL)
        online = digital_in and not (came - DIGITAL_MAIL) and v.id not in by_post
        cell = cells[(key, _month(v.created_at))]
        cell.received += 1
        cell.online += int(online)
        if v.closed_at is not None and v.status in c.FINAL_STATUSES and v.status != c.TERMINATED:
            cells[(key, _month(v.closed_at))].durations.append((v.closed_at - v.created_at).total_seconds() / 86400)
    rows = []
    for (key, month), cell in sorted(cells.items()):
        closed = len(cell.durations)
        withheld = []
        received: int | None = cell.received
        if _small(cell.received):
            received, withheld = None, ["received"]
        closed_out: int | None = closed
        median: float | None = round(statistics.median(cell.durations), 1) if cell.durations else None
        if _small(closed):
            closed_out, median = None, None
            withheld += ["closed", "median_processing_days"]
        share: float | None = round(100 * cell.online / cell.received, 1) if cell.received else None
        if _small(cell.received) or _small(cell.online) or _small(cell.received - cell.online):
            share = None
            withheld.append("online_share_percent")
        rows.append(StatRow(service_key=key, service_name=names.get(key, "ohne Zuordnung" if key == "unassigned" else key),
                            month=month, received=received, closed=closed_out, median_processing_days=median,
                            online_share_percent=share, suppressed=withheld))
    return Statistics(generated_at=dt.datetime.now(dt.UTC), notes=[NOTE], rows=rows)


def to_csv(stats: Statistics) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["service_key", "service_name", "month", "received", "closed", "median_processing_days",
                "online_share_percent", "note"])
    for r in stats.rows:
        w.writerow([r.service_key, r.service_name, r.month, _cell(r.received), _cell(r.closed),
                    _cell(r.median_processing_days), _cell(r.online_share_percent),
                    f"suppressed (< {MIN_COUNT}): {', '.join(r.suppressed)}" if r.suppressed else ""])
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@router.get("/statistics", response_model=Statistics,
            responses={200: {"content": {CSV_MEDIA: {"schema": {"type": "string"}}},
                             "description": "JSON, or CSV with a header row (format=csv)"}})
async def statistics_view(
    ctx: Ctx, format: Annotated[Literal["json", "csv"], Query()] = "json",  # noqa: A002
) -> Any:
    cached = CACHE.get(ctx.settings.database_url)
    if cached is None or time.monotonic() - cached[0] > CACHE_S:
        names = {key: svc.name for key, svc in ctx.catalog.services.items()}
        cached = (time.monotonic(), await ctx.db(lambda s: compute(s, names)))
        CACHE[ctx.settings.database_url] = cached
    stats = cached[1]
    headers = {"Cache-Control": f"public, max-age={int(CACHE_S)}"}
    if format == "csv":
        headers["Content-Disposition"] = 'attachment; filename="aktenlauf-statistik.csv"'
        return Response(content=to_csv(stats), media_type=CSV_MEDIA, headers=headers)
    return Response(content=stats.model_dump_json(), media_type="application/json", headers=headers)
