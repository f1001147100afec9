"""The `aktenlauf` command: dev stack, worker, API, migrations, tokens, admin look-ups."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from aktenlauf.settings import Settings


def _settings() -> Settings:
    from aktenlauf.logging import configure_logging

    s = Settings()
    configure_logging(s.log_level, s.log_format)
    return s


def cmd_worker(args: argparse.Namespace) -> int:
    import worker

    s = _settings()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    asyncio.run(worker.run_worker(s, queues))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    s = _settings()
    host, port = args.host or s.api_host, args.port or s.api_port
    if args.workers > 1:
        # several processes on one port: each builds its app from the environment (the factory
        # configures logging the same way); the API keeps no state between requests
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_config=None, access_log=False,
                    workers=args.workers)
    else:
        uvicorn.run(create_app(s), host=host, port=port, log_config=None, access_log=False, workers=1)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """The watched folder (mailroom channel): its own process, see intake/watchfolder.py."""
    from intake.watchfolder import run_watcher

    s = _settings()
    if args.folder:
        s = s.model_copy(update={"watch_folder": args.folder})
    if s.watch_folder is None:
        print("no folder to watch: set WATCH_FOLDER or pass --folder", file=sys.stderr)
        return 2
    asyncio.run(run_watcher(s))
    return 0


def cmd_imap(_: argparse.Namespace) -> int:
    """The IMAP poller (mailroom channel): its own process, see intake/imap_poller.py."""
    from intake.imap_poller import run_imap_poller

    s = _settings()
    if not s.imap_host:
        print("no mailbox to poll: set IMAP_HOST, IMAP_USER, IMAP_PASSWORD", file=sys.stderr)
        return 2
    asyncio.run(run_imap_poller(s))
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from eakte.db import migrate

    s = _settings()
    migrate(s.database_url)
    print(f"database schema up to date ({s.database_url.split('@')[-1]})")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import mint_token

    s = Settings()
    print(mint_token(s, args.sub, args.role, args.department, ttl_seconds=args.ttl))
    return 0


def cmd_case(args: argparse.Namespace) -> int:
    """Look a case up by id or Aktenzeichen in the read model (admin)."""
    from sqlalchemy import or_, select
    from sqlalchemy.exc import OperationalError

    from aktenlauf.wiring import session_factory
    from eakte.models import TimelineEvent, Vorgang

    s = Settings()
    sessions = session_factory(s)
    with sessions() as db:
        try:
            db.execute(select(Vorgang.id).limit(1))
        except OperationalError:
            print(f"no eAkte database at {s.database_url}: run `make run` (or `aktenlauf migrate`) first",
                  file=sys.stderr)
            return 2
        v = db.scalar(select(Vorgang).where(or_(Vorgang.id == args.ref, Vorgang.aktenzeichen == args.ref)))
        if v is None:
            print(f"no case {args.ref!r}", file=sys.stderr)
            return 1
        events = db.scalars(select(TimelineEvent).where(TimelineEvent.vorgang_id == v.id).order_by(TimelineEvent.id))
        out = {
            "case_id": v.id, "aktenzeichen": v.aktenzeichen, "service": v.service_name, "department": v.department,
            "status": v.status, "step": v.step, "payment_status": v.payment_status, "decision": v.decision,
            "timeline": [{"at": e.at.isoformat(), "step": e.step, "status": e.status, "message": e.message}
                         for e in events],
        }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_search_attributes(_: argparse.Namespace) -> int:
    """Register the custom search attributes on a Temporal cluster (production set-up)."""
    from aktenlauf.devstack import ensure_search_attributes
    from aktenlauf.temporal import connect
    from workflows.search import ALL

    s = _settings()

    async def run() -> None:
        client = await connect(s)
        await ensure_search_attributes(client, s.temporal_namespace, ALL)  # only the missing ones, typed

    asyncio.run(run())
    print("search attributes registered:", ", ".join(ALL))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Bring up the whole stack on embedded defaults; Ctrl-C stops it cleanly."""
    from aktenlauf import devstack, wiring
    from eakte.db import migrate
    from workflows.search import ALL

    s = _settings()
    var = s.var_dir.resolve()
    (var / "log").mkdir(parents=True, exist_ok=True)
    catalog = wiring.catalog(s)
    migrate(s.database_url)
    print(f"• database migrated ({s.database_url}); catalog: {len(catalog.services)} services", flush=True)
    t_host, t_port = s.temporal_address.rsplit(":", 1)
    s3_port = int(s.s3_endpoint.rsplit(":", 1)[1])
    procs: list[devstack.ManagedProcess] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # make forwards the terminal's Ctrl-C to us a second time: finish stopping regardless
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\n• stopping …", flush=True)
        for p in reversed(procs):
            p.stop()
        print("• stopped. Data is kept in", var, flush=True)

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        temporal = devstack.start_temporal_dev(var / "temporal", port=int(t_port), ui_port=args.ui_port,
                                               namespace=s.temporal_namespace, search_attributes=ALL,
                                               log_file=var / "log" / "temporal.log")
        procs.append(temporal.process)
        print(f"• Temporal dev server on {temporal.address}, UI {temporal.ui_url}", flush=True)
        seaweed = devstack.start_seaweedfs(var / "seaweedfs", s3_port=s3_port, access_key=s.s3_access_key,
                                           secret_key=s.s3_secret_key, log_file=var / "log" / "seaweedfs.log")
        procs.append(seaweed.process)
        print(f"• SeaweedFS S3 on http://{seaweed.endpoint}", flush=True)
        env = dict(os.environ)
        exe = [sys.executable, "-m", "aktenlauf.cli"]
        # the mailroom channels run as processes of their own: one watcher per folder (worker
        # replicas would race for the same files), the poller only where IMAP is configured
        watch_folder = (s.watch_folder or var / "poststelle" / "eingang").resolve()
        watch_folder.mkdir(parents=True, exist_ok=True)
        env["WATCH_FOLDER"] = str(watch_folder)
        children = [("worker", [*exe, "worker"]), ("api", [*exe, "api"]), ("watch", [*exe, "watch"])]
        if s.imap_host:
            children.append(("imap", [*exe, "imap"]))
        for name, argv in children:
            proc = devstack.ManagedProcess(argv, log_file=var / "log" / f"{name}.log", env=env)
            procs.append(proc)
        _wait_http(f"http://{s.api_host}:{s.api_port}/readyz", timeout=90)
        base = s.public_base_url.rstrip("/")
        print(f"""
aktenlauf is up.
  API            {base}   (OpenAPI: {base}/docs)
  Temporal UI    {temporal.ui_url}
  S3 (SeaweedFS) http://{seaweed.endpoint}  bucket {s.s3_bucket}
  Poststelle     scans dropped into {watch_folder} are taken in (then moved to done/ or failed/)
  IMAP           {f"polling {s.imap_user}@{s.imap_host} {s.imap_mailbox}" if s.imap_host else "off (set IMAP_HOST)"}
  logs           {var / 'log'}

Get a token (in another terminal, from this directory):
  .venv/bin/aktenlauf token --sub portal-1 --role integrator
  .venv/bin/aktenlauf token --sub clerk-1 --role clerk --department buergerbuero
Ctrl-C stops everything; the next `make run` continues where you left off.
""", flush=True)
        while all(p.alive for p in procs):
            time.sleep(1)
        dead = [p for p in procs if not p.alive]
        print(f"• a process exited unexpectedly: {', '.join(str(p) for p in dead)}; see {var / 'log'}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


def _wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=3)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f}s: {last}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aktenlauf", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dev", help="run the whole stack on embedded defaults (make run)")
    d.add_argument("--ui-port", type=int, default=8233)
    d.set_defaults(fn=cmd_dev)
    w = sub.add_parser("worker", help="run the Temporal worker(s)")
    w.add_argument("--queues", default="cases,ocr", help="comma-separated: cases, ocr")
    w.set_defaults(fn=cmd_worker)
    a = sub.add_parser("api", help="serve the HTTP API")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--workers", type=int, default=1, help="API processes (production: about one per core)")
    a.set_defaults(fn=cmd_api)
    wf = sub.add_parser("watch", help="take in scans from the watched folder (WATCH_FOLDER)")
    wf.add_argument("--folder", type=Path, help="the folder to watch (default: WATCH_FOLDER)")
    wf.set_defaults(fn=cmd_watch)
    sub.add_parser("imap", help="poll the IMAP mailbox (IMAP_HOST ...) for letters by e-mail").set_defaults(fn=cmd_imap)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    sub.add_parser("search-attributes", help="register custom search attributes on a Temporal cluster").set_defaults(
        fn=cmd_search_attributes)
    t = sub.add_parser("token", help="mint a development bearer token")
    t.add_argument("--sub", required=True)
    t.add_argument("--role", required=True, action="append", help="integrator, clerk, mailroom, admin or archivist, or a named role for confidential Akten (repeatable)")
    t.add_argument("--department", action="append", default=[], help="department key (repeatable, for clerks)")
    t.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    t.set_defaults(fn=cmd_token)
    c = sub.add_parser("case", help="look a case up by id or Aktenzeichen")
    c.add_argument("ref")
    c.set_defaults(fn=cmd_case)
    from aktenlauf import eakte_cli

    eakte_cli.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
