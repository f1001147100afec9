"""Dispatch of certificates and notices to the applicant over four channels, exactly once, and
notifications (messages without a document) to the applicant or to staff.

Channels (the catalog's ``dispatch_channels`` lists those a service allows, default first):

* **portal**: the document is public to the applicant in GET /v1/cases/{id}; dispatch records it.
* **email**: SMTP (smtplib), the document as PDF attachment.
* **post**: queued for the day's print batch (eakte/printbatch.py; GET /v1/admin/print-batches/{date}).
* **webhook**: a signed ``document.issued`` POST to the integrator's ``notify_url``.

Which one (``choose_channel``, a pure function): the workflow's explicit channel, else the
applicant's choice when the service allows it and it is feasible, else the first feasible one
in the catalog's order, else the portal (always feasible). The rule that decided and the reasons
are kept on the dispatch row.

Exactly once. A document is dispatched once per case: one ``Dispatch`` row per (case, document,
channel) key, and a call finds the rows an earlier attempt made and carries on from them. States:

    queued ──claim──▶ sending ──SMTP accepted / HTTP 2xx──▶ sent
       ▲                 │
       └── error ────────┘   (retryable: the activity fails, Temporal retries with back-off)
    failed                   (permanent refusal, or DISPATCH_MAX_ATTEMPTS used up: the next
                              feasible channel takes over, in the same activity call)

``post`` rows stay ``queued`` until their batch is printed; ``portal`` rows are ``sent`` at once.
Once ``sent`` is committed a retried activity never sends again.

The remaining window: the process dies after the SMTP server accepted the message (or the
integrator answered 2xx) and before ``sent`` is committed. The row is then still ``sending``;
the retry waits until the claim's lease has run out (so it never races a slow first attempt
that is still talking to the server) and sends again. That second copy carries the **same
Message-ID** (derived from the dispatch key: ``<sha256(key)[:32].dispatch@domain>``) and the
same ``X-Aktenlauf-Dispatch`` header, so mail systems and the applicant's client can recognise
it as the same message; a webhook repeat carries the same ``X-Aktenlauf-Delivery`` id and the
same body for the integrator to de-duplicate on. At-least-once in that window, exactly-once
everywhere else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import smtplib
import socket
import ssl
import time
import zoneinfo
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import httpx
import structlog
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.payment import sign
from aktenlauf.errors import NotFound
from eakte import records
from eakte.blobstore import BlobStore
from eakte.db import transaction
from eakte.models import Dispatch, Dokument, Notification, Version, Vorgang, utcnow
from eakte.printbatch import batch_date_for
from intake.catalog import Catalog
from workflows import contracts as c

log = structlog.get_logger(__name__)

CHANNELS = ("portal", "email", "post", "webhook")
AUDIENCES = ("applicant", "department", "assignee", "teamlead")
ERR_DISPATCH_RETRY = "DispatchRetry"  # retryable: SMTP/HTTP failure, or an earlier attempt still holds the claim
ERR_DISPATCH_INVALID = "DispatchInvalid"  # non-retryable: unknown case/document/audience


# --------------------------------------------------------------------------- channel decision


@dataclass(frozen=True)
class Reach:
    """What the case offers for each channel (all that ``choose_channel`` looks at)."""

    email: bool = False  # the applicant gave an e-mail address
    address: bool = False  # the applicant gave postal address lines
    notify_url: bool = False  # the integrator gave a notify_url
    pdf: bool = True  # the document is a PDF (e-mail attachment and print need one)
    smtp: bool = True  # an SMTP server is configured


def infeasible(channel: str, reach: Reach) -> str | None:
    """Why ``channel`` cannot be used for this case and document, or None when it can."""
    if channel == "portal":
        return None
    if channel == "email":
        if not reach.smtp:
            return "no SMTP server configured"
        if not reach.email:
            return "the applicant gave no e-mail address"
        return None if reach.pdf else "the document is not a PDF"
    if channel == "post":
        if not reach.address:
            return "the applicant gave no postal address"
        return None if reach.pdf else "the document is not a PDF"
    if channel == "webhook":
        return None if reach.notify_url else "the integrator gave no notify_url"
    return "unknown channel"


@dataclass(frozen=True)
class ChannelDecision:
    channel: str
    #: workflow | applicant_choice | catalog_default | catalog_fallback | portal_fallback
    rule: str
    #: why other candidates were passed over, in order ("email: the applicant gave no e-mail address")
    skipped: tuple[str, ...] = ()

    def describe(self) -> str:
        why = f" ({'; '.join(self.skipped)})" if self.skipped else ""
        return f"{self.channel} by {self.rule}{why}"


def choose_channel(allowed: Sequence[str], requested: str | None, reach: Reach, *, explicit: str = "",
                   exclude: Collection[str] = ()) -> ChannelDecision:
    """The channel for a dispatch, and the rule that chose it.

    1. ``explicit`` (the workflow asked for this channel), when feasible;
    2. the applicant's choice (``requested``), when the service allows it and it is feasible;
    3. the first feasible channel in the catalog's order (``allowed``, default first);
    4. the portal, which is always feasible (the document is public to the applicant).

    ``exclude``: channels that failed for good for this document (never chosen again).
    """
    skipped: list[str] = []

    def usable(ch: str) -> bool:
        if ch in exclude:
            skipped.append(f"{ch}: failed")
            return False
        why = infeasible(ch, reach)
        if why:
            skipped.append(f"{ch}: {why}")
        return why is None

    if explicit:
        if explicit not in CHANNELS:
            skipped.append(f"{explicit}: unknown channel")
        elif usable(explicit):
            return ChannelDecision(explicit, "workflow", tuple(skipped))
    if requested:
        if requested not in allowed:
            skipped.append(f"{requested}: not offered for this service")
        elif usable(requested):
            return ChannelDecision(requested, "applicant_choice", tuple(skipped))
    for i, ch in enumerate(allowed):
        if ch in (explicit, requested) or ch not in CHANNELS:
            continue  # already judged above
        if usable(ch):  # the service's default, or a later one because those before it could not be used
            return ChannelDecision(ch, "catalog_default" if i == 0 else "catalog_fallback", tuple(skipped))
    return ChannelDecision("portal", "portal_fallback", tuple(skipped))


# --------------------------------------------------------------------------- transports


class PermanentFailure(Exception):
    """The recipient's side refused for good (unknown mailbox, 5xx): retrying will not help."""


class SmtpMailer:
    """Sends one message over SMTP. 5xx refusals are permanent, everything else (connection,
    timeouts, 4xx) is worth retrying."""

    def __init__(self, host: str, port: int, sender: str, *, starttls: bool = True, user: str = "",
                 password: SecretStr | None = None, timeout: float = 20.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.user, self.password, self.timeout = starttls, user, password or SecretStr(""), timeout

    @property
    def domain(self) -> str:
        addr = parseaddr(self.sender)[1]
        return addr.rpartition("@")[2] or "aktenlauf.invalid"

    def send(self, msg: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password.get_secret_value())
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused: {_smtp_reason(exc)}") from exc
            raise
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            if exc.smtp_code >= 500:
                raise PermanentFailure(f"message refused ({exc.smtp_code})") from exc
            raise


def _smtp_reason(exc: smtplib.SMTPRecipientsRefused) -> str:
    return "; ".join(f"{code} {msg.decode(errors='replace')[:100]}" for code, msg in exc.recipients.values())


class WebhookSender:
    """POSTs signed JSON to an integrator (``X-Aktenlauf-Signature: t=<unix>,v1=<hex>`` over
    ``"<t>.<body>"`` with INTEGRATOR_WEBHOOK_SECRET, as activities/payment.py ``sign``)."""

    def __init__(self, secret: str, *, timeout: float = 10.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)  # shared: see PaymentProvider

    def post(self, url: str, body: bytes, *, event: str, delivery_id: str) -> None:
        headers = {"Content-Type": "application/json", "X-Aktenlauf-Event": event,
                   "X-Aktenlauf-Delivery": delivery_id,
                   "X-Aktenlauf-Signature": sign(self.secret, int(time.time()), body),
                   "User-Agent": "aktenlauf-dispatch/1"}
        resp = self._http.post(url, content=body, headers=headers)
        if not 200 <= resp.status_code < 300:
            raise RuntimeError(f"webhook answered HTTP {resp.status_code}")


def message_id_for(key: str, domain: str) -> str:
    """A Message-ID that is the same for every send of one dispatch or notification."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}.dispatch@{domain}>"


# --------------------------------------------------------------------------- activities


@dataclass(frozen=True)
class _Content:
    """What an e-mail or webhook dispatch says about the case and document (read with the plan)."""

    case_id: str
    aktenzeichen: str
    applicant_ref: str | None
    name: str
    dokument_id: str
    kind: str
    title: str
    filename: str
    object_key: str
    sha256: str


@dataclass
class _Plan:
    """One dispatch row as an attempt sees it (a snapshot, no ORM object outside a transaction)."""

    id: str
    key: str
    channel: str
    status: str
    recipient: dict[str, Any]
    sha256: str | None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (channel, dispatch id) given up
    content: _Content | None = None  # email and webhook rows still to be sent


class DispatchActivities:
    """``dispatch_document_v2`` and ``notify``. The transports are injected (worker.py builds
    them from settings): ``mailer`` None means no SMTP server is configured."""

    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, catalog: Catalog, *,
                 mailer: SmtpMailer | None, webhook: WebhookSender, public_base_url: str,
                 max_attempts: int = 30, claim_lease_s: float = 90.0, timezone: str = "Europe/Berlin") -> None:
        self.sessions = sessions
        self.store = store
        self.catalog = catalog
        self.mailer = mailer
        self.webhook = webhook
        self.public_base_url = public_base_url.rstrip("/")
        self.max_attempts = max_attempts
        # longer than one SMTP/HTTP attempt can take (the workflow's start-to-close timeout): a
        # 'sending' claim younger than this may belong to an attempt that is still running
        self.claim_lease = dt.timedelta(seconds=claim_lease_s)
        self.tz = zoneinfo.ZoneInfo(timezone)

    def _bind(self, case_id: str) -> None:
        info = activity.info()
        structlog.contextvars.clear_contextvars()  # pool threads are reused across activities
        structlog.contextvars.bind_contextvars(case_id=case_id, workflow_id=info.workflow_id,
                                               activity=info.activity_type, attempt=info.attempt)

    # -- dispatch -------------------------------------------------------------------------

    @activity.defn(name=c.ACT_DISPATCH_V2)
    def dispatch_document_v2(self, p: c.DispatchParams) -> list[c.DispatchResult]:
        """Send the document over the chosen channel, once. Returns the channels used in order:
        the last one delivered (or, for post, queued it); any before it failed for good."""
        self._bind(p.case_id)
        for _ in range(len(CHANNELS) + 1):  # each round either finishes or gives a channel up for good
            plan = self._plan(p)
            if plan.status == "sent" or plan.channel in ("portal", "post"):  # post: the print batch sends it
                return self._results(plan)
            if self._deliver(p, plan):
                return self._results(plan)
        raise ApplicationError("no channel left to dispatch on", type=ERR_DISPATCH_RETRY)  # not reached

    @staticmethod
    def _results(plan: _Plan) -> list[c.DispatchResult]:
        return [c.DispatchResult(channel=ch, dispatch_id=i) for ch, i in plan.failed] + [
            c.DispatchResult(channel=plan.channel, dispatch_id=plan.id)]

    def _reach(self, v: Vorgang, doc: Dokument) -> Reach:
        applicant = v.applicant or {}
        return Reach(email=bool(applicant.get("email")), address=bool(applicant.get("address_lines")),
                     notify_url=bool(v.notify_url), pdf=doc.content_type == "application/pdf",
                     smtp=self.mailer is not None)

    def _allowed(self, v: Vorgang) -> list[str]:
        service = self.catalog.service(v.service_key) if v.service_key else None
        return list(service.dispatch_channels) if service is not None else ["portal"]

    def _plan(self, p: c.DispatchParams) -> _Plan:
        """The dispatch this call carries on: the rows earlier attempts made, or a new one."""
        with transaction(self.sessions) as s:
            try:
                v = records.get_case(s, p.case_id)
            except NotFound as exc:
                raise ApplicationError(str(exc), type=ERR_DISPATCH_INVALID, non_retryable=True) from exc
            doc = s.get(Dokument, p.dokument_id)
            if doc is None or doc.vorgang_id != v.id:
                raise ApplicationError(f"document {p.dokument_id} is not part of case {p.case_id}",
                                       type=ERR_DISPATCH_INVALID, non_retryable=True)
            rows = list(s.scalars(select(Dispatch).where(Dispatch.vorgang_id == v.id, Dispatch.dokument_id == doc.id)
                                  .order_by(Dispatch.at, Dispatch.id)))
            failed = [(r.channel, r.id) for r in rows if r.status == "failed"]
            current = next((r for r in rows if r.status != "failed"), None)
            if current is None:
                current = self._new_dispatch(s, p, v, doc, exclude={ch for ch, _ in failed})
            content = None
            if current.channel in ("email", "webhook") and current.status != "sent":
                version = _version(s, doc.id, current.sha256)
                content = _Content(case_id=v.id, aktenzeichen=v.aktenzeichen, applicant_ref=v.applicant_ref,
                                   name=str((v.applicant or {}).get("name", "")), dokument_id=doc.id, kind=doc.kind,
                                   title=doc.title, filename=doc.filename, object_key=version.object_key,
                                   sha256=version.sha256)
            return _Plan(id=current.id, key=current.key, channel=current.channel, status=current.status,
                         recipient=dict(current.recipient or {}), sha256=current.sha256, failed=failed,
                         content=content)

    def _new_dispatch(self, s: Session, p: c.DispatchParams, v: Vorgang, doc: Dokument, *,
                      exclude: set[str]) -> Dispatch:
        applicant = v.applicant or {}
        decision = choose_channel(self._allowed(v), applicant.get("delivery"), self._reach(v, doc),
                                  explicit=p.channel, exclude=exclude)
        ch = decision.channel
        version = records.latest_version(s, doc.id)
        recipient: dict[str, Any] = {}
        if ch == "email":
            recipient = {"email": applicant["email"]}
        elif ch == "post":
            recipient = {"name": str(applicant.get("name", "")),
                         "address_lines": [str(x) for x in applicant.get("address_lines", [])]}
        elif ch == "webhook":
            recipient = {"url": v.notify_url}
        now = utcnow()
        key = f"{p.case_id}:dispatch:{doc.id}:{ch}"
        row = Dispatch(key=key, vorgang_id=v.id, dokument_id=doc.id, channel=ch, rule=decision.rule,
                       decision=decision.describe(), recipient=recipient, sha256=version.sha256, attempts=0,
                       status="sent" if ch == "portal" else "queued", sent_at=now if ch == "portal" else None,
                       batch_date=batch_date_for(s, now.astimezone(self.tz).date()) if ch == "post" else None,
                       message_id=message_id_for(key, self.mailer.domain) if ch == "email" and self.mailer else None)
        if ch == "portal" and not doc.public:
            log.warning("dispatch.document_not_public", dokument_id=doc.id)  # the applicant would not see it
        try:
            with s.begin_nested():
                s.add(row)
                s.flush()
        except IntegrityError:  # a concurrent attempt made it first: carry on with that one
            existing = s.scalar(select(Dispatch).where(Dispatch.key == key))
            assert existing is not None
            return existing
        records.audit(s, actor="system", role="system", action="document.dispatch", target_type="document",
                      target_id=doc.id, case_id=v.id,
                      details={"channel": ch, "rule": decision.rule, "dispatch_id": row.id,
                               **({"batch_date": row.batch_date.isoformat()} if row.batch_date else {})})
        log.info("dispatch.planned", channel=ch, rule=decision.rule, decision=decision.describe(), dispatch_id=row.id)
        return row

    def _claim(self, model: type[Dispatch] | type[Notification], row_id: object) -> str:
        """Take the row into 'sending' (one more attempt) and return 'sending'; or the status of a
        row that is done (sent, failed). A retryable error while an earlier attempt's claim is
        still within its lease."""
        with transaction(self.sessions) as s:
            row = s.get(model, row_id, with_for_update=True)
            assert row is not None
            if row.status in ("sent", "failed"):
                return row.status
            now = utcnow()
            if row.status == "sending" and row.claimed_at is not None and now - row.claimed_at < self.claim_lease:
                raise ApplicationError("an earlier attempt may still be sending; trying again later",
                                       type=ERR_DISPATCH_RETRY)
            row.status, row.claimed_at, row.attempts = "sending", now, row.attempts + 1
            return row.status

    def _settle(self, model: type[Dispatch] | type[Notification], row_id: object, error: Exception | None, *,
                permanent: bool = False) -> str:
        """Record an attempt's outcome; returns the new status (sent | queued | failed)."""
        with transaction(self.sessions) as s:
            row = s.get(model, row_id, with_for_update=True)
            assert row is not None
            if error is None:
                row.status, row.sent_at, row.claimed_at = "sent", utcnow(), None
            else:
                row.last_error = f"{type(error).__name__}: {error}"[:2000]
                given_up = permanent or row.attempts >= self.max_attempts
                row.status, row.claimed_at = ("failed" if given_up else "queued"), None
            return row.status

    def _deliver(self, p: c.DispatchParams, plan: _Plan) -> bool:
        """One attempt on an email or webhook dispatch. True: sent. False: given up for good (the
        next round picks another channel). Raises a retryable error otherwise."""
        claimed = self._claim(Dispatch, plan.id)
        if claimed != "sending":
            return claimed == "sent"
        try:
            if plan.channel == "email":
                self._send_email(plan)
            else:
                self._send_webhook(plan)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row first
            permanent = isinstance(exc, PermanentFailure)
            status = self._settle(Dispatch, plan.id, exc, permanent=permanent)
            log.warning("dispatch.attempt_failed", channel=plan.channel, dispatch_id=plan.id, status=status,
                        error=str(exc)[:300])
            if status == "failed":
                with transaction(self.sessions) as s:
                    records.audit(s, actor="system", role="system", action="document.dispatch.failed",
                                  target_type="document", target_id=p.dokument_id, case_id=p.case_id,
                                  details={"channel": plan.channel, "dispatch_id": plan.id})
                return False
            raise ApplicationError(f"{plan.channel} dispatch failed, will retry: {exc}"[:500],
                                   type=ERR_DISPATCH_RETRY) from exc
        self._settle(Dispatch, plan.id, None)
        log.info("dispatch.sent", channel=plan.channel, dispatch_id=plan.id)
        return True

    def _send_email(self, plan: _Plan) -> None:
        if self.mailer is None:  # SMTP was configured when the channel was chosen, and is no longer
            raise PermanentFailure("no SMTP server configured")
        d = plan.content
        assert d is not None
        pdf = self.store.get_bytes(d.object_key, d.sha256)  # verified against its hash
        az, ref = d.aktenzeichen, d.applicant_ref
        msg = self._message(key=plan.key, to=plan.recipient["email"], subject=f"{d.title} – Aktenzeichen {az}",
                            body=(f"Guten Tag {d.name},\n\nim Anhang erhalten Sie: {d.title}.\n\n"
                                  f"Aktenzeichen: {az}\n" + (f"Ihre Vorgangsnummer: {ref}\n" if ref else "")
                                  + self._closing()))
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=d.filename or "dokument.pdf")
        msg["X-Aktenlauf-Dispatch"] = plan.id
        self.mailer.send(msg)

    def _closing(self) -> str:
        return (f"\nMit freundlichen Grüßen\n{self.catalog.authority_name}\n\n"
                "Diese Nachricht wurde automatisch erstellt.\n")

    def _message(self, *, key: str, to: str, subject: str, body: str) -> EmailMessage:
        if self.mailer is None:  # SMTP was configured when the channel was chosen, and is no longer
            raise PermanentFailure("no SMTP server configured")
        msg = EmailMessage()
        msg["From"] = self.mailer.sender
        msg["To"] = Address(addr_spec=to)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        msg["Message-ID"] = message_id_for(key, self.mailer.domain)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        return msg

    def _send_webhook(self, plan: _Plan) -> None:
        d = plan.content
        assert d is not None
        payload = {"event": "document.issued", "case_id": d.case_id, "aktenzeichen": d.aktenzeichen,
                   "document_id": d.dokument_id, "kind": d.kind,
                   "download_url": f"{self.public_base_url}/v1/documents/{d.dokument_id}/content",
                   "sha256": d.sha256}
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        try:
            self.webhook.post(plan.recipient["url"], body, event="document.issued", delivery_id=plan.id)
        except (httpx.HTTPError, socket.error) as exc:
            raise RuntimeError(f"webhook unreachable: {type(exc).__name__}") from exc

    # -- notifications -----------------------------------------------------------------------

    @activity.defn(name=c.ACT_NOTIFY)
    def notify(self, n: c.Notification) -> None:
        """Record a message once (``key``) and deliver it: e-mail to the applicant when possible,
        else kept for the portal; staff audiences land in the staff inbox."""
        self._bind(n.case_id)
        if n.audience not in AUDIENCES:
            raise ApplicationError(f"unknown audience {n.audience!r}", type=ERR_DISPATCH_INVALID, non_retryable=True)
        row_id, channel, status = self._notification(n)
        if channel != "email" or status in ("sent", "failed"):
            return
        if self._claim(Notification, row_id) != "sending":
            return
        try:
            self._send_notification_email(row_id)
        except Exception as exc:  # noqa: BLE001 - recorded on the row first
            status = self._settle(Notification, row_id, exc, permanent=isinstance(exc, PermanentFailure))
            log.warning("notification.attempt_failed", notification_id=row_id, status=status, error=str(exc)[:300])
            if status == "failed":  # given up: the applicant finds it in the portal instead
                with transaction(self.sessions) as s:
                    row = s.get(Notification, row_id)
                    assert row is not None
                    row.channel, row.status, row.sent_at = "portal", "sent", utcnow()
                return
            raise ApplicationError(f"notification e-mail failed, will retry: {exc}"[:500],
                                   type=ERR_DISPATCH_RETRY) from exc
        self._settle(Notification, row_id, None)
        log.info("notification.sent", notification_id=row_id, channel="email")

    def _notification(self, n: c.Notification) -> tuple[int, str, str]:
        with transaction(self.sessions) as s:
            existing = s.scalar(select(Notification).where(Notification.key == n.key))
            if existing is not None:
                return existing.id, existing.channel, existing.status
            try:
                v = records.get_case(s, n.case_id)
            except NotFound as exc:
                raise ApplicationError(str(exc), type=ERR_DISPATCH_INVALID, non_retryable=True) from exc
            if n.audience == "applicant":
                by_email = (self.mailer is not None and bool((v.applicant or {}).get("email"))
                            and "email" in self._allowed(v))
                channel = "email" if by_email else "portal"
            else:
                channel = "staff"
            row = Notification(key=n.key, vorgang_id=v.id, department=v.department, audience=n.audience,
                               recipient=_assignee(v) if n.audience == "assignee" else None,
                               subject=n.subject[:300], text=n.text, channel=channel, attempts=0,
                               status="queued" if channel == "email" else "sent",
                               sent_at=None if channel == "email" else utcnow(),
                               message_id=message_id_for(n.key, self.mailer.domain)
                               if channel == "email" and self.mailer else None)
            try:
                with s.begin_nested():
                    s.add(row)
                    s.flush()
            except IntegrityError:
                existing = s.scalar(select(Notification).where(Notification.key == n.key))
                assert existing is not None
                return existing.id, existing.channel, existing.status
            log.info("notification.recorded", notification_id=row.id, audience=n.audience, channel=channel)
            return row.id, row.channel, row.status

    def _send_notification_email(self, row_id: int) -> None:
        with transaction(self.sessions) as s:
            row = s.get(Notification, row_id)
            assert row is not None
            v = records.get_case(s, row.vorgang_id)
            applicant = v.applicant or {}
            # only what the applicant sent us (name) and what identifies the case: no staff names
            msg = self._message(key=row.key, to=str(applicant["email"]),
                                subject=f"{row.subject} – Aktenzeichen {v.aktenzeichen}",
                                body=(f"Guten Tag {applicant.get('name', '')},\n\n{row.text}\n\n"
                                      f"Aktenzeichen: {v.aktenzeichen}\n"
                                      + (f"Ihre Vorgangsnummer: {v.applicant_ref}\n" if v.applicant_ref else "")
                                      + self._closing()))
            msg["X-Aktenlauf-Notification"] = str(row.id)
        self.mailer.send(msg)  # type: ignore[union-attr]  # _message checked it


def _version(s: Session, dokument_id: str, sha256: str | None) -> Version:
    """The version a dispatch recorded (by its hash), else the document's latest."""
    version = s.scalar(select(Version).where(Version.dokument_id == dokument_id, Version.sha256 == sha256)
                       .order_by(Version.number.desc()).limit(1)) if sha256 else None
    return version or records.latest_version(s, dokument_id)


def _assignee(v: Vorgang) -> str | None:
    """The clerk a case is with: its assignee (claimed or assigned), else who decided first."""
    return v.assignee or v.first_decision_by or v.decided_by
