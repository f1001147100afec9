"""Case throughput: N cases through the whole path against a bare Temporal workflow of the
same shape, on the same Temporal server, in the same run.

Whole path: POST /v1/cases → (worker: Akte, Aktenzeichen, routing) → a scripted clerk finds the
case in the department inbox and approves it through the API → a scripted payer pays on the
sandbox payment page → signed callback → certificate rendered, sealed and stored in S3 →
dispatch → archive. Both runs observe completion the same way (the workflow's result).
Bare: a workflow with the same number of activities (no-ops), one Update and one Signal.

The stack runs as ``make run`` runs it: the API (uvicorn) and the case worker each in a process
of its own; the bare worker also gets its own process, and this process only drives the load.
The two runs alternate in ``--rounds`` rounds (bare, whole, bare, whole, …) so that a machine
that is busier in one moment than in another slows both alike; the rates are totals over the
rounds. ``--embedded`` runs API and worker as threads of this process instead.

Prints both rates (cases/s) and their ratio. Usage:
    .venv/bin/python bench/case_throughput.py [--cases 60] [--rounds 3] [--concurrency 12] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
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

from _common import ROOT, bench_settings, child_env, scratch_database, start_api, start_servers  # noqa: E402
from aktenlauf import devstack  # noqa: E402
from aktenlauf.embedded import ApiServer, WorkerThread  # noqa: E402
from aktenlauf.settings import Settings  # noqa: E402
from aktenlauf.temporal import connect  # noqa: E402
from workflows.contracts import CaseResult  # noqa: E402

from bare_workflow import BareCase, BareDecision, bare_step  # noqa: E402

MELDE = "99115005012000"
INBOX_POLL_S = 0.2  # how often the scripted clerk looks at the department inbox


async def run_bare(client: Client, n: int, concurrency: int, queue: str) -> list[float]:
    """``n`` bare cases on ``queue`` (served by a worker of its own: see ``bare_worker``)."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    run = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            h = await client.start_workflow(BareCase.run, i, id=f"bare-{run}-{i}", task_queue=queue)
            await h.execute_update(BareCase.decide, BareDecision(True))
            await h.signal(BareCase.pay)
            await h.result()
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies


@contextlib.asynccontextmanager
async def bare_worker(client: Client, settings: Settings, queue: str, embedded: bool, log_file: Path):  # type: ignore[no-untyped-def]
    """The bare workflow's worker: a process of its own (as the case worker is), or with
    ``embedded`` a worker in this process (as the case worker then is)."""
    if embedded:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            async with Worker(client, task_queue=queue, workflows=[BareCase], activities=[bare_step],
                              activity_executor=pool, max_concurrent_activities=16):
                yield None
        return
    proc = devstack.ManagedProcess([sys.executable, str(Path(__file__).resolve().parent / "bare_workflow.py"),
                                    queue], log_file=log_file, env=child_env(settings), cwd=ROOT)
    try:
        yield proc.pid
    finally:
        proc.stop()


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
    stamps: dict[str, dict[str, float]] = {}
    mine: set[str] = set()
    handled: set[str] = set()
    work: list[asyncio.Task[None]] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency * 3)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def decide_and_pay(case_id: str) -> None:
            stamps[case_id]["seen in inbox"] = time.perf_counter()
            d = await http.post(f"/v1/cases/{case_id}/decision", headers=clerk, json={"decision": "approve"})
            d.raise_for_status()
            stamps[case_id]["decided"] = time.perf_counter()
            pay = await http.post(d.json()["payment_url"], data={"action": "pay"})
            pay.raise_for_status()
            stamps[case_id]["paid"] = time.perf_counter()

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
                stamps[case_id] = {"submitted": t0, "registered": time.perf_counter()}
                mine.add(case_id)
                result = await client.get_workflow_handle(case_id, result_type=CaseResult).result()
                if result.status != "completed":
                    raise RuntimeError(f"case {case_id} ended {result.status}")
                stamps[case_id]["completed"] = time.perf_counter()
                latencies.append(time.perf_counter() - t0)

        inbox = asyncio.create_task(clerk_at_inbox())
        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            done.set()
            await inbox
            await asyncio.gather(*work)
    for case in stamps.values():  # the median time of each leg of the path, summed up over the runs
        marks = list(case.items())
        for (_, a), (leg, b) in zip(marks, marks[1:]):
            STAGES.setdefault(leg, []).append(b - a)
    return latencies


#: seconds per leg of the whole path ("registered": POST /v1/cases answered; "seen in inbox":
#: the clerk's next look at the inbox; "decided"; "paid": the payment page answered; "completed":
#: callback, certificate, dispatch and archive done)
STAGES: dict[str, list[float]] = {}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (``None``: this process)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def report(name: str, n: int, wall: float, lat: list[float]) -> float:
    rate = n / wall
    lat = sorted(lat)
    p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
    print(f"{name:<12} {n:>5} cases in {wall:7.2f} s  = {rate:6.2f} cases/s   "
          f"latency p50 {statistics.median(lat):5.2f} s  p95 {p95:5.2f} s")
    return rate


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=60, help="cases per kind, split over the rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=12)
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--embedded", action="store_true", help="API and worker as threads of this process")
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
        if args.embedded:
            from api.app import create_app

            api = ApiServer(create_app(settings), port)
            api.start()
            scratch.callback(api.stop)
            worker = WorkerThread(settings, ("cases",))
            worker.start()
            scratch.callback(worker.stop)
        else:  # as `make run` runs them: API and worker each a process of its own
            procs.append(start_api(settings, port, tmp / "api.log"))
            procs.append(devstack.ManagedProcess([sys.executable, "-m", "aktenlauf.cli", "worker", "--queues", "cases"],
                                                 log_file=tmp / "worker.log", env=child_env(settings), cwd=ROOT))
        client = await connect(settings)
        base = f"http://127.0.0.1:{port}"
        queue = "bare-" + uuid.uuid4().hex[:6]
        per_round = max(1, args.cases // args.rounds)
        print(f"# {per_round * args.rounds} cases per kind in {args.rounds} alternating rounds, "
              f"{args.concurrency} in flight, database {db_url.split('://')[0]}, Temporal dev server (SQLite), "
              f"SeaweedFS S3, {'API and worker threads of one process' if args.embedded else 'API and worker processes'}, "
              f"{os.cpu_count()} cores")
        async with bare_worker(client, settings, queue, args.embedded, tmp / "bare.log") as bare_pid:
            await run_full(base, settings, client, min(5, per_round), args.concurrency)  # warm-up
            await run_bare(client, min(5, per_round), args.concurrency, queue)
            walls = {"bare": 0.0, "whole path": 0.0}
            lats: dict[str, list[float]] = {"bare": [], "whole path": []}
            # where the CPU goes: seconds used by each process during each kind of run
            pids = {"temporal": temporal.process.pid, "s3": s3.process.pid, "bench (client)": None}
            if not args.embedded:
                pids |= {"api": procs[-2].pid, "worker": procs[-1].pid, "bare worker": bare_pid}
            cpu = {kind: dict.fromkeys(pids, 0.0) for kind in walls}
            for _ in range(args.rounds):
                for kind in ("bare", "whole path"):
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    t0 = time.perf_counter()
                    if kind == "bare":
                        lats[kind] += await run_bare(client, per_round, args.concurrency, queue)
                    else:
                        lats[kind] += await run_full(base, settings, client, per_round, args.concurrency)
                    walls[kind] += time.perf_counter() - t0
                    for name, pid in pids.items():
                        cpu[kind][name] += cpu_seconds(pid) - before[name]
        n = per_round * args.rounds
        bare = report("bare", n, walls["bare"], lats["bare"])
        full = report("whole path", n, walls["whole path"], lats["whole path"])
        print("  whole path legs (median s): " + ", ".join(
            f"{leg} {statistics.median(v):.2f}" for leg, v in STAGES.items()))
        for kind in walls:
            used = {name: sec for name, sec in cpu[kind].items() if sec > 0}
            print(f"  CPU per case, {kind:<10}: {sum(used.values()) / n * 1000:6.0f} ms  ("
                  + ", ".join(f"{name} {sec / n * 1000:.0f}" for name, sec in used.items()) + ")")
        print(f"ratio whole/bare = {full / bare:.2f}   (target 0.7: {'met' if full / bare >= 0.7 else 'not met'})")
    finally:
        for p in reversed(procs):
            p.stop()
        scratch.close()  # a PostgreSQL scratch database is dropped (never the one --database-url names)


if __name__ == "__main__":
    asyncio.run(main())
