"""Dispatch of certificates over portal, e-mail, post and webhook, exactly once, and notifications.

Real servers: an SMTP server (aiosmtpd) and a webhook receiver (http.server) started here on
loopback ports, SeaweedFS, the database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set),
the API on a loopback port for the print batches, notifications and messages, and the Temporal
dev server for the back-off retries. The activities are driven through
temporalio.testing.ActivityEnvironment: a "retry" is calling the activity again, as Temporal does.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import email
import email.policy
import io
import json
import threading
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pypdf import PdfReader
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas
from sqlalchemy import select
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.dispatch import DispatchActivities, SmtpMailer, WebhookSender, message_id_for
from activities.payment import verify_signature
from aktenlauf import devstack, wiring
from aktenlauf.embedded import ApiServer
from aktenlauf.settings import Settings
from eakte import records
from eakte.db import migrate, transaction
from eakte.models import AuditEvent, Dispatch, Notification, Vorgang
from tests.conftest import Stack, fresh_database, stack_settings
from workflows import contracts as c

pytestmark = pytest.mark.integration

MELDE = "99115005012000"  # dispatch_channels: [portal, email, post, webhook]
HUND = "99021005001000"  # dispatch_channels: [portal] (the default)
SECRET = "test-integrator-webhook-secret-0123456789"
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


# --------------------------------------------------------------------------- the far ends


@dataclass
class Inbox:
    """What the SMTP server accepted; recipients in ``refuse`` are answered 550."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


class Receiver(ThreadingHTTPServer):
    """An integrator's webhook endpoint: answers the codes in ``script`` in turn, then 200."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.calls: list[tuple[int, dict[str, str], bytes, float]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", devstack.free_port()), _ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/aktenlauf"

    def accepted(self) -> list[tuple[int, dict[str, str], bytes, float]]:
        return [call for call in self.calls if call[0] == 200]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            code = self.server.script.pop(0) if self.server.script else 200
            self.server.calls.append((code, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class World:
    stack: Stack
    settings: Settings
    acts: DispatchActivities
    inbox: Inbox
    receiver: Receiver
    env: ActivityEnvironment

    def run(self, fn, arg):  # type: ignore[no-untyped-def]
        return self.env.run(fn, arg)


@pytest.fixture(scope="module")
def world(database_url: str, temporal_server, s3_server,  # type: ignore[no-untyped-def]
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A database of its own (the day's print batch must hold only this module's letters), the
    SMTP server, the webhook receiver and the API (no case worker: the activities run here)."""
    from api.app import create_app

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=devstack.free_port())
    smtp.start()
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with fresh_database(database_url, tmp_path_factory) as url:
        migrate(url)
        port = devstack.free_port()
        settings = stack_settings(url, temporal_server, s3_server, port, smtp_host="127.0.0.1",
                                  smtp_port=smtp.port, smtp_starttls=False, smtp_from="Stadt Musterstadt <post@musterstadt.example>",
                                  integrator_webhook_secret=SECRET)
        api = ApiServer(create_app(settings), port)
        api.start()
        store = wiring.blob_store(settings)
        store.ensure_bucket()
        acts = DispatchActivities(
            wiring.session_factory(settings), store, wiring.catalog(settings), public_base_url=settings.public_base_url,
            mailer=SmtpMailer(settings.smtp_host or "", settings.smtp_port, settings.smtp_from, starttls=False,
                              timeout=10),
            webhook=WebhookSender(SECRET, timeout=5), max_attempts=5, claim_lease_s=60)
        try:
            yield World(stack=Stack(settings=settings, base_url=f"http://127.0.0.1:{port}",
                                    backend="postgresql" if url.startswith("postgresql") else "sqlite"),
                        settings=settings, acts=acts, inbox=inbox, receiver=receiver, env=ActivityEnvironment())
        finally:
            api.stop()
            receiver.shutdown()
            smtp.stop()


def certificate_pdf(title: str, pages: int = 2) -> bytes:
    buf = io.BytesIO()
    cv = canvas.Canvas(buf, invariant=1)
    for n in range(1, pages + 1):
        cv.drawString(72, 720, f"{title} Seite {n} von {pages}")
        cv.showPage()
    cv.save()
    return buf.getvalue()


@dataclass
class Case:
    case_id: str
    aktenzeichen: str
    document_id: str
    pdf: bytes
    integrator: str


def open_case(w: World, *, service: str = MELDE, delivery: str | None = None, email_to: str | None = "erika@example.org",
              address: list[str] | None = None, notify_url: str | None = None, name: str = "Erika Mustermann",
              department: str = "buergerbuero") -> Case:
    """A case as the case workflow leaves it before dispatch: opened, routed, certificate filed."""
    case_id = "case-" + uuid.uuid4().hex
    applicant: dict[str, Any] = {"name": name, "address_lines": address if address is not None else
                                 ["Hauptstraße 5", "12345 Musterstadt"]}
    if email_to:
        applicant["email"] = email_to
    if delivery:
        applicant["delivery"] = delivery
    pdf = certificate_pdf(f"Meldebescheinigung {case_id[-6:]}")
    ref = w.acts.store.put_bytes(pdf, "application/pdf")
    service_entry = w.acts.catalog.service(service)
    assert service_entry is not None
    with transaction(w.acts.sessions) as s:
        v = records.open_case(s, case_id=case_id, file_plan=service_entry.file_plan, year=2026, title=service_entry.name,
                              service_key=service, service_name=service_entry.name, integrator="portal-1",
                              applicant=applicant, form={}, fingerprint="f" * 64, fee_cents=0, retention_years=5,
                              status=c.RECEIVED, notify_url=notify_url)
        v.department = department
        doc = records.file_document(s, key=f"{case_id}:issue:certificate", ref=ref, kind="Urkunde",
                                    title=service_entry.name, filename="bescheinigung.pdf",
                                    content_type="application/pdf", created_by="system", channel="system",
                                    akte_id=v.akte_id, vorgang_id=v.id, public=True)
        return Case(case_id=case_id, aktenzeichen=v.aktenzeichen, document_id=doc.id, pdf=pdf, integrator="portal-1")


def dispatch_rows(w: World, case: Case) -> list[Dispatch]:
    with transaction(w.acts.sessions) as s:
        return list(s.scalars(select(Dispatch).where(Dispatch.vorgang_id == case.case_id).order_by(Dispatch.at)))


def params(case: Case, channel: str = "") -> c.DispatchParams:
    return c.DispatchParams(case_id=case.case_id, dokument_id=case.document_id, channel=channel)


# --------------------------------------------------------------------------- portal and e-mail


def test_portal_dispatch_is_recorded_at_once_with_the_rule_that_chose_it(world: World) -> None:
    case = open_case(world, delivery=None, email_to=None, address=[])
    out = world.run(world.acts.dispatch_document_v2, params(case))
    assert [r.channel for r in out] == ["portal"]
    (row,) = dispatch_rows(world, case)
    assert (row.status, row.rule, row.attempts) == ("sent", "catalog_default", 0)
    assert row.sent_at is not None and row.sha256 is not None


def test_email_dispatch_sends_the_pdf_once_even_when_the_activity_runs_again(world: World) -> None:
    to = f"erika-{uuid.uuid4().hex[:6]}@example.org"
    case = open_case(world, delivery="email", email_to=to)
    first = world.run(world.acts.dispatch_document_v2, params(case))
    again = world.run(world.acts.dispatch_document_v2, params(case))  # a retry after the result was lost
    assert first == again and [r.channel for r in first] == ["email"]
    (msg,) = world.inbox.to(to)
    (row,) = dispatch_rows(world, case)
    assert (row.status, row.rule, row.attempts) == ("sent", "applicant_choice", 1)
    assert msg["Message-ID"] == message_id_for(row.key, "musterstadt.example") == row.message_id
    assert msg["X-Aktenlauf-Dispatch"] == row.id
    assert case.aktenzeichen in msg["Subject"]
    (part,) = [p for p in msg.iter_attachments()]
    assert part.get_content_type() == "application/pdf" and part.get_filename() == "bescheinigung.pdf"
    assert part.get_content() == case.pdf
    assert "Erika Mustermann" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_after_a_crash_between_smtp_accept_and_commit_the_resend_carries_the_same_message_id(world: World) -> None:
    to = f"crash-{uuid.uuid4().hex[:6]}@example.org"
    case = open_case(world, delivery="email", email_to=to)
    world.run(world.acts.dispatch_document_v2, params(case))
    # the crash: the server had accepted the message, 'sent' was never committed (the claim is old)
    with transaction(world.acts.sessions) as s:
        row = s.scalar(select(Dispatch).where(Dispatch.vorgang_id == case.case_id))
        assert row is not None
        row.status, row.claimed_at = "sending", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    world.run(world.acts.dispatch_document_v2, params(case))
    world.run(world.acts.dispatch_document_v2, params(case))
    first, second = world.inbox.to(to)  # at-least-once in that window, and no more
    assert first["Message-ID"] == second["Message-ID"]
    assert dispatch_rows(world, case)[0].attempts == 2


def test_a_retry_while_an_earlier_attempt_still_holds_the_claim_waits_and_sends_nothing(world: World) -> None:
    to = f"slow-{uuid.uuid4().hex[:6]}@example.org"
    case = open_case(world, delivery="email", email_to=to)
    with transaction(world.acts.sessions) as s:  # the first attempt: claimed and still talking to the server
        s.add(Dispatch(key=f"{case.case_id}:dispatch:{case.document_id}:email", vorgang_id=case.case_id,
                       dokument_id=case.document_id, channel="email", status="sending", attempts=1,
                       claimed_at=dt.datetime.now(dt.UTC), recipient={"email": to}, rule="applicant_choice"))
    with pytest.raises(ApplicationError) as err:
        world.run(world.acts.dispatch_document_v2, params(case))
    assert not err.value.non_retryable and err.value.type == "DispatchRetry"
    assert world.inbox.to(to) == []


def test_a_mailbox_refused_for_good_falls_back_to_the_next_channel_the_service_allows(world: World) -> None:
    to = f"gone-{uuid.uuid4().hex[:6]}@example.org"
    world.inbox.refuse.add(to)
    case = open_case(world, delivery="email", email_to=to)
    out = world.run(world.acts.dispatch_document_v2, params(case))
    assert [r.channel for r in out] == ["email", "portal"]
    email_row, portal_row = dispatch_rows(world, case)
    assert email_row.status == "failed" and "550" in (email_row.last_error or "")
    assert (portal_row.status, portal_row.rule) == ("sent", "catalog_default")
    assert "email: failed" in (portal_row.decision or "")
    assert world.run(world.acts.dispatch_document_v2, params(case)) == out  # and it stays that way


def test_a_document_of_another_case_is_refused_for_good(world: World) -> None:
    a, b = open_case(world), open_case(world)
    with pytest.raises(ApplicationError) as err:
        world.run(world.acts.dispatch_document_v2, c.DispatchParams(case_id=a.case_id, dokument_id=b.document_id))
    assert err.value.non_retryable
    assert dispatch_rows(world, a) == []


# --------------------------------------------------------------------------- webhook


def test_webhook_is_retried_until_accepted_and_delivered_exactly_once_signed(world: World) -> None:
    world.receiver.calls.clear()
    world.receiver.script = [500, 500]
    case = open_case(world, delivery="webhook", notify_url=world.receiver.url)
    for attempt in (1, 2):
        with pytest.raises(ApplicationError) as err:
            world.run(world.acts.dispatch_document_v2, params(case))
        assert not err.value.non_retryable
        (row,) = dispatch_rows(world, case)
        assert (row.status, row.attempts, row.last_error) == ("queued", attempt, "RuntimeError: webhook answered HTTP 500")
    out = world.run(world.acts.dispatch_document_v2, params(case))
    world.run(world.acts.dispatch_document_v2, params(case))  # retried after success: nothing more is sent
    assert [r.channel for r in out] == ["webhook"]
    assert len(world.receiver.calls) == 3
    (accepted,) = world.receiver.accepted()
    _, headers, body, _ = accepted
    assert verify_signature(SECRET, headers["x-aktenlauf-signature"], body, tolerance_s=300)
    assert not verify_signature("another-secret", headers["x-aktenlauf-signature"], body, tolerance_s=300)
    event = json.loads(body)
    (row,) = dispatch_rows(world, case)
    assert event == {"event": "document.issued", "case_id": case.case_id, "aktenzeichen": case.aktenzeichen,
                     "document_id": case.document_id, "kind": "Urkunde", "sha256": row.sha256,
                     "download_url": f"{world.settings.public_base_url}/v1/documents/{case.document_id}/content"}
    assert headers["x-aktenlauf-delivery"] == row.id
    assert (row.status, row.attempts) == ("sent", 3)


def test_webhook_unreachable_counts_the_attempt_and_gives_up_after_the_limit(world: World) -> None:
    case = open_case(world, delivery="webhook", notify_url=f"http://127.0.0.1:{devstack.free_port()}/gone")
    for _ in range(world.acts.max_attempts - 1):
        with pytest.raises(ApplicationError):
            world.run(world.acts.dispatch_document_v2, params(case))
    out = world.run(world.acts.dispatch_document_v2, params(case))  # the last attempt: the portal takes over
    assert [r.channel for r in out] == ["webhook", "portal"]
    hook = dispatch_rows(world, case)[0]
    assert (hook.status, hook.attempts) == ("failed", world.acts.max_attempts)
    assert "unreachable" in (hook.last_error or "")


@workflow.defn(name="DispatchRetryProbe")
class DispatchRetryProbe:
    """Calls the dispatch activity with the case workflow's retry policy (1 s, x2, max 1 min)."""

    @workflow.run
    async def run(self, p: c.DispatchParams) -> list[c.DispatchResult]:
        return await workflow.execute_activity(
            c.ACT_DISPATCH_V2, p, result_type=list[c.DispatchResult], start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                     maximum_interval=timedelta(minutes=1)))


async def test_temporal_retries_the_webhook_with_back_off_until_it_is_accepted(world: World, temporal_server) -> None:  # type: ignore[no-untyped-def]
    world.receiver.calls.clear()
    world.receiver.script = [500, 503]
    case = open_case(world, delivery="webhook", notify_url=world.receiver.url)
    client = await Client.connect(temporal_server.address, namespace=temporal_server.namespace)
    queue = f"dispatch-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        async with Worker(client, task_queue=queue, workflows=[DispatchRetryProbe],
                          activities=[world.acts.dispatch_document_v2], activity_executor=pool,
                          workflow_runner=UnsandboxedWorkflowRunner()):
            out = await client.execute_workflow(DispatchRetryProbe.run, params(case), id=f"probe-{case.case_id}",
                                                task_queue=queue, execution_timeout=timedelta(seconds=60))
    assert [r.channel for r in out] == ["webhook"]
    times = [call[3] for call in world.receiver.calls]
    assert [call[0] for call in world.receiver.calls] == [500, 503, 200]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9  # 1 s, then 2 s
    assert dispatch_rows(world, case)[0].attempts == 3


# --------------------------------------------------------------------------- post and the print batch


def _text_positions(page) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    found: list[tuple[str, float, float]] = []

    def visit(text, cm, tm, font, size):  # type: ignore[no-untyped-def]
        if text.strip():
            found.append((text.strip(), tm[4] * cm[0] + cm[4], tm[5] * cm[3] + cm[5]))

    page.extract_text(visitor_text=visit)
    return found


async def test_post_letters_are_printed_in_one_batch_with_the_address_in_the_window(world: World) -> None:
    today = dt.datetime.now(BERLIN).date()
    cases = [open_case(world, delivery="post", name=f"Erika Muster {i}", address=[f"Hauptstraße {i}", "12345 Musterstadt"])
             for i in (1, 2)]
    for case in cases:
        out = world.run(world.acts.dispatch_document_v2, params(case))
        assert [r.channel for r in out] == ["post"]
        (row,) = dispatch_rows(world, case)
        assert (row.status, row.batch_date) == ("queued", today)
    mailroom = world.stack.token("post-1", "mailroom")
    async with world.stack.client() as http:
        listed = (await http.get("/v1/admin/print-batches", headers=mailroom)).json()["items"]
        day = next(d for d in listed if d["batch_date"] == today.isoformat())
        assert (day["letters"], day["queued"], day["printed"]) == (2, 2, 0)
        assert (await http.get(f"/v1/admin/print-batches/{today}", headers=world.stack.token("c", "clerk", "buergerbuero"))).status_code == 403

        r = await http.get(f"/v1/admin/print-batches/{today}", headers=mailroom)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf" and r.headers["x-reprint"] == "false"
        reader = PdfReader(io.BytesIO(r.content))
        assert len(reader.pages) == 2 * (1 + 2)  # per letter: the cover and the certificate's two pages
        for i, case in enumerate(cases):
            cover, *pages = reader.pages[3 * i: 3 * i + 3]
            texts = _text_positions(cover)
            name = next((x, y) for t, x, y in texts if t == f"Erika Muster {i + 1}")
            street = next((x, y) for t, x, y in texts if t == f"Hauptstraße {i + 1}")
            for x, y in (name, street):  # inside the window: 20..105 mm from the left, 45..90 mm from the top
                assert 20 * mm <= x <= 105 * mm
                assert 297 * mm - 90 * mm <= y <= 297 * mm - 45 * mm
            assert case.aktenzeichen in cover.extract_text()
            assert [p.extract_text() for p in pages] == [p.extract_text() for p in PdfReader(io.BytesIO(case.pdf)).pages]
        for case in cases:
            (row,) = dispatch_rows(world, case)
            assert row.status == "sent" and row.printed_at is not None

        # a letter queued now goes to the next day's batch; printing today again gives the same bytes
        late = open_case(world, delivery="post")
        world.run(world.acts.dispatch_document_v2, params(late))
        assert dispatch_rows(world, late)[0].batch_date == today + dt.timedelta(days=1)
        again = await http.get(f"/v1/admin/print-batches/{today}", headers=world.stack.token("admin-1", "admin"))
        assert again.status_code == 200 and again.content == r.content and again.headers["x-reprint"] == "true"
        listed = (await http.get("/v1/admin/print-batches", headers=mailroom)).json()["items"]
        day = next(d for d in listed if d["batch_date"] == today.isoformat())
        assert (day["letters"], day["queued"], day["printed"], day["pages"]) == (2, 0, 2, 6)

        missing = await http.get("/v1/admin/print-batches/2001-01-01", headers=mailroom)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert (await http.get("/v1/admin/print-batches/yesterday", headers=mailroom)).status_code == 422
        assert (await http.get("/v1/admin/print-batches?limit=0", headers=mailroom)).status_code == 422
    with transaction(world.acts.sessions) as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == today.isoformat())))
        printed = list(s.scalars(select(AuditEvent.case_id).where(AuditEvent.action == "document.dispatch.printed")))
    assert actions == ["printbatch.print", "printbatch.reprint"]
    assert {case.case_id for case in cases} <= set(printed)


# --------------------------------------------------------------------------- notifications


def notification(case: Case, audience: str, subject: str = "Zahlung fehlgeschlagen",
                 text: str = "Bitte zahlen Sie die Gebühr erneut.") -> c.Notification:
    return c.Notification(case_id=case.case_id, key=f"{case.case_id}:notify:{uuid.uuid4().hex[:8]}",
                          audience=audience, subject=subject, text=text)


async def test_applicant_notification_goes_by_email_once_and_shows_in_the_case_messages(world: World) -> None:
    to = f"notify-{uuid.uuid4().hex[:6]}@example.org"
    case = open_case(world, email_to=to)
    n = notification(case, "applicant")
    world.run(world.acts.notify, n)
    world.run(world.acts.notify, n)  # retried: not sent again
    (msg,) = world.inbox.to(to)
    assert msg["Message-ID"] == message_id_for(n.key, "musterstadt.example")
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Bitte zahlen Sie die Gebühr erneut." in body and case.aktenzeichen in body
    async with world.stack.client() as http:
        r = await http.get(f"/v1/cases/{case.case_id}/messages", headers=world.stack.token("portal-1", "integrator"))
        assert r.status_code == 200, r.text
        (item,) = r.json()["items"]
        assert (item["subject"], item["channel"]) == ("Zahlung fehlgeschlagen", "email")
        assert set(item) == {"id", "subject", "text", "channel", "created_at"}  # nothing internal
        other = await http.get(f"/v1/cases/{case.case_id}/messages", headers=world.stack.token("portal-2", "integrator"))
        assert other.status_code == 404


async def test_applicant_notification_is_kept_for_the_portal_when_the_service_has_no_email(world: World) -> None:
    to = f"hund-{uuid.uuid4().hex[:6]}@example.org"
    case = open_case(world, service=HUND, email_to=to, department="steueramt")
    world.run(world.acts.notify, notification(case, "applicant", subject="Erinnerung"))
    assert world.inbox.to(to) == []
    async with world.stack.client() as http:
        r = await http.get(f"/v1/cases/{case.case_id}/messages?limit=1", headers=world.stack.token("portal-1", "integrator"))
        assert [(m["subject"], m["channel"]) for m in r.json()["items"]] == [("Erinnerung", "portal")]
        assert (await http.get(f"/v1/cases/{case.case_id}/messages?limit=1000",
                               headers=world.stack.token("portal-1", "integrator"))).status_code == 422


async def test_staff_notifications_are_seen_by_their_department_and_escalations_by_the_team_lead(world: World) -> None:
    case = open_case(world, department="ordnungsamt")
    with transaction(world.acts.sessions) as s:
        s.get(Vorgang, case.case_id).assignee = "clerk-7"  # type: ignore[union-attr]
    for audience in ("department", "assignee", "teamlead"):
        n = notification(case, audience, subject=f"Frist läuft ab ({audience})")
        world.run(world.acts.notify, n)
        world.run(world.acts.notify, n)  # exactly once
    with transaction(world.acts.sessions) as s:
        rows = list(s.scalars(select(Notification).where(Notification.vorgang_id == case.case_id)))
    assert sorted(r.audience for r in rows) == ["assignee", "department", "teamlead"]
    assert {r.department for r in rows} == {"ordnungsamt"}
    assert next(r.recipient for r in rows if r.audience == "assignee") == "clerk-7"

    clerk = world.stack.token("clerk-7", "clerk", "ordnungsamt")
    lead = world.stack.token("lead-1", "teamlead", "ordnungsamt")
    stranger = world.stack.token("clerk-9", "clerk", "standesamt")
    url = f"/v1/notifications?case_id={case.case_id}"
    async with world.stack.client() as http:
        assert {n["audience"] for n in (await http.get(url, headers=clerk)).json()["items"]} == {"department", "assignee"}
        assert {n["audience"] for n in (await http.get(url, headers=lead)).json()["items"]} == {
            "department", "assignee", "teamlead"}
        assert (await http.get(url, headers=stranger)).json()["items"] == []
        mine = (await http.get(url + "&mine=true", headers=clerk)).json()["items"]
        assert [n["audience"] for n in mine] == ["assignee"]
        nid = mine[0]["id"]
        assert (await http.post(f"/v1/notifications/{nid}/read", headers=stranger)).status_code == 404
        read = await http.post(f"/v1/notifications/{nid}/read", headers=clerk)
        assert read.status_code == 200 and read.json()["read_by"] == "clerk-7"
        unread = (await http.get(url + "&unread=true", headers=lead)).json()["items"]
        assert nid not in {n["id"] for n in unread} and len(unread) == 2
        page = (await http.get(url + "&limit=1", headers=lead)).json()
        rest = (await http.get(url + f"&limit=5&cursor={page['next_cursor']}", headers=lead)).json()
        assert len(page["items"]) == 1 and len(rest["items"]) == 2 and rest["next_cursor"] is None
        assert (await http.get("/v1/notifications", headers=world.stack.token("portal-1", "integrator"))).status_code == 403
        assert (await http.get("/v1/notifications?audience=boss", headers=lead)).status_code == 422
    with transaction(world.acts.sessions) as s:
        assert s.scalar(select(AuditEvent.actor).where(AuditEvent.action == "notification.read",
                                                       AuditEvent.target_id == str(nid))) == "clerk-7"


def test_a_notification_for_an_unknown_audience_is_refused_for_good(world: World) -> None:
    case = open_case(world)
    with pytest.raises(ApplicationError) as err:
        world.run(world.acts.notify, notification(case, "everyone"))
    assert err.value.non_retryable
