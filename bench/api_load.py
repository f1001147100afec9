"""API under load: status and inbox reads with many open cases in the database, and the case
creation rate — measured by a load generator in a separate process over loopback.

The API runs as the production command would run it (uvicorn, ``--workers 2``), against a
real Temporal dev server, SeaweedFS and the chosen database; a worker serves the cases.
Before the reads, ``--cases`` open cases waiting for a clerk are put into the read model.

Reads are open-loop at a fixed rate (``--rate`` requests/s for ``--duration`` s): each
request is sent at its scheduled time whether or not earlier ones have answered, and its
latency counts from that scheduled time, so a stalled server cannot hide queueing
(no coordinated omission). Prints p50/p99 latency and achieved requests/s per kind. Status
reads come twice: first views of random cases (each writes a read audit event) and a portal
polling the same 500 cases again (covered by the audit window: reads only).
Target: p99 under 50 ms for status reads at 200 requests/s.

    .venv/bin/python bench/api_load.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bench_settings, scratch_database, start_api, start_servers  # noqa: E402
from aktenlauf import devstack  # noqa: E402
from aktenlauf.embedded import WorkerThread  # noqa: E402
from aktenlauf.settings import Settings  # noqa: E402

MELDE = "99115005012000"


# ----------------------------------------------------------------------------- load generator (own process)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def _open_loop(base: str, requests: list[tuple[str, str, dict[str, str]]], rate: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        # warm the connection pool and both API processes
        await asyncio.gather(*(http.request(m, u, headers=h) for m, u, h in requests[:50]))
        t0 = time.perf_counter()

        async def one(i: int, method: str, url: str, headers: dict[str, str]) -> None:
            nonlocal errors
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                r = await http.request(method, url, headers=headers)
                failed = r.status_code >= 400
            except httpx.HTTPError:  # reset or timed out under overload: counted, not fatal
                failed = True
            lat.append(time.perf_counter() - due)
            errors += failed

        await asyncio.gather(*(one(i, m, u, h) for i, (m, u, h) in enumerate(requests)))
        elapsed = time.perf_counter() - t0
    return {"n": len(lat), "p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000,
            "rps": len(lat) / elapsed, "errors": errors}


def generate(base: str, requests: list[tuple[str, str, dict[str, str]]], rate: float) -> dict[str, float]:
    return asyncio.run(_open_loop(base, requests, rate))


async def _create_cases(base: str, token: str, seconds: float, concurrency: int) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    body = {"service_key": MELDE, "applicant": {"name": "Last Test", "address_lines": ["Weg 1", "12345 Musterstadt"]},
            "form": {"Zweck": "Lasttest"}}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await http.post("/v1/cases", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
                lat.append(time.perf_counter() - t)
                if r.status_code != 201:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"n": len(lat), "p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000,
            "rps": len(lat) / elapsed, "errors": errors}


def create_cases(base: str, token: str, seconds: float, concurrency: int) -> dict[str, float]:
    return asyncio.run(_create_cases(base, token, seconds, concurrency))


# ----------------------------------------------------------------------------- set-up


def seed_open_cases(settings: Settings, n: int) -> list[str]:
    """``n`` cases waiting for the Bürgerbüro's decision, straight into the read model."""
    from sqlalchemy import insert

    from aktenlauf.wiring import session_factory
    from eakte.models import Akte, Vorgang

    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    ids = []
    akten, vorgaenge = [], []
    for i in range(n):
        akte_id, case_id = uuid.uuid4().hex, f"case-load-{uuid.uuid4().hex}"
        az = f"32.10-2026-{900000 + i:06d}"
        akten.append(dict(id=akte_id, aktenzeichen=az, file_plan="32.10", year=2026, seq=900000 + i,
                          title="Meldebescheinigung", department="buergerbuero", status="open", confidential=False,
                          confidential_roles=[], retention_years=5, legal_hold=False, created_at=now))
        vorgaenge.append(dict(id=case_id, akte_id=akte_id, aktenzeichen=az, service_key=MELDE,
                              service_name="Meldebescheinigung", department="buergerbuero",
                              status="awaiting_decision", step="decision", integrator="portal-load",
                              applicant_id=f"bund-{i}", applicant={"name": f"Person {i}"}, form={},
                              fingerprint="-", fee_cents=1000,
                              due_on=(now + dt.timedelta(days=rng.randint(0, 20))).date(),
                              created_at=now, updated_at=now))
        ids.append(case_id)
    sessions = session_factory(settings)
    with sessions() as s, s.begin():
        for k in range(0, n, 2000):
            s.execute(insert(Akte), akten[k:k + 2000])
            s.execute(insert(Vorgang), vorgaenge[k:k + 2000])
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", help="default: a fresh SQLite file; PostgreSQL: a server URL (own database)")
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--create-seconds", type=float, default=20.0)
    ap.add_argument("--create-concurrency", type=int, default=10)
    args = ap.parse_args()

    from api.auth import mint_token
    from eakte.db import migrate

    tmp = Path(tempfile.mkdtemp(prefix="aktenlauf-apiload-"))
    procs: list[devstack.ManagedProcess] = []
    scratch = contextlib.ExitStack()
    url = scratch.enter_context(scratch_database(args.database_url, tmp, "aktenlauf_apiload"))
    worker = None
    try:
        temporal, s3 = start_servers(tmp, procs)
        port = devstack.free_port()
        settings = bench_settings(url, temporal, s3, port, "load")
        migrate(url)
        t = time.perf_counter()
        ids = seed_open_cases(settings, args.cases)
        print(f"database: {'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}; {args.cases} open cases seeded in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        worker = WorkerThread(settings, queues=("cases",))
        worker.start()
        procs.append(start_api(settings, port, tmp / "api.log", workers=args.workers))
        base = f"http://127.0.0.1:{port}"

        portal = {"Authorization": f"Bearer {mint_token(settings, 'portal-load', ['integrator'])}"}
        clerk = {"Authorization": f"Bearer {mint_token(settings, 'clerk-load', ['clerk'], ['buergerbuero'])}"}
        n = int(args.rate * args.duration)
        rng = random.Random(1)
        # a first view of a case by a caller writes a read audit event; a portal polling its cases
        # views the same ones again within AUDIT_READ_WINDOW_S, which reads only
        status_reqs = [("GET", f"/v1/cases/{rng.choice(ids)}", portal) for _ in range(n)]
        polled = ids[:500]
        poll_reqs = [("GET", f"/v1/cases/{rng.choice(polled)}", portal) for _ in range(n)]
        warm = [("GET", f"/v1/cases/{case_id}", portal) for case_id in polled * 4]
        inbox_reqs = [("GET", f"/v1/tasks?limit=50&offset={rng.randrange(0, 500)}", clerk) for _ in range(n)]
        ctx = multiprocessing.get_context("spawn")
        print(f"API: uvicorn --workers {args.workers}; load generator: a separate process, open loop, "
              f"{args.rate:.0f} requests/s for {args.duration:.0f} s per kind", flush=True)
        results = {}
        with ctx.Pool(1) as pool:
            results["status read  GET /v1/cases/{id}"] = pool.apply(generate, (base, status_reqs, args.rate))
            pool.apply(generate, (base, warm, args.rate))  # each polled case viewed once per API process
            results["status poll  (same cases again)"] = pool.apply(generate, (base, poll_reqs, args.rate))
            results["inbox read   GET /v1/tasks"] = pool.apply(generate, (base, inbox_reqs, args.rate))
            token = mint_token(settings, "portal-load-create", ["integrator"])
            results["case creation POST /v1/cases (closed loop)"] = pool.apply(
                create_cases, (base, token, args.create_seconds, args.create_concurrency))
        print(f"\n{'kind':44} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}")
        for kind, r in results.items():
            print(f"{kind:44} {r['n']:>6} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['rps']:>8.1f} {r['errors']:>7}")
        for kind in ("status read  GET /v1/cases/{id}", "status poll  (same cases again)"):
            r = results[kind]
            verdict = "met" if r["p99_ms"] < 50 and r["rps"] >= 0.95 * args.rate else "NOT met"
            print(f"{kind.split()[0]} {kind.split()[1]} at {args.rate:.0f}/s with {args.cases} open cases: p99 "
                  f"{r['p99_ms']:.1f} ms (target p99 < 50 ms at 200/s: {verdict})")
    finally:
        if worker is not None:
            worker.stop()
        for p in reversed(procs):
            p.stop()
        scratch.close()


if __name__ == "__main__":
    main()
