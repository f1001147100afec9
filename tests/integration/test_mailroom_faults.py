"""Faults on the OCR path of the mailroom: the OCR worker is killed with SIGKILL while its
OCR child runs, or S3 goes away for half a minute while the OCR result is being stored.
Either way the letter resumes and finishes exactly once: one mail item, one Dokument with
one original and one processed version, a final status, no object in S3 without a record,
and no orphaned OCR process left running.

The stack is our own (own database, own SeaweedFS that is stopped and started again on the
same port and data, the API and the case worker in this process); the OCR worker runs as a
separate ``aktenlauf worker --queues ocr`` process, so that it can be killed like a real one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from aktenlauf import devstack
from aktenlauf.embedded import ApiServer, WorkerThread
from eakte.models import Dokument, MailItem, Version
from tests.conftest import CORPUS, Stack, fresh_database, stack_settings
from tests.integration.helpers import wait_for_mail
from tests.servers import RestartableS3

ROOT = Path(__file__).resolve().parents[2]
#: What the OCR step of MailItemWorkflow waits before it retries an attempt that stopped
#: heartbeating (workflows/mailroom.py), plus OCR time and slack on a busy 2-core machine.
RESUME_TIMEOUT_S = 60 + 120
S3_OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableS3]:
    s3 = RestartableS3(tmp_path_factory.mktemp("weed-ocr-faults"), devstack.free_port())
    s3.start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="module")
def ocr_fault_stack(temporal_server, own_s3: RestartableS3,  # type: ignore[no-untyped-def]
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API and case worker in this process; no OCR worker (each test runs its own process).

    On SQLite only: what is under test is the OCR worker and S3 going away, not the database
    (the database's own outage is tests/integration/test_db_outage.py); one backend halves the
    suite's longest minutes."""
    from api.app import create_app
    from eakte.db import migrate

    with fresh_database("sqlite://", tmp_path_factory) as url:
        migrate(url)
        port = devstack.free_port()
        settings = stack_settings(url, temporal_server, own_s3, port)
        api = ApiServer(create_app(settings), port)
        api.start()
        cases = WorkerThread(settings, ("cases",))
        cases.start()
        try:
            yield Stack(settings=settings, base_url=f"http://127.0.0.1:{port}",
                        backend="postgresql" if url.startswith("postgresql") else "sqlite")
        finally:
            cases.stop()
            api.stop()


@contextmanager
def ocr_worker_process(stack: Stack, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``aktenlauf worker --queues ocr`` as its own process, with the stack's settings."""
    env = dict(os.environ)
    for name, value in stack.settings.model_dump().items():
        if value is not None and name != "catalog_path":
            env[name.upper()] = str(value)
    env["DISPOSAL_SCHEDULE_ENABLED"] = "false"
    env["LOG_FORMAT"] = "json"
    proc = subprocess.Popen([sys.executable, "-m", "aktenlauf.cli", "worker", "--queues", "ocr"], env=env, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def ocr_children_of(worker_pid: int) -> list[int]:
    """Live ``intake.ocr_job`` processes whose parent is ``worker_pid`` (0: any parent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" or b"intake.ocr_job" not in cmdline:
            continue
        if worker_pid == 0 or int(fields[1]) == worker_pid:
            found.append(int(entry.name))
    return found


def process_group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


async def wait_for_ocr_child(worker: subprocess.Popen[bytes], timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the OCR worker died on its own"
        children = ocr_children_of(worker.pid)
        if children:
            return children[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the OCR worker never started an OCR child")


async def upload(stack: Stack, http: httpx.AsyncClient, name: str) -> str:
    """Upload a corpus PDF, made unique (a comment after %%EOF) so the duplicate check lets it in."""
    data = (CORPUS / name).read_bytes() + f"\n% {uuid.uuid4().hex}\n".encode()
    r = await http.post("/v1/mailroom/scans", headers=stack.token("post-faults", "mailroom"),
                        files=[("files", (name, data, "application/pdf"))])
    assert r.status_code == 202, r.text
    return str(r.json()["items"][0]["id"])


def assert_finished_once(stack: Stack, item: dict[str, object], status: str) -> None:
    """One item, one Dokument, exactly one original and one processed version; no orphans."""
    assert item["status"] == status, item
    assert item["pages"] == 1 and len(str(item["text_preview"] or "")) > 200, item
    engine = stack.sessions()
    with engine() as s:
        items = s.scalars(select(MailItem).where(MailItem.id == item["id"])).all()
        assert len(items) == 1
        docs = s.scalars(select(Dokument).where(Dokument.id == items[0].dokument_id)).all()
        assert len(docs) == 1
        roles = sorted(v.role for v in s.scalars(select(Version).where(Version.dokument_id == docs[0].id)))
        assert roles == ["original", "processed"]
        recorded = set(s.scalars(select(Version.object_key)))
    engine.kw["bind"].dispose()
    stored = set(stack.store().list_keys())
    assert stored <= recorded, f"objects in S3 without a record: {sorted(stored - recorded)[:5]}"


async def test_ocr_worker_killed_mid_job_resumes_and_files_the_letter_once(ocr_fault_stack, tmp_path) -> None:
    stack = ocr_fault_stack
    log = tmp_path / "ocr-worker.log"
    async with stack.client() as http:
        with ocr_worker_process(stack, log) as doomed:
            item_id = await upload(stack, http, "linn.pdf")
            child = await wait_for_ocr_child(doomed)
            await asyncio.sleep(1.0)  # well inside ocrmypdf (a linn.pdf job takes ~6 s)
            assert ocr_children_of(doomed.pid) == [child], "the OCR child finished before the kill"
            doomed.send_signal(signal.SIGKILL)
            assert doomed.wait(10) == -signal.SIGKILL
            # the orphaned OCR job (own process group: ocrmypdf, tesseract) notices and stops itself
            deadline = time.monotonic() + 10
            while process_group_alive(child) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert not process_group_alive(child), "the OCR job outlived its killed worker"
            mine = (await http.get(f"/v1/mailroom/items/{item_id}", headers=stack.token("p", "mailroom"))).json()
            assert mine["status"] == "processing" and mine["pages"] is None, mine
        with ocr_worker_process(stack, log) as fresh:
            item = await wait_for_mail(http, item_id, stack.token("post-faults", "mailroom"), timeout=RESUME_TIMEOUT_S)
            assert fresh.poll() is None
    assert_finished_once(stack, item, "triage")


async def test_s3_outage_while_ocr_result_is_stored_resumes_and_stores_it_once(ocr_fault_stack, own_s3,
                                                                                 tmp_path) -> None:
    stack = ocr_fault_stack
    async with stack.client() as http:
        with ocr_worker_process(stack, tmp_path / "ocr-worker.log") as worker:
            item_id = await upload(stack, http, "linn.pdf")
            child = await wait_for_ocr_child(worker)
            own_s3.stop()  # the input is downloaded, the OCR child runs: its result cannot be stored
            stopped = time.monotonic()
            try:
                while ocr_children_of(worker.pid) == [child]:
                    await asyncio.sleep(0.2)
                await asyncio.sleep(max(0.0, S3_OUTAGE_S - (time.monotonic() - stopped)))
                mine = (await http.get(f"/v1/mailroom/items/{item_id}",
                                       headers=stack.token("p", "mailroom"))).json()
                assert mine["status"] == "processing" and mine["pages"] is None, mine
            finally:
                own_s3.start()
            item = await wait_for_mail(http, item_id, stack.token("post-faults", "mailroom"), timeout=RESUME_TIMEOUT_S)
            assert worker.poll() is None, "the OCR worker crashed instead of retrying"
    assert_finished_once(stack, item, "triage")
