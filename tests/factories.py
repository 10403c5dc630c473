from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from typing import Any

import factory
from django.contrib.auth import get_user_model

from presence.models import Alert, AlertKind, AlertSeverity
from presence.state import DevicePresence
from wedsync.models import Member, Rsvp, Task, TimelineItem, Wedding
from wedsync.permissions import Role

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save(update_fields=["password"])


class WeddingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Wedding

    name = factory.Sequence(lambda n: f"Wedding {n}")
    slug = factory.Sequence(lambda n: f"wedding-{n}")
    time_zone = "Europe/Lisbon"
    date = factory.LazyFunction(lambda: dt.date.today() + dt.timedelta(days=30))
    ceremony_at = factory.LazyAttribute(
        lambda o: dt.datetime.combine(o.date, dt.time(16, 0), tzinfo=zoneinfo.ZoneInfo(o.time_zone))
    )
    venue_name = "Quinta da Luz"


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Member

    user = factory.SubFactory(UserFactory)
    wedding = factory.SubFactory(WeddingFactory)
    role = Role.GUEST.value


class TimelineItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TimelineItem

    wedding = factory.SubFactory(WeddingFactory)
    title = factory.Sequence(lambda n: f"Item {n}")
    starts_at = factory.LazyAttribute(lambda o: o.wedding.ceremony_at)


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    wedding = factory.SubFactory(WeddingFactory)
    title = factory.Sequence(lambda n: f"Task {n}")


class RsvpFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rsvp

    guest = factory.SubFactory(MemberFactory)


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    wedding = factory.SubFactory(WeddingFactory)
    kind = AlertKind.KEY_PERSON_MISSING.value
    severity = AlertSeverity.WARNING.value
    message = factory.Sequence(lambda n: f"Alert {n}")


def device_presence(member: Member, **fields: Any) -> DevicePresence:
    """A live device of ``member`` as the presence store holds it (rules are tested on these)."""
    values: dict[str, Any] = {
        "wedding_id": member.wedding_id,
        "member_id": member.pk,
        "role": member.role,
        "device": f"socket-{member.pk}",
        "node": "test-node",
        "heartbeat_interval": 30,
        "last_seen": time.time(),
        **fields,
    }
    return DevicePresence(**values)
