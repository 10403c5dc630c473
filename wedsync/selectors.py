"""Reads of the core domain."""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from wedsync.models import (
    Agency,
    AuditLog,
    CoordinatorAssignment,
    Member,
    ServiceAccount,
    UserTokenGeneration,
    Wedding,
)


def token_generation_current(*, user_id: int) -> int:
    """The user's token generation; tokens carrying an older one are revoked."""
    generation = UserTokenGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first()
    return generation or 0


def user_with_token_generation(*, user_id: object) -> tuple[User | None, int]:
    """The user (active or not) and its token generation, in one query; (None, 0) if unknown.

    Every bearer-token socket connect and API request runs this. It is one hand-written statement
    read with a plain cursor: the ORM's ``select_related`` version and ``raw()`` cost several times
    its server CPU, compiling the query and resolving columns to fields on every call (decision
    0006). ``from_db`` builds the
    user as the ORM would, from values in the model's field order.
    """
    model = get_user_model()
    pk = model._meta.pk.get_prep_value(str(user_id))  # a malformed id fails as the ORM's filter would
    with connection.cursor() as cursor:
        cursor.execute(_user_with_generation_sql(), [pk])
        row = cursor.fetchone()
    if row is None:
        return None, 0
    *values, generation = row
    user = model.from_db(connection.alias, _user_field_names(), values)
    return user, generation or 0


@functools.cache
def _user_field_names() -> list[str]:
    return [field.attname for field in get_user_model()._meta.concrete_fields]


@functools.cache
def _user_with_generation_sql() -> str:
    model, quote_name = get_user_model(), connection.ops.quote_name
    columns = ", ".join(f"u.{quote_name(field.column)}" for field in model._meta.concrete_fields)
    users, generations = quote_name(model._meta.db_table), quote_name(UserTokenGeneration._meta.db_table)
    pk = quote_name(model._meta.pk.column)
    return (  # table and column names come from the models, never from input
        f"SELECT {columns}, g.generation AS current_token_generation FROM {users} u "  # noqa: S608
        f"LEFT JOIN {generations} g ON g.user_id = u.{pk} WHERE u.{pk} = %s"
    )


# --- Staff scope: who oversees which weddings (docs/decisions/0022) ---------------------------------


def weddings_overseen(*, user: User | AnonymousUser) -> QuerySet[Wedding]:
    """The weddings ``user`` oversees as staff: all of them for an active superuser; for an active
    staff user (a coordinator) those of their agencies and those assigned to them by name; for a
    service account's user, its account's agency and weddings while the account is active; none
    for anyone else. A wedding with no agency and no assignment is a superuser's alone.

    This is the one definition of staff scope: every staff check (the API, presence, alerts,
    emergencies) and every admin page asks it. Membership is not oversight: a staff user who is
    also a wedding's member sees that wedding as their role, through the membership.
    """
    if not user.is_authenticated or not user.is_active:
        return Wedding.objects.none()
    if user.is_superuser:
        return Wedding.objects.all()
    if not user.is_staff:
        return Wedding.objects.none()
    # Subqueries, not joins: a wedding both in the agency and assigned is still one row.
    agencies = Agency.coordinators.through.objects.filter(user_id=user.pk).values("agency_id")
    assigned = CoordinatorAssignment.objects.filter(coordinator_id=user.pk).values("wedding_id")
    # A service account's user oversees its account's agency and weddings (while it is active).
    account = ServiceAccount.objects.filter(user_id=user.pk, is_active=True)
    named = ServiceAccount.weddings.through.objects.filter(serviceaccount__in=account.values("pk"))
    return Wedding.objects.filter(
        Q(agency_id__in=agencies)
        | Q(pk__in=assigned)
        | Q(agency_id__in=account.values("agency_id"))
        | Q(pk__in=named.values("wedding_id"))
    )


def wedding_may_oversee(*, user: User | AnonymousUser, wedding_id: int) -> bool:
    """Whether ``user`` oversees the wedding as staff (:func:`weddings_overseen`). True for an
    active superuser whatever the id: they see every wedding, and are told when one does not exist."""
    if not user.is_authenticated or not user.is_active or not (user.is_staff or user.is_superuser):
        return False  # no query for the members who make nearly every call
    if user.is_superuser:
        return True
    return weddings_overseen(user=user).filter(pk=wedding_id).exists()


def weddings_overseen_condition(*, user: User | AnonymousUser, wedding_path: str) -> Q:
    """A filter keeping the rows whose wedding (reached through ``wedding_path``, e.g. ``wedding``,
    ``guest__wedding``, ``pk`` for weddings themselves) ``user`` oversees: nothing is left out for
    a superuser, everything for a user who oversees no wedding."""
    if user.is_authenticated and user.is_active and user.is_superuser:
        return Q()
    return Q(**{f"{wedding_path}__in": weddings_overseen(user=user).values("pk")})


def users_overseen(*, user: User | AnonymousUser) -> QuerySet[User]:
    """The accounts a coordinator may look up (to add a member, say): themselves, the members of
    the weddings they oversee, and people who are in no wedding yet and are not staff (a guest
    account just created). Every account for a superuser; none for anyone else."""
    users: QuerySet[User] = get_user_model().objects.all()
    if not user.is_authenticated or not user.is_active:
        return users.none()
    if user.is_superuser:
        return users
    if not user.is_staff:
        return users.none()
    overseen = Member.objects.filter(wedding__in=weddings_overseen(user=user).values("pk")).values("user_id")
    placed = Exists(Member.objects.filter(user_id=OuterRef("pk")))
    return users.filter(Q(pk=user.pk) | Q(pk__in=overseen) | (Q(is_staff=False, is_superuser=False) & ~placed))


def weddings_visible(*, user: User | AnonymousUser) -> QuerySet[Wedding]:
    """The weddings ``user`` may read: those they oversee as staff, and those they are an active
    member of (whatever their role)."""
    if not user.is_authenticated or not user.is_active:
        return Wedding.objects.none()
    memberships = Member.objects.filter(user_id=user.pk, is_active=True).values("wedding_id")
    return Wedding.objects.filter(Q(pk__in=weddings_overseen(user=user).values("pk")) | Q(pk__in=memberships))


def audit_entries_visible(*, user: User | AnonymousUser) -> QuerySet[AuditLog]:
    """The audit entries ``user`` may read, as the admin shows them: every entry for a superuser;
    for staff and service accounts, the entries of the weddings they oversee (entries of no wedding,
    such as logins, are the superusers'); none for anyone else."""
    return AuditLog.objects.filter(weddings_overseen_condition(user=user, wedding_path="wedding"))
