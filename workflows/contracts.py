"""Inputs, outputs and messages of the workflows: plain dataclasses, no I/O on import.

Documents never travel here: only references (bucket, key, sha256). Personal data
(applicant) does travel in CaseInput and is encrypted by the payload codec.
Add fields with defaults only, so running workflows keep decoding their history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from intake.service import ServiceEntry

# Status values a case moves through (the read model and the search attribute use them).
RECEIVED = "received"
TRIAGE = "triage"
AWAITING_DECISION = "awaiting_decision"
APPROVED = "approved"
AWAITING_PAYMENT = "awaiting_payment"
ISSUING = "issuing"
COMPLETED = "completed"
REJECTED = "rejected"
CANCELLED = "cancelled"
# casework (issue 5)
AWAITING_DOCUMENTS = "awaiting_documents"  # Nachforderung: waiting for the citizen; the deadline pauses
AWAITING_COSIGN = "awaiting_cosign"  # Vier-Augen-Prinzip: a second clerk must co-sign
WITHDRAWN = "withdrawn"  # the applicant withdrew before the decision
TERMINATED = "terminated"  # an admin terminated the workflow (read model only)
FINAL_STATUSES = (COMPLETED, REJECTED, CANCELLED, WITHDRAWN, TERMINATED)

# Activity names (workflows call activities by name: no heavy imports in the sandbox).
ACT_OPEN_CASE = "open_case"
ACT_RECORD_PROGRESS = "record_progress"
ACT_FILE_DOCUMENT = "file_document"
ACT_REQUEST_PAYMENT = "request_payment"
ACT_CANCEL_PAYMENT = "cancel_payment"
ACT_ISSUE_DOCUMENT = "issue_document"
ACT_DISPATCH = "dispatch_document"
ACT_ARCHIVE = "archive_case"
ACT_REGISTER_MAIL = "register_mail_item"
ACT_OCR_MAIL = "ocr_mail_item"
ACT_MATCH_REFERENCE = "match_mail_reference"
ACT_FILE_LETTER = "file_letter"
ACT_MAIL_STATUS = "set_mail_status"
ACT_MATCH_REFERENCE_V2 = "match_mail_reference_v2"  # Aktenzeichen (also near), QR code, applicant reference
ACT_SCAN_CODES = "scan_mail_codes"  # OCR queue: barcodes/QR per page, separator pages
ACT_SPLIT_MAIL = "split_mail_item"
ACT_CLASSIFY_MAIL = "classify_mail_item"
ACT_RECORD_TRIAGE = "record_mail_triage"
ACT_CASE_FROM_LETTER = "prepare_case_from_letter"
ACT_AWAIT_CASE_OPEN = "await_case_open"
ACT_MERGE_MAIL = "merge_mail_items"
# casework (issue 5)
ACT_DISPATCH_V2 = "dispatch_document_v2"  # channel chosen from catalog + applicant; returns Dispatched
ACT_NOTIFY = "notify"  # a message without a document: reminders, escalations, "payment failed"
ACT_POLL_PAYMENT = "poll_payment"  # status poll: the fallback when a callback is lost
ACT_REFUND_PAYMENT = "refund_payment"

# Error types raised to clients by update validators.
ERR_IDEMPOTENCY = "IdempotencyConflict"
ERR_FORBIDDEN = "Forbidden"
ERR_STATE = "InvalidState"
ERR_INVALID = "InvalidInput"


@dataclass
class Actor:
    sub: str
    roles: list[str] = field(default_factory=list)
    departments: list[str] = field(default_factory=list)


@dataclass
class Applicant:
    name: str
    address_lines: list[str] = field(default_factory=list)
    email: str | None = None
    id: str | None = None
    #: the applicant's choice of dispatch channel (portal | email | post | webhook); the catalog decides
    #: whether the service allows it
    delivery: str | None = None


@dataclass
class DocumentRef:
    bucket: str
    key: str
    sha256: str
    size: int
    filename: str
    content_type: str


@dataclass
class CaseInput:
    case_id: str
    integrator: str
    fingerprint: str
    applicant: Applicant
    service: ServiceEntry | None = None
    requested_service_key: str | None = None
    form: dict[str, str] = field(default_factory=dict)
    channel: str = "api"
    #: the integrator's URL for signed status/document webhooks (dispatch channel "webhook")
    notify_url: str | None = None
    #: how long to wait for the payment provider's callback before asking it (status poll), seconds;
    #: 0 = the workflow's default. Set by the API from PAYMENT_POLL_SECONDS.
    payment_poll_s: int = 0


@dataclass
class CaseResult:
    status: str
    aktenzeichen: str
    issued_document_id: str | None = None


@dataclass
class Registration:
    fingerprint: str


@dataclass
class Registered:
    case_id: str
    aktenzeichen: str
    status: str


@dataclass
class Decision:
    actor: Actor
    approve: bool
    reason: str | None = None
    #: casework v2: approve | reject | request_documents | forward (empty: from ``approve``)
    action: str = ""
    #: request_documents: what is missing; the citizen is told
    missing: list[str] = field(default_factory=list)
    #: request_documents: days the citizen gets (0: the service's documents_days)
    days: int = 0
    #: forward: the department the case goes to
    department: str = ""


@dataclass
class CoSign:
    actor: Actor
    agree: bool
    reason: str = ""


@dataclass
class ExtendDeadline:
    actor: Actor
    days: int
    reason: str


@dataclass
class Withdrawal:
    actor: Actor
    reason: str = ""


@dataclass
class AdminCancel:
    actor: Actor
    reason: str


@dataclass
class Forward:
    actor: Actor
    department: str
    reason: str


@dataclass
class DecisionOutcome:
    decision: str
    status: str
    payment_url: str | None = None


@dataclass
class RouteCase:
    actor: Actor
    service: ServiceEntry


@dataclass
class AddDocument:
    actor: Actor
    ref: DocumentRef
    kind: str = "Nachweis"
    title: str = ""
    upload_id: str = ""
    supersedes: str = ""  # document id: the upload is a new Version of that document
    reason: str = ""  # why (required for a new version)


@dataclass
class PaymentEvent:
    payment_id: str
    event_id: str
    status: str  # paid | declined | expired | refunded (the provider's callback or our status poll)
    amount_cents: int


@dataclass
class LetterFiled:
    mail_item_id: str
    dokument_id: str


@dataclass
class HistoryEntry:
    at: str
    step: str
    status: str
    message: str


@dataclass
class CaseStatus:
    case_id: str
    aktenzeichen: str | None
    status: str
    step: str
    service_key: str | None
    department: str | None
    payment_url: str | None = None
    decision: str | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    deadline_at: str | None = None  # ISO; None while paused
    deadline_remaining_s: int | None = None
    waiting_for: list[str] = field(default_factory=list)
    first_decision_by: str | None = None


# -- activity parameters ---------------------------------------------------------------

@dataclass
class OpenCaseParams:
    case_id: str
    integrator: str
    fingerprint: str
    applicant: Applicant
    service: ServiceEntry | None
    requested_service_key: str | None
    form: dict[str, str]
    channel: str
    year: int
    notify_url: str | None = None


@dataclass
class OpenedCase:
    aktenzeichen: str
    akte_id: str
    application_document_id: str


@dataclass
class ProgressParams:
    case_id: str
    key: str
    step: str
    status: str
    message: str
    public: bool = True
    department: str | None = None
    due_on: str | None = None
    decision: str | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    payment_status: str | None = None
    service_key: str | None = None
    service_name: str | None = None
    fee_cents: int | None = None
    retention_years: int | None = None
    # casework v2
    deadline_at: str | None = None  # ISO datetime of the processing deadline ("" = paused)
    escalated: bool | None = None
    waiting_for: list[str] | None = None
    waiting_until: str | None = None  # ISO date: the Nachforderung's deadline
    first_decision_by: str | None = None
    cosigned_by: str | None = None
    actor: str | None = None  # who caused this step (forward, extension, withdrawal, cancel)
    reason: str | None = None  # why (forward, extension, withdrawal, cancel, exemption)
    #: an audit action to write with the event (e.g. case.forward), by ``actor``
    audit_action: str | None = None


@dataclass
class FileDocumentParams:
    case_id: str
    key: str
    ref: DocumentRef
    kind: str
    title: str
    created_by: str
    channel: str = "api"
    supersedes: str = ""
    reason: str = ""


@dataclass
class PaymentParams:
    case_id: str
    aktenzeichen: str
    amount_cents: int
    purpose: str
    #: 0 for the first request; a new attempt after a declined/expired payment counts up
    #: (the provider's Idempotency-Key is derived from it)
    attempt: int = 0


@dataclass
class PaymentRequested:
    payment_id: str
    payment_url: str


@dataclass
class PaymentPolled:
    payment_id: str
    status: str  # open | paid | declined | expired | cancelled | refunded
    amount_cents: int


@dataclass
class RefundParams:
    case_id: str
    payment_id: str
    amount_cents: int
    reason: str


@dataclass
class Refunded:
    refund_id: str
    status: str  # refunded | pending


@dataclass
class DispatchResult:
    """What dispatch_document_v2 did: one dispatch per channel used."""

    channel: str
    dispatch_id: str


@dataclass
class Notification:
    case_id: str
    #: unique per message of this case (the workflow derives it): sent at most once
    key: str
    #: applicant | department | assignee | teamlead
    audience: str
    subject: str
    text: str


@dataclass
class IssueParams:
    case_id: str
    #: certificate | rejection | nachforderung (request for missing documents) | cancellation | withdrawal
    kind: str
    reason: str | None = None
    issued_on: str = ""  # ISO date, from workflow time: retries render identical bytes
    #: nachforderung: the missing documents; the deadline for them (ISO date)
    items: list[str] = field(default_factory=list)
    due_on: str = ""
    #: distinguishes several notices of one kind in a case (the second Nachforderung): part of the key
    seq: int = 0
    #: fee lines, exemption, refund etc. to print
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class DispatchParams:
    case_id: str
    dokument_id: str
    channel: str = "portal"


@dataclass
class ArchiveParams:
    case_id: str
    final_status: str


@dataclass
class MailInput:
    item_id: str
    ref: DocumentRef
    channel: str
    submitted_by: str
    ocr_task_queue: str = "aktenlauf-ocr"
    received_at: str = ""  # ISO 8601, when the letter reached the mailroom (set at intake)
    #: channel-specific provenance (watched-folder path, e-mail Message-ID, ...); no personal data
    origin: dict[str, str] = field(default_factory=dict)
    #: a letter split off a scanned stack (separator pages) or by a mailroom clerk
    parent_id: str | None = None


@dataclass
class AssignLetter:
    actor: Actor
    aktenzeichen: str


@dataclass
class MailStatus:
    item_id: str
    status: str
    reason_code: str | None = None
    reason: str | None = None
    case_id: str | None = None
    aktenzeichen: str | None = None
    department: str | None = None


@dataclass
class OcrSummary:
    status: str  # processed | failed
    code: str | None = None
    reason: str | None = None
    pages: int = 0
    empty: bool = False
    blank_pages: list[int] = field(default_factory=list)


@dataclass
class MatchedReference:
    case_id: str | None
    aktenzeichen: str | None
    #: aktenzeichen | aktenzeichen_near | qr | applicant_ref | mailroom
    method: str | None = None


@dataclass
class ScannedCodes:
    """Barcodes/QR codes per page (1-based page number as text) and separator pages."""

    barcodes: dict[str, list[str]] = field(default_factory=dict)
    separators: list[int] = field(default_factory=list)
    #: page ranges (first, last; 1-based, inclusive) of the letters in a stack
    parts: list[list[int]] = field(default_factory=list)


@dataclass
class MatchParams:
    item_id: str
    aktenzeichen: str | None = None
    codes: ScannedCodes | None = None


@dataclass
class Suggestion:
    service_key: str  # "" when only a department is suggested
    department: str
    score: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class Classified:
    suggestions: list[Suggestion] = field(default_factory=list)
    #: the best suggestion is above the catalog's auto-case threshold
    confident: bool = False


@dataclass
class SplitParams:
    item_id: str
    #: page ranges (first, last; 1-based, inclusive), one per new letter
    parts: list[list[int]]
    actor: str
    reason: str


@dataclass
class SplitResult:
    children: list[MailInput] = field(default_factory=list)


@dataclass
class CaseFromLetter:
    """What the mail workflow needs to start a case for a letter."""

    case_input: CaseInput | None = None
    case_id: str | None = None


@dataclass
class CaseFromLetterParams:
    item_id: str
    service_key: str
    actor: str


@dataclass
class TriageRecord:
    """A triage action, for the audit trail and the classifier's learning."""

    item_id: str
    action: str  # route | new_case | file | split | merge | close
    #: unique per action of this letter (its workflow counts them): a retry records nothing twice
    key: str
    actor: str
    role: str
    service_key: str | None = None
    department: str | None = None
    case_id: str | None = None
    reason: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class RouteLetter:
    actor: Actor
    department: str
    reason: str = ""


@dataclass
class NewCaseFromLetter:
    actor: Actor
    service_key: str


@dataclass
class SplitLetter:
    actor: Actor
    parts: list[list[int]]
    reason: str = ""


@dataclass
class MergeLetters:
    actor: Actor
    item_ids: list[str]
    reason: str = ""


@dataclass
class MergeParams:
    item_id: str
    others: list[str]
    actor: str


@dataclass
class CloseLetter:
    actor: Actor
    reason: str


@dataclass
class MergedInto:
    item_id: str
    actor: str


@dataclass
class FileLetterParams:
    item_id: str
    case_id: str
    filed_by: str


@dataclass
class MailStatusParams:
    item_id: str
    status: str
    reason_code: str | None = None
    reason: str | None = None
    case_id: str | None = None
    department: str | None = None
    match_method: str | None = None
