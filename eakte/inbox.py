"""The clerk's work lists: who works on a case (claim, unclaim, reassign), how urgent it is
(priority), who stands in for whom (Vertretung), and the citizen's access code.

Assignment is the department's own bookkeeping on the read model, not case state: the case
workflow does not care who of a department's clerks decides, only that a clerk of the
department does. So the API writes these columns directly — always with a check-and-set
``UPDATE ... WHERE`` so that two clerks claiming at the same moment never both win — and every
change is audited. The workflow stays the single writer of the case's status.

Rules:

* a clerk of the department claims an unassigned open case for themselves; a case already
  claimed by someone else answers 409 (``Conflict``);
* the assignee, their active deputy, or a team lead of the department releases a claim;
* only a team lead of the department assigns a case to someone (``reassign``) or sets its
  priority;
* a deputy acts for the principal only within the Vertretung's department and time window;
* before a clerk decides, co-signs, extends a deadline ... the API calls ``check_may_act``: a
  case claimed by someone else refuses, an unclaimed one becomes the acting clerk's.

Framework-free: no FastAPI, no Temporal, no os.environ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Select, and_, case, literal_column, or_, select, update
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from aktenlauf.errors import Conflict, Forbidden, InvalidInput, NotFound
from eakte import records
from eakte.access import Principal, can_decide_vorgang, can_read_vorgang, is_teamlead_of, visible_cases
from eakte.models import OPEN_INBOX_SQL, Akte, Vertretung, Vorgang

log = structlog.get_logger(__name__)

# The read model's status values, as workflows/contracts.py names them (eakte does not import
# the workflows package; tests/unit/test_access_code.py checks they agree).
AWAITING_DECISION = "awaiting_decision"
AWAITING_COSIGN = "awaiting_cosign"
AWAITING_DOCUMENTS = "awaiting_documents"
FINAL_STATUSES = ("completed", "rejected", "cancelled", "withdrawn", "terminated")

#: what a clerk's inbox can list; by default the cases waiting for a clerk (not for the citizen)
INBOX_STATUSES = (AWAITING_DECISION, AWAITING_COSIGN, AWAITING_DOCUMENTS)
DEFAULT_INBOX_STATUSES = (AWAITING_DECISION, AWAITING_COSIGN)
PRIORITIES = ("low", "normal", "high", "urgent")

#: a Vertretung covers at most this long (a longer absence is a reassignment, not a deputy)
MAX_DEPUTY_SPAN = dt.timedelta(days=366)


# --------------------------------------------------------------------------- deputies


def _active(now: dt.datetime) -> ColumnElement[bool]:
    return and_(Vertretung.revoked_at.is_(None), Vertretung.valid_from <= now, Vertretung.valid_until > now)


def principals_deputised(session: Session, deputy: str, now: dt.datetime,
                         department: str | None = None) -> list[tuple[str, str]]:
    """(principal, department) pairs ``deputy`` stands in for right now (in ``department`` only, if given)."""
    q = select(Vertretung.principal, Vertretung.department).where(Vertretung.deputy == deputy, _active(now))
    if department is not None:
        q = q.where(Vertretung.department == department)
    return [(r.principal, r.department) for r in session.execute(q)]


def is_active_deputy(session: Session, deputy: str, principal: str, department: str | None,
                     now: dt.datetime) -> bool:
    if department is None or deputy == principal:
        return False
    return session.scalar(select(Vertretung.id).where(
        Vertretung.deputy == deputy, Vertretung.principal == principal, Vertretung.department == department,
        _active(now)).limit(1)) is not None


def create_deputy(session: Session, p: Principal, *, principal: str, deputy: str, department: str,
                  valid_from: dt.datetime, valid_until: dt.datetime, reason: str | None,
                  now: dt.datetime) -> Vertretung:
    """Name ``deputy`` for ``principal`` in ``department``. A clerk names their own deputy (in a
    department of theirs); a team lead anyone's in their department. The deputy's membership of
    the department cannot be checked here (the identity provider knows it): a deputy who is not
    a clerk of the department simply never sees its cases."""
    if department not in p.departments:
        raise Forbidden(f"you are not a member of department {department!r}")
    if principal != p.sub and not is_teamlead_of(p, department):
        raise Forbidden("a clerk names deputies only for themselves; a team lead for anyone in the department")
    if deputy == principal:
        raise InvalidInput("the deputy must be another person than the principal")
    if valid_from.tzinfo is None or valid_until.tzinfo is None:
        raise InvalidInput("valid_from and valid_until need a time zone (e.g. 2026-12-01T00:00:00+01:00)")
    if valid_until <= valid_from:
        raise InvalidInput("valid_until must be after valid_from")
    if valid_until <= now:
        raise InvalidInput("valid_until lies in the past: the Vertretung would never apply")
    if valid_until - valid_from > MAX_DEPUTY_SPAN:
        raise InvalidInput("a Vertretung spans at most one year; reassign the cases for longer absences")
    row = Vertretung(principal=principal, deputy=deputy, department=department, valid_from=valid_from,
                     valid_until=valid_until, reason=reason, created_by=p.sub, created_at=now)
    session.add(row)
    session.flush()
    records.audit(session, actor=p.sub, role=p.primary_role, action="deputy.create", target_type="vertretung",
                  target_id=row.id, reason=reason,
                  details={"principal": principal, "deputy": deputy, "department": department,
                           "valid_from": valid_from.isoformat(), "valid_until": valid_until.isoformat()})
    log.info("deputy.created", vertretung_id=row.id, department=department)
    return row


def _deputy_visible(p: Principal) -> ColumnElement[bool]:
    """Own arrangements (as principal or deputy, or made by me) and, for team leads, their departments'."""
    own = or_(Vertretung.principal == p.sub, Vertretung.deputy == p.sub, Vertretung.created_by == p.sub)
    lead_of = [d for d in p.departments if is_teamlead_of(p, d)]
    return or_(own, Vertretung.department.in_(lead_of)) if lead_of else own


def list_deputies(session: Session, p: Principal, *, now: dt.datetime, include_past: bool = False,
                  department: str | None = None) -> list[Vertretung]:
    q = select(Vertretung).where(_deputy_visible(p))
    if not include_past:
        q = q.where(Vertretung.revoked_at.is_(None), Vertretung.valid_until > now)
    if department is not None:
        q = q.where(Vertretung.department == department)
    return list(session.scalars(q.order_by(Vertretung.valid_from, Vertretung.id).limit(500)))


def revoke_deputy(session: Session, p: Principal, vertretung_id: str, *, now: dt.datetime,
                  reason: str | None = None) -> Vertretung:
    """End an arrangement (the row stays, marked revoked). The principal, whoever made it, or a
    team lead of the department may; the deputy sees it but cannot end it."""
    row = session.scalar(select(Vertretung).where(Vertretung.id == vertretung_id, _deputy_visible(p)))
    if row is None:
        raise NotFound(f"Vertretung {vertretung_id} not found")
    if p.sub not in (row.principal, row.created_by) and not is_teamlead_of(p, row.department):
        raise Forbidden("only the principal, whoever named the deputy, or a team lead ends a Vertretung")
    if row.revoked_at is not None:
        return row  # DELETE is idempotent
    row.revoked_at, row.revoked_by = now, p.sub
    records.audit(session, actor=p.sub, role=p.primary_role, action="deputy.revoke", target_type="vertretung",
                  target_id=row.id, reason=reason,
                  details={"principal": row.principal, "deputy": row.deputy, "department": row.department})
    return row


# --------------------------------------------------------------------------- claims


def _load_workable(session: Session, p: Principal, case_id: str) -> Vorgang:
    """The case if ``p`` may work on it: 404 if they cannot see it (as if it did not exist),
    403 if they see it but are no clerk of its department (an admin, say)."""
    v = session.scalar(select(Vorgang).options(selectinload(Vorgang.akte)).where(Vorgang.id == case_id))
    if v is None or not can_read_vorgang(p, v):
        raise NotFound(f"case {case_id} not found")
    if not can_decide_vorgang(p, v):
        raise Forbidden("only clerks of the case's department work on it")
    return v


def _is_open(v: Vorgang) -> bool:
    return v.status not in FINAL_STATUSES and v.department is not None


@dataclass(frozen=True)
class _Claim:
    """A case's assignment as the database has it now (not as an object loaded earlier says)."""

    id: str
    status: str
    department: str | None
    assignee: str | None
    first_decision_by: str | None

    @property
    def holder(self) -> str | None:
        """Whose claim blocks others. While a decision waits for its co-signature, the first
        decider's claim does not: the second pair of eyes must be someone else."""
        if self.status == AWAITING_COSIGN and self.assignee is not None and self.assignee == self.first_decision_by:
            return None
        return self.assignee


def _claim_of(r: Any) -> _Claim:
    """From a row of those columns, or a Vorgang loaded in the current transaction."""
    return _Claim(id=r.id, status=r.status, department=r.department, assignee=r.assignee,
                  first_decision_by=r.first_decision_by)


def _current(session: Session, case_id: str) -> _Claim:
    r = session.execute(select(Vorgang.id, Vorgang.status, Vorgang.department, Vorgang.assignee,
                               Vorgang.first_decision_by).where(Vorgang.id == case_id)).one_or_none()
    if r is None:
        raise NotFound(f"case {case_id} not found")
    return _claim_of(r)


def _set_assignee(session: Session, v: Vorgang, to: str | None, now: dt.datetime, *,
                  expected: str | None, allow_cosign_takeover: bool = False) -> bool:
    """Check-and-set: change the assignee only if it still is ``expected`` (one UPDATE, so a
    concurrent claim either happened before — and this answers False — or waits for us).
    ``v`` may belong to this session or be detached (loaded by an earlier transaction)."""
    cond: ColumnElement[bool] = (Vorgang.assignee.is_(None) if expected is None else Vorgang.assignee == expected)
    if allow_cosign_takeover:  # the first decider's claim on a case waiting for the second signature
        cond = or_(cond, and_(Vorgang.status == AWAITING_COSIGN, Vorgang.assignee == Vorgang.first_decision_by))
    at = now if to is not None else None
    res = session.execute(update(Vorgang).where(Vorgang.id == v.id, cond, Vorgang.status.not_in(FINAL_STATUSES))
                          .values(assignee=to, assigned_at=at).execution_options(synchronize_session=False))
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(v, "assignee", to)
    set_committed_value(v, "assigned_at", at)
    return True


def _conflict_claimed(case_id: str, assignee: str | None) -> Conflict:
    return Conflict(f"case {case_id} is claimed by another clerk ({assignee}); ask them, their deputy or the "
                    "team lead to release or reassign it", assignee=assignee)


def claim(session: Session, p: Principal, case_id: str, now: dt.datetime) -> Vorgang:
    """Take the case: idempotent for the own claim, 409 if someone else holds it."""
    v = _load_workable(session, p, case_id)
    if not _is_open(v):
        raise Conflict(f"case {case_id} is {v.status}: nothing to work on")
    if v.status == AWAITING_COSIGN and v.first_decision_by == p.sub:
        raise Conflict("you decided this case first: the co-signature must come from another clerk")
    if v.assignee == p.sub:
        return v
    before = _claim_of(v)  # just loaded in this transaction; the check-and-set below catches a later claim
    if before.holder is not None or not _set_assignee(session, v, p.sub, now, expected=before.assignee,
                                                      allow_cosign_takeover=True):
        raise _conflict_claimed(case_id, _current(session, case_id).assignee)
    records.audit(session, actor=p.sub, role=p.primary_role, action="task.claim", target_type="case",
                  target_id=v.id, case_id=v.id, details={"before": before.assignee})
    log.info("task.claimed", case_id=v.id)
    return v


def unclaim(session: Session, p: Principal, case_id: str, now: dt.datetime, reason: str | None = None) -> Vorgang:
    """Give the case back to the department: the assignee, their active deputy, or a team lead."""
    v = _load_workable(session, p, case_id)
    holder = v.assignee
    if holder is None:
        raise Conflict(f"case {case_id} is not claimed by anyone")
    if not (holder == p.sub or is_teamlead_of(p, v.department)
            or is_active_deputy(session, p.sub, holder, v.department, now)):
        raise Forbidden("only the assignee, their deputy or a team lead of the department releases a claim")
    if not _set_assignee(session, v, None, now, expected=holder):
        raise Conflict(f"case {case_id} changed hands meanwhile; reload it")
    records.audit(session, actor=p.sub, role=p.primary_role, action="task.unclaim", target_type="case",
                  target_id=v.id, case_id=v.id, reason=reason, details={"before": holder})
    return v


def reassign(session: Session, p: Principal, case_id: str, to: str, reason: str, now: dt.datetime) -> Vorgang:
    """A team lead gives the case to ``to`` (any subject: the identity provider, not us, knows
    who is a clerk of the department; the audit trail keeps who was named, by whom, why)."""
    v = _load_workable(session, p, case_id)
    if not is_teamlead_of(p, v.department):
        raise Forbidden("only a team lead of the department reassigns cases")
    if not _is_open(v):
        raise Conflict(f"case {case_id} is {v.status}: nothing to reassign")
    if v.status == AWAITING_COSIGN and v.first_decision_by == to:
        raise Conflict(f"{to} decided this case first: the co-signature must come from another clerk")
    before = v.assignee
    if before != to and not _set_assignee(session, v, to, now, expected=before):
        raise Conflict(f"case {case_id} changed hands meanwhile; reload it")
    records.audit(session, actor=p.sub, role=p.primary_role, action="task.reassign", target_type="case",
                  target_id=v.id, case_id=v.id, reason=reason, details={"before": before, "after": to})
    return v


def set_priority(session: Session, p: Principal, case_id: str, priority: str, now: dt.datetime,
                 reason: str | None = None) -> Vorgang:
    if priority not in PRIORITIES:
        raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}")
    v = _load_workable(session, p, case_id)
    if not is_teamlead_of(p, v.department):
        raise Forbidden("only a team lead of the department sets priorities")
    if not _is_open(v):
        raise Conflict(f"case {case_id} is {v.status}: its priority no longer matters")
    before = v.priority
    v.priority = priority
    session.flush()
    records.audit(session, actor=p.sub, role=p.primary_role, action="task.priority", target_type="case",
                  target_id=v.id, case_id=v.id, reason=reason, details={"before": before, "after": priority})
    return v


def check_may_act(session: Session, principal: Principal, vorgang: Vorgang, now: dt.datetime) -> None:
    """Called by the decision endpoints (decide, co-sign, deadline, withdraw on a clerk's
    behalf ...) after their own access checks, in a transaction of ``session``.

    * claimed by someone else, and the caller is neither that clerk's active deputy (in the
      case's department, now) nor a team lead of the department → ``Conflict`` (409);
    * not claimed → the caller claims it implicitly: assignee set in this transaction, audited
      as ``task.claim`` with ``implicit``; if a concurrent claim won meanwhile → 409;
    * a case waiting for its co-signature is not blocked by the first decider's own claim: the
      co-signer takes it over (whether the caller may co-sign at all is the workflow's rule;
      the first decider gets no claim here and the workflow refuses them).

    ``vorgang`` may be attached to ``session`` or detached (e.g. from ``visible_case``): the
    assignment is read afresh from the database, and ``vorgang.assignee`` is updated on a claim.
    """
    for _ in range(2):  # a claim that raced us is looked at once more: it may be ours to act on
        cur = _current(session, vorgang.id)
        holder = cur.holder
        if holder == principal.sub:
            return
        if holder is not None:
            if is_teamlead_of(principal, cur.department) or is_active_deputy(
                    session, principal.sub, holder, cur.department, now):
                return
            raise _conflict_claimed(cur.id, holder)
        if cur.status == AWAITING_COSIGN and cur.first_decision_by == principal.sub:
            return
        if _set_assignee(session, vorgang, principal.sub, now, expected=cur.assignee, allow_cosign_takeover=True):
            records.audit(session, actor=principal.sub, role=principal.primary_role, action="task.claim",
                          target_type="case", target_id=cur.id, case_id=cur.id,
                          details={"before": cur.assignee, "implicit": True})
            return
    cur = _current(session, vorgang.id)
    raise _conflict_claimed(cur.id, cur.assignee)


# --------------------------------------------------------------------------- inbox queries


@dataclass(frozen=True)
class InboxFilter:
    statuses: tuple[str, ...] = DEFAULT_INBOX_STATUSES
    service_key: str | None = None
    department: str | None = None
    priorities: tuple[str, ...] = ()
    due_before: dt.date | None = None
    overdue: bool | None = None
    #: "me" | "none" | a subject; None: anyone
    assignee: str | None = None
    #: True: only cases the caller may co-sign (not the ones they decided first)
    cosignable: bool | None = None
    sort: str = "due_on"
    descending: bool = False
    limit: int = 100
    offset: int = 0


PRIORITY_RANK = case({"low": 0, "normal": 1, "high": 2, "urgent": 3}, value=Vorgang.priority, else_=1)


def overdue_condition(now: dt.datetime) -> ColumnElement[bool]:
    """Past the processing deadline while it runs; cases without one (older cases) by their due
    date. A case waiting for the citizen is never overdue: its deadline is paused."""
    today = now.date()
    return or_(
        and_(Vorgang.deadline_at.is_not(None), Vorgang.deadline_at < now),
        and_(Vorgang.deadline_at.is_(None), Vorgang.status != AWAITING_DOCUMENTS, Vorgang.due_on.is_not(None),
             Vorgang.due_on < today),
    )


def is_overdue(v: Any, now: dt.datetime) -> bool:
    if v.deadline_at is not None:
        return bool(v.deadline_at < now)
    return v.status != AWAITING_DOCUMENTS and v.due_on is not None and v.due_on < now.date()


COLUMNS = (Vorgang.id, Vorgang.aktenzeichen, Vorgang.service_key, Vorgang.service_name, Vorgang.department,
           Vorgang.status, Vorgang.due_on, Vorgang.created_at, Vorgang.assignee, Vorgang.assigned_at,
           Vorgang.priority, Vorgang.deadline_at, Vorgang.escalated_at, Vorgang.waiting_for,
           Vorgang.waiting_until, Vorgang.first_decision_by)


#: the condition of the partial index ix_vorgang_open_due (eakte/models.py OPEN_INBOX_SQL), rendered
#: literally: SQLite uses a partial index only when the query states its condition word for word
OPEN_INBOX = Vorgang.status.in_([literal_column(f"'{s}'") for s in INBOX_STATUSES])
_OPEN_INBOX_SET = frozenset(INBOX_STATUSES)
assert OPEN_INBOX_SQL == "status IN (" + ", ".join(f"'{s}'" for s in INBOX_STATUSES) + ")"


def inbox_query(p: Principal, f: InboxFilter, now: dt.datetime, *,
                mine_for: list[tuple[str, str]] | None = None) -> Select[Any]:
    """The department inbox (or, with ``mine_for``, the caller's own list: assigned to them or
    to someone they stand in for, in that Vertretung's department) as one SELECT of the
    listed columns only (the wide rows with form and applicant are not loaded)."""
    departments = [d for d in p.departments if f.department is None or d == f.department]
    q = (select(*COLUMNS).join(Akte, Akte.id == Vorgang.akte_id)
         .where(Vorgang.status.in_(f.statuses), Vorgang.department.in_(departments), visible_cases(p)))
    if set(f.statuses) <= _OPEN_INBOX_SET:
        q = q.where(OPEN_INBOX)  # filters nothing more; lets the database read the page off ix_vorgang_open_due
    if mine_for is not None:
        q = q.where(or_(Vorgang.assignee == p.sub,
                        *[and_(Vorgang.assignee == who, Vorgang.department == dep) for who, dep in mine_for]))
    if f.service_key:
        q = q.where(Vorgang.service_key == f.service_key)
    if f.priorities:
        q = q.where(Vorgang.priority.in_(f.priorities))
    if f.due_before is not None:
        q = q.where(Vorgang.due_on < f.due_before)
    if f.overdue is not None:
        cond = overdue_condition(now)
        q = q.where(cond if f.overdue else ~cond)
    if f.assignee == "me":
        q = q.where(Vorgang.assignee == p.sub)
    elif f.assignee == "none":
        q = q.where(Vorgang.assignee.is_(None))
    elif f.assignee:
        q = q.where(Vorgang.assignee == f.assignee)
    if f.cosignable is not None:
        may = and_(Vorgang.status == AWAITING_COSIGN,
                   or_(Vorgang.first_decision_by.is_(None), Vorgang.first_decision_by != p.sub))
        q = q.where(may if f.cosignable else ~may)
    key: Any = {"due_on": Vorgang.due_on, "priority": PRIORITY_RANK, "created_at": Vorgang.created_at,
                "status": Vorgang.status}[f.sort]
    # cases without a due date (not yet routed, imported) come last either way
    order = [Vorgang.due_on.is_(None)] if f.sort == "due_on" else []
    order.append(key.desc() if f.descending else key.asc())
    if f.sort != "due_on":
        order += [Vorgang.due_on.is_(None), Vorgang.due_on.asc()]
    order += [Vorgang.created_at.asc(), Vorgang.id.asc()]
    return q.order_by(*order).limit(f.limit).offset(f.offset)


def list_inbox(session: Session, p: Principal, f: InboxFilter, now: dt.datetime, *,
               mine: bool = False) -> list[dict[str, Any]]:
    """The rows of the inbox (or the own list) with the flags a clerk needs at a glance."""
    if not p.departments:
        return []
    mine_for = principals_deputised(session, p.sub, now) if mine else None
    rows = session.execute(inbox_query(p, f, now, mine_for=mine_for)).all()
    out: list[dict[str, Any]] = []
    for r in rows:
        out.append({
            "case_id": r.id, "aktenzeichen": r.aktenzeichen, "service_key": r.service_key,
            "service_name": r.service_name, "department": r.department, "status": r.status,
            "due_on": r.due_on, "created_at": r.created_at, "assignee": r.assignee, "assigned_at": r.assigned_at,
            "priority": r.priority or "normal", "deadline_at": r.deadline_at,
            "overdue": is_overdue(r, now), "escalated": r.escalated_at is not None,
            "waiting_for": list(r.waiting_for or []), "waiting_until": r.waiting_until,
            "first_decision_by": r.first_decision_by,
            "may_cosign": r.status == AWAITING_COSIGN and r.first_decision_by != p.sub,
            "acting_for": r.assignee if mine and r.assignee != p.sub else None,
        })
    return out


# --------------------------------------------------------------------------- citizen access code

#: 31 symbols a person reads and types without mistakes: no 0/O, 1/I/L
ACCESS_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
ACCESS_CODE_CHARS = 10  # 31**10 ≈ 2**49.5 codes per case
_ACCESS_KEY_LABEL = b"aktenlauf/status-access-code/v1"


def access_code(secret: str, case_id: str) -> str:
    """The citizen's access code for the status page of ``case_id``: ``XXXXX-XXXXX``.

    HMAC-SHA256 under a key derived from ``secret`` for this purpose only (so it never equals
    a certificate's verification code, which uses the same secret for another purpose);
    deterministic, so a repeated (idempotent) submission answers the same code and nothing
    needs storing. Rotating the secret changes every code: citizens would need new ones.
    """
    if not secret:
        raise ValueError("secret must not be empty")
    key = hmac.new(secret.encode("utf-8"), _ACCESS_KEY_LABEL, hashlib.sha256).digest()
    n = int.from_bytes(hmac.new(key, case_id.encode("utf-8"), hashlib.sha256).digest(), "big")
    chars = []
    for _ in range(ACCESS_CODE_CHARS):  # 256 bits into base 31: the bias is below 2**-200
        n, r = divmod(n, len(ACCESS_ALPHABET))
        chars.append(ACCESS_ALPHABET[r])
    code = "".join(chars)
    return f"{code[:5]}-{code[5:]}"


def normalise_access_code(given: str) -> str:
    """What the citizen typed, in the canonical form: case, spaces and dashes do not matter."""
    raw = "".join(ch for ch in given.upper() if ch not in " -\t")
    return f"{raw[:5]}-{raw[5:]}" if len(raw) == ACCESS_CODE_CHARS else raw


def access_code_matches(secret: str, case_id: str, given: str) -> bool:
    """Constant-time comparison of a typed code with the case's code."""
    return hmac.compare_digest(access_code(secret, case_id).encode(),
                               normalise_access_code(given)[:64].encode("utf-8"))
