"""Dispatch through whole cases: the certificate goes out by e-mail (a real SMTP server started
here) or by signed webhook to the integrator (a receiver that fails twice first), chosen by the
applicant's `delivery`, exactly once. The servers of tests/integration/test_dispatch.py are reused."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from activities.payment import verify_signature
from aktenlauf import devstack
from eakte.models import Dispatch, TimelineEvent
from tests.conftest import Stack, running_stack
from tests.integration.helpers import MELDE, application, pay, wait_for_case
from tests.integration.test_dispatch import Inbox, Receiver

SECRET = "integrator-webhook-secret-for-the-e2e-test-0123456789"
GEWERBE = "99050012104000"  # four eyes, fee after the decision, dispatch_channels [portal, email, webhook]
PORTAL = ("portal-dispatch", "integrator")


@dataclass
class MailStack:
    stack: Stack
    inbox: Inbox
    receiver: Receiver


@pytest.fixture(scope="module")
def mailstack(database_url: str, temporal_server, s3_server) -> Iterator[MailStack]:  # type: ignore[no-untyped-def]
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=devstack.free_port())
    smtp.start()
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with running_stack(database_url, temporal_server, s3_server, smtp_host="127.0.0.1", smtp_port=smtp.port,
                           smtp_starttls=False, smtp_from="Stadt Musterstadt <post@musterstadt.example>",
                           integrator_webhook_secret=SECRET) as st:
            yield MailStack(stack=st, inbox=inbox, receiver=receiver)
    finally:
        receiver.shutdown()
        smtp.stop()


async def _waiting_for_decision(http, st: Stack, body: dict) -> str:  # type: ignore[no-untyped-def]
    """Submit ``body`` as the portal; the case id once the case waits for its decision."""
    portal = st.token(*PORTAL)
    r = await http.post("/v1/cases", json=body, headers=portal)
    assert r.status_code == 201, r.text
    cid = r.json()["case_id"]
    await wait_for_case(http, cid, portal, status="awaiting_decision")
    return cid


def _dispatches(st: Stack, case_id: str) -> list[tuple[str, str]]:
    with st.sessions()() as s:
        return [(x.channel, x.status) for x in s.scalars(select(Dispatch).where(Dispatch.vorgang_id == case_id))]


def _timeline(stack: Stack, case_id: str) -> list[str]:
    with stack.sessions()() as s:
        return list(s.scalars(select(TimelineEvent.message).where(TimelineEvent.vorgang_id == case_id)))


async def test_the_applicant_chooses_email_and_gets_the_certificate_once(mailstack: MailStack) -> None:
    st = mailstack.stack
    portal = st.token(*PORTAL)
    body = application(MELDE, name="Mia Mailbox")
    body["applicant"].update(email="mia@example.org", delivery="email")
    async with st.client() as http:
        cid = await _waiting_for_decision(http, st, body)
        d = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"},
                            headers=st.token("clerk-mail", "clerk", "buergerbuero"))
        await pay(http, d.json()["payment_url"])
        done = await wait_for_case(http, cid, portal, status="completed")
    cert = next(doc for doc in done["documents"] if doc["kind"] == "Urkunde")
    mails = mailstack.inbox.to("mia@example.org")
    assert len(mails) == 1, [m["Subject"] for m in mails]
    attachments = [p for p in mails[0].iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(attachments) == 1
    assert hashlib.sha256(attachments[0].get_content()).hexdigest() == cert["sha256"]
    assert done["aktenzeichen"] in str(mails[0]["Subject"]) + mails[0].get_body(("plain",)).get_content()
    assert _dispatches(st, cid) == [("email", "sent")]
    assert any("per E-Mail" in m for m in _timeline(st, cid))


async def test_the_webhook_to_the_integrator_is_retried_until_it_is_accepted_once(mailstack: MailStack) -> None:
    st, receiver = mailstack.stack, mailstack.receiver
    portal = st.token(*PORTAL)
    body = application(GEWERBE, name="Walter Webhook")
    body["applicant"]["delivery"] = "webhook"
    body["notify_url"] = receiver.url
    receiver.script[:] = [500, 500]  # the integrator's endpoint fails twice, then accepts
    async with st.client() as http:
        cid = await _waiting_for_decision(http, st, body)
        first = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"},
                                headers=st.token("gewerbe-1", "clerk", "gewerbeamt"))
        assert first.json()["status"] == "awaiting_cosign", first.text
        second = await http.post(f"/v1/cases/{cid}/cosign", json={"agree": True},
                                 headers=st.token("gewerbe-2", "clerk", "gewerbeamt"))
        assert second.status_code == 200, second.text
        await pay(http, second.json()["payment_url"])
        done = await wait_for_case(http, cid, portal, status="completed", timeout=90)
    cert = next(doc for doc in done["documents"] if doc["kind"] == "Urkunde")
    calls = [c for c in receiver.calls if json.loads(c[2]).get("case_id") == cid]
    assert [c[0] for c in calls] == [500, 500, 200]
    code, headers, raw, _ = calls[-1]
    assert verify_signature(SECRET, headers["x-aktenlauf-signature"], raw, tolerance_s=300)
    event = json.loads(raw)
    assert event["event"] == "document.issued" and event["document_id"] == cert["id"]
    assert event["sha256"] == cert["sha256"]
    assert _dispatches(st, cid) == [("webhook", "sent")]
