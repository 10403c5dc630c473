from __future__ import annotations

import json
import zoneinfo
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from wedsync.services.demo import (
    DEMO_ADMIN_USERNAME,
    DEMO_AGENCY_NAME,
    DEMO_COORDINATOR_USERNAME,
    DEMO_PASSWORD,
    DEMO_TIMELINE_ITEMS,
    demo_seed,
)

MAX_TIMELINE_ITEMS = 1000


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Create (or refresh) demo weddings with a member of every role, and print how to log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout and nothing else.")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing if any wedding exists (make run's first-run seed)."
        )
        parser.add_argument("--weddings", type=_positive, default=1, help="How many weddings (default 1).")
        parser.add_argument("--guests", type=int, default=3, help="Guests per wedding (default 3).")
        parser.add_argument("--today", action="store_true", help="The weddings are today (wedding-day mode).")
        parser.add_argument("--ceremony-in", type=int, metavar="MINUTES", help="Ceremony this many minutes from now.")
        parser.add_argument("--time-zone", default="Europe/London", help="IANA time zone of the weddings.")
        parser.add_argument(
            "--token-ttl", type=_positive, metavar="SECONDS", help="Lifetime of the printed access tokens (load tests)."
        )
        parser.add_argument(
            "--editors",
            type=int,
            default=0,
            help="Vendor assistants per wedding who may change the timeline (load tests; default 0).",
        )
        parser.add_argument(
            "--timeline-items",
            type=int,
            default=DEMO_TIMELINE_ITEMS,
            metavar="N",
            help=f"Timeline items per wedding (default {DEMO_TIMELINE_ITEMS}; more are generated, for load tests).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["guests"] < 0:
            raise CommandError("--guests must be 0 or more")
        if options["editors"] < 0:
            raise CommandError("--editors must be 0 or more")
        if not 0 <= options["timeline_items"] <= MAX_TIMELINE_ITEMS:
            raise CommandError(f"--timeline-items must be 0 to {MAX_TIMELINE_ITEMS}")
        if options["time_zone"] not in zoneinfo.available_timezones():
            raise CommandError(f"--time-zone: unknown time zone {options['time_zone']!r}")
        if options["token_ttl"] and options["token_ttl"] > 24 * 3600:
            raise CommandError("--token-ttl must be at most 86400 seconds")
        if options["ceremony_in"] is not None and abs(options["ceremony_in"]) > 366 * 24 * 60:
            raise CommandError("--ceremony-in must be within a year (525600 minutes) of now")
        weddings = demo_seed(
            weddings=options["weddings"],
            guests=options["guests"],
            today=options["today"],
            ceremony_in=options["ceremony_in"],
            time_zone=options["time_zone"],
            token_lifetime=timedelta(seconds=options["token_ttl"]) if options["token_ttl"] else None,
            with_admin=settings.DEBUG,
            only_if_empty=options["if_empty"],
            editors=options["editors"],
            timeline_items=options["timeline_items"],
        )
        if not weddings:
            if not options["json"]:
                self.stdout.write("Weddings exist already; not seeding. Run seed_demo without --if-empty to refresh.")
            else:
                self.stdout.write(json.dumps({"weddings": []}))
            return
        if options["json"]:
            payload = {
                "weddings": [
                    {
                        "id": item.wedding.pk,
                        "date": item.wedding.date.isoformat(),
                        "ceremony_at": item.wedding.ceremony_at.isoformat().replace("+00:00", "Z"),
                        "time_zone": item.wedding.time_zone,
                        "members": [
                            {
                                "member": m.member_id,
                                "user": m.user_id,
                                "role": m.role,
                                "username": m.username,
                                "password": m.password,
                                "token": m.token,
                            }
                            for m in item.members
                        ],
                        "timeline": [
                            {"id": t.item_id, "version": t.version, "assigned_vendors": t.assigned_vendors}
                            for t in item.timeline
                        ],
                    }
                    for item in weddings
                ]
            }
            self.stdout.write(json.dumps(payload, separators=(",", ":")))
            return
        for item in weddings:
            wedding = item.wedding
            ceremony = f"{wedding.ceremony_at:%Y-%m-%d %H:%M} UTC"
            self.stdout.write(
                self.style.SUCCESS(f"{wedding.name} (id {wedding.pk}) on {wedding.date}, ceremony {ceremony}")
            )
            shown = [m for m in item.members if m.role != "guest"] + [m for m in item.members if m.role == "guest"][:3]
            for member in shown:
                self.stdout.write(f"  {member.role:<13} {member.username:<24} member {member.member_id}")
            hidden = len(item.members) - len(shown)
            if hidden:
                self.stdout.write(f"  ... and {hidden} more guests")
        self.stdout.write("")
        self.stdout.write(f"Every demo user's password is {DEMO_PASSWORD!r}.")
        if settings.DEBUG:
            self.stdout.write(f"Admin panel: /admin/ as {DEMO_ADMIN_USERNAME!r} (same password; sees every wedding),")
            self.stdout.write(
                f"or as {DEMO_COORDINATOR_USERNAME!r}, a coordinator who sees {DEMO_AGENCY_NAME!r}'s weddings only."
            )
        else:
            self.stdout.write("No demo admin outside DEBUG: create one with manage.py createsuperuser.")
        self.stdout.write('Tokens: POST /api/v1/auth/token/ with {"username": ..., "password": ...}.')
        self.stdout.write("Run with --json for ready-made access tokens.")
