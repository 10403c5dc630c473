"""Event webhooks (issue 20, decision 0032): a service account's subscription receives the wedding's
events as a staff observer sees them, in seq order, in signed batches; the cursor moves only on a
2xx; a batch is retried with backoff, dead-lettered when its attempts run out (and its subscription
paused), and retried from the admin. A real HTTP server on 127.0.0.1 plays the integrator; the beat
sweep and the delivery tasks run in the test's thread; time-machine moves the clock past backoffs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from monitoring.models import DeadLetter, DeadLetterState, EventWebhook
from monitoring.services.event_webhooks.delivery import ACCESS_LOST, event_webhooks_dispatch_due
from monitoring.services.event_webhooks.subscriptions import event_webhook_create, event_webhook_secret_rotate
from monitoring.tasks import deliver_event_webhook, deliver_event_webhooks
from monitoring.webhooks import webhook_signature_valid
from realtime.services.events import member_event_publish
from tests.monitoring.webhook_server import Received, WebhookServer, webhook_server
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from wedsync.models import ApiScope, AuditLog, ServiceAccount
from wedsync.services.service_accounts import service_account_create

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db]


@pytest.fixture
def receiver() -> Iterator[WebhookServer]:
    with webhook_server() as server:
        yield server


@pytest.fixture
def crm(party: WeddingParty) -> ServiceAccount:
    return service_account_create(
        name="Luz CRM", scopes=[ApiScope.READ, ApiScope.WEBHOOKS], weddings=[party.wedding], actor=None
    )


def subscribe(crm: ServiceAccount, party: WeddingParty, url: str, types: list[str] | None = None) -> EventWebhook:
    webhook, _secret = event_webhook_create(
        account=crm, wedding_id=party.wedding.pk, url=url, event_types=types or [], actor=crm.user
    )
    return webhook


def sweep() -> list[str]:
    """One beat sweep, and each delivery task it queued run here as a worker would run it."""
    return [deliver_event_webhook(one.webhook_id, str(one.dispatch_id)) for one in event_webhooks_dispatch_due()]


def chat(party: WeddingParty, text: str, **kwargs: Any) -> int:
    return member_event_publish(member=party.priya, type_name="chat.message", data={"text": text}, **kwargs).seq


def payload(received: Received) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(received.body)
    return body


def texts(received: Received) -> list[str]:
    return [event["data"].get("text", event["type"]) for event in payload(received)["events"]]


def test_a_batch_is_signed_like_the_escalation_webhook(receiver: WebhookServer, crm, party) -> None:
    webhook = subscribe(crm, party, receiver.url)
    first, second = chat(party, "Buses at 14:30"), chat(party, "Cake at 18:00")
    assert sweep() == ["caught_up"]
    (received,) = receiver.received
    webhook.refresh_from_db()
    assert webhook_signature_valid(
        secret=webhook.secret,
        timestamp=int(received.headers["x-wedsync-timestamp"]),
        body=received.body,
        signature=received.headers["x-wedsync-signature"],
    )
    assert abs(int(received.headers["x-wedsync-timestamp"]) - timezone.now().timestamp()) < 60
    body = payload(received)
    assert received.headers["x-wedsync-delivery-id"] == body["delivery_id"]
    assert received.headers["x-wedsync-attempt"] == "1"
    assert received.headers["user-agent"] == "WedSync-Events/1"
    assert received.headers["content-type"] == "application/json; charset=utf-8"
    assert received.path == "/hooks/wedsync"
    assert {key: body[key] for key in ("version", "subscription_id", "wedding_id", "after", "upto")} == {
        "version": 1,
        "subscription_id": webhook.pk,
        "wedding_id": party.wedding.pk,
        "after": 0,
        "upto": second,
    }
    assert [event["seq"] for event in body["events"]] == [first, second]
    assert body["events"][0]["data"] == {"text": "Buses at 14:30"} and body["events"][0]["type"] == "chat.message"
    assert (webhook.last_delivered_seq, webhook.delivery_id, webhook.run_attempts) == (second, None, 0)
    assert sweep() == []  # caught up: nothing is handed to a task until the wedding's stream moves on


def test_a_subscription_starts_after_the_events_already_published(receiver: WebhookServer, crm, party) -> None:
    chat(party, "before")
    webhook = subscribe(crm, party, receiver.url)
    assert webhook.last_delivered_seq == 1
    chat(party, "after")
    sweep()
    assert [texts(received) for received in receiver.received] == [["after"]]


def test_batches_hold_at_most_batch_max_events_in_seq_order(receiver: WebhookServer, crm, party, settings) -> None:
    settings.WEDSYNC_EVENT_WEBHOOK_BATCH_MAX = 2
    settings.WEDSYNC_EVENT_WEBHOOK_BATCHES_PER_RUN = 2
    subscribe(crm, party, receiver.url)
    seqs = [chat(party, f"note {n}") for n in range(5)]
    assert sweep() == ["more"]  # two batches, then the rest is left for the next sweep
    assert sweep() == ["caught_up"]
    bodies = [payload(received) for received in receiver.received]
    assert [[event["seq"] for event in body["events"]] for body in bodies] == [seqs[0:2], seqs[2:4], seqs[4:]]
    assert [(body["after"], body["upto"]) for body in bodies] == [(0, 2), (2, 4), (4, 5)]
    assert len({body["delivery_id"] for body in bodies}) == 3


def test_member_addressed_events_and_other_types_never_reach_the_url(receiver: WebhookServer, crm, party) -> None:
    chats = subscribe(crm, party, receiver.url, types=["chat.message"])
    with webhook_server() as everything:
        every_type = subscribe(crm, party, everything.url)
        chat(party, "to everyone")
        chat(party, "for Carmen only", to=[f"member:{party.carmen.pk}"])
        member_event_publish(member=party.paula, type_name="vendor.status", data={"activity": "en_route"})
        chat(party, "for the planners", to=["role:planner"])
        last = chat(party, "for Gil only", to=[f"member:{party.gil.pk}"])
        sweep()
        assert [texts(received) for received in everything.received] == [
            ["to everyone", "vendor.status", "for the planners"]
        ]
    assert [texts(received) for received in receiver.received] == [["to everyone", "for the planners"]]
    leaked = [r.body for r in [*receiver.received] if b"Carmen" in r.body or b"Gil" in r.body]
    assert leaked == []
    for webhook in (chats, every_type):
        webhook.refresh_from_db()
        assert webhook.last_delivered_seq == last  # past what it does not receive, too


def test_a_stretch_with_nothing_for_the_subscription_moves_its_cursor_without_a_request(
    receiver: WebhookServer, crm, party
) -> None:
    webhook = subscribe(crm, party, receiver.url, types=["vendor.status"])
    last = chat(party, "not for it")
    assert sweep() == ["caught_up"]
    webhook.refresh_from_db()
    assert (receiver.received, webhook.last_delivered_seq) == ([], last)


def test_the_cursor_moves_only_on_2xx_and_a_retry_resends_the_same_batch(
    receiver: WebhookServer, crm, party, settings
) -> None:
    receiver.script = [HTTPStatus.INTERNAL_SERVER_ERROR, HTTPStatus.FOUND]
    webhook = subscribe(crm, party, receiver.url)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = chat(party, "first")
        assert sweep() == ["retry"]
        webhook.refresh_from_db()
        assert (webhook.last_delivered_seq, webhook.run_attempts) == (0, 1)
        assert webhook.next_attempt_at is not None
        wait = (webhook.next_attempt_at - timezone.now()).total_seconds()
        base = settings.WEDSYNC_EVENT_WEBHOOK_BACKOFF_SECONDS
        assert base / 2 <= wait <= base  # the escalation webhook's backoff: half the step plus jitter
        second = chat(party, "second")
        assert sweep() == []  # still backing off
        clock.shift(dt.timedelta(seconds=wait + 0.1))
        assert sweep() == ["retry"]  # a redirect is not a delivery either
        clock.shift(dt.timedelta(seconds=2 * base + 0.1))
        assert sweep() == ["caught_up"]
    batches = [payload(received) for received in receiver.received]
    attempts = [received.headers["x-wedsync-attempt"] for received in receiver.received]
    assert attempts == ["1", "2", "3", "1"]
    assert len({received.body for received in receiver.received[:3]}) == 1  # the same bytes each time
    assert [[event["seq"] for event in body["events"]] for body in batches] == [[first]] * 3 + [[second]]
    assert batches[3]["after"] == first
    webhook.refresh_from_db()
    assert (webhook.last_delivered_seq, webhook.attempts) == (second, 4)


def test_a_batch_that_runs_out_of_attempts_is_dead_lettered_and_its_subscription_paused(
    receiver: WebhookServer, crm, party, settings
) -> None:
    settings.WEDSYNC_EVENT_WEBHOOK_ATTEMPTS = 3
    receiver.then = HTTPStatus.SERVICE_UNAVAILABLE
    webhook = subscribe(crm, party, receiver.url)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        chat(party, "first")
        outcomes = []
        for _attempt in range(3):
            outcomes += sweep()
            clock.shift(dt.timedelta(seconds=settings.WEDSYNC_EVENT_WEBHOOK_BACKOFF_MAX_SECONDS))
        assert outcomes == ["retry", "retry", "paused"]
        chat(party, "second")
        assert sweep() == []  # paused: not retried for ever
    webhook.refresh_from_db()
    assert not webhook.is_active and webhook.paused_at is not None
    assert webhook.pause_reason == "3 attempts failed, the last: HTTP 503"
    assert webhook.last_delivered_seq == 0 and webhook.delivery_id is not None  # stopped at the batch
    (letter,) = DeadLetter.objects.all()
    assert (letter.event_webhook_id, letter.escalation_id, letter.state, letter.attempts) == (
        webhook.pk,
        None,
        DeadLetterState.OPEN,
        3,
    )
    assert letter.payload == webhook.batch_payload and "HTTP 503" in letter.last_error
    assert len(receiver.received) == 3


def _dead_lettered(receiver: WebhookServer, crm: ServiceAccount, party: WeddingParty, settings: Any) -> EventWebhook:
    settings.WEDSYNC_EVENT_WEBHOOK_ATTEMPTS = 1
    receiver.then = HTTPStatus.INTERNAL_SERVER_ERROR
    webhook = subscribe(crm, party, receiver.url)
    chat(party, "first")
    assert sweep() == ["paused"]
    chat(party, "second")
    return webhook


def test_a_staff_retry_of_the_dead_letter_resumes_delivery_in_order(
    receiver: WebhookServer, crm, party, settings
) -> None:
    webhook = _dead_lettered(receiver, crm, party, settings)
    (letter,) = DeadLetter.objects.all()
    admin = Client()
    admin.force_login(make_superuser())
    changelist = reverse("admin:monitoring_deadletter_changelist")
    assert str(party.wedding.name) in admin.get(changelist).content.decode()
    receiver.then = HTTPStatus.OK
    answer = admin.post(changelist, {"action": "retry", "_selected_action": [letter.pk]})
    assert answer.status_code == 302
    letter.refresh_from_db()
    assert letter.state == DeadLetterState.RETRYING and letter.retried_by is not None
    assert sweep() == ["caught_up"]
    first, retried, following = receiver.received
    assert retried.body == first.body and retried.headers["x-wedsync-attempt"] == "1"
    assert [texts(retried), texts(following)] == [["first"], ["second"]]
    letter.refresh_from_db()
    webhook.refresh_from_db()
    assert letter.state == DeadLetterState.DELIVERED and letter.resolved_at is not None
    assert webhook.is_active and webhook.last_delivered_seq == 2
    assert admin.post(changelist, {"action": "retry", "_selected_action": [letter.pk]}).status_code == 302
    assert sweep() == []  # only an open dead letter is retried


def test_a_retry_that_fails_again_leaves_a_newer_dead_letter(receiver: WebhookServer, crm, party, settings) -> None:
    _dead_lettered(receiver, crm, party, settings)
    (letter,) = DeadLetter.objects.all()
    admin = Client()
    admin.force_login(make_superuser())
    admin.post(reverse("admin:monitoring_deadletter_changelist"), {"action": "retry", "_selected_action": [letter.pk]})
    assert sweep() == ["paused"]
    older, newer = DeadLetter.objects.order_by("pk")
    assert (older.state, newer.state) == (DeadLetterState.FAILED_AGAIN, DeadLetterState.OPEN)


def test_staff_pause_and_resume_subscriptions_of_the_weddings_they_oversee(receiver: WebhookServer, crm, party) -> None:
    webhook = subscribe(crm, party, receiver.url)
    other = make_wedding_party(slug="elsewhere")
    stranger_account = service_account_create(
        name="Other CRM", scopes=[ApiScope.WEBHOOKS], weddings=[other.wedding], actor=None
    )
    strangers, _secret = event_webhook_create(
        account=stranger_account,
        wedding_id=other.wedding.pk,
        url=receiver.url,
        event_types=[],
        actor=stranger_account.user,
    )
    cora = make_coordinator(party.wedding)  # the coordinators' group may view, pause and resume them
    admin = Client()
    admin.force_login(cora)
    changelist = reverse("admin:monitoring_eventwebhook_changelist")
    page = admin.get(changelist)
    assert page.status_code == 200
    shown = page.content.decode()
    assert receiver.url in shown and f'value="{strangers.pk}"' not in shown
    assert (
        webhook.secret
        not in admin.get(reverse("admin:monitoring_eventwebhook_change", args=[webhook.pk])).content.decode()
    )
    admin.post(changelist, {"action": "pause", "_selected_action": [webhook.pk, strangers.pk]})
    webhook.refresh_from_db()
    strangers.refresh_from_db()
    assert (webhook.is_active, strangers.is_active) == (False, True)
    assert webhook.pause_reason == "Paused by cora."
    chat(party, "while paused")
    assert sweep() == []
    admin.post(changelist, {"action": "resume", "_selected_action": [webhook.pk]})
    assert sweep() == ["caught_up"]
    assert [texts(received) for received in receiver.received] == [["while paused"]]
    actions = list(
        AuditLog.objects.filter(target=f"webhook:{webhook.pk}").order_by("pk").values_list("action", "actor_id")
    )
    assert actions == [
        ("api.webhook.create", crm.user.pk),
        ("api.webhook.pause", cora.pk),
        ("api.webhook.resume", cora.pk),
    ]


def test_a_subscription_whose_account_may_no_longer_see_the_wedding_is_paused(
    receiver: WebhookServer, crm, party
) -> None:
    webhook = subscribe(crm, party, receiver.url)
    crm.weddings.clear()
    chat(party, "after the account lost the wedding")
    assert sweep() == ["paused"]
    webhook.refresh_from_db()
    assert (webhook.is_active, webhook.pause_reason, receiver.received) == (False, ACCESS_LOST, [])


def test_a_rotated_secret_signs_the_next_attempt(receiver: WebhookServer, crm, party) -> None:
    webhook = subscribe(crm, party, receiver.url)
    old = webhook.secret
    _webhook, new = event_webhook_secret_rotate(webhook=webhook, actor=crm.user)
    chat(party, "signed anew")
    sweep()
    (received,) = receiver.received
    timestamp, signature = int(received.headers["x-wedsync-timestamp"]), received.headers["x-wedsync-signature"]
    assert webhook_signature_valid(secret=new, timestamp=timestamp, body=received.body, signature=signature)
    assert not webhook_signature_valid(secret=old, timestamp=timestamp, body=received.body, signature=signature)


def test_a_second_message_for_the_same_dispatch_sends_nothing(receiver: WebhookServer, crm, party) -> None:
    subscribe(crm, party, receiver.url)
    chat(party, "once")
    (dispatched,) = event_webhooks_dispatch_due()
    assert event_webhooks_dispatch_due() == []  # held by the queued message
    assert deliver_event_webhook(dispatched.webhook_id, str(dispatched.dispatch_id)) == "caught_up"
    assert deliver_event_webhook(dispatched.webhook_id, str(dispatched.dispatch_id)) == "superseded"
    assert len(receiver.received) == 1


def test_a_lost_delivery_message_is_queued_again_once_its_lease_is_over(receiver: WebhookServer, crm, party) -> None:
    subscribe(crm, party, receiver.url)
    chat(party, "lost then found")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        (lost,) = event_webhooks_dispatch_due()
        clock.shift(dt.timedelta(seconds=61))
        assert sweep() == ["caught_up"]
    assert deliver_event_webhook(lost.webhook_id, str(lost.dispatch_id)) == "superseded"
    assert len(receiver.received) == 1


def test_the_beat_task_queues_deliveries_after_its_commit(
    receiver: WebhookServer, crm, party, eager_celery, django_capture_on_commit_callbacks
) -> None:
    subscribe(crm, party, receiver.url)
    chat(party, "through the broker's path")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliver_event_webhooks() == 1
    assert len(callbacks) == 1
    assert [texts(received) for received in receiver.received] == [["through the broker's path"]]
