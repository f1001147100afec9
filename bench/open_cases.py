"""Open cases: N real CaseWorkflow cases open at once, every one waiting for the clerk's
decision (status awaiting_decision). Do worker memory and Temporal history per case stay bounded?

Real servers: a Temporal dev server (with the search attributes), SeaweedFS, the chosen database,
the API (in this process, for the clerk's decision and the sandbox payment page) and the worker
in its own process (``python -m aktenlauf.cli worker --queues cases``, settings in its
environment), whose memory is read from /proc/<pid>/status (VmRSS, VmHWM).

Cases (Meldebescheinigung: clerk decision, fee, certificate) are started the way
POST /v1/cases starts them: update-with-start of CaseWorkflow with the ``register`` update,
through the same Temporal client (payload codec included), ``--concurrency`` at a time.

Prints: the start rate; the worker's RSS at 0, 100, 500, 1k, 1.5k, 2.5k, 5k, 7.5k, 10k cases waiting
for a clerk (those up to --cases) and after --idle seconds idle, and the growth per case between them;
the worker's sticky-cache size (max_cached_workflows) and how it bounds memory; the Temporal
history per case (events, bytes: p50/max over --sample waiting cases, the events of one case by
type, and the same for --complete cases after approval and payment); the database size.

    .venv/bin/python bench/open_cases.py [--cases 10000] [--concurrency 48] [--idle 60] \
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import hashlib
import inspect
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, DescribeWorkflowExecutionRequest
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bench_settings, child_env, scratch_database, start_servers  # noqa: E402
from aktenlauf import devstack  # noqa: E402
from aktenlauf.embedded import ApiServer  # noqa: E402
from aktenlauf.settings import Settings  # noqa: E402
from workflows import contracts as c  # noqa: E402
from workflows import search  # noqa: E402
from workflows.case import CaseWorkflow  # noqa: E402

MELDE = "99115005012000"  # Meldebescheinigung: decision, fee 10,00 EUR, certificate
MILESTONES = (0, 100, 500, 1000, 1500, 2500, 5000, 7500, 10000)  # memory samples (those up to --cases, and --cases)


# ----------------------------------------------------------------------------- measuring


def proc_mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def mib(kib: float) -> str:
    return f"{kib / 1024:7.1f} MiB"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def payload_bytes(msg: Message) -> int:
    """Bytes of all Payload messages inside a proto message (data + metadata, as serialized)."""
    if isinstance(msg, Payload):
        return msg.ByteSize()
    total = 0
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:  # map<string, X>: only message values hold payloads
            if fd.message_type.fields_by_name["value"].message_type is not None:
                total += sum(payload_bytes(v) for v in value.values())
        elif isinstance(value, Message):
            total += payload_bytes(value)
        else:  # repeated messages
            total += sum(payload_bytes(v) for v in value)
    return total


async def describe(client: Client, workflow_id: str) -> tuple[int, int]:
    r = await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)))
    info = r.workflow_execution_info
    return info.history_length, info.history_size_bytes


async def history_sizes(client: Client, ids: list[str]) -> tuple[list[int], list[int]]:
    sem = asyncio.Semaphore(16)

    async def one(wid: str) -> tuple[int, int]:
        async with sem:
            return await describe(client, wid)

    res = await asyncio.gather(*(one(w) for w in ids))
    return [r[0] for r in res], [r[1] for r in res]


async def print_events(client: Client, workflow_id: str, title: str) -> None:
    """The events of one case by type: count, bytes (serialized), of which payload bytes."""
    hist = await client.get_workflow_handle(workflow_id).fetch_history()
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    largest = (0, "")
    for ev in hist.events:
        name = EventType.Name(ev.event_type).removeprefix("EVENT_TYPE_")
        size, pl = ev.ByteSize(), payload_bytes(ev)
        row = by_type[name]
        row[0] += 1
        row[1] += size
        row[2] += pl
        largest = max(largest, (size, name))
    total = sum(r[1] for r in by_type.values())
    print(f"\n{title}: {len(hist.events)} events, {total} bytes serialized; largest event {largest[0]} B "
          f"({largest[1]})")
    print(f"  {'event type':46} {'count':>5} {'bytes':>7} {'payload B':>9} {'B/event':>7}")
    for name, (n, size, pl) in sorted(by_type.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:46} {n:>5} {size:>7} {pl:>9} {size // n:>7}")


def db_size(url: str, sessions: Any) -> int:
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())
    from sqlalchemy import text

    with sessions() as s:
        return int(s.scalar(text("SELECT pg_database_size(current_database())")))


# ----------------------------------------------------------------------------- the worker process


async def wait_for_pollers(client: Client, queue: str, worker: devstack.ManagedProcess, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive:
            raise SystemExit(f"the worker exited:\n{worker.log_tail()}")
        r = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
        if r.pollers:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"the worker did not poll {queue} within {timeout:.0f} s:\n{worker.log_tail()}")


def cache_setting() -> tuple[int, str]:
    """max_cached_workflows: the installed SDK's default, and whether worker.py sets it."""
    default = inspect.signature(Worker.__init__).parameters["max_cached_workflows"].default
    source = (ROOT / "worker.py").read_text()
    return default, ("set in worker.py" if "max_cached_workflows" in source else "not set in worker.py: SDK default")


# ----------------------------------------------------------------------------- starting cases


def case_input(i: int, run: str, service: Any) -> tuple[c.CaseInput, str]:
    """What POST /v1/cases would start for one portal submission."""
    body = {"service_key": MELDE,
            "applicant": {"name": f"Offen Person {i}", "address_lines": ["Hauptstraße 5", "12345 Musterstadt"],
                          "email": f"person{i}@example.org", "id": f"bund-id-{i:06d}"},
            "form": {"Zweck": "Vorlage beim Arbeitgeber"}}
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    case_id = f"case-open-{run}-{i:06d}"
    return c.CaseInput(case_id=case_id, integrator="bench-portal", fingerprint=fingerprint,
                       applicant=c.Applicant(**body["applicant"]), service=service,
                       requested_service_key=MELDE, form=dict(body["form"])), fingerprint


async def start_case(client: Client, settings: Settings, inp: c.CaseInput, fingerprint: str) -> None:
    sa = [SearchAttributePair(search.STATUS, c.RECEIVED), SearchAttributePair(search.STEP, "intake"),
          SearchAttributePair(search.SERVICE, MELDE)]
    op = WithStartWorkflowOperation(
        CaseWorkflow.run, inp, id=inp.case_id, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, search_attributes=TypedSearchAttributes(sa))
    reg: c.Registered = await client.execute_update_with_start_workflow(
        CaseWorkflow.register, c.Registration(fingerprint=fingerprint), start_workflow_operation=op)
    assert reg.aktenzeichen


async def complete(base: str, settings: Settings, client: Client, case_ids: list[str]) -> None:
    """Approve each case as its clerk and pay on the sandbox payment page; wait for the result."""
    from api.auth import mint_token

    clerk = {"Authorization": "Bearer " + mint_token(settings, "bench-clerk", ["clerk"], ["buergerbuero"])}
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        for case_id in case_ids:
            d = await http.post(f"/v1/cases/{case_id}/decision", headers=clerk, json={"decision": "approve"})
            d.raise_for_status()
            url = d.json()["payment_url"]
            (await http.get(url)).raise_for_status()
            (await http.post(url, data={"action": "pay"})).raise_for_status()
            result: c.CaseResult = await asyncio.wait_for(
                client.get_workflow_handle(case_id, result_type=c.CaseResult).result(), 120)
            if result.status != c.COMPLETED:
                raise RuntimeError(f"case {case_id} ended {result.status}")


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, tmp: Path, db_url: str) -> None:
    from sqlalchemy import func, select

    from aktenlauf.temporal import connect
    from aktenlauf import wiring
    from eakte.db import migrate
    from eakte.models import Vorgang

    wall0 = time.perf_counter()
    procs: list[devstack.ManagedProcess] = []
    api: ApiServer | None = None
    try:
        temporal, s3 = start_servers(tmp, procs)
        migrate(db_url)
        port = devstack.free_port()
        settings = bench_settings(db_url, temporal, s3, port, "open", s3_bucket="bench")
        from api.app import create_app

        api = ApiServer(create_app(settings), port)
        api.start()
        worker = devstack.ManagedProcess([sys.executable, "-m", "aktenlauf.cli", "worker", "--queues", "cases"],
                                         log_file=tmp / "worker.log", env=child_env(settings), cwd=ROOT)
        procs.append(worker)
        client = await connect(settings)
        await wait_for_pollers(client, settings.task_queue, worker)
        await asyncio.sleep(3)  # let the worker settle after its first polls
        sessions = wiring.session_factory(settings)
        service = wiring.catalog(settings).service(MELDE)
        assert service is not None and service.decision_required

        n = args.cases
        marks = sorted({m for m in MILESTONES if m <= n} | {n})
        default, where = cache_setting()
        print(f"# {n} cases (Meldebescheinigung), {args.concurrency} starts in flight, database "
              f"{'PostgreSQL' if db_url.startswith('postgresql') else 'SQLite'}, Temporal dev server, SeaweedFS, "
              f"worker pid {worker.pid} (own process), {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
              flush=True)

        def waiting() -> int:
            with sessions() as s:
                return int(s.scalar(select(func.count()).select_from(Vorgang)
                                    .where(Vorgang.status == c.AWAITING_DECISION)) or 0)

        samples: list[tuple[str, int, float, int, int, int]] = []  # label, open, t, rss, hwm, temporal rss

        def sample(label: str, open_now: int) -> None:
            rss, hwm = proc_mem(worker.pid)
            trss, _ = proc_mem(temporal.process.pid)
            t = time.perf_counter() - t0
            samples.append((label, open_now, t, rss, hwm, trss))
            print(f"  [{t:6.1f} s] {label:<22} {open_now:>6} waiting  worker RSS {mib(rss)}  HWM {mib(hwm)}  "
                  f"(Temporal server RSS {mib(trss)})", flush=True)

        t0 = time.perf_counter()
        sample("before the first case", 0)
        pending = [m for m in marks if m > 0]
        stop_monitor = asyncio.Event()

        async def monitor() -> None:
            while pending and not stop_monitor.is_set():
                count = await asyncio.to_thread(waiting)
                while pending and count >= pending[0]:
                    sample(f"{pending.pop(0)} waiting", count)
                if not worker.alive:
                    raise SystemExit(f"the worker died:\n{worker.log_tail()}")
                await asyncio.sleep(0.5)

        mon = asyncio.create_task(monitor())
        run_id = uuid.uuid4().hex[:6]
        ids: list[str] = []
        sem = asyncio.Semaphore(args.concurrency)
        failures = 0

        async def one(i: int) -> None:
            nonlocal failures
            inp, fp = case_input(i, run_id, service)
            async with sem:
                for attempt in range(5):
                    try:
                        await asyncio.wait_for(start_case(client, settings, inp, fp), 120)
                        ids.append(inp.case_id)
                        return
                    except Exception as exc:  # noqa: BLE001 - counted and retried under the same id
                        failures += 1
                        if attempt == 4:
                            raise
                        print(f"  start of {inp.case_id} failed ({type(exc).__name__}: {exc}); retrying", flush=True)
                        await asyncio.sleep(1 + attempt)

        ts = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        start_s = time.perf_counter() - ts
        print(f"started and registered {n} cases in {start_s:.1f} s = {n / start_s:.1f} cases/s "
              f"(update-with-start + register, as POST /v1/cases; {failures} retried)", flush=True)
        deadline = time.monotonic() + max(300, n / 5)
        while (count := await asyncio.to_thread(waiting)) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {count} of {n} cases reached awaiting_decision")
            await asyncio.sleep(0.5)
        open_s = time.perf_counter() - ts
        await mon
        print(f"all {n} waiting for a clerk after {open_s:.1f} s = {n / open_s:.1f} cases/s", flush=True)
        await asyncio.sleep(args.idle)
        sample(f"after {args.idle:.0f} s idle", await asyncio.to_thread(waiting))

        # -- Temporal history per waiting case
        rng = random.Random(3)
        picked = rng.sample(ids, min(args.sample, len(ids)))
        lengths, sizes = await history_sizes(client, picked)
        print(f"\nTemporal history per waiting case ({len(picked)} sampled): events p50 {pct(lengths, 50):.0f} "
              f"max {max(lengths)}; bytes p50 {pct(sizes, 50):.0f} max {max(sizes)}")
        await print_events(client, picked[0], f"one waiting case ({picked[0]})")

        # -- a few cases to the end: approve + pay
        done_ids = picked[:args.complete]
        tc = time.perf_counter()
        await complete(f"http://127.0.0.1:{port}", settings, client, done_ids)
        lengths_c, sizes_c = await history_sizes(client, done_ids)
        print(f"\n{len(done_ids)} cases completed (approve + pay, certificate, dispatch, archive) in "
              f"{time.perf_counter() - tc:.1f} s: history events p50 {pct(lengths_c, 50):.0f} max {max(lengths_c)}; "
              f"bytes p50 {pct(sizes_c, 50):.0f} max {max(sizes_c)}")
        await print_events(client, done_ids[0], f"one completed case ({done_ids[0]})")

        # -- memory verdict
        print(f"\nworker sticky cache: max_cached_workflows = {default} ({where}; temporalio "
              f"{__import__('temporalio').__version__})")
        print("worker RSS growth per waiting case between samples:")
        points = [s for s in samples if s[0].endswith("waiting") or s[0].startswith("before")]
        slopes = []
        for a, b in zip(points, points[1:]):
            if b[1] > a[1]:
                slope = (b[3] - a[3]) / (b[1] - a[1])
                slopes.append((a[1], b[1], slope))
                print(f"  {a[1]:>6} → {b[1]:>6} cases: {mib(b[3] - a[3])}  = {slope:6.1f} KiB/case")
        cache_full = [s for s in slopes if s[0] >= default]
        first = [s for s in slopes if s[0] > 0 and s[1] <= 1.05 * default]  # without the one-time imports
        if cache_full and first:
            early = sum(s[2] * (s[1] - s[0]) for s in first) / sum(s[1] - s[0] for s in first)
            late = sum(s[2] * (s[1] - s[0]) for s in cache_full) / sum(s[1] - s[0] for s in cache_full)
            verdict = "flattens" if late < 0.25 * early else "keeps growing"
            print(f"  up to the cache size ({default}): {early:.1f} KiB/case; beyond it: {late:.1f} KiB/case "
                  f"→ memory {verdict} once the cache is full")
        last = samples[-1]
        print(f"  worker at the end: RSS {mib(last[3])}, HWM {mib(last[4])}")

        size = db_size(db_url, sessions)
        tsize = sum(p.stat().st_size for p in (tmp / "temporal").glob("temporal.db*"))
        print(f"\ndatabase: {size / 2**20:.1f} MiB ({size / n / 1024:.1f} KiB per case); "
              f"Temporal dev server database: {tsize / 2**20:.1f} MiB ({tsize / n / 1024:.1f} KiB per case)")
        print(f"wall time {time.perf_counter() - wall0:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    finally:
        if api is not None:
            api.stop()
        for p in reversed(procs):
            p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=48, help="starts in flight")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds to wait idle before the last memory sample")
    ap.add_argument("--sample", type=int, default=200, help="waiting cases whose history is described")
    ap.add_argument("--complete", type=int, default=5, help="cases approved and paid at the end")
    ap.add_argument("--database-url", default=None,
                    help="default: a fresh SQLite file; PostgreSQL: a server URL (an own database, dropped after)")
    args = ap.parse_args()

    from aktenlauf.logging import configure_logging

    configure_logging("WARNING", "console")
    tmp = Path(tempfile.mkdtemp(prefix="aktenlauf-opencases-"))
    scratch = contextlib.ExitStack()
    url = scratch.enter_context(scratch_database(args.database_url, tmp, "aktenlauf_open"))
    try:
        asyncio.run(run(args, tmp, url))
    finally:
        scratch.close()


if __name__ == "__main__":
    main()
