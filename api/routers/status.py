"""The citizen's status page: GET /v1/status/{aktenzeichen} with the access code the
submission answered (``X-Access-Code``). Public: no bearer token.

A wrong or missing code answers exactly like an unknown Aktenzeichen (404), compared in
constant time; guessing is throttled per client address and Aktenzeichen with 429 +
Retry-After. The code has about 49 bits, so the throttle is a second line: ten guesses per
Aktenzeichen and ten minutes leave an attacker nothing, and it keeps logs and the database
quiet. There is deliberately no limit per address alone: behind a shared address (a town
hall's Wi-Fi, carrier NAT) one person's typos must not lock everybody out of their own case.
The throttle lives in the API process (each replica counts for itself).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict, deque
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aktenlauf.errors import NotFound
from api.context import Ctx
from api.problems import problem
from eakte import citizen_status
from eakte.inbox import access_code_matches

router = APIRouter(prefix="/v1/status", tags=["status"])
log = structlog.get_logger(__name__)

FAILURES_PER_CASE = 10  # wrong codes per client address and Aktenzeichen ...
WINDOW_S = 600.0  # ... within ten minutes


class FailureThrottle:
    """Sliding-window counter of failed lookups; bounded memory (oldest keys dropped first)."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is not None:
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if not hits:
                del self._hits[key]
                return None
        return hits

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Seconds until ``key`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._recent(key, now)
            if hits is None or len(hits) < self.limit:
                return 0
            return max(1, int(hits[len(hits) - self.limit] + self.window_s - now) + 1)

    def fail(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._recent(key, now)
            if hits is None:
                hits = self._hits[key] = deque()
                while len(self._hits) > self.max_keys:
                    self._hits.popitem(last=False)
            self._hits.move_to_end(key)
            hits.append(now)


def _throttle(request: Request) -> FailureThrottle:
    state = request.app.state
    if not hasattr(state, "status_throttle"):
        state.status_throttle = FailureThrottle(FAILURES_PER_CASE, WINDOW_S)
    return state.status_throttle  # type: ignore[no-any-return]


class MilestoneOut(BaseModel):
    code: str
    label: str
    at: dt.datetime
    details: dict[str, Any] = {}


class StatusOut(BaseModel):
    aktenzeichen: str
    service_name: str | None
    responsible_office: str | None
    status: str
    status_label: str
    #: Nachforderung: what is missing and until when (while the case waits for it)
    waiting_for: dict[str, Any] | None = None
    #: the fee due, with the link to pay it (while it is open)
    payment: dict[str, Any] | None = None
    timeline: list[MilestoneOut]


NOT_FOUND = "no case with this Aktenzeichen and access code"
# a syntactically plausible Aktenzeichen (file-plan number, year, sequence)
Aktenzeichen = Annotated[str, Path(min_length=3, max_length=40, pattern=r"^[0-9A-Za-z.\-/]+$")]


@router.get("/{aktenzeichen}", response_model=StatusOut,
            responses={404: {"description": "unknown Aktenzeichen or wrong/missing access code (indistinguishable)"},
                       429: {"description": "too many wrong access codes from this address; see Retry-After"}})
async def case_status(
    aktenzeichen: Aktenzeichen, request: Request, ctx: Ctx,
    x_access_code: Annotated[str | None, Header(alias="X-Access-Code", max_length=64)] = None,
) -> StatusOut | JSONResponse:
    """The public milestones of a case for the applicant or reporter who holds its access code."""
    client = request.client.host if request.client else "unknown"
    throttle = _throttle(request)
    key = f"{client}\x00{aktenzeichen}"
    wait = throttle.retry_after(key)
    if wait:  # answered before looking anything up: a blocked guesser learns nothing more
        log.warning("status.throttled", client=client, retry_after=wait)
        return problem(429, "Too many attempts", f"too many wrong access codes; try again in {wait} seconds",
                       code="too-many-attempts", instance=request.url.path, headers={"Retry-After": str(wait)})

    secret = ctx.settings.certificate_code_secret

    def load(s):  # type: ignore[no-untyped-def]
        v = citizen_status.find_case(s, aktenzeichen)
        # the code is computed and compared also for an unknown Aktenzeichen: same work, same time
        ok = access_code_matches(secret, v.id if v is not None else "\x00unknown", x_access_code or "")
        if v is None or not ok or not x_access_code:
            return None
        svc = ctx.catalog.service(v.service_key) if v.service_key else None
        report = bool(svc is not None and not svc.decision_required and not svc.certificate
                      and svc.fee_cents == 0 and not svc.fee_per_item_cents)
        dept = ctx.catalog.departments.get(v.department or "")
        office = (dept.name if dept else None) or (svc.department_name if svc else None)
        return citizen_status.public_status(s, v, report=report, office=office)

    st = await ctx.db(load)
    if st is None:
        throttle.fail(key)
        raise NotFound(NOT_FOUND)
    log.info("status.viewed", status=st.status)
    return StatusOut(aktenzeichen=st.aktenzeichen, service_name=st.service_name,
                     responsible_office=st.responsible_office, status=st.status, status_label=st.status_label,
                     waiting_for=st.waiting_for, payment=st.payment,
                     timeline=[MilestoneOut(code=m.code, label=m.label, at=m.at, details=m.details)
                               for m in st.timeline])
