"""What the API promises in its schema, and keeps: each test here pins a defect schemathesis found
(tests/api/test_schemathesis.py) so that it stays fixed even if the fuzzer stops drawing the input."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import get_resolver
from drf_spectacular.generators import SchemaGenerator
from rest_framework import exceptions
from rest_framework.test import APIClient

from records.registry import kinds
from tests.personas import WeddingParty
from tests.presence.test_alerts_api import as_member
from wedsync.api.errors import api_exception_handler

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.9", HTTP_USER_AGENT="wedsync-tests/1.0")


def test_every_operation_documents_each_status_it_can_answer() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = {
        f"{method.upper()} {path}": sorted(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert documented == {
        "POST /api/v1/auth/token/": ["200", "400", "401", "415", "429"],
        "POST /api/v1/auth/token/refresh/": ["200", "400", "401", "415", "429"],
        "POST /api/v1/auth/logout/": ["204", "400", "401", "403", "415", "429"],
        "POST /api/v1/realtime/tickets/": ["201", "401", "403", "429"],
        "GET /api/v1/weddings/{wedding_id}/alerts/": ["200", "400", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/": ["200", "401", "403", "404", "429"],
        "GET /api/v1/weddings/{wedding_id}/emergencies/": ["200", "400", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/": ["200", "401", "403", "404", "429"],
        "GET /api/v1/weddings/{wedding_id}/presence/": ["200", "401", "403", "404", "429", "503"],
        "GET /api/v1/weddings/{wedding_id}/state/": ["200", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/records/batch/": [
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
            "415",
            "422",
            "429",
        ],
        "GET /api/v1/weddings/{wedding_id}/records/{kind}/": ["200", "400", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/records/{kind}/": ["201", "400", "401", "403", "404", "415", "422", "429"],
        "GET /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": ["200", "401", "403", "404", "429"],
        "PATCH /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": [
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
            "415",
            "422",
            "428",
            "429",
        ],
        "DELETE /api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/": [
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
            "422",
            "428",
            "429",
        ],
        "GET /api/v1/weddings/{wedding_id}/conflicts/": ["200", "400", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/conflicts/{conflict_id}/resolve/": [
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
            "415",
            "422",
            "429",
        ],
        "GET /api/v1/weddings/": ["200", "400", "401", "403", "404", "429"],
        "POST /api/v1/weddings/": ["201", "400", "401", "403", "415", "422", "428", "429"],
        "GET /api/v1/weddings/{wedding_id}/": ["200", "401", "403", "404", "429"],
        "PATCH /api/v1/weddings/{wedding_id}/": ["200", "400", "401", "403", "404", "412", "415", "422", "428", "429"],
        "POST /api/v1/weddings/{wedding_id}/archive/": ["200", "401", "403", "404", "429"],
        "GET /api/v1/weddings/{wedding_id}/events/": ["200", "400", "401", "403", "404", "429"],
        "GET /api/v1/weddings/{wedding_id}/members/": ["200", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/members/": [
            "201",
            "400",
            "401",
            "403",
            "404",
            "409",
            "415",
            "422",
            "428",
            "429",
        ],
        "PATCH /api/v1/weddings/{wedding_id}/members/{member_id}/": [
            "200",
            "400",
            "401",
            "403",
            "404",
            "415",
            "422",
            "429",
        ],
        "DELETE /api/v1/weddings/{wedding_id}/members/{member_id}/": ["204", "401", "403", "404", "429"],
        "GET /api/v1/audit/": ["200", "400", "401", "403", "404", "429"],
        "GET /api/v1/nodes/": ["200", "401", "403", "429", "503"],
        "POST /api/v1/weddings/{wedding_id}/events/": ["201", "400", "401", "403", "404", "415", "422", "428", "429"],
        "GET /api/v1/weddings/{wedding_id}/webhooks/": ["200", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/webhooks/": ["201", "400", "401", "403", "404", "415", "422", "428", "429"],
        "GET /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": ["200", "401", "403", "404", "429"],
        "DELETE /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/": ["204", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/rotate-secret/": ["200", "401", "403", "404", "429"],
        "POST /api/v1/weddings/{wedding_id}/webhooks/{webhook_id}/resume/": ["200", "401", "403", "404", "429"],
    }
    error = schema["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"code", "message", "fields", "retry_after"}
    assert error["required"] == ["code", "message"]


def test_record_kinds_and_the_fields_they_take_come_from_the_registry() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/weddings/{wedding_id}/records/{kind}/{record_id}/"]["patch"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["kind"]["schema"]["enum"] == sorted(kind.name for kind in kinds())
    assert parameters["If-Match"]["required"] is True and "Idempotency-Key" in parameters
    bodies = operation["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert [sorted(body["properties"]) for body in bodies] == [
        sorted(kind.changes.__struct_fields__) for kind in kinds()
    ]
    assert all(body["additionalProperties"] is False for body in bodies)
    timeline = bodies[0]["properties"]
    assert timeline["ends_at"] == {"type": "string", "format": "date-time", "nullable": True}
    assert timeline["location"]["enum"][-1] is None and timeline["location"]["nullable"] is True
    error = schema["components"]["schemas"]["RecordErrorDetail"]
    assert {"deleted_seq", "op", "outcome", "version", "conflict"} <= set(error["properties"])


@pytest.mark.parametrize(
    "path", ["/api/v1/weddings/-1/presence/", "/api/v1/weddings/x/alerts/", "/api/v1/no-such-thing/"]
)
def test_a_path_no_route_matches_answers_in_the_error_shape(api: APIClient, path: str) -> None:
    response = api.get(path)
    assert (response.status_code, response["Content-Type"]) == (404, "application/json")
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


def test_outside_the_api_a_missing_page_is_still_a_page(api: APIClient) -> None:
    response = api.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_host_we_do_not_serve_is_refused_in_the_error_shape() -> None:
    response = Client().get("/api/v1/weddings/1/presence/", HTTP_HOST="evil.example")
    assert (response.status_code, response["Content-Type"]) == (400, "application/json")
    assert response.json()["error"]["code"] == "invalid"


def test_a_server_error_under_the_api_answers_in_the_error_shape() -> None:
    handler = get_resolver().resolve_error_handler(500)
    response = handler(RequestFactory().get("/api/v1/weddings/1/presence/"))
    assert (response.status_code, response["Content-Type"]) == (500, "application/json")
    assert response.content == b'{"error": {"code": "server_error", "message": "Something went wrong on our side."}}'
    assert handler(RequestFactory().get("/admin/"))["Content-Type"].startswith("text/html")


def test_credentials_are_taken_as_sent_so_a_spaced_one_is_a_wrong_one(api: APIClient, party: WeddingParty) -> None:
    spaced = api.post("/api/v1/auth/token/", {"username": " ", "password": " "}, format="json")
    assert (spaced.status_code, spaced.json()["error"]["code"]) == (401, "unauthorized")
    refresh = api.post("/api/v1/auth/token/refresh/", {"refresh": "  "}, format="json")
    assert (refresh.status_code, refresh.json()["error"]["code"]) == (401, "unauthorized")
    empty = api.post("/api/v1/auth/token/", {"username": "", "password": "x"}, format="json")
    assert (empty.status_code, list(empty.json()["error"]["fields"])) == (400, ["username"])


def test_a_number_is_not_a_string(api: APIClient, party: WeddingParty) -> None:
    as_member(api, party.priya)
    logout = api.post("/api/v1/auth/logout/", {"refresh": 0}, format="json")
    assert (logout.status_code, logout.json()["error"]["fields"]) == (400, {"refresh": ["Not a valid string."]})
    login = api.post("/api/v1/auth/token/", {"username": 12, "password": 1.5}, format="json")
    assert (login.status_code, sorted(login.json()["error"]["fields"])) == (400, ["password", "username"])


def test_logout_takes_json_only_so_a_malformed_form_logs_nobody_out(api: APIClient, party: WeddingParty) -> None:
    as_member(api, party.priya)
    garbage = api.generic(
        "POST", "/api/v1/auth/logout/", "--b\r\n5.1--b--\r\n", content_type="multipart/form-data; boundary=b"
    )
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (415, "invalid")
    number = api.post("/api/v1/auth/logout/", 5, format="json")
    assert number.status_code == 400
    assert api.post("/api/v1/auth/logout/").status_code == 204


def test_a_validation_error_without_fields_keeps_the_documented_shape() -> None:
    response = api_exception_handler(exceptions.ValidationError(["Pick one."]), {})
    fields = {"non_field_errors": ["Pick one."]}
    assert response.data == {"error": {"code": "invalid", "message": "Some fields are invalid.", "fields": fields}}
