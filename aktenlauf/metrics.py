"""Prometheus metrics of the whole deployment, computed when scraped (``GET /metrics``).

Only aggregate figures: counts per service, status, step, activity type and task queue, never
a case id, a name or an Aktenzeichen. They come from the eAkte read model and from Temporal,
so every API replica answers the same figures (aggregate across replicas with ``max``, not
``sum``).

What a scrape costs is bounded:

* the whole answer is cached for ``ttl_s`` seconds, and concurrent scrapes share one
  computation;
* the database part is a handful of grouped queries;
* step durations are accumulated incrementally: each scrape reads only the timeline events
  added since the last one (at most ``STEP_BATCH`` per scrape, so a fresh API process catches up
  over a few scrapes), plus the earlier events of those events' cases;
* retrying activities are counted by describing the open case workflows, at most
  ``DESCRIBE_LIMIT`` of them (``aktenlauf_activity_scan_truncated`` says when there were more);
* the task queue backlog is one DescribeTaskQueue call per queue.

Step durations: the time a case spent in a step (from the first timeline event that put it
there to the first event that moved it on), observed when it moves on. An event is taken into
account once it is ``SETTLE_S`` old, so a transaction that committed late is not skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from eakte.models import MailItem, TimelineEvent, Vorgang
from workflows import contracts as c

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: step durations range from seconds (automatic steps) to weeks (a clerk's decision, payment)
STEP_BUCKETS: tuple[float, ...] = (1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400,
                                   14 * 86400, 30 * 86400, 90 * 86400)
STEP_BATCH = 20_000
SETTLE_S = 60.0
DESCRIBE_LIMIT = 500
DESCRIBE_CONCURRENCY = 16


@dataclass
class StepHistogram:
    """Cumulative step durations: counts per bucket, sum and count per step, with the watermark
    (highest timeline event id taken into account) so each scrape only reads what is new."""

    buckets: Sequence[float] = STEP_BUCKETS
    counts: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    watermark: int = 0
    settle_s: float = SETTLE_S

    def observe(self, step: str, seconds: float) -> None:
        row = self.counts.setdefault(step, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                row[i] += 1
        row[-1] += 1  # +Inf
        self.sums[step] += seconds

    def advance(self, s: Session, now: dt.datetime) -> None:
        settled = now - dt.timedelta(seconds=self.settle_s)
        new = list(s.execute(select(TimelineEvent.id, TimelineEvent.vorgang_id, TimelineEvent.at)
                             .where(TimelineEvent.id > self.watermark)
                             .order_by(TimelineEvent.id).limit(STEP_BATCH)))
        taken: set[int] = set()
        for e in new:  # in id order, up to the first event that is not settled yet
            if e.at > settled:
                break
            taken.add(e.id)
        if not taken:
            return
        cases = {e.vorgang_id for e in new if e.id in taken}
        events: dict[str, list[Any]] = defaultdict(list)
        for chunk in _chunks(sorted(cases), 500):
            for e in s.execute(select(TimelineEvent.id, TimelineEvent.vorgang_id, TimelineEvent.at, TimelineEvent.step)
                               .where(TimelineEvent.vorgang_id.in_(chunk))
                               .order_by(TimelineEvent.vorgang_id, TimelineEvent.at, TimelineEvent.id)):
                events[e.vorgang_id].append(e)
        for rows in events.values():
            step, entered = None, None
            for e in rows:
                if e.step != step:
                    # leaving ``step`` now: observe it if this event is one of the new ones
                    if step is not None and entered is not None and e.id in taken:
                        self.observe(step, max((e.at - entered).total_seconds(), 0.0))
                    step, entered = e.step, e.at
        self.watermark = max(taken)


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


@dataclass
class Snapshot:
    started: list[tuple[str, int]] = field(default_factory=list)
    finished: list[tuple[str, str, int]] = field(default_factory=list)
    open_cases: list[tuple[str, str, int]] = field(default_factory=list)
    ocr_pages: list[tuple[str, int]] = field(default_factory=list)
    mail_items: list[tuple[str, int]] = field(default_factory=list)
    backlog: list[tuple[str, str, int, float]] = field(default_factory=list)  # queue, kind, count, age s
    retrying: dict[str, int] = field(default_factory=dict)
    scanned: int = 0
    truncated: bool = False
    temporal_up: bool = True
    steps: StepHistogram | None = None
    seconds: float = 0.0


class _SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterable[Any]:
        s = self.snap
        started = CounterMetricFamily("aktenlauf_cases_started", "Cases received, per service", labels=["service"])
        for service, n in s.started:
            started.add_metric([service], n)
        yield started
        finished = CounterMetricFamily("aktenlauf_cases_finished", "Cases closed, per service and final status",
                                       labels=["service", "status"])
        for service, status, n in s.finished:
            finished.add_metric([service, status], n)
        yield finished
        open_ = GaugeMetricFamily("aktenlauf_cases_open", "Open cases, per service and status",
                                  labels=["service", "status"])
        for service, status, n in s.open_cases:
            open_.add_metric([service, status], n)
        yield open_
        if s.steps is not None:
            hist = HistogramMetricFamily("aktenlauf_case_step_duration_seconds",
                                         "Time a case spent in a step, observed when it moved on", labels=["step"])
            for step, row in sorted(s.steps.counts.items()):
                buckets = [(_le(b), row[i]) for i, b in enumerate(s.steps.buckets)] + [("+Inf", row[-1])]
                hist.add_metric([step], buckets, s.steps.sums[step])
            yield hist
        pages = CounterMetricFamily("aktenlauf_ocr_pages", "Pages of letters run through OCR, per channel",
                                    labels=["channel"])
        for channel, n in s.ocr_pages:
            pages.add_metric([channel], n)
        yield pages
        items = GaugeMetricFamily("aktenlauf_mail_items", "Letters in the mailroom register, per status",
                                  labels=["status"])
        for status, n in s.mail_items:
            items.add_metric([status], n)
        yield items
        backlog = GaugeMetricFamily("aktenlauf_task_queue_backlog", "Approximate backlog of a Temporal task queue",
                                    labels=["queue", "kind"])
        age = GaugeMetricFamily("aktenlauf_task_queue_backlog_age_seconds", "Age of the oldest task in the backlog",
                                labels=["queue", "kind"])
        for queue, kind, n, seconds in s.backlog:
            backlog.add_metric([queue, kind], n)
            age.add_metric([queue, kind], seconds)
        yield backlog
        yield age
        retrying = GaugeMetricFamily("aktenlauf_activities_retrying",
                                     "Pending activities of open cases that failed at least once (attempt > 1)",
                                     labels=["activity"])
        for activity, n in sorted(s.retrying.items()):
            retrying.add_metric([activity], n)
        yield retrying
        yield GaugeMetricFamily("aktenlauf_activity_scan_cases", "Open case workflows described for the count above",
                                value=s.scanned)
        yield GaugeMetricFamily("aktenlauf_activity_scan_truncated",
                                f"1 if there were more than {DESCRIBE_LIMIT} open cases to describe", value=int(s.truncated))
        yield GaugeMetricFamily("aktenlauf_temporal_up", "1 if Temporal answered this scrape", value=int(s.temporal_up))
        yield GaugeMetricFamily("aktenlauf_metrics_scrape_seconds", "Time it took to compute these figures",
                                value=s.seconds)


def _le(bound: float) -> str:
    return str(float(bound))


class Metrics:
    """The /metrics answer of one API process: cached for ``ttl_s`` seconds."""

    def __init__(self, sessions: sessionmaker[Session], task_queue: str, ocr_task_queue: str, *,
                 ttl_s: float = 10.0, settle_s: float = SETTLE_S) -> None:
        self.sessions = sessions
        self.queues = (task_queue, ocr_task_queue)
        self.ttl_s = ttl_s
        self.steps = StepHistogram(settle_s=settle_s)
        self._lock = asyncio.Lock()
        self._cached: tuple[float, bytes] | None = None

    async def render(self, client: Client | None) -> bytes:
        async with self._lock:  # one computation at a time; waiting scrapes get its result
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl_s:
                return self._cached[1]
            began = time.monotonic()
            snap = await asyncio.to_thread(self._from_database)
            await self._from_temporal(client, snap)
            snap.seconds = time.monotonic() - began
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_SnapshotCollector(snap))
            body = generate_latest(registry)
            self._cached = (time.monotonic(), body)
            return body

    def invalidate(self) -> None:
        self._cached = None

    def _from_database(self) -> Snapshot:
        snap = Snapshot(steps=self.steps)
        with self.sessions() as s, s.begin():
            svc = func.coalesce(Vorgang.service_key, "none")
            started: dict[str, int] = defaultdict(int)  # every case was started: the sum over its statuses
            for k, status, n in s.execute(select(svc, Vorgang.status, func.count()).group_by(svc, Vorgang.status)):
                started[k] += n
                (snap.finished if status in c.FINAL_STATUSES else snap.open_cases).append((k, status, n))
            snap.started = list(started.items())
            snap.ocr_pages = [(ch, int(n or 0)) for ch, n in s.execute(
                select(MailItem.channel, func.sum(MailItem.pages)).where(MailItem.pages.is_not(None))
                .group_by(MailItem.channel))]
            snap.mail_items = [(st, n) for st, n in s.execute(
                select(MailItem.status, func.count()).group_by(MailItem.status))]
            self.steps.advance(s, dt.datetime.now(dt.UTC))
        return snap

    async def _from_temporal(self, client: Client | None, snap: Snapshot) -> None:
        if client is None:
            snap.temporal_up = False
            return
        try:
            for queue in self.queues:
                for kind, tq_type in (("workflow", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                                      ("activity", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)):
                    resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                        namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=tq_type,
                        report_stats=True), timeout=dt.timedelta(seconds=5))
                    st = resp.stats
                    snap.backlog.append((queue, kind, int(st.approximate_backlog_count),
                                         st.approximate_backlog_age.ToTimedelta().total_seconds()))
            await self._retrying(client, snap)
        except Exception as exc:  # noqa: BLE001 - the database figures are still worth answering
            log.warning("metrics.temporal_failed", error=str(exc))
            snap.temporal_up = False

    async def _retrying(self, client: Client, snap: Snapshot) -> None:
        query = f"WorkflowType = 'CaseWorkflow' AND TaskQueue = '{self.queues[0]}' AND ExecutionStatus = 'Running'"
        ids: list[str] = []
        async for wf in client.list_workflows(query, page_size=DESCRIBE_LIMIT, limit=DESCRIBE_LIMIT + 1):
            ids.append(wf.id)
        snap.truncated = len(ids) > DESCRIBE_LIMIT
        ids = ids[:DESCRIBE_LIMIT]
        gate = asyncio.Semaphore(DESCRIBE_CONCURRENCY)
        counts: dict[str, int] = defaultdict(int)

        async def one(case_id: str) -> None:
            async with gate:
                try:
                    desc = await client.get_workflow_handle(case_id).describe()
                except Exception:  # noqa: BLE001 - closed meanwhile
                    return
            for a in desc.raw_description.pending_activities:
                if a.attempt > 1:
                    counts[a.activity_type.name] += 1

        await asyncio.gather(*(one(i) for i in ids))
        snap.retrying = dict(counts)
        snap.scanned = len(ids)
