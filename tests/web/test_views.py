"""The pages as Django renders them: who sees which wedding, what the page boots from, and a
Content-Security-Policy that no inline script could pass."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client

from tests.factories import MemberFactory, WeddingFactory
from tests.personas import WeddingParty
from wedsync.models import Member
from wedsync.permissions import Role

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db]


def _client_for(member: Member) -> Client:
    client = Client()
    client.force_login(member.user)
    return client


def _boot(html: str) -> dict:
    match = re.search(r'<script id="wedsync-boot" type="application/json">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_pages_ask_anonymous_visitors_to_sign_in(client: Client, party: WeddingParty) -> None:
    for path in ("/weddings/", f"/weddings/{party.wedding.pk}/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    assert client.get("/login/").status_code == 200


def test_my_weddings_lists_the_active_memberships_only(party: WeddingParty) -> None:
    other = WeddingFactory(name="The other wedding")
    MemberFactory(user=party.paula.user, wedding=other, role=Role.PHOTOGRAPHER.value, is_active=False)
    body = _client_for(party.paula).get("/weddings/").content.decode()
    assert party.wedding.name in body
    assert "The other wedding" not in body


def test_the_wedding_page_is_not_found_for_non_members_and_removed_members(party: WeddingParty) -> None:
    stranger = MemberFactory(wedding=WeddingFactory(), role=Role.GUEST.value)
    assert _client_for(stranger).get(f"/weddings/{party.wedding.pk}/").status_code == 404
    assert _client_for(stranger).get("/weddings/999999/").status_code == 404
    Member.objects.filter(pk=party.carmen.pk).update(is_active=False)
    assert _client_for(party.carmen).get(f"/weddings/{party.wedding.pk}/").status_code == 404


def test_a_guest_boots_with_the_crew_and_themselves_never_the_guest_list(party: WeddingParty) -> None:
    other_guest = MemberFactory(wedding=party.wedding, role=Role.GUEST.value)
    boot = _boot(_client_for(party.gil).get(f"/weddings/{party.wedding.pk}/").content.decode())
    ids = {m["id"] for m in boot["members"]}
    assert party.gil.pk in ids and party.priya.pk in ids
    assert other_guest.pk not in ids
    me = {
        "member": party.gil.pk,
        "user": party.gil.user_id,
        "role": "guest",
        "name": party.gil.name,
        "is_vendor": False,
    }
    assert boot["me"] == me
    assert boot["may"]["view_presence"] == "none" and boot["may"]["edit_rsvp"] == "own"
    planner_boot = _boot(_client_for(party.priya).get(f"/weddings/{party.wedding.pk}/").content.decode())
    assert other_guest.pk in {m["id"] for m in planner_boot["members"]}


def test_the_page_draws_only_the_controls_a_role_may_use(party: WeddingParty) -> None:
    guest_page = _client_for(party.gil).get(f"/weddings/{party.wedding.pk}/").content.decode()
    planner_page = _client_for(party.priya).get(f"/weddings/{party.wedding.pk}/").content.decode()
    for control in ('id="emergency-form"', 'id="my-location"', 'id="status-eta"', 'id="alerts"'):
        assert control not in guest_page
        assert control in planner_page


def test_pages_carry_a_csp_without_inline_script_and_have_none(party: WeddingParty) -> None:
    response = _client_for(party.priya).get(f"/weddings/{party.wedding.pk}/")
    policy = response["Content-Security-Policy"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    assert script_src.strip() == "script-src 'self'"
    assert "frame-ancestors 'none'" in policy
    html = response.content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="' in tag or 'type="application/json"' in tag, tag
    assert re.search(r'<meta name="csrf-token" content="[^"]+">', html)
    assert "onclick=" not in html and "javascript:" not in html


def test_collected_modules_import_each_other_by_their_hashed_names(static_root: Path) -> None:
    """After a deploy no browser may run a new page.js against an old client.js from its cache."""
    collected = static_root / "static" / "wedsync"
    [page] = [p for p in collected.glob("page.*.js") if re.fullmatch(r"page\.[0-9a-f]{12}\.js", p.name)]
    imports = re.findall(r'from "\./([^"]+)"', page.read_text())
    assert imports and all(re.fullmatch(r"[a-z]+\.[0-9a-f]{12}\.js", name) for name in imports), imports
    assert all((collected / name).is_file() for name in imports)
