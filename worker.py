"""The worker process: builds settings, clients and activity classes, and runs the workers.

Two task queues:
- ``TASK_QUEUE`` (default ``aktenlauf-cases``): CaseWorkflow, MailItemWorkflow and every
  case/mailroom/payment activity;
- ``OCR_TASK_QUEUE`` (default ``aktenlauf-ocr``): the OCR activity, one ocrmypdf job per
  child process. Run it on OCR nodes with ``aktenlauf worker --queues ocr``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.case import CaseActivities
from activities.disposal import DisposalActivities
from activities.dispatch import DispatchActivities, SmtpMailer, WebhookSender
from activities.mailroom import MailroomActivities
from activities.codes import CodeActivities
from activities.ocr import OcrActivities
from activities.payment import PaymentActivities, PaymentProvider
from aktenlauf.logging import register_secrets, secret_values
from aktenlauf.settings import Settings
from aktenlauf.temporal import connect
from aktenlauf.wiring import blob_store, session_factory
from eakte.blobstore import BlobStore
from aktenlauf import wiring
from intake.separator import SeparatorConfig
from intake.templates import load_templates
from intake.sniff import IntakeLimits
from workflows.case import CaseWorkflow
from workflows.disposal import DisposalWorkflow
from workflows.mailroom import MailItemWorkflow

log = structlog.get_logger(__name__)

WORKFLOWS = [CaseWorkflow, MailItemWorkflow, DisposalWorkflow]


@dataclass
class Dependencies:
    settings: Settings
    store: BlobStore
    sessions: sessionmaker[Session]

    @classmethod
    def build(cls, settings: Settings) -> Dependencies:
        return cls(settings=settings, store=blob_store(settings), sessions=session_factory(settings))


def case_activities(deps: Dependencies) -> list[object]:
    s = deps.settings
    catalog = wiring.catalog(s)
    case = CaseActivities(deps.sessions, deps.store, catalog, certificate_secret=s.certificate_code_secret,
                          verify_base_url=s.public_base_url.rstrip("/") + "/v1/verify/",
                          seal=wiring.document_seal(s, catalog.authority_name),
                          templates=load_templates(s.document_templates_path, catalog))
    payment = PaymentActivities(
        PaymentProvider(s.payment_base_url, s.public_base_url.rstrip("/") + "/v1/payments/webhook"),
        case.record_payment, deps.sessions,
    )
    mail = MailroomActivities(deps.sessions, deps.store, catalog, auto_case_threshold=s.mailroom_auto_case_threshold,
                              ocr_task_queue=s.ocr_task_queue)
    dispatch = DispatchActivities(
        deps.sessions, deps.store, catalog, public_base_url=s.public_base_url,
        mailer=SmtpMailer(s.smtp_host, s.smtp_port, s.smtp_from, starttls=s.smtp_starttls, user=s.smtp_user,
                          password=s.smtp_password, timeout=s.smtp_timeout_s) if s.smtp_host else None,
        webhook=WebhookSender(s.integrator_webhook_secret, timeout=s.integrator_webhook_timeout_s),
        max_attempts=s.dispatch_max_attempts)
    register_secrets([v for v in (s.smtp_password.get_secret_value(), s.integrator_webhook_secret) if v])
    return [
        case.open_case, case.record_progress, case.file_document, case.issue_document, case.dispatch_document,
        case.archive_case, payment.request_payment, payment.cancel_payment,
        payment.poll_payment, payment.refund_payment,
        mail.register_mail_item, mail.set_mail_status, mail.match_mail_reference, mail.file_letter,
        mail.match_mail_reference_v2, mail.classify_mail_item, mail.record_mail_triage, mail.prepare_case_from_letter,
        mail.await_case_open, mail.split_mail_item, mail.merge_mail_items,
        dispatch.dispatch_document_v2, dispatch.notify,
    ]


def disposal_activities(deps: Dependencies) -> list[object]:
    from eakte.aktenplan import load_aktenplan

    disposal = DisposalActivities(deps.sessions, deps.store, load_aktenplan(deps.settings.aktenplan_path))
    return [disposal.offer_due_akten, disposal.execute_disposal, disposal.end_disposal_round]


def separator_config(s: Settings) -> SeparatorConfig:
    """Separator sheets as configured: the barcode text (plus the scanners' PATCH-T code) and the
    word printed on the sheet, alone on its page."""
    return SeparatorConfig(code=s.mailroom_separator_code, text=s.mailroom_separator_text)


def ocr_activities(deps: Dependencies) -> list[object]:
    s = deps.settings
    limits = IntakeLimits(max_bytes=s.max_upload_bytes, max_pages=s.ocr_max_pages,
                          timeout_per_page_s=s.ocr_timeout_per_page_s, memory_limit_mb=s.ocr_memory_limit_mb,
                          tesseract_threads=s.ocr_tesseract_threads)
    ocr = OcrActivities(deps.sessions, deps.store, limits)
    codes = CodeActivities(deps.sessions, deps.store, separator_config(s))
    return [ocr.ocr_mail_item, codes.scan_mail_codes]


# The sandbox re-imports each workflow module for every workflow run. What the workflows import
# from this code base is plain data (dataclasses, search-attribute keys): deterministic and
# never mutated, so it is shared with the host instead of being re-executed per run.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(
    "workflows.contracts", "workflows.disposal_contracts", "workflows.search", "intake.service"))


def cache_workflow_bytecode() -> None:
    """Write the bytecode cache of the workflow modules if it is missing.

    The sandbox imports each workflow module afresh for every workflow run. Without a cached
    ``.pyc`` (a fresh checkout, or PYTHONDONTWRITEBYTECODE set, as on many build machines) that
    import compiles workflows/case.py from source every time a case starts or is loaded into the
    cache again — measurable in the case throughput. Best effort: a read-only installation keeps
    working, only slower."""
    import importlib.util
    import py_compile
    import sys

    for workflow_cls in WORKFLOWS:
        source = sys.modules[workflow_cls.__module__].__file__
        if not source or not source.endswith(".py"):
            continue
        cached = importlib.util.cache_from_source(source)
        try:
            py_compile.compile(source, cfile=cached, doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:
            log.info("worker.bytecode_not_cached", module=workflow_cls.__module__, reason=str(exc)[:200])


def build_workers(client: Client, deps: Dependencies, queues: Sequence[str],
                  executor: concurrent.futures.ThreadPoolExecutor,
                  interceptors: Sequence[Interceptor] = ()) -> list[Worker]:
    """The workers of `queues`; `interceptors` go to the case worker (tests/crash_worker.py uses it)."""
    s = deps.settings
    workers: list[Worker] = []
    if "cases" in queues:
        cache_workflow_bytecode()
        workers.append(Worker(client, task_queue=s.task_queue, workflows=WORKFLOWS,
                              activities=case_activities(deps) + disposal_activities(deps), activity_executor=executor,
                              max_concurrent_activities=16, graceful_shutdown_timeout=timedelta(seconds=10),
                              interceptors=interceptors, workflow_runner=WORKFLOW_RUNNER,
                              max_cached_workflows=s.workflow_cache_size))
    if "ocr" in queues:
        workers.append(Worker(client, task_queue=s.ocr_task_queue, activities=ocr_activities(deps),
                              max_concurrent_activities=max(1, s.ocr_concurrency),
                              graceful_shutdown_timeout=timedelta(seconds=10)))
    return workers


async def run_worker(settings: Settings, queues: Sequence[str] = ("cases", "ocr"),
                     stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or until `stop` is set, for embedding), then shut down gracefully."""
    register_secrets(secret_values(settings))  # never logged (aktenlauf/logging.py)
    deps = Dependencies.build(settings)
    deps.store.ensure_bucket()
    client = await connect(settings)
    if "cases" in queues:
        await _ensure_schedules(client, settings)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as executor:
        workers = build_workers(client, deps, queues, executor)
        log.info("worker.started", queues=list(queues), task_queue=settings.task_queue,
                 ocr_task_queue=settings.ocr_task_queue)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        runs = [asyncio.create_task(w.run()) for w in workers]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([*runs, waiter], return_when=asyncio.FIRST_COMPLETED)
        log.info("worker.stopping")
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        for r in runs:
            if r.done() and r.exception() is not None:
                raise r.exception()  # type: ignore[misc]


async def _ensure_schedules(client: Client, settings: Settings) -> None:
    """The daily Aussonderung round (aktenlauf/schedules.py); a failure is logged, not fatal."""
    from aktenlauf.schedules import ensure_disposal_schedule

    try:
        await ensure_disposal_schedule(client, settings)
    except Exception as exc:  # noqa: BLE001 - the cases must run even if the schedule cannot be set up now
        log.warning("schedule.ensure_failed", error=str(exc))


def main(queues: Sequence[str] = ("cases", "ocr")) -> None:
    from aktenlauf.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings, queues))


if __name__ == "__main__":
    main()
