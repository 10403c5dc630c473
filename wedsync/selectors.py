"""Reads of the core domain."""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import connection

from wedsync.models import Member, UserTokenGeneration


def token_generation_current(*, user_id: int) -> int:
    """The user's token generation; tokens carrying an older one are revoked."""
    generation = UserTokenGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first()
    return generation or 0


def user_with_token_generation(*, user_id: object) -> tuple[User | None, int]:
    """The user (active or not) and its token generation, in one query; (None, 0) if unknown.

    Every bearer-token socket connect and API request runs this. It is one hand-written statement
    read with a plain cursor: the ORM's ``select_related`` version cost three times the server CPU
    of this one, most of it compiling the query, and ``raw()`` another ~40 % of what is left
    (resolving columns to fields for every call; py-spy, reconnect storm). ``from_db`` builds the
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


def memberships_active_for_user(*, user_id: int) -> list[Member]:
    """The user's active memberships, with their weddings, evaluated."""
    return list(Member.objects.filter(user_id=user_id, is_active=True).select_related("wedding").order_by("wedding_id"))
