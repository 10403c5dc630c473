"""schemathesis against the schema the API serves (``/api/v1/schema/``): issue 16's outside test suite.

Every operation of the schema is called with generated requests, valid and invalid (schemathesis's
coverage and fuzzing phases), through the project's WSGI application in this process, on a database
seeded with two weddings, their alerts and emergencies and some presence. Every answer must be no
500, a documented status code, a documented content type and a body that matches the documented
schema; schemathesis's other default checks (valid data accepted, invalid data refused, a missing or
wrong credential refused, an undocumented method answered 405 with ``Allow``) run too.

Two passes, one test per operation each: as the seeded wedding's planner (a fresh bearer token for
every request, so that the logout operation, which revokes every token of its user, cannot starve
the requests after it) and with no credentials at all (schemathesis then sends none, a made-up bearer
token or a made-up session cookie). Half the path ids and usernames are the seeded ones, so the
answers about rows that exist (200 bodies, the other wedding's 403) are checked too, not only 404s;
each test fails if the answers it must have checked never came.

Reproducible: Hypothesis is derandomized (the requests depend only on the test and the library
versions, which the lock pins) and its example database is off, so CI replays exactly what a
developer's run did. Bounded: ``MAX_EXAMPLES`` generated requests per operation and pass on top of
the coverage phase's fixed set: roughly a thousand requests in all.

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

from presence.models import Emergency
from presence.services import presence_device_join
from realtime.services.events import member_event_publish
from tests.api.conftest import call_passed
from tests.factories import PASSWORD, AlertFactory, device_presence
from tests.personas import make_wedding_party
from wedsync.models import Member
from wedsync.services.auth import access_token_issue
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
PLANNER, GUEST = "priya-fuzz-own", "gil-fuzz-own"  # personas' usernames: <name>-<wedding slug>


def _emergency(*, raised_by: Member, emergency_id: int) -> None:
    """An emergency raised the real way (an ``emergency.alert`` event), renumbered to a fixed id;
    nothing refers to an emergency's id but the API's paths."""
    data = {"message": "Fire in the kitchen", "location": "reception_hall"}
    published = member_event_publish(member=raised_by, type_name="emergency.alert", data=data)
    Emergency.objects.filter(raised_event_id=published.id).update(id=emergency_id)


@pytest.fixture
def seeded(transactional_db: None) -> None:
    own = make_wedding_party(pk=OWN_WEDDING, slug="fuzz-own")
    other = make_wedding_party(pk=OTHER_WEDDING, slug="fuzz-other")
    for member, location in ((own.paula, "ceremony_area"), (own.priya, None), (own.gil, None)):
        presence_device_join(device=device_presence(member, device=f"dev-{member.pk}", location=location))
    AlertFactory(pk=OWN_ALERTS[0], wedding=own.wedding, member=own.paula)
    AlertFactory(pk=OWN_ALERTS[1], wedding=own.wedding, member=own.olu)
    AlertFactory(pk=OTHER_ALERT, wedding=other.wedding, member=other.paula)
    _emergency(raised_by=own.carmen, emergency_id=OWN_EMERGENCY)
    _emergency(raised_by=other.victor, emergency_id=OTHER_EMERGENCY)


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
                "usernames": {"values": [PLANNER, GUEST]},
                "passwords": {"values": [PASSWORD]},
            },
            "parameters": {
                "path.wedding_id": drawn_from("weddings"),
                "path.alert_id": drawn_from("alerts"),
                "path.emergency_id": drawn_from("emergencies"),
                "body.username": drawn_from("usernames"),
                "body.password": drawn_from("passwords"),
            },
        }
    )
    return schemathesis.openapi.from_wsgi(SCHEMA_PATH, application, config=config)


planner_api = _served_schema()
anonymous_api = _served_schema()


# Requests are generated in part when this module is collected (the coverage phase), before the test
# database exists: the planner's requests carry this stand-in, swapped for a fresh token when sent.
PLANNER_TOKEN_STANDIN = "planner-token-standin"


@planner_api.auth(refresh_interval=None)
class PlannerToken:
    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return PLANNER_TOKEN_STANDIN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


# Answers each pass must have checked at least once, by operation. A pass whose requests never reached
# a seeded row would check only refusals: this makes such a run fail instead of passing quietly.
PLANNER_REACHES: dict[str, set[int]] = {
    "POST /api/v1/auth/token/": {200, 401},
    "POST /api/v1/auth/token/refresh/": {400, 401},
    "POST /api/v1/auth/logout/": {204},
    "POST /api/v1/realtime/tickets/": {201},
    "GET /api/v1/weddings/{wedding_id}/alerts/": {200, 400, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/": {200, 403, 404},
    "GET /api/v1/weddings/{wedding_id}/emergencies/": {200, 400, 403, 404},
    "POST /api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/": {200, 403, 404},
    "GET /api/v1/weddings/{wedding_id}/presence/": {200, 403, 404},
}
ANONYMOUS_REACHES: dict[str, set[int]] = {
    "POST /api/v1/auth/token/": {200, 401},
    "POST /api/v1/auth/token/refresh/": {401},
    "POST /api/v1/auth/logout/": {401},
    "POST /api/v1/realtime/tickets/": {401},
    "GET /api/v1/weddings/{wedding_id}/alerts/": {401},
    "POST /api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/": {401},
    "GET /api/v1/weddings/{wedding_id}/emergencies/": {401},
    "POST /api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/": {401},
    "GET /api/v1/weddings/{wedding_id}/presence/": {401},
}


class Answers:
    """Calls and validates each case, and remembers which statuses each operation answered with."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = {}

    def call_and_validate(self, case: schemathesis.Case) -> None:
        if case.headers.get("Authorization") == f"Bearer {PLANNER_TOKEN_STANDIN}":
            planner = get_user_model().objects.get(username=PLANNER)
            case.headers["Authorization"] = f"Bearer {access_token_issue(user=planner)}"
        response = case.call_and_validate()
        self.seen.setdefault(case.operation.label, set()).add(response.status_code)

    def assert_reached(self, expected: dict[str, set[int]]) -> None:
        assert len(self.seen) == 1, self.seen  # one operation per test
        [(operation, statuses)] = self.seen.items()
        missing = expected[operation] - statuses
        assert not missing, f"{operation} never answered {sorted(missing)}: those bodies went unchecked"


@pytest.fixture
def answers(seeded: None, request: pytest.FixtureRequest) -> Iterator[Answers]:
    answers = Answers()
    yield answers
    if call_passed(request.node):  # after a failure, the failure is the news
        answers.assert_reached(PLANNER_REACHES if "planner" in request.node.name else ANONYMOUS_REACHES)


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
