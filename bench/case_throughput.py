"""Case throughput: N cases through the whole path against a bare Temporal workflow of the
same shape, on the same Temporal server, in the same run.

Whole path: POST /v1/cases → (worker: Akte, Aktenzeichen, routing) → a scripted clerk finds the
case in the department inbox and approves it through the API → a scripted payer pays on the
sandbox payment page → signed callback → certificate rendered and stored in S3 → dispatch →
archive. Both runs observe completion the same way (the workflow's result).
Bare: a workflow with the same number of activities (no-ops), one Update and one Signal.

Prints both rates (cases/s) and their ratio. Usage:
    .venv/bin/python bench/case_throughput.py [--cases 60] [--concurrency 12] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import concurrent.futures
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_settings, scratch_database, start_servers  # noqa: E402
from aktenlauf import devstack  # noqa: E402
from aktenlauf.embedded import ApiServer, WorkerThread  # noqa: E402
from aktenlauf.settings import Settings  # noqa: E402
from aktenlauf.temporal import connect  # noqa: E402
from workflows.contracts import CaseResult  # noqa: E402

from bare_workflow import BareCase, BareDecision, bare_step  # noqa: E402

MELDE = "99115005012000"
INBOX_POLL_S = 0.2  # how often the scripted clerk looks at the department inbox


async def run_bare(client: Client, n: int, concurrency: int) -> list[float]:
    queue = "bare-" + uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            h = await client.start_workflow(BareCase.run, i, id=f"bare-{queue}-{i}", task_queue=queue)
            await h.execute_update(BareCase.decide, BareDecision(True))
            await h.signal(BareCase.pay)
            await h.result()
            latencies.append(time.perf_counter() - t0)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        async with Worker(client, task_queue=queue, workflows=[BareCase], activities=[bare_step],
                          activity_executor=pool, max_concurrent_activities=16):
            await asyncio.gather(*(one(i) for i in range(n)))
    return latencies


async def run_full(base_url: str, settings: Settings, client: Client, n: int, concurrency: int) -> list[float]:
    """The whole path through the API, driven the way its users drive it: the portal submits
    (``concurrency`` cases in flight), a clerk works the department inbox (one GET /v1/tasks
    every INBOX_POLL_S, deciding what is there), the citizen pays on the payment page as soon as
    the decision names it. Completion is observed like the bare run's: the workflow's result."""
    from api.auth import mint_token

    portal = {"Authorization": "Bearer " + mint_token(settings, "bench-portal", ["integrator"])}
    clerk = {"Authorization": "Bearer " + mint_token(settings, "bench-clerk", ["clerk"], ["buergerbuero"])}
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    mine: set[str] = set()
    handled: set[str] = set()
    work: list[asyncio.Task[None]] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency * 3)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def decide_and_pay(case_id: str) -> None:
            d = await http.post(f"/v1/cases/{case_id}/decision", headers=clerk, json={"decision": "approve"})
            d.raise_for_status()
            pay = await http.post(d.json()["payment_url"], data={"action": "pay"})
            pay.raise_for_status()

        async def clerk_at_inbox() -> None:
            while not done.is_set():
                r = await http.get("/v1/tasks", headers=clerk, params={"sort": "created_at", "limit": 500})
                r.raise_for_status()
                for task in r.json():
                    if task["case_id"] in mine and task["case_id"] not in handled:
                        handled.add(task["case_id"])
                        work.append(asyncio.create_task(decide_and_pay(task["case_id"])))
                await asyncio.sleep(INBOX_POLL_S)

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                key = f"bench-{uuid.uuid4().hex}"
                while True:  # as a portal does: a 503 is repeated with the same Idempotency-Key
                    r = await http.post("/v1/cases", headers={**portal, "Idempotency-Key": key},
                                        json={"service_key": MELDE, "applicant": {"name": f"Bench Person {i}",
                                              "address_lines": ["Teststraße 1"]}, "form": {"Zweck": "Benchmark"}})
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(min(5.0, float(r.headers.get("Retry-After", "1"))))
                r.raise_for_status()
                case_id = r.json()["case_id"]
                mine.add(case_id)
                result = await client.get_workflow_handle(case_id, result_type=CaseResult).result()
                if result.status != "completed":
                    raise RuntimeError(f"case {case_id} ended {result.status}")
                latencies.append(time.perf_counter() - t0)

        inbox = asyncio.create_task(clerk_at_inbox())
        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            done.set()
            await inbox
            await asyncio.gather(*work)
    return latencies


def report(name: str, n: int, wall: float, lat: list[float]) -> float:
    rate = n / wall
    lat = sorted(lat)
    p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
    print(f"{name:<12} {n:>5} cases in {wall:7.2f} s  = {rate:6.2f} cases/s   "
          f"latency p50 {statistics.median(lat):5.2f} s  p95 {p95:5.2f} s")
    return rate


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=12)
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = ap.parse_args()

    from aktenlauf.logging import configure_logging
    from eakte.db import migrate

    configure_logging("WARNING", "console")
    tmp = Path(tempfile.mkdtemp(prefix="aktenlauf-bench-"))
    procs: list[devstack.ManagedProcess] = []
    temporal, s3 = start_servers(tmp, procs)
    scratch = contextlib.ExitStack()
    try:
        port = devstack.free_port()
        db_url = scratch.enter_context(scratch_database(args.database_url, tmp, "aktenlauf_throughput"))
        migrate(db_url)
        settings = bench_settings(db_url, temporal, s3, port, "throughput", s3_bucket="bench")
        from api.app import create_app

        api = ApiServer(create_app(settings), port)
        api.start()
        worker = WorkerThread(settings, ("cases",))
        worker.start()
        client = await connect(settings)
        print(f"# {args.cases} cases, {args.concurrency} in flight, database {db_url.split('://')[0]}, "
              f"Temporal dev server (SQLite), SeaweedFS S3, 2 cores")
        await run_full(f"http://127.0.0.1:{port}", settings, client, min(5, args.cases), args.concurrency)  # warm-up
        await run_bare(client, min(5, args.cases), args.concurrency)
        t0 = time.perf_counter()
        bare_lat = await run_bare(client, args.cases, args.concurrency)
        bare = report("bare", args.cases, time.perf_counter() - t0, bare_lat)
        t0 = time.perf_counter()
        full_lat = await run_full(f"http://127.0.0.1:{port}", settings, client, args.cases, args.concurrency)
        full = report("whole path", args.cases, time.perf_counter() - t0, full_lat)
        print(f"ratio whole/bare = {full / bare:.2f}")
        worker.stop()
        api.stop()
    finally:
        scratch.close()  # a PostgreSQL scratch database is dropped (never the one --database-url names)
        s3.process.stop()
        temporal.process.stop()


if __name__ == "__main__":
    asyncio.run(main())
