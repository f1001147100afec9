"""`aktenlauf eakte …`: records-management commands for archivists and operators.

Each command is a function ``cmd_<name>(args) -> int`` registered in ``register``.
"""

from __future__ import annotations

import argparse


# --------------------------------------------------------------------------- verify / sweep


def _stores(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Session factory and blob store from the settings (environment), or None after saying why."""
    import sys

    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from aktenlauf.errors import Unavailable
    from aktenlauf.settings import Settings
    from aktenlauf.wiring import blob_store, session_factory
    from eakte.models import Version

    s = Settings()
    sessions = session_factory(s)
    store = blob_store(s)
    if getattr(args, "bucket", None):
        store.bucket = args.bucket
    try:
        with sessions() as db:
            db.execute(select(Version.id).limit(1))
    except (OperationalError, ProgrammingError):
        print(f"no eAkte database at {s.database_url.split('@')[-1]}: run `aktenlauf migrate` first", file=sys.stderr)
        return None
    try:
        store.ping()
        if not store.client.bucket_exists(store.bucket):
            print(f"bucket {store.bucket} does not exist at {s.s3_endpoint}", file=sys.stderr)
            return None
    except Unavailable as exc:
        print(str(exc), file=sys.stderr)
        return None
    return sessions, store


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash every version's object, look for orphans, check the audit chain. Exit 1 on any finding."""
    import json
    import sys

    from eakte.verify import verify

    wired = _stores(args)
    if wired is None:
        return 2
    sessions, store = wired
    try:
        report = verify(sessions, store, grace_seconds=args.grace_seconds, prefix=args.prefix,
                        objects=not args.skip_objects, orphans=not args.skip_orphans, chain=not args.skip_chain,
                        progress=None if args.json else (lambda msg: print(f"  … {msg}", file=sys.stderr)))
    finally:
        sessions.kw["bind"].dispose()
    print(json.dumps(report.as_json(), indent=2, ensure_ascii=False) if args.json else report.render())
    return 0 if report.clean else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    """Remove objects no record points to (older than the grace period), each removal audited."""
    import getpass
    import json
    import sys

    from eakte.blobstore import REFRESH_AFTER_S
    from eakte.sweep import sweep

    wired = _stores(args)
    if wired is None:
        return 2
    sessions, store = wired
    if args.grace_seconds < REFRESH_AFTER_S and not args.dry_run:
        print(f"warning: a grace period under {REFRESH_AFTER_S} s can remove the object of an upload still in "
              "flight (its filing then fails cleanly); use it only on a quiet system", file=sys.stderr)
    try:
        report = sweep(sessions, store, actor=args.actor or f"cli:{getpass.getuser()}",
                       grace_seconds=args.grace_seconds, prefix=args.prefix, dry_run=args.dry_run)
    finally:
        sessions.kw["bind"].dispose()
    print(json.dumps(report.as_json(), indent=2, ensure_ascii=False) if args.json else report.render())
    return 0


def _register_verify_sweep(esub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from eakte.verify import DEFAULT_GRACE_SECONDS, DEFAULT_PREFIX

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS,
                       help="unreferenced objects younger than this are uploads in flight, not orphans "
                            f"(default {DEFAULT_GRACE_SECONDS})")
        p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"object key prefix to scan (default {DEFAULT_PREFIX})")
        p.add_argument("--bucket", help="bucket (default: S3_BUCKET from the settings)")
        p.add_argument("--json", action="store_true", help="machine-readable report")

    v = esub.add_parser("verify", help="re-hash every stored object, find orphans, check the audit hash chain; "
                                       "exits 1 on any finding")
    common(v)
    v.add_argument("--skip-objects", action="store_true", help="do not re-hash objects")
    v.add_argument("--skip-orphans", action="store_true", help="do not look for orphaned objects")
    v.add_argument("--skip-chain", action="store_true", help="do not check the audit hash chain")
    v.set_defaults(fn=cmd_verify)
    sw = esub.add_parser("sweep", help="remove orphaned objects older than the grace period (audited)")
    common(sw)
    sw.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    sw.add_argument("--actor", help="who runs the sweep, for the audit trail (default cli:<login>)")
    sw.set_defaults(fn=cmd_sweep)


# --------------------------------------------------------------------------- disposal schedule


def cmd_schedule(args: argparse.Namespace) -> int:
    """Create or update the daily Aussonderung schedule (paused when DISPOSAL_SCHEDULE_ENABLED=false);
    print its description; optionally start a disposal round now."""
    import asyncio
    import json

    from temporalio.client import ScheduleOverlapPolicy

    from aktenlauf.schedules import ensure_disposal_schedule
    from aktenlauf.settings import Settings
    from aktenlauf.temporal import connect
    from workflows import disposal_contracts as d

    s = Settings()

    async def run() -> dict[str, object]:
        client = await connect(s)
        desc = await ensure_disposal_schedule(client, s)
        if args.trigger:
            await client.get_schedule_handle(s.disposal_schedule_id).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
            desc = await client.get_schedule_handle(s.disposal_schedule_id).describe()
        cal = desc.schedule.spec.calendars[0] if desc.schedule.spec.calendars else None
        return {
            "id": desc.id, "paused": desc.schedule.state.paused, "note": desc.schedule.state.note,
            "at": f"{cal.hour[0].start:02d}:{cal.minute[0].start:02d}" if cal else None,
            "time_zone": desc.schedule.spec.time_zone_name,
            "overlap": desc.schedule.policy.overlap.name, "task_queue": s.task_queue,
            "next_runs": [] if desc.schedule.state.paused else [t.isoformat() for t in desc.info.next_action_times[:3]],
            "recent_rounds": [a.action.workflow_id for a in desc.info.recent_actions
                              if hasattr(a.action, "workflow_id")][-5:],
            "running_rounds": [a.workflow_id for a in desc.info.running_actions],
        }

    print(json.dumps(asyncio.run(run()), indent=2))
    return 0


def _register_schedule(esub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sc = esub.add_parser("schedule", help="create/update the daily disposal (Aussonderung) schedule and show it")
    sc.add_argument("--trigger", action="store_true", help="also start a disposal round now")
    sc.set_defaults(fn=cmd_schedule)


# --------------------------------------------------------------------------- export / import (xdomea)


def cmd_export(args: argparse.Namespace) -> int:
    """Write an Akte (by id or Aktenzeichen) as an xdomea-style package; audited ``akte.exported``."""
    import getpass
    import json
    import os
    import sys
    from pathlib import Path

    from sqlalchemy import or_, select

    from aktenlauf.errors import AktenlaufError
    from aktenlauf.settings import Settings
    from aktenlauf.wiring import catalog
    from eakte.models import Akte
    from eakte.xdomea import export_akte

    wired = _stores(args)
    if wired is None:
        return 2
    sessions, store = wired
    cat = catalog(Settings())
    out_path = Path(args.output)
    part = out_path.with_name(out_path.name + ".part")
    try:
        with sessions() as s, s.begin():
            akte_id = s.scalar(select(Akte.id).where(or_(Akte.id == args.akte, Akte.aktenzeichen == args.akte)))
            if akte_id is None:
                print(f"no Akte {args.akte!r}", file=sys.stderr)
                return 2
            with part.open("wb") as fh:
                summary = export_akte(s, store, akte_id, fh, exported_by=args.actor or f"cli:{getpass.getuser()}",
                                      role="admin", reason=args.reason, sender=cat.authority_name,
                                      message_type=args.message_type, aktenplan=cat.aktenplan)
        os.replace(part, out_path)
    except AktenlaufError as exc:
        part.unlink(missing_ok=True)
        print(f"export refused: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        sessions.kw["bind"].dispose()
    print(json.dumps({**summary.__dict__, "output": str(out_path)}, indent=2, ensure_ascii=False))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Re-create an Akte from a package; every hash is verified first, nothing is half-imported."""
    import getpass
    import json
    import sys
    from pathlib import Path

    from aktenlauf.errors import AktenlaufError
    from aktenlauf.settings import Settings
    from aktenlauf.wiring import catalog
    from eakte.xdomea import import_package

    wired = _stores(args)
    if wired is None:
        return 2
    sessions, store = wired
    s = Settings()
    path = Path(args.package)
    try:
        with path.open("rb") as fh:
            summary = import_package(sessions, store, fh, imported_by=args.actor or f"cli:{getpass.getuser()}",
                                     role="admin", reason=args.reason,
                                     max_bytes=args.max_bytes or max(s.max_upload_bytes, path.stat().st_size),
                                     aktenplan=catalog(s).aktenplan)
    except OSError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    except AktenlaufError as exc:
        reason = exc.extra.get("reason")
        print(f"import refused ({exc.status} {exc.code}{', ' + str(reason) if reason else ''}): {exc.detail}",
              file=sys.stderr)
        return 1
    finally:
        sessions.kw["bind"].dispose()
    print(json.dumps(summary.__dict__, indent=2, ensure_ascii=False))
    return 0


def _register_exchange(esub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ex = esub.add_parser("export", help="write an Akte as an xdomea-style package (ZIP), audited")
    ex.add_argument("akte", metavar="AKTE", help="Akte id or Aktenzeichen")
    ex.add_argument("-o", "--output", required=True, help="the ZIP file to write")
    ex.add_argument("--reason", default="export on the command line", help="why (audited)")
    ex.add_argument("--message-type", choices=("0401", "0503"), default="0401",
                    help="0401 Abgabe.Abgabe (default) or 0503 Aussonderung.Aussonderung")
    ex.add_argument("--actor", help="who exports, for the audit trail (default cli:<login>)")
    ex.add_argument("--bucket", help="bucket (default: S3_BUCKET from the settings)")
    ex.set_defaults(fn=cmd_export)
    im = esub.add_parser("import", help="re-create an Akte from an xdomea-style package (all hashes verified)")
    im.add_argument("package", metavar="FILE", help="the ZIP file")
    im.add_argument("--reason", help="why (audited)")
    im.add_argument("--max-bytes", type=int, help="largest package accepted (default: the larger of "
                                                  "MAX_UPLOAD_BYTES and the file's size)")
    im.add_argument("--actor", help="who imports, for the audit trail (default cli:<login>)")
    im.add_argument("--bucket", help="bucket (default: S3_BUCKET from the settings)")
    im.set_defaults(fn=cmd_import)


# --------------------------------------------------------------------------- search / audit / aktenplan


def _operator(args: argparse.Namespace) -> str:
    import getpass

    return f"cli:{args.actor or getpass.getuser()}"


def cmd_search(args: argparse.Namespace) -> int:
    """Full-text search as an operator (admin rights; snippets only with --reason). Audited."""
    import json
    import sys

    from aktenlauf.errors import AktenlaufError
    from aktenlauf.settings import Settings
    from aktenlauf.wiring import session_factory
    from eakte import records
    from eakte.access import Principal
    from eakte.search import SearchFilters, search

    sessions = session_factory(Settings())
    p = Principal(sub=_operator(args), roles=("admin",))
    try:
        with sessions() as db, db.begin():
            res = search(db, p, args.query, SearchFilters(department=args.department, kind=args.kind),
                         limit=args.limit, content_reason=bool(args.reason))
            records.audit(db, actor=p.sub, role="admin", action="document.search", target_type="search",
                          target_id="cli", reason=args.reason, details={"q": args.query, "hits": res.total})
    except AktenlaufError as exc:
        print(exc.detail, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([h.__dict__ for h in res.hits], default=str, ensure_ascii=False, indent=2))
        return 0
    print(f"{res.total}{'+' if res.total_is_lower_bound else ''} hits, ordered by {res.order}")
    for h in res.hits:
        print(f"- {h.date:%Y-%m-%d}  {h.aktenzeichen or '(Poststelle)':20} {h.kind:9} {h.title}")
        for snippet in h.highlights[:1]:
            print(f"    {snippet}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit events by case, actor, action prefix or subject (Auskunft). The query is audited itself."""
    from sqlalchemy import select

    from aktenlauf.settings import Settings
    from aktenlauf.wiring import session_factory
    from eakte import records
    from eakte.models import AuditEvent

    sessions = session_factory(Settings())
    q = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(args.limit)
    if args.case:
        q = q.where(AuditEvent.case_id == args.case)
    if args.actor_filter:
        q = q.where(AuditEvent.actor == args.actor_filter)
    if args.action:
        q = q.where(AuditEvent.action.startswith(args.action.rstrip("*"), autoescape=True))
    if args.subject:
        q = q.where(AuditEvent.subject_id == args.subject)
    with sessions() as db, db.begin():
        events = list(db.scalars(q))
        records.audit(db, actor=_operator(args), role="admin", action="audit.read", target_type="audit",
                      target_id=args.case or args.subject or "*", subject_id=args.subject, reason=args.reason,
                      details={k: v for k, v in (("case", args.case), ("actor", args.actor_filter),
                                                  ("action", args.action)) if v})
    for e in reversed(events):
        print(f"{e.seq:>7} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:24} {e.role:10} {e.action:28} "
              f"{e.target_type}:{e.target_id}{'  — ' + e.reason if e.reason else ''}")
    return 0


def cmd_aktenplan(_: argparse.Namespace) -> int:
    """Print the file plan (Aktenplan) with retention and archival appraisal."""
    from aktenlauf.settings import Settings
    from eakte.aktenplan import APPRAISALS, load_aktenplan

    plan = load_aktenplan(Settings().aktenplan_path)
    for group, title in sorted(plan.groups.items()):
        print(f"{group}    {title}")
        for e in sorted(plan.entries.values(), key=lambda x: x.number):
            if e.group == group:
                print(f"  {e.number}  {e.title:45} {e.retention_years:>4} J.  {e.appraisal} "
                      f"({APPRAISALS[e.appraisal]}){'  [retired]' if e.retired else ''}")
    return 0


def _register_records(esub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = esub.add_parser("search", help="full-text search over all Akten (operator; audited)")
    s.add_argument("query")
    s.add_argument("--department")
    s.add_argument("--kind")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--reason", help="why you read content (shows snippets; audited)")
    s.add_argument("--actor", help="who you are (default: your login name)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_search)
    a = esub.add_parser("audit", help="audit events by case, actor, action or subject (audited)")
    a.add_argument("--case")
    a.add_argument("--by", dest="actor_filter", help="events of this actor")
    a.add_argument("--action", help="exact action or a prefix like document.")
    a.add_argument("--subject", help="applicant id: every event concerning that person (Auskunft)")
    a.add_argument("--reason")
    a.add_argument("--limit", type=int, default=100)
    a.add_argument("--actor", help="who you are (default: your login name)")
    a.set_defaults(fn=cmd_audit)
    esub.add_parser("aktenplan", help="print the file plan").set_defaults(fn=cmd_aktenplan)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = sub.add_parser("eakte", help="records management: verify, sweep, export, import")
    esub = e.add_subparsers(dest="eakte_command", required=True)
    _ = esub  # commands are added below by their sections
    _register_verify_sweep(esub)
    _register_schedule(esub)
    _register_exchange(esub)
    _register_records(esub)
