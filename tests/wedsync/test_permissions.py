"""The role x permission matrix, cell by cell, against PROTOCOL.md section 5 copied verbatim."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from wedsync.permissions import (
    DEFAULT_MATRIX,
    Permission,
    Role,
    Scope,
    build_matrix,
    role_has_permission,
    role_permission_scope,
)

# PROTOCOL.md section 5, as written there (rows that name several roles are expanded below).
_PROTOCOL_TABLE = """
| couple, planner | y | y | y | y | y | y | y | y | y |
| venue | y | y | y | y | - | y | y | y | - |
| photographer, videographer, musician | y | y | y | y | - | y | y | y | - |
| caterer, florist | y | y | y | - | - | y | y | y | - |
| officiant | y | y | - | y | - | y | y | y | - |
| guest | y | y | - | - | own only | - | - | - | - |
"""
_COLUMNS = [
    "chat",
    "view_timeline",
    "edit_timeline",
    "view_ceremony_details",
    "edit_rsvp",
    "view_presence",
    "share_location",
    "send_emergency",
    "manage_members",
]
_CELL = {"y": Scope.ALL, "-": Scope.NONE, "own only": Scope.OWN}


def _expected_cells() -> list[tuple[str, str, Scope]]:
    cells = []
    for line in _PROTOCOL_TABLE.strip().splitlines():
        roles, *values = [part.strip() for part in line.strip("|").split("|")]
        for role in roles.split(","):
            for permission, value in zip(_COLUMNS, values, strict=True):
                cells.append((role.strip(), permission, _CELL[value]))
    return cells


EXPECTED = _expected_cells()


def test_the_protocol_table_covers_every_role_and_permission() -> None:
    assert {role for role, _p, _s in EXPECTED} == {role.value for role in Role}
    assert {permission for _r, permission, _s in EXPECTED} == {permission.value for permission in Permission}
    assert len(EXPECTED) == 10 * 9


@pytest.mark.parametrize(("role", "permission", "scope"), EXPECTED)
def test_default_matrix_cell_matches_protocol(role: str, permission: str, scope: Scope) -> None:
    assert DEFAULT_MATRIX[Role(role)][Permission(permission)] is scope
    assert role_permission_scope(role=role, permission=permission) is scope
    assert role_has_permission(role=role, permission=permission) is (scope is Scope.ALL)
    assert role_has_permission(role=role, permission=permission, own=True) is (scope is not Scope.NONE)


def test_guest_may_edit_only_their_own_rsvp() -> None:
    assert not role_has_permission(role=Role.GUEST, permission=Permission.EDIT_RSVP)
    assert role_has_permission(role=Role.GUEST, permission=Permission.EDIT_RSVP, own=True)


def test_unknown_role_or_permission_holds_nothing() -> None:
    assert role_permission_scope(role="bouncer", permission="chat") is Scope.NONE
    assert role_permission_scope(role="planner", permission="fly") is Scope.NONE


def test_deployment_overrides_change_one_cell_only() -> None:
    matrix = build_matrix(overrides={"guest": {"view_presence": "all"}})
    with override_settings(PERMISSION_MATRIX=matrix):
        assert role_has_permission(role="guest", permission="view_presence")
        assert not role_has_permission(role="guest", permission="share_location")
        assert role_has_permission(role="planner", permission="manage_members")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"bouncer": {"chat": "all"}}, "unknown role 'bouncer'"),
        ({"guest": {"fly": "all"}}, "unknown permission 'fly'"),
        ({"guest": {"chat": "maybe"}}, "guest.chat must be one of"),
        ({"guest": ["chat"]}, "must map permissions to scopes"),
    ],
)
def test_bad_overrides_fail_loudly(overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=complaint):
        build_matrix(overrides=overrides)
