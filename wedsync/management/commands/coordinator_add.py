from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from wedsync.models import Agency
from wedsync.services.agencies import COORDINATORS_GROUP, agency_coordinator_add


class Command(BaseCommand):
    help = (
        "Make a user a coordinator of an agency: staff, in the Coordinators group (created or reset to "
        "its permissions), overseeing the agency's weddings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="An existing account.")
        parser.add_argument("--agency", required=True, help="The agency's name, exactly (create it in the admin).")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no account named {options['username']!r}")
        agency = Agency.objects.filter(name=options["agency"]).first()
        if agency is None:
            raise CommandError(f"no agency named {options['agency']!r}: a superuser creates it in the admin")
        agency_coordinator_add(agency=agency, user=user)
        weddings = agency.weddings.count()
        self.stdout.write(
            f"{user.get_username()} is a coordinator of {agency.name} ({weddings} weddings), "
            f"in the {COORDINATORS_GROUP} group."
        )
