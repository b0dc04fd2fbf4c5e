"""Operator roles: which actions each role may do. Pure policy, no I/O.

Roles are cumulative: a viewer only looks; an operator also changes the fleet (desired
state, jobs, starting/halting rollouts, groups, imports); an approver also approves
rollout waves. Halting, pausing and cancelling are operator actions on purpose: stopping a
bad rollout must never wait for an approver. Rolling back is a write to many devices'
desired state, so it is the approver's.

The CLI and the console call :func:`require` (or ``Settings.require``) before acting; the
jobs/rollout engines call it with the acting operator's role and write the role into the
audit record (:func:`audit_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping

ROLES: tuple[str, ...] = ("viewer", "operator", "approver")

VIEW = "view"
EDIT_DESIRED = "edit_desired"
DELETE_SHADOW = "delete_shadow"
CREATE_JOB = "create_job"
CANCEL_JOB = "cancel_job"
START_ROLLOUT = "start_rollout"
HALT_ROLLOUT = "halt_rollout"
RESUME_ROLLOUT = "resume_rollout"
CANCEL_ROLLOUT = "cancel_rollout"
APPROVE_ROLLOUT = "approve_rollout"
ROLLBACK_ROLLOUT = "rollback_rollout"
EDIT_GROUPS = "edit_groups"
IMPORT_FLEET = "import_fleet"

_VIEWER = frozenset({VIEW})
_OPERATOR = _VIEWER | {
    EDIT_DESIRED, DELETE_SHADOW, CREATE_JOB, CANCEL_JOB, START_ROLLOUT, HALT_ROLLOUT,
    RESUME_ROLLOUT, CANCEL_ROLLOUT, EDIT_GROUPS, IMPORT_FLEET,
}
_APPROVER = _OPERATOR | {APPROVE_ROLLOUT, ROLLBACK_ROLLOUT}

PERMISSIONS: Mapping[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "operator": frozenset(_OPERATOR),
    "approver": frozenset(_APPROVER),
}
ACTIONS: frozenset[str] = frozenset(_APPROVER)


class RoleError(Exception):
    """The role may not do the action (``code`` 403), or the role/action is unknown (400)."""

    def __init__(self, message: str, role: str, action: str, code: int = 403) -> None:
        super().__init__(message)
        self.role, self.action, self.code = role, action, code


def allows(role: str, action: str) -> bool:
    """True when ``role`` may do ``action``. Unknown roles may do nothing; an unknown
    action is a programming error and raises, so a typo cannot silently allow or deny."""
    if action not in ACTIONS:
        raise RoleError(f"unknown action {action!r}", role, action, 400)
    return action in PERMISSIONS.get(role, frozenset())


def require(role: str, action: str) -> None:
    """Raise :class:`RoleError` (403) unless ``role`` may do ``action``."""
    if role not in PERMISSIONS:
        raise RoleError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})",
                        role, action, 400)
    if not allows(role, action):
        needed = minimum_role(action)
        raise RoleError(f"role {role!r} may not {action.replace('_', ' ')} "
                        f"(needs {needed!r})", role, action)


def minimum_role(action: str) -> str:
    """The least role that may do ``action``."""
    for role in ROLES:
        if allows(role, action):
            return role
    raise RoleError(f"no role may {action!r}", "", action, 400)  # pragma: no cover


def mutating(action: str) -> bool:
    """Whether the action changes anything (everything but ``view``): what read-only hides."""
    return action in ACTIONS and action != VIEW


def audit_fields(operator: str, role: str) -> dict[str, str]:
    """What every audit record carries about who acted."""
    return {"actor": operator, "role": role}
