"""Request and response models of API v1."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

#: Free text that reaches the case workflow's activities must not hold NUL characters: PostgreSQL text cannot
#: store them, and an activity that cannot store its input retries for ever (the fuzzer found a deadline
#: extension whose reason did that). Refused here with 422 instead.
NO_NUL = r"^[^\x00]*$"
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=4000, pattern=NO_NUL)]


class ApplicantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ShortText
    address_lines: list[ShortText] = Field(default_factory=list, max_length=6)
    email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="The applicant's id at the integrator (e.g. service account id)")
    delivery: Literal["portal", "email", "post", "webhook"] | None = Field(
        default=None, description="How the applicant wants the certificate/notice: used when the service allows "
                                  "that channel (GET /v1/services: dispatch_channels), otherwise the service's default")


class CaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_key: Annotated[str, StringConstraints(pattern=r"^\d{14}$")] | None = Field(
        description="LeiKa-style key from GET /v1/services; null = unknown, goes to mailroom triage")
    applicant: ApplicantIn
    form: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)], LongText] = Field(
        default_factory=dict, max_length=100)
    notify_url: Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s\x00]+$")] | None = Field(
        default=None, description="Where the integrator receives signed webhooks (dispatch channel webhook)")

    @field_validator("form")
    @classmethod
    def _form_size(cls, v: dict[str, str]) -> dict[str, str]:
        if sum(len(k) + len(x) for k, x in v.items()) > 64_000:
            raise ValueError("form data is larger than 64 kB")
        return v


class CaseCreated(BaseModel):
    case_id: str
    aktenzeichen: str
    status: str
    #: the citizen's key to GET /v1/status/{aktenzeichen} (header X-Access-Code) and to withdraw
    access_code: str | None = None


class TimelineOut(BaseModel):
    at: dt.datetime
    step: str
    status: str
    message: str


class DocumentOut(BaseModel):
    id: str
    kind: str
    title: str
    filename: str
    content_type: str
    sha256: str
    size: int
    created_at: dt.datetime
    download_url: str


class VersionOut(BaseModel):
    number: int
    sha256: str
    size: int
    role: str
    created_by: str
    created_at: dt.datetime
    reason: str | None
    download_url: str


class DocumentDetail(BaseModel):
    id: str
    kind: str
    title: str
    filename: str
    content_type: str
    channel: str
    sender: str | None
    received_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime
    case_id: str | None
    aktenzeichen: str | None
    public: bool
    verification_code: str | None
    versions: list[VersionOut]


class CaseOut(BaseModel):
    case_id: str
    aktenzeichen: str
    #: the applicant's reference number (Vorgangsnummer), printed on our letters; the mailroom
    #: recognises it on letters that come back
    applicant_ref: str | None = None
    service_key: str | None
    service_name: str | None
    department: str | None
    status: str
    current_step: str
    due_on: dt.date | None
    fee_cents: int
    payment_status: str | None
    payment_url: str | None
    decision: str | None
    decision_reason: str | None
    created_at: dt.datetime
    closed_at: dt.datetime | None
    timeline: list[TimelineOut]
    documents: list[DocumentOut]


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_key: Annotated[str, StringConstraints(pattern=r"^\d{14}$")]


class CaseRouted(BaseModel):
    case_id: str
    service_key: str
    department: str
    status: str


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject", "request_documents", "forward"] = Field(
        description="approve | reject (reason required; a rejection notice is issued) | request_documents "
                    "(Nachforderung: `missing` lists what the citizen must send, within `days`; the case waits and the "
                    "processing deadline pauses) | forward (to `department`, reason required)")
    reason: Annotated[str, StringConstraints(max_length=4000, strip_whitespace=True, pattern=NO_NUL)] | None = None
    missing: list[Annotated[str, StringConstraints(min_length=1, max_length=300, strip_whitespace=True, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=20)
    days: int = Field(default=0, ge=0, le=180, description="time for the missing documents; 0 = the service's default")
    department: Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z0-9_-]+$")] | None = None


class CoSignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agree: bool
    reason: Annotated[str, StringConstraints(max_length=4000, strip_whitespace=True, pattern=NO_NUL)] = ""


class DeadlineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(ge=1, le=365)
    reason: Annotated[str, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True, pattern=NO_NUL)]


class DeadlineOut(BaseModel):
    case_id: str
    deadline_at: dt.datetime


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(max_length=2000, strip_whitespace=True, pattern=NO_NUL)] = ""


class WithdrawOut(BaseModel):
    case_id: str
    status: str


class DecisionOut(BaseModel):
    decision: str
    status: str
    payment_url: str | None = None


class TaskOut(BaseModel):
    case_id: str
    aktenzeichen: str
    service_key: str | None
    service_name: str | None
    department: str | None
    status: str
    due_on: dt.date | None
    created_at: dt.datetime


class DocumentCreated(BaseModel):
    document_id: str
    sha256: str
    size: int


class SuggestionOut(BaseModel):
    service_key: str
    department: str
    score: float
    reasons: list[str]


class MailDocumentOut(BaseModel):
    id: str
    title: str
    filename: str
    content_type: str
    download_url: str


class MailItemOut(BaseModel):
    id: str
    received_at: dt.datetime
    channel: str
    filename: str
    content_type: str
    sha256: str
    size: int
    status: str
    reason_code: str | None
    reason: str | None
    pages: int | None
    blank_pages: list[int]
    detected_reference: str | None
    case_id: str | None
    text_preview: str | None
    document_id: str | None
    #: a re-delivered file (same SHA-256, same channel): the letter that was processed
    duplicate_of: str | None = None
    #: the scanned stack this letter was split from (separator pages or a clerk's split), or the
    #: letter it was merged into
    parent_id: str | None = None
    #: the department it was routed to (status "routed")
    department: str | None = None
    #: how it found its case: aktenzeichen, aktenzeichen_near, qr, applicant_ref, classified, mailroom
    match_method: str | None = None
    #: channel provenance (watched-folder file, e-mail Message-ID and subject, split pages)
    origin: dict[str, str] = Field(default_factory=dict)
    #: the classifier's best services for it, best first
    suggestions: list[SuggestionOut] = Field(default_factory=list)
    #: every document the letter brought (only in the single-item view)
    documents: list[MailDocumentOut] | None = None


class MailAccepted(BaseModel):
    items: list[MailItemOut]


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    aktenzeichen: Annotated[str, StringConstraints(pattern=r"^\d{2}\.\d{2}-\d{4}-\d{6}$")]


class AdminCaseOut(BaseModel):
    case_id: str
    workflow_status: str
    status: str | None
    service_key: str | None
    department: str | None
    step: str | None
    aktenzeichen: str | None
    started_at: dt.datetime | None
    closed_at: dt.datetime | None
