"""Who may see and do what. Framework-free: the API and the workflows both use it."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("integrator", "clerk", "mailroom", "admin")


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: tuple[str, ...] = ()
    departments: tuple[str, ...] = field(default_factory=tuple)

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def primary_role(self) -> str:
        for role in ("admin", "clerk", "mailroom", "integrator"):
            if role in self.roles:
                return role
        return "none"


def can_read_case(p: Principal, *, department: str | None, integrator: str) -> bool:
    """Admins see every case; clerks their departments'; integrators the cases they started;
    the mailroom sees cases waiting in triage (no department yet)."""
    if p.has("admin"):
        return True
    if p.has("clerk") and department is not None and department in p.departments:
        return True
    if p.has("integrator") and integrator == p.sub:
        return True
    if p.has("mailroom") and department is None:
        return True
    return False


def can_decide(p: Principal, *, department: str | None) -> bool:
    return p.has("clerk") and department is not None and department in p.departments


def can_add_document(p: Principal, *, department: str | None, integrator: str) -> bool:
    if p.has("integrator") and integrator == p.sub:
        return True
    return can_decide(p, department=department)
