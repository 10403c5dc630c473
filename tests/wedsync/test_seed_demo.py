from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from tests.factories import WeddingFactory
from wedsync.models import Agency, Member, Rsvp, TimelineItem, Wedding
from wedsync.permissions import Role
from wedsync.selectors import weddings_overseen
from wedsync.services.auth import access_token_verify
from wedsync.services.demo import DEMO_AGENCY_NAME

pytestmark = pytest.mark.django_db


def seed(*args: str) -> dict:
    out = io.StringIO()
    call_command("seed_demo", "--json", *args, stdout=out)
    return json.loads(out.getvalue())  # exactly one JSON object, nothing else on stdout


def test_json_shape_and_working_tokens_for_all_ten_roles() -> None:
    payload = seed()
    assert list(payload) == ["weddings"]
    (wedding,) = payload["weddings"]
    assert {"id", "date", "ceremony_at", "members"} <= set(wedding)
    dt.date.fromisoformat(wedding["date"])
    assert dt.datetime.fromisoformat(wedding["ceremony_at"]).tzinfo is not None
    assert {member["role"] for member in wedding["members"]} == {role.value for role in Role}
    for member in wedding["members"]:
        assert set(member) == {"member", "user", "role", "username", "password", "token"}
        user = access_token_verify(raw=member["token"])
        assert user.pk == member["user"]
        assert user.check_password(member["password"])
        assert Member.objects.get(pk=member["member"]).role == member["role"]


def test_seeding_twice_creates_nothing_new() -> None:
    first = seed("--guests", "4")
    counts = (Wedding.objects.count(), Member.objects.count(), Rsvp.objects.count())
    second = seed("--guests", "4")
    assert (Wedding.objects.count(), Member.objects.count(), Rsvp.objects.count()) == counts
    assert [m["member"] for m in first["weddings"][0]["members"]] == [
        m["member"] for m in second["weddings"][0]["members"]
    ]
    assert counts == (1, 14, 4)


def test_many_weddings_and_guests() -> None:
    payload = seed("--weddings", "3", "--guests", "20")
    assert len(payload["weddings"]) == 3
    assert all(len(w["members"]) == 10 + 20 for w in payload["weddings"])
    assert len({m["user"] for w in payload["weddings"] for m in w["members"]}) == 90


def test_today_puts_the_wedding_on_the_local_date() -> None:
    (wedding,) = seed("--today", "--time-zone", "Pacific/Auckland")["weddings"]
    assert wedding["date"] == timezone.now().astimezone(zoneinfo.ZoneInfo("Pacific/Auckland")).date().isoformat()


def test_ceremony_in_minutes() -> None:
    before = timezone.now()
    (wedding,) = seed("--ceremony-in", "30")["weddings"]
    ceremony = dt.datetime.fromisoformat(wedding["ceremony_at"])
    assert dt.timedelta(minutes=29) < ceremony - before < dt.timedelta(minutes=31)


def test_human_output_says_how_to_log_in() -> None:
    out = io.StringIO()
    with override_settings(DEBUG=True):
        call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "password is 'wedsync-demo-2026'" in text
    assert "demo1-planner" in text and "/admin/ as 'demo-admin'" in text
    assert User.objects.get(username="demo-admin").is_superuser


def test_no_known_password_superuser_outside_debug() -> None:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "createsuperuser" in out.getvalue()
    assert not User.objects.filter(username__in=["demo-admin", "demo-coordinator"]).exists()
    # The demo weddings still belong to the demo agency: a real coordinator can be added to it.
    assert set(Wedding.objects.values_list("agency__name", flat=True)) == {DEMO_AGENCY_NAME}


def test_in_debug_the_demo_agency_has_a_coordinator_who_sees_its_weddings_only() -> None:
    other = WeddingFactory()  # of no agency: the superuser's alone
    out = io.StringIO()
    with override_settings(DEBUG=True):
        call_command("seed_demo", "--weddings", "2", stdout=out)
        call_command("seed_demo", "--weddings", "2", stdout=io.StringIO())  # twice: nothing doubles
    assert "as 'demo-coordinator'" in out.getvalue()
    coordinator = User.objects.get(username="demo-coordinator")
    assert (coordinator.is_staff, coordinator.is_superuser) == (True, False)
    assert coordinator.check_password("wedsync-demo-2026")
    assert coordinator.has_perm("presence.change_emergency") and not coordinator.has_perm("wedsync.delete_wedding")
    agency = Agency.objects.get(name=DEMO_AGENCY_NAME)
    assert list(agency.coordinators.all()) == [coordinator]
    demo = set(Wedding.objects.filter(slug__startswith="demo-").values_list("pk", flat=True))
    assert set(weddings_overseen(user=coordinator).values_list("pk", flat=True)) == demo
    admin = User.objects.get(username="demo-admin")
    assert set(weddings_overseen(user=admin).values_list("pk", flat=True)) == demo | {other.pk}


def test_if_empty_seeds_only_once() -> None:
    assert len(seed("--if-empty")["weddings"]) == 1
    assert seed("--if-empty") == {"weddings": []}
    assert Wedding.objects.count() == 1


def test_absurd_ceremony_offset_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="within a year"):
        seed("--ceremony-in", "99999999999")


def test_json_on_stdout_is_exactly_one_object_end_to_end(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="wedsync.settings", DEBUG="1", WEDSYNC_VAR_DIR=str(tmp_path))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, check=True, timeout=120)
    result = subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--json", "--guests", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    payload, end = json.JSONDecoder().raw_decode(result.stdout)
    assert result.stdout[end:].strip() == ""
    assert len(payload["weddings"][0]["members"]) == 11


def test_token_ttl_for_load_tests() -> None:
    (wedding,) = seed("--token-ttl", "7200")["weddings"]
    import jwt

    claims = jwt.decode(wedding["members"][0]["token"], options={"verify_signature": False})
    assert 7190 <= claims["exp"] - claims["iat"] <= 7200


def test_editors_and_a_longer_timeline_for_load_tests() -> None:
    (wedding,) = seed("--guests", "5", "--editors", "7", "--timeline-items", "12")["weddings"]
    roles = [m["role"] for m in wedding["members"] if m["username"].startswith("demo1-assistant")]
    assert roles == ["venue", "photographer", "videographer", "caterer", "florist", "musician", "venue"]
    assert len(wedding["members"]) == 10 + 7 + 5
    assistants = Member.objects.filter(user__username__startswith="demo1-assistant")
    assert not assistants.filter(is_key_person=True).exists()  # the crew are the key people
    timeline = wedding["timeline"]
    assert len(timeline) == TimelineItem.objects.filter(wedding_id=wedding["id"]).count() == 12
    vendors = {m["member"] for m in wedding["members"] if Role(m["role"]).is_vendor}
    assert all(item["version"] == 1 and item["assigned_vendors"] for item in timeline)
    assert {v for item in timeline for v in item["assigned_vendors"]} <= vendors
    assert [item["assigned_vendors"] for item in timeline] == [
        sorted(TimelineItem.objects.get(pk=item["id"]).assigned_vendors.values_list("pk", flat=True))
        for item in timeline
    ]
    # Seeding again with a longer timeline tops it up; nothing doubles.
    (again,) = seed("--guests", "5", "--editors", "7", "--timeline-items", "14")["weddings"]
    assert [item["id"] for item in again["timeline"][:12]] == [item["id"] for item in timeline]
    assert len(again["timeline"]) == 14
    assert Member.objects.filter(wedding_id=wedding["id"]).count() == 22


def test_the_default_timeline_is_the_demos_five_items() -> None:
    (wedding,) = seed()["weddings"]
    assert len(wedding["timeline"]) == 5


def test_negative_editors_are_a_clear_error() -> None:
    with pytest.raises(CommandError, match="--editors"):
        seed("--editors", "-1")
