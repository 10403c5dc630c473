"""Staff scope, the rule itself (docs/decisions/0022): which weddings and accounts a staff user
oversees. Every API check and admin page asks these selectors; their own tests are elsewhere."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import CommandError, call_command

from tests.factories import MemberFactory, UserFactory, WeddingFactory
from tests.personas import make_coordinator, make_superuser
from wedsync.models import Agency, CoordinatorAssignment, Wedding
from wedsync.selectors import users_overseen, wedding_may_oversee, weddings_overseen, weddings_overseen_condition

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres]


def _ids(weddings: object) -> set[int]:
    return {wedding.pk for wedding in weddings}  # type: ignore[attr-defined]


@pytest.fixture
def weddings() -> dict[str, Wedding]:
    """Luz's two weddings, Mar's one, one assigned to Cora by name, and one of no agency."""
    return {name: WeddingFactory(name=name) for name in ("luz1", "luz2", "mar", "covered", "orphan")}


@pytest.fixture
def cora(weddings: dict[str, Wedding]) -> User:
    cora = make_coordinator(weddings["luz1"], weddings["luz2"], agency="Luz")
    make_coordinator(weddings["mar"], weddings["covered"], name="max", agency="Mar")
    CoordinatorAssignment.objects.create(wedding=weddings["covered"], coordinator=cora, note="Max is ill")
    return cora


def test_a_coordinator_oversees_their_agencys_weddings_and_those_assigned_to_them(
    weddings: dict[str, Wedding], cora: User
) -> None:
    expected = {weddings[name].pk for name in ("luz1", "luz2", "covered")}
    assert _ids(weddings_overseen(user=cora)) == expected
    for name, wedding in weddings.items():
        assert wedding_may_oversee(user=cora, wedding_id=wedding.pk) is (wedding.pk in expected), name
    assert _ids(Wedding.objects.filter(weddings_overseen_condition(user=cora, wedding_path="pk"))) == expected


def test_a_wedding_in_the_agency_and_assigned_too_is_listed_once(weddings: dict[str, Wedding], cora: User) -> None:
    CoordinatorAssignment.objects.create(wedding=weddings["luz1"], coordinator=cora)
    assert [w.pk for w in weddings_overseen(user=cora)].count(weddings["luz1"].pk) == 1


def test_a_coordinator_of_two_agencies_oversees_both(weddings: dict[str, Wedding], cora: User) -> None:
    Agency.objects.get(name="Mar").coordinators.add(cora)
    assert weddings["mar"].pk in _ids(weddings_overseen(user=cora))


def test_a_superuser_oversees_every_wedding_even_one_of_no_agency(weddings: dict[str, Wedding], cora: User) -> None:
    sam = make_superuser()
    assert _ids(weddings_overseen(user=sam)) == _ids(weddings.values())
    assert wedding_may_oversee(user=sam, wedding_id=weddings["orphan"].pk)
    assert weddings_overseen_condition(user=sam, wedding_path="wedding").children == []  # no filter at all


def test_a_wedding_of_no_agency_is_a_superusers_alone(weddings: dict[str, Wedding], cora: User) -> None:
    orphan = weddings["orphan"].pk
    assert [user for user in User.objects.all() if wedding_may_oversee(user=user, wedding_id=orphan)] == []
    assert wedding_may_oversee(user=make_superuser(), wedding_id=weddings["orphan"].pk)


@pytest.mark.parametrize("change", ["not_staff", "inactive"])
def test_losing_the_staff_flag_or_the_account_ends_oversight_at_once(
    weddings: dict[str, Wedding], cora: User, change: str
) -> None:
    if change == "not_staff":
        User.objects.filter(pk=cora.pk).update(is_staff=False)
    else:
        User.objects.filter(pk=cora.pk).update(is_active=False)
    cora.refresh_from_db()
    assert not weddings_overseen(user=cora).exists()
    assert not wedding_may_oversee(user=cora, wedding_id=weddings["luz1"].pk)
    assert not Wedding.objects.filter(weddings_overseen_condition(user=cora, wedding_path="pk")).exists()


def test_members_and_strangers_oversee_nothing(weddings: dict[str, Wedding]) -> None:
    member = MemberFactory(wedding=weddings["luz1"], role="planner").user
    for user in (member, AnonymousUser()):
        assert not weddings_overseen(user=user).exists()
        assert not wedding_may_oversee(user=user, wedding_id=weddings["luz1"].pk)
        assert not users_overseen(user=user).exists()


def test_a_coordinator_looks_up_their_weddings_people_and_unplaced_accounts_only(
    weddings: dict[str, Wedding], cora: User
) -> None:
    ours = MemberFactory(wedding=weddings["luz1"]).user
    covered = MemberFactory(wedding=weddings["covered"]).user
    theirs = MemberFactory(wedding=weddings["mar"]).user
    orphaned = MemberFactory(wedding=weddings["orphan"]).user
    new_guest = UserFactory(username="new-guest")
    other_staff = UserFactory(username="other-staff")
    User.objects.filter(pk=other_staff.pk).update(is_staff=True)
    visible = set(users_overseen(user=cora).values_list("username", flat=True))
    assert visible == {cora.username, ours.username, covered.username, new_guest.username}
    assert not {theirs.username, orphaned.username, other_staff.username, "max"} & visible
    assert users_overseen(user=make_superuser()).count() == User.objects.count()


def test_the_command_makes_an_account_a_coordinator_of_an_existing_agency(weddings: dict[str, Wedding]) -> None:
    agency = Agency.objects.create(name="Luz")
    Wedding.objects.filter(pk=weddings["luz1"].pk).update(agency=agency)
    UserFactory(username="lia")
    out = io.StringIO()
    call_command("coordinator_add", "lia", "--agency", "Luz", stdout=out)
    lia = User.objects.get(username="lia")
    assert "lia is a coordinator of Luz (1 weddings)" in out.getvalue()
    assert (lia.is_staff, lia.is_superuser) == (True, False)
    assert lia.groups.filter(name="Coordinators").exists() and lia.has_perm("presence.change_alert")
    assert _ids(weddings_overseen(user=lia)) == {weddings["luz1"].pk}
    with pytest.raises(CommandError, match="no agency named 'Mar'"):
        call_command("coordinator_add", "lia", "--agency", "Mar")
    with pytest.raises(CommandError, match="no account named 'nobody'"):
        call_command("coordinator_add", "nobody", "--agency", "Luz")


def test_the_check_costs_a_coordinator_one_query_and_members_none(
    weddings: dict[str, Wedding], cora: User, django_assert_num_queries
) -> None:
    member = MemberFactory(wedding=weddings["luz1"], role="planner").user
    sam = make_superuser(name="sam-q")
    with django_assert_num_queries(1):
        assert wedding_may_oversee(user=cora, wedding_id=weddings["luz1"].pk)
    with django_assert_num_queries(0):
        assert not wedding_may_oversee(user=member, wedding_id=weddings["luz1"].pk)
        assert wedding_may_oversee(user=sam, wedding_id=weddings["luz1"].pk)
