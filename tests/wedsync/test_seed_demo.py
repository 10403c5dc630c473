from __future__ import annotations

import datetime as dt
import io
import json
import zoneinfo

import pytest
from django.core.management import call_command
from django.utils import timezone

from wedsync.models import Member, Rsvp, Wedding
from wedsync.permissions import Role
from wedsync.services.auth import access_token_verify

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
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "password is 'wedsync-demo-2026'" in text
    assert "demo1-planner" in text and "/admin/" in text


def test_token_ttl_for_load_tests() -> None:
    (wedding,) = seed("--token-ttl", "7200")["weddings"]
    import jwt

    claims = jwt.decode(wedding["members"][0]["token"], options={"verify_signature": False})
    assert 7190 <= claims["exp"] - claims["iat"] <= 7200
