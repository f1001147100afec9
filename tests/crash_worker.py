"""A case worker for crash tests: the normal worker (worker.build_workers) plus an activity
interceptor that parks chosen activities forever, so the test can SIGKILL the process while
every case is stuck at a known point.

Run as ``python -m tests.crash_worker PLAN.json`` with the stack's settings in the environment
(see tests/integration/test_crash_recovery.py). The plan is JSON::

    {"markers": "/dir", "workers": 2,
     "pauses": {"<workflow id>": {"activity": "record_progress", "when": "after",
                                  "match": {"step": "decision", "status": "approved"}}}}

For each workflow, the activity execution of type ``activity`` whose first argument has the
attributes in ``match`` (or equals ``match["arg"]``) is parked, on every attempt:

- ``before``: before the activity function runs (nothing of it has happened yet);
- ``after``: after the function returned, i.e. its transaction is committed and its HTTP calls
  are made, but before the result reaches Temporal. A retry must not repeat the side effect.

On parking, the file ``<markers>/<workflow id>`` is (re)written with the attempt and its start
time; then the activity awaits forever (on the event loop: it holds an activity slot but no
executor thread). Should an attempt reach its start-to-close timeout before the test kills
this process, Temporal retries it here and the retry parks again, so the kill always finds
the step running; the test kills only when every marker's attempt is younger than the
timeout. ``workers``
case workers are run on the task queue in this one process (16 activity slots each, as in
production), so that more cases than one worker has slots can be parked at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

log = structlog.get_logger("tests.crash_worker")


@dataclass(frozen=True)
class Pause:
    activity: str
    when: str  # "before" | "after"
    match: dict[str, Any]

    def matches(self, activity_type: str, args: tuple[Any, ...]) -> bool:
        if activity_type != self.activity:
            return False
        first = args[0] if args else None
        for name, wanted in self.match.items():
            got = first if name == "arg" else getattr(first, name, None)
            if got != wanted:
                return False
        return True


class PausePlan(Interceptor):
    def __init__(self, pauses: dict[str, Pause], markers: Path) -> None:
        self.pauses = pauses
        self.markers = markers

    @classmethod
    def load(cls, path: Path) -> tuple[PausePlan, int]:
        raw = json.loads(path.read_text())
        pauses = {wf: Pause(p["activity"], p["when"], dict(p.get("match") or {})) for wf, p in raw["pauses"].items()}
        for p in pauses.values():
            if p.when not in ("before", "after"):
                raise ValueError(f"unknown pause point {p.when!r}")
        return cls(pauses, Path(raw["markers"])), int(raw.get("workers", 1))

    def pause_for(self, info: activity.Info, args: tuple[Any, ...]) -> Pause | None:
        pause = self.pauses.get(info.workflow_id or "")
        if pause is None or not pause.matches(info.activity_type, args):
            return None
        return pause

    async def park(self, info: activity.Info, pause: Pause) -> None:
        marker = self.markers / (info.workflow_id or "unknown")
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"activity": info.activity_type, "when": pause.when, "attempt": info.attempt,
                                   "started": info.started_time.timestamp(), "parked": time.time()}))
        tmp.replace(marker)  # atomically: the test reads markers while they are written
        log.info("crash_worker.parked", workflow_id=info.workflow_id, activity=info.activity_type, when=pause.when,
                 attempt=info.attempt)
        await asyncio.Event().wait()  # until the process is killed

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Parking(next, self)


class _Parking(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, plan: PausePlan) -> None:
        super().__init__(next)
        self.plan = plan

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        pause = self.plan.pause_for(info, tuple(input.args))
        if pause is not None and pause.when == "before":
            await self.plan.park(info, pause)
        result = await super().execute_activity(input)
        if pause is not None and pause.when == "after":
            await self.plan.park(info, pause)
        return result


async def run(plan_path: Path) -> None:
    import worker
    from aktenlauf.logging import configure_logging
    from aktenlauf.settings import Settings
    from aktenlauf.temporal import connect

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    plan, n_workers = PausePlan.load(plan_path)
    deps = worker.Dependencies.build(settings)
    deps.store.ensure_bucket()
    clients = [await connect(settings) for _ in range(n_workers)]  # the SDK allows one worker per queue and client
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as executor:
        workers = [w for client in clients
                   for w in worker.build_workers(client, deps, ["cases"], executor, interceptors=[plan])]
        log.info("crash_worker.started", task_queue=settings.task_queue, workers=len(workers),
                 pauses=len(plan.pauses))
        await asyncio.gather(*(w.run() for w in workers))  # no graceful exit: the test kills us


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1])))
