"""Inputs, outputs and messages of the disposal (Aussonderung) round: plain dataclasses.

No personal data travels here: Akten are named by id and Aktenzeichen only.
Add fields with defaults only, so running rounds keep decoding their history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workflows.contracts import Actor

WORKFLOW = "DisposalWorkflow"
# the schedule's id is a setting (DISPOSAL_SCHEDULE_ID, default "aktenlauf-disposal"); its rounds are
# named "<schedule id>-round-<scheduled time>"

ACT_OFFER = "offer_due_akten"
ACT_EXECUTE = "execute_disposal"
ACT_END_ROUND = "end_disposal_round"

ACTIONS = ("archive", "destroy", "keep")
CONFIRMING_ROLES = ("archivist", "admin")

# error types of the execute activity (non-retryable), turned into update rejections
ERR_LEGAL_HOLD = "legal-hold"
ERR_NOT_OFFERED = "not-offered"
ERR_ARCHIVE_UNAVAILABLE = "archive-unavailable"


@dataclass
class DisposalInput:
    confirm_days: int = 30  # how long the round waits for confirmations; then undecided offers wait for the next
    limit: int = 1000  # Akten offered per round at most
    as_of: str | None = None  # ISO date the retention is measured against; default: the round's start date


@dataclass
class OfferParams:
    round_id: str
    as_of: str
    limit: int = 1000


@dataclass
class OfferedAkte:
    akte_id: str
    aktenzeichen: str
    file_plan: str
    retention_until: str | None
    proposed_action: str  # archive | destroy | appraise
    rule: str


@dataclass
class DisposalDecision:
    actor: Actor
    akte_id: str
    action: str  # archive | destroy | keep
    reason: str | None = None
    retain_until: str | None = None  # keep: the new retention end (ISO date); default one year on


@dataclass
class ExecuteParams:
    round_id: str
    akte_id: str
    action: str
    actor: str
    role: str
    confirmed_at: str
    reason: str | None = None
    retain_until: str | None = None


@dataclass
class DisposalOutcome:
    akte_id: str
    aktenzeichen: str
    action: str  # archived | destroyed | kept
    record_id: str | None = None
    documents: int = 0
    versions: int = 0
    bytes_removed: int = 0
    objects_removed: int = 0
    objects_kept_shared: int = 0
    archive_key: str | None = None
    archive_sha256: str | None = None
    retention_until: str | None = None


@dataclass
class Withdrawal:
    akte_id: str
    reason: str = "legal hold"


@dataclass
class EndRoundParams:
    round_id: str
    akte_ids: list[str] = field(default_factory=list)


@dataclass
class RoundStatus:
    round_id: str
    as_of: str | None
    accepting: bool
    deadline: str | None
    offers: list[OfferedAkte] = field(default_factory=list)
    decisions: dict[str, str] = field(default_factory=dict)  # akte id → executing|archived|destroyed|kept|held|withdrawn


@dataclass
class DisposalResult:
    round_id: str
    offered: int = 0
    archived: int = 0
    destroyed: int = 0
    kept: int = 0
    held: int = 0
    pending: list[str] = field(default_factory=list)  # Akten still offered, for the next round
