"""Roles, permissions and the role x permission matrix (PROTOCOL.md section 5).

This is the only place that knows which role may do what. Everything else asks
:func:`role_permission_scope` or :func:`role_has_permission`. The module is plain Python so that
settings can build the deployment's matrix from the environment at start-up.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from django.core.exceptions import ImproperlyConfigured


class Role(enum.StrEnum):
    COUPLE = "couple"
    PLANNER = "planner"
    VENUE = "venue"
    PHOTOGRAPHER = "photographer"
    VIDEOGRAPHER = "videographer"
    CATERER = "caterer"
    FLORIST = "florist"
    MUSICIAN = "musician"
    OFFICIANT = "officiant"
    GUEST = "guest"

    @property
    def label(self) -> str:
        return self.value.capitalize()

    @property
    def is_vendor(self) -> bool:
        return self in VENDOR_ROLES


# The seven roles between venue and officiant in PROTOCOL.md.
VENDOR_ROLES: frozenset[Role] = frozenset(
    {
        Role.VENUE,
        Role.PHOTOGRAPHER,
        Role.VIDEOGRAPHER,
        Role.CATERER,
        Role.FLORIST,
        Role.MUSICIAN,
        Role.OFFICIANT,
    }
)

# Key people: an emergency is raised when one of them is missing before the ceremony.
KEY_PERSON_ROLES: frozenset[Role] = frozenset({Role.COUPLE, Role.PLANNER, Role.PHOTOGRAPHER, Role.OFFICIANT})

ROLE_CHOICES: list[tuple[str, str]] = [(role.value, role.label) for role in Role]


class Permission(enum.StrEnum):
    CHAT = "chat"
    VIEW_TIMELINE = "view_timeline"
    EDIT_TIMELINE = "edit_timeline"
    VIEW_CEREMONY_DETAILS = "view_ceremony_details"
    EDIT_RSVP = "edit_rsvp"
    VIEW_PRESENCE = "view_presence"
    SHARE_LOCATION = "share_location"
    SEND_EMERGENCY = "send_emergency"
    MANAGE_MEMBERS = "manage_members"


class Scope(enum.StrEnum):
    """How far a granted permission reaches: ``own`` limits it to the member's own records."""

    NONE = "none"
    OWN = "own"
    ALL = "all"


_Y, _O, _N = Scope.ALL, Scope.OWN, Scope.NONE

# Columns in PROTOCOL.md's order.
_COLUMNS: tuple[Permission, ...] = tuple(Permission)
_ROWS: dict[Role, tuple[Scope, ...]] = {
    #                  chat vt  et  vcd er  vp  sl  se  mm
    Role.COUPLE: (_Y, _Y, _Y, _Y, _Y, _Y, _Y, _Y, _Y),
    Role.PLANNER: (_Y, _Y, _Y, _Y, _Y, _Y, _Y, _Y, _Y),
    Role.VENUE: (_Y, _Y, _Y, _Y, _N, _Y, _Y, _Y, _N),
    Role.PHOTOGRAPHER: (_Y, _Y, _Y, _Y, _N, _Y, _Y, _Y, _N),
    Role.VIDEOGRAPHER: (_Y, _Y, _Y, _Y, _N, _Y, _Y, _Y, _N),
    Role.MUSICIAN: (_Y, _Y, _Y, _Y, _N, _Y, _Y, _Y, _N),
    Role.CATERER: (_Y, _Y, _Y, _N, _N, _Y, _Y, _Y, _N),
    Role.FLORIST: (_Y, _Y, _Y, _N, _N, _Y, _Y, _Y, _N),
    Role.OFFICIANT: (_Y, _Y, _N, _Y, _N, _Y, _Y, _Y, _N),
    Role.GUEST: (_Y, _Y, _N, _N, _O, _N, _N, _N, _N),
}

Matrix = Mapping[Role, Mapping[Permission, Scope]]

DEFAULT_MATRIX: Matrix = MappingProxyType(
    {role: MappingProxyType(dict(zip(_COLUMNS, row, strict=True))) for role, row in _ROWS.items()}
)


def build_matrix(*, overrides: Mapping[str, object] | None) -> Matrix:
    """The deployment's matrix: the defaults with ``overrides`` (``{role: {permission: scope}}``) on top.

    Raises ``ImproperlyConfigured`` naming the bad role, permission or scope.
    """
    rows = {role: dict(cells) for role, cells in DEFAULT_MATRIX.items()}
    for role_name, cells in (overrides or {}).items():
        try:
            role = Role(role_name)
        except ValueError:
            raise ImproperlyConfigured(f"permission overrides: unknown role {role_name!r}") from None
        if not isinstance(cells, Mapping):
            raise ImproperlyConfigured(f"permission overrides: {role_name!r} must map permissions to scopes")
        for permission_name, scope_name in cells.items():
            try:
                permission = Permission(permission_name)
            except ValueError:
                raise ImproperlyConfigured(f"permission overrides: unknown permission {permission_name!r}") from None
            try:
                scope = Scope(scope_name)
            except ValueError:
                raise ImproperlyConfigured(
                    f"permission overrides: {role_name}.{permission_name} must be one of "
                    f"{', '.join(s.value for s in Scope)}, got {scope_name!r}"
                ) from None
            rows[role][permission] = scope
    return MappingProxyType({role: MappingProxyType(cells) for role, cells in rows.items()})


def _active_matrix() -> Matrix:
    from django.conf import settings

    matrix: Matrix = getattr(settings, "PERMISSION_MATRIX", DEFAULT_MATRIX)
    return matrix


def role_permission_scope(*, role: Role | str, permission: Permission | str) -> Scope:
    """How far ``role`` holds ``permission`` in this deployment; unknown roles hold nothing."""
    try:
        return _active_matrix()[Role(role)][Permission(permission)]
    except ValueError:
        return Scope.NONE


def role_has_permission(*, role: Role | str, permission: Permission | str, own: bool = False) -> bool:
    """Whether ``role`` may use ``permission``; ``own=True`` asks about the member's own record."""
    scope = role_permission_scope(role=role, permission=permission)
    return scope is Scope.ALL or (own and scope is Scope.OWN)


def roles_with_permission(*, permission: Permission | str) -> frozenset[str]:
    """The roles that hold ``permission`` in full in this deployment (an audience follows the matrix)."""
    return frozenset(role.value for role in Role if role_has_permission(role=role, permission=permission))
