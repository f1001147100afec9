"""Who may see and do what. Framework-free: the API and the workflows both use it.

System roles (``ROLES``) decide what kind of user someone is. Tokens may carry further
*named roles* (Funktionsrollen such as ``standesbeamter`` or ``personalrat``): they mean
nothing by themselves, but an Akte marked confidential (Vertraulichkeit) lists the named
roles that may see it, on top of the department rule.

The rules, in one place:

* **admin** sees every case's metadata, also confidential ones; document *content* only
  with a stated reason, which is audited (``content_needs_reason``).
* **clerk** sees the cases of their departments; a confidential Akte only when they also
  hold one of its named roles. Clerks decide and add documents on the cases they see.
* **integrator** sees the cases it started (status, public documents, its own uploads),
  never other integrators' cases.
* **mailroom** sees cases still waiting in triage (no department yet) that are not
  confidential, and letters not yet filed.
* **archivist** sees the metadata of closed Akten (to appraise them for Aussonderung);
  content only with a reason, like admins.
* **teamlead** (Teamleitung) is a clerk of their departments who also steers the work:
  assigns cases to clerks, sets priorities, names deputies for anyone in the department
  (eakte/inbox.py). A token with ``teamlead`` is treated as also holding ``clerk``.

Everything else is invisible: an id the caller may not see answers 404, exactly like an id
that does not exist, so guessing ids (IDOR) reveals nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, false, or_, true

ROLES = ("integrator", "clerk", "mailroom", "admin", "archivist", "teamlead")
NAMED_ROLE = re.compile(r"^[a-z][a-z0-9_-]{1,39}$")


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: tuple[str, ...] = ()
    departments: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # a team lead works cases like any clerk of their departments: every clerk rule applies
        if "teamlead" in self.roles and "clerk" not in self.roles:
            object.__setattr__(self, "roles", (*self.roles, "clerk"))

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def primary_role(self) -> str:
        for role in ("admin", "archivist", "teamlead", "clerk", "mailroom", "integrator"):
            if role in self.roles:
                return role
        return "none"

    @property
    def named_roles(self) -> tuple[str, ...]:
        return tuple(r for r in self.roles if r not in ROLES)


def cleared_for(p: Principal, confidential: bool, confidential_roles: Iterable[str] | None) -> bool:
    """Whether the confidentiality marking of an Akte lets this principal in (admins always)."""
    if not confidential or p.has("admin"):
        return True
    return any(p.has(r) for r in (confidential_roles or ()))


def can_read_case(
    p: Principal, *, department: str | None, integrator: str, confidential: bool = False,
    confidential_roles: Iterable[str] | None = None, closed: bool = False,
) -> bool:
    """May ``p`` see this case's metadata (and, for clerks, its documents)?"""
    if p.has("admin"):
        return True
    if not cleared_for(p, confidential, confidential_roles):
        # integrators keep seeing the status of what they submitted, never more
        return p.has("integrator") and integrator == p.sub
    if p.has("clerk") and department is not None and department in p.departments:
        return True
    if p.has("integrator") and integrator == p.sub:
        return True
    if p.has("mailroom") and department is None:
        return True
    if p.has("archivist") and closed:
        return True
    return False


def can_read_vorgang(p: Principal, v: object) -> bool:
    """``can_read_case`` for a loaded ``Vorgang`` (with its ``akte`` relationship loaded)."""
    akte = getattr(v, "akte")
    return can_read_case(p, department=getattr(v, "department"), integrator=getattr(v, "integrator"),
                         confidential=akte.confidential, confidential_roles=akte.confidential_roles,
                         closed=akte.status == "closed")


def can_decide_vorgang(p: Principal, v: object) -> bool:
    akte = getattr(v, "akte")
    return can_decide(p, department=getattr(v, "department"), confidential=akte.confidential,
                      confidential_roles=akte.confidential_roles)


def can_add_document_vorgang(p: Principal, v: object) -> bool:
    akte = getattr(v, "akte")
    return can_add_document(p, department=getattr(v, "department"), integrator=getattr(v, "integrator"),
                            confidential=akte.confidential, confidential_roles=akte.confidential_roles)


def content_needs_reason(p: Principal, v: object | None) -> bool:
    """Admins and archivists read document content only with a stated (audited) reason —
    unless an ordinary role of theirs (a cleared clerk of the department, say) lets them anyway.
    ``v`` is the document's ``Vorgang`` (with ``akte`` loaded), or None for an unfiled letter."""
    if not (p.has("admin") or p.has("archivist")):
        return False
    ordinary = Principal(sub=p.sub, roles=tuple(r for r in p.roles if r not in ("admin", "archivist")),
                         departments=p.departments)
    if v is None:
        return not ordinary.has("mailroom")
    return not can_read_vorgang(ordinary, v)


def can_decide(p: Principal, *, department: str | None, confidential: bool = False,
               confidential_roles: Iterable[str] | None = None) -> bool:
    return (p.has("clerk") and department is not None and department in p.departments
            and cleared_for(p, confidential, confidential_roles))


def is_teamlead_of(p: Principal, department: str | None) -> bool:
    """Team lead of this department (assign, reprioritise, name deputies there)."""
    return p.has("teamlead") and department is not None and department in p.departments


def can_add_document(p: Principal, *, department: str | None, integrator: str, confidential: bool = False,
                     confidential_roles: Iterable[str] | None = None) -> bool:
    if p.has("integrator") and integrator == p.sub:
        return True
    return can_decide(p, department=department, confidential=confidential, confidential_roles=confidential_roles)


@dataclass(frozen=True)
class CaseColumns:
    """Where ``visible_cases`` finds a case's access attributes in a query: by default on
    ``Vorgang`` joined to its ``Akte``; the search index keeps copies of them on its own rows."""

    integrator: Any
    department: Any
    confidential: Any
    confidential_roles: Any
    closed: Any  # a boolean SQL expression


def _default_columns() -> CaseColumns:
    from eakte.models import Akte, Vorgang

    return CaseColumns(integrator=Vorgang.integrator, department=Vorgang.department, confidential=Akte.confidential,
                       confidential_roles=Akte.confidential_roles, closed=Akte.status == "closed")


def visible_cases(p: Principal, cols: CaseColumns | None = None) -> ColumnElement[bool]:
    """The same rule as ``can_read_case`` as a SQL condition: by default over ``Vorgang``
    joined to its ``Akte`` (callers join ``Akte`` on ``Vorgang.akte_id``), or over ``cols``."""
    if p.has("admin"):
        return true()
    c = cols or _default_columns()
    roles_text = cast(c.confidential_roles, String)
    cleared = or_(c.confidential.is_(False),
                  *[roles_text.like(f'%"{r}"%') for r in p.named_roles if NAMED_ROLE.match(r)])
    conds: list[ColumnElement[bool]] = []
    if p.has("integrator"):
        conds.append(c.integrator == p.sub)
    if p.has("clerk") and p.departments:
        conds.append(and_(c.department.in_(p.departments), cleared))
    if p.has("mailroom"):
        conds.append(and_(c.department.is_(None), cleared))
    if p.has("archivist"):
        conds.append(and_(c.closed, cleared))
    return or_(*conds) if conds else false()
