"""schemathesis against the schema the API serves (``/api/v1/schema/``): issue 16's outside test suite.

Every operation of the schema is called with generated requests, valid and invalid (schemathesis's
coverage and fuzzing phases), through the project's WSGI application in this process, on a database
seeded with two weddings, their alerts, emergencies, shared records and a conflict each, and some
presence. Every answer must be no 500, a documented status code, a documented content type and a
body that matches the documented schema; schemathesis's other default checks (valid data accepted,
invalid data refused, a missing or wrong credential refused, an undocumented method answered 405
with ``Allow``) run too.

Four passes, one test per operation each: as the seeded wedding's planner (a fresh bearer token for
every request, so that the logout operation, which revokes every token of its user, cannot starve
the requests after it), as a coordinator who oversees it (staff, the same way), with the API key of
a service account holding every scope over it, and with no credentials at all (schemathesis then
sends none, a made-up bearer token or a made-up session cookie). Half the path ids and usernames
are the seeded ones, so the answers about rows that exist (200 bodies, the other wedding's 403) are
checked too, not only 404s; each test fails if the answers it must have checked never came.

Reproducible: Hypothesis is derandomized (the requests depend only on the test and the library
versions, which the lock pins) and its example database is off, so CI replays exactly what a
developer's run did. Bounded: ``MAX_EXAMPLES`` generated requests per operation and pass on top of
the coverage phase's fixed set: roughly six thousand requests in all.

The requests run in the test's own thread and really commit (``transactional_db``): commit hooks
(the fan-out of an acknowledgement or a resolution) and Django's per-request connection handling run
as in production, and a failure shows its traceback here. In process rather than against a daphne
node because daphne hands HTTP straight to the same Django application (wedsync/asgi.py): a node
would add start-up time and hide tracebacks in its log, not reach other code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, settings

from monitoring.models import EventWebhook
from monitoring.services.event_webhooks.subscriptions import event_webhook_create
from presence.models import Emergency
from presence.services import presence_device_join
from realtime.services.events import member_event_publish
from records.models import Conflict, Strategy, WeddingStrategy
from records.services import SyncRequest, actor_for_member, record_sync
from tests.api.conftest import call_passed
from tests.factories import PASSWORD, AlertFactory, RsvpFactory, TaskFactory, TimelineItemFactory, device_presence
from tests.personas import WeddingParty, make_coordinator, make_wedding_party
from wedsync.models import ApiScope, Member
from wedsync.services.auth import access_token_issue
from wedsync.services.service_accounts import service_account_create, service_account_key_issue
from wedsync.wsgi import application

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis]

SCHEMA_PATH = "/api/v1/schema/?format=json"
# Generated requests per operation and pass, beside the coverage phase's boundary and invalid values.
MAX_EXAMPLES = 25
# How often a path id or username is a seeded one rather than a generated one.
SEEDED_SHARE = 0.5

# The seeded rows' ids and names are fixed, because the generators are configured when this module
# is collected, before the test database exists. Far above what the suite's sequences reach.
OWN_WEDDING, OTHER_WEDDING = 9_100_001, 9_100_002
OWN_ALERTS, OTHER_ALERT = (9_200_001, 9_200_002), 9_200_003
OWN_EMERGENCY, OTHER_EMERGENCY = 9_300_001, 9_300_002
OWN_ITEM, OWN_TASK, OWN_RSVP, OTHER_ITEM = 9_400_001, 9_400_002, 9_400_003, 9_400_004
OWN_CONFLICT, OTHER_CONFLICT = 9_500_001, 9_500_002
OWN_WEBHOOK = 9_600_001  # the key's account's event webhook subscription to the own wedding
PLANNER, GUEST = "priya-fuzz-own", "gil-fuzz-own"  # personas' usernames: <name>-<wedding slug>
COORDINATOR = "cora-fuzz"  # staff overseeing the own wedding (its agency), not the other


def _emergency(*, raised_by: Member, emergency_id: int) -> None:
    """An emergency raised the real way (an ``emergency.alert`` event), renumbered to a fixed id;
    nothing refers to an emergency's id but the API's paths."""
    data = {"message": "Fire in the kitchen", "location": "reception_hall"}
    published = member_event_publish(member=raised_by, type_name="emergency.alert", data=data)
    Emergency.objects.filter(raised_event_id=published.id).update(id=emergency_id)


def _conflict(party: WeddingParty, *, item_id: int, conflict_id: int) -> None:
    """The wedding keeps its timeline ``manual``, and a stale edit of the item became a conflict
    the real way, renumbered to a fixed id: a change of the item based on version 1 is one too."""
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    for member, title in ((party.paula, "Paula's"), (party.priya, "Priya's")):
        request = SyncRequest(kind="timeline_item", record_id=item_id, base_version=1, changes={"title": title})
        record_sync(actor=actor_for_member(member), request=request)
    Conflict.objects.filter(wedding=party.wedding).update(id=conflict_id)


@pytest.fixture
def seeded(transactional_db: None) -> str:
    """Seeds the database; returns the raw API key of a service account overseeing the own wedding."""
    own = make_wedding_party(pk=OWN_WEDDING, slug="fuzz-own")
    other = make_wedding_party(pk=OTHER_WEDDING, slug="fuzz-other")
    make_coordinator(own.wedding, name=COORDINATOR)
    account = service_account_create(
        name="Fuzz CRM",
        scopes=[scope.value for scope in ApiScope],
        agency=own.wedding.agency,
        weddings=(),
        actor=None,
    )
    _key, raw_key = service_account_key_issue(account=account, name="fuzz", actor=None)
    webhook, _secret = event_webhook_create(
        account=account,
        wedding_id=own.wedding.pk,
        url="https://crm.example.com/hooks",
        event_types=[],
        actor=account.user,
    )
    EventWebhook.objects.filter(pk=webhook.pk).update(id=OWN_WEBHOOK)
    for member, location in ((own.paula, "ceremony_area"), (own.priya, None), (own.gil, None)):
        presence_device_join(device=device_presence(member, device=f"dev-{member.pk}", location=location))
    AlertFactory(pk=OWN_ALERTS[0], wedding=own.wedding, member=own.paula)
    AlertFactory(pk=OWN_ALERTS[1], wedding=own.wedding, member=own.olu)
    AlertFactory(pk=OTHER_ALERT, wedding=other.wedding, member=other.paula)
    _emergency(raised_by=own.carmen, emergency_id=OWN_EMERGENCY)
    _emergency(raised_by=other.victor, emergency_id=OTHER_EMERGENCY)
    TimelineItemFactory(pk=OWN_ITEM, wedding=own.wedding, ceremony_notes="Rings after vows")
    TaskFactory(pk=OWN_TASK, wedding=own.wedding, assignee=own.flora)
    RsvpFactory(pk=OWN_RSVP, guest=own.gil)
    TimelineItemFactory(pk=OTHER_ITEM, wedding=other.wedding)
    _conflict(own, item_id=OWN_ITEM, conflict_id=OWN_CONFLICT)
    _conflict(other, item_id=OTHER_ITEM, conflict_id=OTHER_CONFLICT)
    return raw_key


def _served_schema() -> schemathesis.BaseSchema:
    def drawn_from(dictionary: str) -> dict[str, Any]:
        return {"dictionary": dictionary, "probability": SEEDED_SHARE}

    config = schemathesis.Config.from_dict(
        {
            "generation": {"deterministic": True, "database": "none", "max-examples": MAX_EXAMPLES},
            "dictionaries": {
                "weddings": {"values": [OWN_WEDDING, OTHER_WEDDING]},
                "alerts": {"values": [*OWN_ALERTS, OTHER_ALERT]},
                "emergencies": {"values": [OWN_EMERGENCY, OTHER_EMERGENCY]},
                "records": {"values": [OWN_ITEM, OWN_TASK, OWN_RSVP, OTHER_ITEM]},
                "conflicts": {"values": [OWN_CONFLICT, OTHER_CONFLICT]},
                "webhooks": {"values": [OWN_WEBHOOK]},
                "versions": {"values": ['"1"', '"2"']},  # the seeded records' versions
                "usernames": {"values": [PLANNER, GUEST]},
                "passwords": {"values": [PASSWORD]},
            },
            "parameters": {
                "path.wedding_id": drawn_from("weddings"),
                "path.alert_id": drawn_from("alerts"),
                "path.emergency_id": drawn_from("emergencies"),
                "path.record_id": drawn_from("records"),
                "path.conflict_id": drawn_from("conflicts"),
                "path.webhook_id": drawn_from("webhooks"),
                "header.If-Match": drawn_from("versions"),
                "body.username": drawn_from("usernames"),
                "body.password": drawn_from("passwords"),
            },
            "checks": {
                # The schema cannot say which values fit the wedding (a member of it, an end after
                # the start, a version the record has reached): those are refused 422, as documented,
                # and an If-Match the wedding is no longer at is 412.
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]
                },
                # A change without If-Match is answered 428 (precondition_required), as documented.
                "missing_required_header": {"expected-statuses": ["400", "401", "403", "406", "415", "422", "428"]},
            },
        }
    )
    return schemathesis.openapi.from_wsgi(SCHEMA_PATH, application, config=config)


planner_api = _served_schema()
anonymous_api = _served_schema()
coordinator_api = _served_schema()
key_api = _served_schema()


# Requests are generated in part when this module is collected (the coverage phase), before the test
# database exists: the requests carry these stand-ins, swapped for a fresh token or the seeded key when sent.
PLANNER_TOKEN_STANDIN = "planner-token-standin"
COORDINATOR_TOKEN_STANDIN = "coordinator-token-standin"
KEY_STANDIN = "key-standin"


@planner_api.auth(refresh_interval=None)
class PlannerToken:
    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return PLANNER_TOKEN_STANDIN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@coordinator_api.auth(refresh_interval=None)
class CoordinatorToken:
    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return COORDINATOR_TOKEN_STANDIN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@key_api.auth(refresh_interval=None)
class ServiceAccountKey:
    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return KEY_STANDIN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Api-Key {data}"


# Answers each pass must have checked at least once, by operation. A pass whose requests never reached
# a seeded row would check only refusals: this makes such a run fail instead of passing quietly.
PLANNER_REACHES: dict[str, set[int]] = {
    "GET /api/v1/audit/": {403},  # staff and keys: STAFF_REACHES
    "GET /api/v1/nodes/": {403},  # superusers only: tests/monitoring/test_node_registry.py
    "GET /api/v1/weddings/": {200, 400},
    "POST /api/v1/weddings/": {403},  # a planner creates none; 201: tests/api/test_weddings.py
    "GET /api/v1/weddings/{wedding_id}/": {200, 403},
    "PATCH /api/v1/weddings/{wedding_id}/": {403},  # a planner changes none
    "POST /api/v1/weddings/{wedding_id}/archive/": {403},
    "GET /api/v1/weddings/{wedding_id}/members/": {200, 403},
    "GET /api/v1/weddings/{wedding_id}/events/": {200, 400, 403},
    "POST /api/v1/weddings/{wedding_id}/events/": {403, 422},  # 201: tests/api/test_events_publish.py
    "POST /api/v1/weddings/{wedding_id}/members/": {201, 403},
    "PATCH /api/v1/weddings/{wedding_id}/members/{member_id}/": {403, 404},
    "DELETE /api/v1/weddings/{wedding_id}/members/{member_id}/": {403, 404},
    "POST /api/v1/auth/token/": {200, 401},
    "POST /api/v1/auth/token/refresh/": {400, 401},
    "POST /api/v1/auth/logout/": {204},
    "POST /api/v1/realtime/tickets/": {201},
    "GET /api/v1/weddings/{wedding_id}/alerts/": {200, 400, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/": {200, 403, 404},
    "GET /api/v1/weddings/{wedding_id}/emergencies/": {200, 400, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/": {200, 403, 404},
    "GET /api/v1/weddings/{wedding_id}/presence/": {200, 403, 404},
    "GET /api/v1/weddings/{wedding_id}/state/": {200, 403, 404},
    "GET /api/v1/weddings/{wedding_id}/records/{kind}/": {200, 403, 404},  # 400: SENT_AS_GIVEN
    "POST /api/v1/weddings/{wedding_id}/records/{kind}/": {403, 404, 422},  # 201: SENT_AS_GIVEN
    "GET /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {200, 403, 404},
    "PATCH /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {403, 404, 422},  # the rest: SENT_AS_GIVEN
    "DELETE /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {403, 404, 409},  # the rest: SENT_AS_GIVEN
    "POST /api/v1/weddings/{wedding_id}/records/batch/": {200, 403, 404, 422},
    "GET /api/v1/weddings/{wedding_id}/conflicts/": {200, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/conflicts/{conflict_id}/resolve/": {
        200,
        403,
        404,
        409,
    },  # the rest: SENT_AS_GIVEN
    "GET /api/v1/weddings/{wedding_id}/webhooks/": {403},  # keys only: people follow a wedding over its socket
    "POST /api/v1/weddings/{wedding_id}/webhooks/": {403},
    "GET /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {403},
    "DELETE /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {403},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/rotate-secret/": {403},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/resume/": {403},
}
# The staff passes: a coordinator overseeing the own wedding (not the other), and a key of a service
# account with every scope over the same agency. Unlike the planner, neither is a member.
COORDINATOR_REACHES: dict[str, set[int]] = {
    "GET /api/v1/audit/": {200, 400},
    "GET /api/v1/nodes/": {403},
    "GET /api/v1/weddings/": {200, 400},
    "POST /api/v1/weddings/": {403},  # a generated agency is never theirs; 201: tests/api/test_weddings.py
    "GET /api/v1/weddings/{wedding_id}/": {200, 403},
    "PATCH /api/v1/weddings/{wedding_id}/": {403, 412},  # 200: tests/api/test_weddings.py
    "POST /api/v1/weddings/{wedding_id}/archive/": {200, 403},
    "GET /api/v1/weddings/{wedding_id}/members/": {200, 403},
    "POST /api/v1/weddings/{wedding_id}/members/": {201, 403},
    "PATCH /api/v1/weddings/{wedding_id}/members/{member_id}/": {403, 404},
    "DELETE /api/v1/weddings/{wedding_id}/members/{member_id}/": {403, 404},
    "GET /api/v1/weddings/{wedding_id}/events/": {200, 400, 403},
    "POST /api/v1/weddings/{wedding_id}/events/": {403, 422},  # 201: tests/api/test_events_publish.py
    "POST /api/v1/auth/token/": {200, 401},
    "POST /api/v1/auth/token/refresh/": {400, 401},
    "POST /api/v1/auth/logout/": {204},
    "POST /api/v1/realtime/tickets/": {201},
    "GET /api/v1/weddings/{wedding_id}/alerts/": {200, 400, 403},
    "POST /api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/": {403, 404},
    "GET /api/v1/weddings/{wedding_id}/emergencies/": {200, 400, 403},
    "POST /api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/": {403, 404},
    "GET /api/v1/weddings/{wedding_id}/presence/": {200, 403},
    "GET /api/v1/weddings/{wedding_id}/state/": {200, 403},
    "GET /api/v1/weddings/{wedding_id}/records/{kind}/": {200, 403},
    "POST /api/v1/weddings/{wedding_id}/records/{kind}/": {403, 422},
    "GET /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {200, 403},
    "PATCH /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {403, 422},
    "DELETE /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {403, 409},
    "POST /api/v1/weddings/{wedding_id}/records/batch/": {200, 403, 422},
    "GET /api/v1/weddings/{wedding_id}/conflicts/": {200, 403},
    "POST /api/v1/weddings/{wedding_id}/conflicts/{conflict_id}/resolve/": {200, 403, 404, 409},
    "GET /api/v1/weddings/{wedding_id}/webhooks/": {403},  # keys only: people follow a wedding over its socket
    "POST /api/v1/weddings/{wedding_id}/webhooks/": {403},
    "GET /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {403},
    "DELETE /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {403},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/rotate-secret/": {403},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/resume/": {403},
}
KEY_REACHES: dict[str, set[int]] = {
    **{operation: statuses - {201, 204} for operation, statuses in COORDINATOR_REACHES.items()},
    "GET /api/v1/audit/": {200, 400},
    "POST /api/v1/weddings/": {403},  # 201: tests/api/test_weddings.py
    "POST /api/v1/weddings/{wedding_id}/members/": {201, 403, 422},
    "POST /api/v1/auth/logout/": {403},  # a key is no session to end
    "POST /api/v1/realtime/tickets/": {201},  # an observer's socket
    "POST /api/v1/weddings/{wedding_id}/records/{kind}/": {403},  # keys write no records
    "PATCH /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {403},
    "DELETE /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {403},
    "POST /api/v1/weddings/{wedding_id}/records/batch/": {200, 403},
    "POST /api/v1/weddings/{wedding_id}/conflicts/{conflict_id}/resolve/": {403, 404},
    "GET /api/v1/weddings/{wedding_id}/webhooks/": {200, 403},
    "POST /api/v1/weddings/{wedding_id}/webhooks/": {403, 422},  # 201: tests/api/test_event_webhooks.py
    "GET /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {200, 403, 404},
    "DELETE /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {204, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/rotate-secret/": {200, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/resume/": {200, 403, 404},
}
ANONYMOUS_REACHES: dict[str, set[int]] = {
    "GET /api/v1/audit/": {401},
    "GET /api/v1/nodes/": {401},
    "GET /api/v1/weddings/": {401},
    "POST /api/v1/weddings/": {401},
    "GET /api/v1/weddings/{wedding_id}/": {401},
    "PATCH /api/v1/weddings/{wedding_id}/": {401},
    "POST /api/v1/weddings/{wedding_id}/archive/": {401},
    "GET /api/v1/weddings/{wedding_id}/members/": {401},
    "GET /api/v1/weddings/{wedding_id}/events/": {401},
    "POST /api/v1/weddings/{wedding_id}/events/": {401},
    "POST /api/v1/weddings/{wedding_id}/members/": {401},
    "PATCH /api/v1/weddings/{wedding_id}/members/{member_id}/": {401},
    "DELETE /api/v1/weddings/{wedding_id}/members/{member_id}/": {401},
    "POST /api/v1/auth/token/": {200, 401},
    "POST /api/v1/auth/token/refresh/": {401},
    "POST /api/v1/auth/logout/": {401},
    "POST /api/v1/realtime/tickets/": {401},
    "GET /api/v1/weddings/{wedding_id}/alerts/": {401},
    "POST /api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/": {401},
    "GET /api/v1/weddings/{wedding_id}/emergencies/": {401},
    "POST /api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/": {401},
    "GET /api/v1/weddings/{wedding_id}/presence/": {401},
    "GET /api/v1/weddings/{wedding_id}/state/": {401},
    "GET /api/v1/weddings/{wedding_id}/records/{kind}/": {401},
    "POST /api/v1/weddings/{wedding_id}/records/{kind}/": {401},
    "GET /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {401},
    "PATCH /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {401},
    "DELETE /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": {401},
    "POST /api/v1/weddings/{wedding_id}/records/batch/": {401},
    "GET /api/v1/weddings/{wedding_id}/conflicts/": {401},
    "POST /api/v1/weddings/{wedding_id}/conflicts/{conflict_id}/resolve/": {401},
    "GET /api/v1/weddings/{wedding_id}/webhooks/": {401},
    "POST /api/v1/weddings/{wedding_id}/webhooks/": {401},
    "GET /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {401},
    "DELETE /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": {401},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/rotate-secret/": {401},
    "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/resume/": {401},
}


class Answers:
    """Calls and validates each case, and remembers which statuses each operation answered with."""

    def __init__(self, *, raw_key: str) -> None:
        self.seen: dict[str, set[int]] = {}
        self.raw_key = raw_key

    def call_and_validate(self, case: schemathesis.Case) -> None:
        credential = case.headers.get("Authorization")
        for standin, username in ((PLANNER_TOKEN_STANDIN, PLANNER), (COORDINATOR_TOKEN_STANDIN, COORDINATOR)):
            if credential == f"Bearer {standin}":
                user = get_user_model().objects.get(username=username)
                case.headers["Authorization"] = f"Bearer {access_token_issue(user=user)}"
        if credential == f"Api-Key {KEY_STANDIN}":
            case.headers["Authorization"] = f"Api-Key {self.raw_key}"
        response = case.call_and_validate()
        self.seen.setdefault(case.operation.label, set()).add(response.status_code)

    def assert_reached(self, expected: dict[str, set[int]]) -> None:
        assert len(self.seen) == 1, self.seen  # one operation per test
        [(operation, statuses)] = self.seen.items()
        missing = expected[operation] - statuses
        assert not missing, (
            f"{operation} never answered {sorted(missing)} (only {sorted(statuses)}): those bodies went unchecked"
        )


@pytest.fixture
def answers(seeded: str, request: pytest.FixtureRequest) -> Iterator[Answers]:
    answers = Answers(raw_key=seeded)
    yield answers
    if call_passed(request.node):  # after a failure, the failure is the news
        passes = {"planner": PLANNER_REACHES, "coordinator": COORDINATOR_REACHES, "key": KEY_REACHES}
        answers.assert_reached(next((v for k, v in passes.items() if k in request.node.name), ANONYMOUS_REACHES))


# The seeded database and the recorder are set up once per operation, not per request, on purpose.
ONCE_PER_OPERATION = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@planner_api.parametrize()
@ONCE_PER_OPERATION
def test_every_answer_to_the_planner_is_documented(case: schemathesis.Case, answers: Answers) -> None:
    answers.call_and_validate(case)


@anonymous_api.parametrize()
@ONCE_PER_OPERATION
def test_every_answer_without_credentials_is_documented(case: schemathesis.Case, answers: Answers) -> None:
    answers.call_and_validate(case)


@coordinator_api.parametrize()
@ONCE_PER_OPERATION
def test_every_answer_to_the_coordinator_is_documented(case: schemathesis.Case, answers: Answers) -> None:
    answers.call_and_validate(case)


@key_api.parametrize()
@ONCE_PER_OPERATION
def test_every_answer_to_a_service_account_key_is_documented(case: schemathesis.Case, answers: Answers) -> None:
    answers.call_and_validate(case)


# Answers of the records API the fuzzer seldom draws within its budget (a body that fits the kind in
# the path, the version a record is at), sent as given and validated like the generated ones.
RECORDS = "/api/v1/weddings/{wedding_id}/records/{kind}/"
RECORD = "/api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/"
BATCH = "/api/v1/weddings/{wedding_id}/records/batch/"
TASK = {"kind": "task", "record_id": OWN_TASK}
RESOLVE = "/api/v1/weddings/{wedding_id}/conflicts/{conflict_id}/resolve/"
SENT_AS_GIVEN = [
    pytest.param("POST", RECORDS, {"kind": "task"}, {}, {"title": "Candles"}, 201, None, id="create"),
    pytest.param("PATCH", RECORD, TASK, {"If-Match": '"1"'}, {"status": "done"}, 200, None, id="change"),
    pytest.param(
        "PATCH",
        RECORD,
        {"kind": "timeline_item", "record_id": OWN_ITEM},
        {"If-Match": '"1"'},
        {"title": "Late"},
        409,
        None,
        id="change-kept-as-a-conflict",
    ),
    pytest.param("PATCH", RECORD, TASK, {}, {"status": "done"}, 428, None, id="change-without-if-match"),
    pytest.param("PATCH", RECORD, TASK, {"If-Match": "*"}, {"status": "done"}, 400, None, id="change-bad-if-match"),
    pytest.param("DELETE", RECORD, TASK, {"If-Match": '"1"'}, None, 200, None, id="delete"),
    pytest.param("DELETE", RECORD, TASK, {}, None, 428, None, id="delete-without-if-match"),
    pytest.param(
        "DELETE",
        RECORD,
        TASK,
        {"If-Match": '"1"', "Idempotency-Key": "two words"},
        None,
        400,
        None,
        id="delete-bad-key",
    ),
    pytest.param("POST", BATCH, {}, {}, {"ops": [{"record": "task", "changes": []}]}, 400, None, id="batch-malformed"),
    pytest.param(
        "POST",
        BATCH,
        {},
        {},
        {"ops": [{"record": "timeline_item", "id": OWN_ITEM, "base_version": 1, "changes": {"title": "Late"}}]},
        409,
        None,
        id="batch-stale-op",
    ),
    pytest.param("GET", RECORDS, {"kind": "task"}, {}, None, 400, {"limit": "0"}, id="list-bad-page"),
    pytest.param("POST", RESOLVE, {}, {}, {"resolution": "both"}, 400, None, id="resolve-unknown-resolution"),
    pytest.param("POST", RESOLVE, {}, {}, {"resolution": "custom"}, 422, None, id="resolve-custom-without-values"),
]


@pytest.mark.parametrize(("method", "path", "path_parameters", "headers", "body", "status", "query"), SENT_AS_GIVEN)
def test_answers_sent_as_given_are_documented(
    seeded: str,
    method: str,
    path: str,
    path_parameters: dict[str, Any],
    headers: dict[str, str],
    body: Any,
    status: int,
    query: dict[str, str] | None,
) -> None:
    planner = get_user_model().objects.get(username=PLANNER)
    case = planner_api[path][method].Case(
        path_parameters={"wedding_id": OWN_WEDDING, "conflict_id": OWN_CONFLICT, **path_parameters},
        query=query,
        headers={"Authorization": f"Bearer {access_token_issue(user=planner)}", **headers},
        **({} if body is None else {"body": body, "media_type": "application/json"}),
    )
    assert case.call_and_validate().status_code == status
