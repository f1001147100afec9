"""The mailroom's intake channels against the real stack: API upload of scans and e-mails, the
watched folder (its own process, killed and restarted), and the IMAP poller against a real
Dovecot. Every delivery is registered once; a re-delivery of the same bytes on the same channel
is a visible duplicate that starts nothing."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import func, select
from temporalio.service import RPCError

from eakte.blobstore import object_key
from eakte.models import AuditEvent, Dokument, MailItem, Version
from intake.channels import Services
from intake.imap_poller import ImapConfig, ImapPoller, submitter
from tests.conftest import CORPUS
from tests.integration.helpers import MELDE, application, wait_for_case, wait_for_mail
from tests.servers import PrivateDovecot, require_server

REPO = Path(__file__).resolve().parents[2]
DONE = ("filed", "triage", "failed", "split", "routed", "closed", "merged")


def _pdf(*lines: str) -> bytes:
    """A born-digital one-page PDF with these lines as its text layer."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    for i, line in enumerate(lines):
        c.drawString(72, 720 - 18 * i, line)
    c.showPage()
    c.save()
    return buf.getvalue()


def _png(text: str) -> bytes:
    """A small scanned-looking image of one line of text (OCRed by tesseract)."""
    import reportlab

    font = ImageFont.truetype(str(Path(reportlab.__file__).parent / "fonts" / "Vera.ttf"), 40)
    img = Image.new("L", (1400, 200), 255)
    ImageDraw.Draw(img).text((40, 70), text, fill=0, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", dpi=(200, 200))
    return buf.getvalue()


def _email(subject: str, body: str, attachments: list[tuple[str, bytes, str]] = ()) -> bytes:  # type: ignore[assignment]
    m = EmailMessage()
    m["From"] = "Erika Mustermann <erika@example.org>"
    m["To"] = "poststelle@musterstadt.de"
    m["Subject"] = subject
    m["Date"] = "Sun, 22 Nov 2026 09:00:00 +0100"
    m["Message-ID"] = f"<{uuid.uuid4().hex}@example.org>"
    m.set_content(body)
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return m.as_bytes(policy=email.policy.SMTP)  # CRLF line ends, as on the wire (and in IMAP)


def _items(stack, sha: str) -> list[MailItem]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return list(s.scalars(select(MailItem).where(MailItem.sha256 == sha).order_by(MailItem.received_at)))


def _documents(stack, item_id: str) -> list[Dokument]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        docs = list(s.scalars(select(Dokument).where(Dokument.mail_item_id == item_id).order_by(Dokument.created_at)))
        for d in docs:
            _ = [v.role for v in d.versions]  # loaded while the session is open
        return docs


# --------------------------------------------------------------------------- e-mail over the API


async def test_an_email_with_pdf_and_png_attachments_becomes_an_item_with_all_its_documents(stack) -> None:  # type: ignore[no-untyped-def]
    portal, mailroom = stack.token("portal-mail", "integrator"), stack.token("post-1", "mailroom")
    word = "Zebra" + uuid.uuid4().hex[:4].upper()
    async with stack.client() as http:
        case = (await http.post("/v1/cases", json=application(MELDE), headers=portal)).json()
        await wait_for_case(http, case["case_id"], portal, status="awaiting_decision")
        eml = _email("Nachreichung Unterlagen", f"Guten Tag,\nanbei die Unterlagen {word}.\nMit Gruß",
                     [("ausweis.pdf", _pdf("Kopie Personalausweis", f"Ihr Zeichen: {case['aktenzeichen']}"),
                       "application/pdf"),
                      ("../../foto.png", _png("BESCHEINIGUNG GARTEN"), "image/png")])
        r = await http.post("/v1/mailroom/emails", headers=mailroom, files=[("files", ("brief.eml", eml, "message/rfc822"))])
        assert r.status_code == 202, r.text
        [accepted] = r.json()["items"]
        assert accepted["status"] == "received" and accepted["channel"] == "email" and accepted["duplicate_of"] is None
        item = await wait_for_mail(http, accepted["id"], mailroom, status=DONE)
    assert item["status"] == "filed" and item["case_id"] == case["case_id"], item  # the attachment's Aktenzeichen
    assert item["origin"]["subject"] == "Nachreichung Unterlagen" and item["origin"]["message_id"]
    docs = _documents(stack, item["id"])
    by_name = {d.filename: d for d in docs}
    assert {"brief.eml", "nachricht.pdf", "ausweis.pdf", "foto.png"} <= set(by_name), sorted(by_name)
    assert len(docs) == 4  # the original, the body, two attachments: nothing twice
    body, pdf, png, original = by_name["nachricht.pdf"], by_name["ausweis.pdf"], by_name["foto.png"], by_name["brief.eml"]
    assert word in (body.text or "") and body.content_type == "application/pdf"
    assert "Personalausweis" in (pdf.text or "")
    assert "GARTEN" in (png.text or "").upper()
    assert [v.role for v in png.versions] == ["original", "processed"]  # kept as sent, and OCRed
    text = original.text or ""
    assert "Nachreichung Unterlagen" in text and word in text and "Personalausweis" in text
    assert "GARTEN" in text.upper()
    assert original.content_type == "message/rfc822" and [v.role for v in original.versions] == ["original"]
    with stack.sessions()() as s:
        v = s.scalar(select(Version).where(Version.dokument_id == original.id))
        assert v is not None and v.sha256 == hashlib.sha256(eml).hexdigest()  # kept unchanged


async def test_hostile_emails_are_refused_with_a_reason_and_nothing_is_stored(stack) -> None:  # type: ignore[no-untyped-def]
    mailroom = stack.token("post-1", "mailroom")
    many = _email("viele", "x", [(f"a{i}.bin", os.urandom(64), "application/octet-stream") for i in range(25)])
    deep = b"From: a@example.org\r\nSubject: tief\r\nMIME-Version: 1.0\r\n" + b"".join(
        f"Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n".encode() for i in range(40)) + b"x\r\n"
    huge_header = b"From: a@example.org\r\nX-Junk: " + b"a" * 300_000 + b"\r\n\r\nbody"
    async with stack.client() as http:
        async def post(path: str, name: str, data: bytes) -> Any:
            return await http.post(path, headers=mailroom, files=[("files", (name, data, "application/octet-stream"))])

        for data, code in ((many, "too-many-attachments"), (deep, "email-too-deep"),
                           (huge_header, "email-header-too-large")):
            r = await post("/v1/mailroom/emails", "x.eml", data)
            assert r.status_code == 422, r.text
            assert r.json()["type"].endswith(code) or r.json().get("code") == code or code in r.text, r.text
        assert (await post("/v1/mailroom/emails", "scan.pdf", (CORPUS / "trivial.pdf").read_bytes())).status_code == 415
        assert (await post("/v1/mailroom/emails", "notiz.txt", b"Liebe Grete, wie geht es?")).status_code == 415
        assert (await post("/v1/mailroom/scans", "brief.eml", _email("a", "b"))).status_code == 415
    refused = {hashlib.sha256(d).hexdigest() for d in (many, deep, huge_header)}
    assert not {object_key(sha) for sha in refused} & set(stack.store().list_keys())
    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(MailItem).where(MailItem.sha256.in_(refused))) == 0


# --------------------------------------------------------------------------- duplicates


async def test_the_same_scan_sent_again_is_a_visible_duplicate_and_not_processed(stack) -> None:  # type: ignore[no-untyped-def]
    mailroom = stack.token("post-1", "mailroom")
    data = _pdf("Schreiben", uuid.uuid4().hex)
    sha = hashlib.sha256(data).hexdigest()
    async with stack.client() as http:
        first = await http.post("/v1/mailroom/scans", headers=mailroom, files=[("files", ("a.pdf", data, "application/pdf"))])
        assert first.status_code == 202
        original = first.json()["items"][0]["id"]
        await wait_for_mail(http, original, mailroom, status=DONE)
        again = await http.post("/v1/mailroom/scans", headers=mailroom, files=[("files", ("b.pdf", data, "application/pdf"))])
        assert again.status_code == 200, again.text
        [dup] = again.json()["items"]
        assert dup["status"] == "duplicate" and dup["duplicate_of"] == original and dup["id"] != original
        shown = (await http.get(f"/v1/mailroom/items/{dup['id']}", headers=mailroom)).json()
        assert shown["status"] == "duplicate" and shown["duplicate_of"] == original
    items = _items(stack, sha)
    assert [i.status == "duplicate" for i in items] == [False, True]
    assert items[1].dokument_id is None and _documents(stack, items[1].id) == []
    with stack.sessions()() as s:
        audited = s.scalar(select(AuditEvent).where(AuditEvent.action == "mail.duplicate",
                                                    AuditEvent.target_id == dup["id"]))
        assert audited is not None and audited.details["duplicate_of"] == original
    assert len([k for k in stack.store().list_keys() if k.endswith(sha)]) == 1


async def test_five_simultaneous_deliveries_of_one_file_start_one_workflow(stack) -> None:  # type: ignore[no-untyped-def]
    mailroom = stack.token("post-1", "mailroom")
    data = _pdf("Gleichzeitig", uuid.uuid4().hex)
    sha = hashlib.sha256(data).hexdigest()
    async with stack.client() as http:
        async def send() -> Any:
            return await http.post("/v1/mailroom/scans", headers=mailroom,
                                   files=[("files", ("gleich.pdf", data, "application/pdf"))])

        answers = await asyncio.gather(*(send() for _ in range(5)))
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202], [a.text for a in answers]
        items = [a.json()["items"][0] for a in answers]
        [new] = [i for i in items if i["status"] == "received"]
        assert all(i["duplicate_of"] == new["id"] for i in items if i is not new)
        await wait_for_mail(http, new["id"], mailroom, status=DONE)
    rows = _items(stack, sha)
    assert len(rows) == 5 and [r.id for r in rows if r.duplicate_of is None] == [new["id"]]
    client = await stack.temporal()
    started = [w async for w in client.list_workflows(f"WorkflowId = '{new['id']}'")]
    assert len(started) == 1


async def test_an_original_temporal_has_forgotten_is_still_found_in_the_register(stack) -> None:  # type: ignore[no-untyped-def]
    """After the namespace's retention Temporal no longer knows the workflow id: the register does."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

    mailroom = stack.token("post-1", "mailroom")
    data = _pdf("Vergessen", uuid.uuid4().hex)
    async with stack.client() as http:
        first = (await http.post("/v1/mailroom/scans", headers=mailroom,
                                 files=[("files", ("a.pdf", data, "application/pdf"))])).json()["items"][0]
        await wait_for_mail(http, first["id"], mailroom, status=DONE)
        client = await stack.temporal()
        with contextlib.suppress(RPCError):  # still waiting in triage: end it as retention would find it
            await client.get_workflow_handle(first["id"]).terminate("test: the original is long closed")
        await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=first["id"])))
        for _ in range(50):  # deletion is asynchronous
            if not [w async for w in client.list_workflows(f"WorkflowId = '{first['id']}'")]:
                break
            await asyncio.sleep(0.2)
        again = await http.post("/v1/mailroom/scans", headers=mailroom,
                                files=[("files", ("a.pdf", data, "application/pdf"))])
    assert again.status_code == 200 and again.json()["items"][0]["duplicate_of"] == first["id"]


# --------------------------------------------------------------------------- watched folder


def _channel_env(stack, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    s = stack.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCH_", "IMAP_"))}
    for name in ("environment", "database_url", "temporal_address", "temporal_namespace", "s3_endpoint",
                 "s3_access_key", "s3_secret_key", "s3_bucket", "task_queue", "ocr_task_queue", "max_upload_bytes",
                 "payload_keys"):
        env[name.upper()] = str(getattr(s, name))
    env.update(LOG_FORMAT="json", PYTHONUNBUFFERED="1", **extra)
    return env


class Watcher:
    """``aktenlauf watch`` as its own process, as `make run` starts it."""

    def __init__(self, stack, folder: Path, log: Path) -> None:  # type: ignore[no-untyped-def]
        self.env = _channel_env(stack, WATCH_FOLDER=str(folder), WATCH_STABLE_SECONDS="2",
                                WATCH_POLL_INTERVAL_S="0.3", VAR_DIR=str(folder.parent / "var"))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "aktenlauf.cli", "watch"], cwd=REPO, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def watcher(stack, tmp_path: Path) -> Iterator[tuple[Watcher, Path]]:  # type: ignore[no-untyped-def]
    folder = tmp_path / "eingang"
    folder.mkdir()
    w = Watcher(stack, folder, tmp_path / "watch.log")
    w.start()
    try:
        yield w, folder
    finally:
        w.stop()


async def _until(check, timeout: float, what: str, log: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} within {timeout:.0f}s\n{tail}")


async def test_the_watched_folder_takes_complete_files_once_and_refuses_others(stack, watcher) -> None:  # type: ignore[no-untyped-def]
    w, folder = watcher
    mailroom = stack.token("post-1", "mailroom")
    data = _pdf("Langsam geschrieben", uuid.uuid4().hex) + b"\n%" + os.urandom(2000).hex().encode() + b"\n"
    chunks = [data[i:i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    target = folder / "scan 0001.pdf"
    for chunk in chunks:  # a slow scanner: closes the file between bursts, 1 s apart (window: 2 s)
        with target.open("ab") as fh:
            fh.write(chunk)
        await asyncio.sleep(1.0)
        assert target.exists(), "taken before it was complete"
    (folder / "notiz.txt").write_text("kein Scan")
    (folder / "halb.pdf.tmp").write_bytes(data[:100])
    sha = hashlib.sha256(data).hexdigest()
    await _until(lambda: (folder / "done" / "scan 0001.pdf").exists(), 60, "scan not moved to done/", w.log)
    [item] = await _until(lambda: _items(stack, sha), 30, "scan not registered")
    assert item.channel == "folder" and item.origin.get("path") == "scan 0001.pdf"
    await _until(lambda: (folder / "failed" / "notiz.txt.reason.txt").exists(), 30, "txt not refused", w.log)
    assert "PDF" in (folder / "failed" / "notiz.txt.reason.txt").read_text()
    assert (folder / "halb.pdf.tmp").exists()  # a temporary name is never taken
    with stack.sessions()() as s:  # no item was made of a partial file
        partial = s.scalars(select(MailItem).where(MailItem.channel == "folder", MailItem.filename == "scan 0001.pdf"))
        assert [m.sha256 for m in partial] == [sha]
    async with stack.client() as http:
        done = await wait_for_mail(http, item.id, mailroom, status=DONE)
    assert done["status"] in ("triage", "filed") and "Langsam geschrieben" in (done["text_preview"] or "")


async def test_a_restart_after_a_crash_never_processes_a_file_twice(stack, watcher) -> None:  # type: ignore[no-untyped-def]
    w, folder = watcher
    files = {f"stapel-{i}.pdf": _pdf("Stapel", str(i), uuid.uuid4().hex) for i in range(6)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    shas = {hashlib.sha256(d).hexdigest() for d in files.values()}

    def registered() -> int:
        with stack.sessions()() as s:
            return len(set(s.scalars(select(MailItem.sha256).where(MailItem.sha256.in_(shas)))))

    await _until(lambda: registered() >= 1, 60, "nothing registered", w.log)
    w.kill()  # mid-way: some submitted, some moved, maybe one submitted and not moved
    # the state a crash between submit and move leaves: a submitted file still in the folder
    done_before = sorted(p.name for p in (folder / "done").iterdir())
    if done_before:
        shutil.copy(folder / "done" / done_before[0], folder / done_before[0])
    w.start()
    await _until(lambda: not list(folder.glob("*.pdf")), 90, "files left in the folder", w.log)
    await _until(lambda: registered() == len(shas), 30, "not every file registered", w.log)
    for sha in shas:
        rows = _items(stack, sha)
        originals = [r for r in rows if r.duplicate_of is None]
        assert len(originals) == 1, [(r.id, r.status) for r in rows]
        assert all(r.duplicate_of == originals[0].id for r in rows if r is not originals[0])
    assert len(list((folder / "done").glob("*.pdf"))) >= len(files)
    if done_before:  # the re-delivered one is recorded as a duplicate and also moved (with a suffix)
        assert len(_items(stack, hashlib.sha256(files[done_before[0]]).hexdigest())) == 2


# --------------------------------------------------------------------------- IMAP


@pytest.fixture(scope="module")
def dovecot() -> Iterator[PrivateDovecot]:
    try:
        server = PrivateDovecot.start()
    except Exception as exc:  # noqa: BLE001 - never skipped: in CI a missing dovecot fails the test
        require_server("Dovecot IMAP server (apt-get install dovecot-imapd)", exc)
    try:
        yield server
    finally:
        server.stop()


def _mailbox(dovecot: PrivateDovecot, name: str) -> list[int]:
    conn = dovecot.connect()
    try:
        typ, _ = conn.select(f'"{name}"', readonly=True)
        if typ != "OK":
            return []
        return [int(x) for x in conn.uid("SEARCH", "ALL")[1][0].split()]
    finally:
        conn.logout()


async def test_the_imap_poller_submits_each_message_once_and_moves_it(stack, dovecot, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    mailroom = stack.token("post-1", "mailroom")
    word = "Kolibri" + uuid.uuid4().hex[:4]
    messages = [
        _email("Antrag per Mail", f"Hallo, {word} im Text.", [("beleg.pdf", _pdf("Beleg Nummer 17"), "application/pdf")]),
        _email("Zweite", "nur Text " + uuid.uuid4().hex),
        _email("viele Anhänge", "x", [(f"a{i}.bin", os.urandom(32), "application/octet-stream") for i in range(25)]),
    ]
    conn = dovecot.connect()
    for m in messages:
        assert conn.append("INBOX", None, None, m)[0] == "OK"
    conn.logout()
    cfg = ImapConfig(host="127.0.0.1", port=dovecot.port, user=dovecot.user, password=dovecot.password, tls="none",
                     state_file=tmp_path / "imap-state.json", max_bytes=stack.settings.max_upload_bytes)
    services = Services(settings=stack.settings, sessions=stack.sessions(), store=stack.store(),
                        temporal=await stack.temporal())
    result = await ImapPoller(cfg, submitter(services)).poll_once()
    assert (result.submitted, result.duplicates, result.refused) == (2, 0, 1)
    assert _mailbox(dovecot, "INBOX") == []
    assert len(_mailbox(dovecot, "Verarbeitet")) == 2 and len(_mailbox(dovecot, "Abgelehnt")) == 1
    [first] = await _until(lambda: _items(stack, hashlib.sha256(messages[0]).hexdigest()), 30, "not registered")
    assert first.channel == "imap" and first.origin["uid"] and first.origin["uidvalidity"]
    async with stack.client() as http:
        item = await wait_for_mail(http, first.id, mailroom, status=DONE)
    assert word in (item["text_preview"] or "") and "Beleg Nummer 17" in (item["text_preview"] or "")
    assert {d.filename for d in _documents(stack, first.id)} >= {"nachricht.pdf", "beleg.pdf"}

    # a second round, and a restarted poller (new instance, same state file): nothing new
    assert (await ImapPoller(cfg, submitter(services)).poll_once()).submitted == 0
    # a crash after the submit, before the move: the message is back in the inbox and the state is lost
    conn = dovecot.connect()
    conn.append("INBOX", None, None, messages[1])
    conn.logout()
    (tmp_path / "imap-state.json").unlink()
    again = await ImapPoller(cfg, submitter(services)).poll_once()
    assert (again.submitted, again.duplicates) == (0, 1)
    rows = _items(stack, hashlib.sha256(messages[1]).hexdigest())
    assert [r.status == "duplicate" for r in rows] == [False, True]
    assert _mailbox(dovecot, "INBOX") == []
    wrong = ImapConfig(host="127.0.0.1", port=dovecot.port, user=dovecot.user, password="falsch-" + dovecot.password,
                       tls="none", state_file=tmp_path / "imap-state.json")
    with pytest.raises(Exception) as refused:  # imaplib.error
        await ImapPoller(wrong, submitter(services)).poll_once()
    assert wrong.password not in f"{refused.value!r} {wrong!r}"
    out = capsys.readouterr()
    assert dovecot.password not in out.out + out.err
