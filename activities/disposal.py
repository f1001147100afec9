"""Disposal (Aussonderung) activities: offer due Akten, execute an archivist's decision, end a
round. Idempotent: the offer is keyed by the round id, the execution by round id + Akte id (the
DisposalRecord of the Akte is the marker that the rows are gone; the object removal re-runs
until every released object is removed)."""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aktenlauf.errors import AktenlaufError
from eakte import retention
from eakte.aktenplan import Aktenplan
from eakte.blobstore import BlobStore
from eakte.db import transaction
from workflows import disposal_contracts as d

log = structlog.get_logger(__name__)
_ERROR_TYPES = {retention.LegalHoldActive.code: d.ERR_LEGAL_HOLD, retention.NotOffered.code: d.ERR_NOT_OFFERED}


def _bind(akte_id: str | None = None) -> None:
    info = activity.info()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(workflow_id=info.workflow_id, activity=info.activity_type,
                                           attempt=info.attempt, akte_id=akte_id)


def _permanent(exc: AktenlaufError) -> ApplicationError:
    return ApplicationError(exc.detail, type=_ERROR_TYPES.get(exc.code, exc.code), non_retryable=True)


class DisposalActivities:
    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, plan: Aktenplan) -> None:
        self.sessions = sessions
        self.store = store
        self.plan = plan

    @activity.defn(name=d.ACT_OFFER)
    def offer_due_akten(self, p: d.OfferParams) -> list[d.OfferedAkte]:
        _bind()
        with transaction(self.sessions) as s:
            offers = retention.offer_due(s, self.plan, as_of=dt.date.fromisoformat(p.as_of), round_id=p.round_id,
                                         limit=p.limit)
        log.info("disposal.offered", count=len(offers), as_of=p.as_of)
        return [d.OfferedAkte(akte_id=o.akte_id, aktenzeichen=o.aktenzeichen, file_plan=o.file_plan,
                              retention_until=o.retention_until.isoformat() if o.retention_until else None,
                              proposed_action=o.proposed_action, rule=o.rule) for o in offers]

    @activity.defn(name=d.ACT_END_ROUND)
    def end_disposal_round(self, p: d.EndRoundParams) -> int:
        _bind()
        with transaction(self.sessions) as s:
            return retention.end_round(s, p.round_id, p.akte_ids)

    @activity.defn(name=d.ACT_EXECUTE)
    def execute_disposal(self, p: d.ExecuteParams) -> d.DisposalOutcome:
        _bind(p.akte_id)
        try:
            if p.action == "keep":
                assert p.retain_until is not None
                with transaction(self.sessions) as s:
                    out = retention.keep(s, p.akte_id, round_id=p.round_id,
                                         retain_until=dt.date.fromisoformat(p.retain_until),
                                         reason=p.reason or "", actor=p.actor, role=p.role)
            else:
                out = self._dispose(p)
        except AktenlaufError as exc:
            if exc.retryable:
                raise
            raise _permanent(exc) from exc
        log.info("disposal.executed", action=out.action, aktenzeichen=out.aktenzeichen,
                 objects_removed=out.objects_removed, bytes_removed=out.bytes_removed)
        return d.DisposalOutcome(
            akte_id=out.akte_id, aktenzeichen=out.aktenzeichen, action=out.action, record_id=out.record_id,
            documents=out.documents, versions=out.versions, bytes_removed=out.bytes_removed,
            objects_removed=out.objects_removed, objects_kept_shared=out.objects_kept_shared,
            archive_key=out.archive_key, archive_sha256=out.archive_sha256,
            retention_until=out.retention_until.isoformat() if out.retention_until else None)

    def _dispose(self, p: d.ExecuteParams) -> retention.Disposal:
        with transaction(self.sessions) as s:
            already = retention.done(s, p.akte_id) is not None
        if not already:
            package: retention.ArchivePackage | None = None
            if p.action == "archive":
                package = self._hand_over(p)
            try:
                with transaction(self.sessions) as s:  # rows first (legal hold re-checked under a row lock) ...
                    retention.dispose(
                        s, self.plan, akte_id=p.akte_id, round_id=p.round_id,
                        action=retention.ARCHIVED if p.action == "archive" else retention.DESTROYED,
                        actor=p.actor, role=p.role, reason=p.reason,
                        confirmed_at=dt.datetime.fromisoformat(p.confirmed_at),
                        archive_key=package.key if package else None,
                        archive_sha256=package.sha256 if package else None)
            except (retention.LegalHoldActive, retention.NotOffered):
                if package is not None:  # a hold placed while the package was written: nothing is handed over
                    self.store.remove(package.key)
                raise
        with transaction(self.sessions) as s:  # ... then the objects no remaining record refers to
            return retention.remove_released_objects(s, self.store, p.akte_id)

    def _hand_over(self, p: d.ExecuteParams) -> retention.ArchivePackage:
        with transaction(self.sessions) as s:
            retention.check_disposable(s, p.akte_id, p.round_id)
            try:
                return retention.hand_over_to_archive(s, self.store, self.plan, p.akte_id, round_id=p.round_id,
                                                      exported_by=p.actor, role=p.role)
            except (ImportError, NotImplementedError) as exc:
                raise ApplicationError("the hand-over to the archive (xdomea export) is not available in this "
                                       "installation", type=d.ERR_ARCHIVE_UNAVAILABLE, non_retryable=True) from exc
