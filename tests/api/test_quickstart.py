"""docs/api.md, the integrator's guide to the staff API (issue 20), held to the code: its quick start
runs as written, and the addresses, scopes, error codes and rate limits it names are the real ones.

How the quick start is read. Only the fenced blocks of its ``## Quick start`` section run, in order:

- ``admin``: what a superuser does in the oversight panel, through the real admin pages (Django's
  test client, signed in as a superuser). The first line is ``<Models> > Add <model>`` (written with
  the admin's breadcrumb arrow, U+203A, for ``>``): that model's add page. Then one
  ``<label>: <value>`` per form field, by the label the form gives it: text; a choice by the label
  it is shown with; ``[x]`` or ``[ ]`` for a checkbox; for a multiple choice one
  ``[x] <choice label>`` per line, the next ones indented. The last line is
  ``<button> -> <address>`` (U+2192 for ``->``): the button pressed (it must be on the page) and the
  address the admin sends the browser to.
- ``admin-message``: a message shown on the page after the last save (its HTML left out).
- ``http`` starting with a request line: a request, sent through DRF's APIClient (``Host`` is
  only an example and is dropped: the test client's own host is allowed).
- ``http`` starting with ``HTTP/1.1``: the answer to the request before it. Its status line must be
  the real status (with the standard reason phrase), every header shown must be in the real answer
  with that value, and the JSON shown must be in the real answer: every key shown present (an
  answer may have more), lists as long, every value shown exact.
- ``webhook``: the request the integrator's endpoint receives. A real HTTP server on 127.0.0.1
  plays the endpoint (its address is ``{receiver_url}``); the block runs the beat sweep of event
  webhooks and the delivery tasks it queues, here and now, then holds the one request received to
  the block as an answer is held to its ``http`` block (request line, headers, JSON), and checks its
  signature with the ``{webhook_secret}`` an earlier answer gave.

``{name}`` is a value that differs per run. Where it is not known yet (in an answer, an admin
address, a message) it matches anything and is remembered; anywhere else it is the remembered value,
and in a request it is filled in. Written bare in JSON (``"id": {wedding_id}``) it stands for a value
of any JSON type; inside a string (``"wedding:{wedding_id}"``) for text.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import Resolver404, resolve, reverse
from django.utils.html import strip_tags
from django.utils.text import capfirst
from rest_framework.test import APIClient

from monitoring.services.event_webhooks.delivery import event_webhooks_dispatch_due
from monitoring.tasks import deliver_event_webhook
from monitoring.webhooks import webhook_signature_valid
from tests.monitoring.webhook_server import WebhookServer, webhook_server
from tests.personas import make_superuser
from wedsync.api.errors import API_ERROR_CODES
from wedsync.models import ApiScope

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
FENCE = re.compile(r"^```([\w-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# A JSON string (left as it is) or a placeholder written bare, outside any string.
JSON_STRING_OR_PLACEHOLDER = re.compile(r'"(?:[^"\\]|\\.)*"|\{([a-z][a-z0-9_]*)\}')
BARE = "\x00"  # prefixes a bare placeholder's name once the example is parsed: any JSON value
BREADCRUMB = " \u203a "  # between a breadcrumb's parts, as the admin writes them
ARROW = " \u2192 "  # between the button pressed and the address the browser is sent to
ADMIN_BUTTONS = {"Save": "_save", "Save and continue editing": "_continue", "Save and add another": "_addanother"}

SERVICES = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


@dataclass(frozen=True)
class Block:
    kind: str
    text: str
    line: int

    @property
    def where(self) -> str:
        return f"docs/api.md:{self.line} ({self.kind} block)"


def guide_section(title: str) -> tuple[int, int]:
    """Where the ``## title`` section of the guide starts and ends (offsets in the text)."""
    text = GUIDE.read_text()
    heading = f"\n## {title}\n"
    assert heading in text, f"docs/api.md has no '## {title}' section"
    start = text.index(heading) + 1
    end = text.find("\n## ", start)
    return start, len(text) if end == -1 else end


def section_text(title: str) -> str:
    start, end = guide_section(title)
    return GUIDE.read_text()[start:end]


def quick_start_blocks() -> list[Block]:
    text = GUIDE.read_text()
    start, end = guide_section("Quick start")
    return [
        Block(kind=found[1], text=found[2], line=text.count("\n", 0, found.start()) + 2)
        for found in FENCE.finditer(text, start, end)
    ]


def parse_example(text: str, where: str) -> Any:
    """An answer's JSON as the guide shows it, each bare placeholder a string ``BARE + name``."""
    quoted = JSON_STRING_OR_PLACEHOLDER.sub(
        lambda found: found[0] if found[1] is None else json.dumps(BARE + found[1]), text
    )
    try:
        return json.loads(quoted)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{where}: the JSON shown does not parse: {exc}")


class Walkthrough:
    """Runs the quick start's blocks in order, remembering what the answers gave."""

    def __init__(self, superuser: User, *, receiver: WebhookServer) -> None:
        self.values: dict[str, Any] = {"receiver_url": receiver.url}
        self.receiver = receiver
        self.browser = Client()
        self.browser.force_login(superuser)
        self.api = APIClient()
        self.admin_messages: list[str] = []
        self.answer: Any = None  # the last API answer, until the block after its request checks it
        self.asked = ""

    def run(self, block: Block) -> None:
        if block.kind == "admin":
            self.admin_step(block)
        elif block.kind == "admin-message":
            self.admin_message(block)
        elif block.kind == "http" and block.text.startswith("HTTP/"):
            self.check_answer(block)
        elif block.kind == "http":
            assert self.answer is None, f"{block.where}: the request before it has no answer block"
            self.request(block)
        elif block.kind == "webhook":
            assert self.answer is None, f"{block.where}: the request before it has no answer block"
            self.webhook_received(block)
        else:
            pytest.fail(f"{block.where}: the quick start runs admin, admin-message, http and webhook blocks only")

    # --- placeholders ---------------------------------------------------------------------------

    def fill(self, text: str, where: str) -> str:
        def value(found: re.Match[str]) -> str:
            assert found[1] in self.values, f"{where}: {found[0]} is used before an answer gave it"
            return str(self.values[found[1]])

        return PLACEHOLDER.sub(value, text)

    def template_match(self, template: str, actual: str) -> dict[str, Any] | None:
        """The placeholders ``template`` learns from ``actual``, or None when it does not match."""
        pattern, learnt, done = "", [], 0
        for found in PLACEHOLDER.finditer(template):
            pattern += re.escape(template[done : found.start()])
            name = found[1]
            if name in self.values:
                pattern += re.escape(str(self.values[name]))
            elif name in learnt:
                pattern += f"(?P={name})"
            else:
                pattern += f"(?P<{name}>.+?)"
                learnt.append(name)
            done = found.end()
        matched = re.fullmatch(pattern + re.escape(template[done:]), actual, re.DOTALL)
        if matched is None:
            return None
        return {name: int(matched[name]) if matched[name].isdigit() else matched[name] for name in learnt}

    def match_text(self, template: str, actual: str, where: str) -> None:
        learnt = self.template_match(template, actual)
        assert learnt is not None, f"{where}: the guide shows {template!r}, the application answered {actual!r}"
        self.values.update(learnt)

    def match(self, expected: Any, actual: Any, where: str) -> None:
        if isinstance(expected, str) and expected.startswith(BARE):
            name = expected[1:]
            if name in self.values:
                assert self.values[name] == actual, f"{where}: {{{name}}} was {self.values[name]!r}, now {actual!r}"
            self.values[name] = actual
        elif isinstance(expected, str) and PLACEHOLDER.search(expected):
            assert isinstance(actual, str), f"{where}: the guide shows text, the API answered {actual!r}"
            self.match_text(expected, actual, where)
        elif isinstance(expected, dict):
            assert isinstance(actual, dict), f"{where}: the guide shows an object, the API answered {actual!r}"
            missing = sorted(set(expected) - set(actual))
            assert not missing, f"{where}: the API's answer has no {missing}: {actual}"
            for key, value in expected.items():
                self.match(value, actual[key], f"{where}.{key}")
        elif isinstance(expected, list):
            assert isinstance(actual, list), f"{where}: the guide shows a list, the API answered {actual!r}"
            assert len(actual) == len(expected), f"{where}: the guide shows {len(expected)} items, the API {actual}"
            for index, (shown, given) in enumerate(zip(expected, actual, strict=True)):
                self.match(shown, given, f"{where}[{index}]")
        else:
            assert (type(actual), actual) == (type(expected), expected), (
                f"{where}: the guide shows {expected!r}, the API answered {actual!r}"
            )

    # --- the admin ------------------------------------------------------------------------------

    def admin_step(self, block: Block) -> None:
        heading, *field_lines, saving = block.text.rstrip("\n").splitlines()
        plural, _, singular = heading.partition(f"{BREADCRUMB}Add ")
        models = [
            model
            for model in apps.get_models()
            if admin.site.is_registered(model)
            and capfirst(str(model._meta.verbose_name_plural)) == plural
            and str(model._meta.verbose_name) == singular
        ]
        assert len(models) == 1, f"{block.where}: no admin page '{heading}'"
        opts = models[0]._meta
        add_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
        page = self.browser.get(add_url)
        assert page.status_code == 200, f"{block.where}: {add_url} answered {page.status_code}"
        form = page.context["adminform"].form

        fields: list[tuple[str, list[str]]] = []
        for line in field_lines:
            if line.startswith(" "):
                fields[-1][1].append(line.strip())
            else:
                label, _, value = line.partition(": ")
                fields.append((label, [value.strip()]))
        data: dict[str, Any] = {}
        for label, values in fields:
            named = [form[name] for name in form.fields if form[name].label == label]
            labels = [form[name].label for name in form.fields]
            assert named, f"{block.where}: the form has no field '{label}'; it has {labels}"
            data.update(self.admin_value(named[0], values, block.where))
        for inline in page.context["inline_admin_formsets"]:
            management = inline.formset.management_form
            data.update({management.add_prefix(name): value for name, value in management.initial.items()})

        button, _, address = saving.partition(ARROW)
        assert button in ADMIN_BUTTONS, f"{block.where}: the last line names a button: one of {list(ADMIN_BUTTONS)}"
        assert f'value="{button}"' in page.content.decode(), f"{block.where}: the page has no '{button}' button"
        data[ADMIN_BUTTONS[button]] = button
        saved = self.browser.post(add_url, data)
        if saved.status_code != 302:
            errors = saved.context["adminform"].form.errors if saved.context else saved.content.decode()[:500]
            pytest.fail(f"{block.where}: the admin did not save: {errors}")
        self.match_text(address, saved["Location"], f"{block.where}, the address after saving")
        shown = self.browser.get(saved["Location"])
        assert shown.status_code == 200
        self.admin_messages = [strip_tags(str(message)) for message in shown.context["messages"]]

    def admin_value(self, bound: forms.BoundField, values: list[str], where: str) -> dict[str, Any]:
        field = bound.field
        if isinstance(field, forms.BooleanField):
            assert values in (["[x]"], ["[ ]"]), f"{where}: '{bound.label}' is a checkbox: [x] or [ ]"
            return {bound.html_name: "on"} if values == ["[x]"] else {}
        if not isinstance(field, forms.ChoiceField | forms.ModelChoiceField):
            return {bound.html_name: " ".join(values)}
        offered: Any = field.choices
        choices = {str(label): str(value) for value, label in offered}
        if isinstance(field, forms.MultipleChoiceField | forms.ModelMultipleChoiceField):
            picked = [value[4:] for value in values if value.startswith("[x] ")]
            assert all(value.startswith(("[x] ", "[ ] ")) for value in values), f"{where}: one '[x] <choice>' a line"
        else:
            picked = values
        unknown = [label for label in picked if label not in choices]
        assert not unknown, f"{where}: '{bound.label}' offers {list(choices)}, not {unknown}"
        return {bound.html_name: [choices[label] for label in picked]}

    def admin_message(self, block: Block) -> None:
        template = block.text.strip()
        for message in self.admin_messages:
            learnt = self.template_match(template, message)
            if learnt is not None:
                self.values.update(learnt)
                return
        pytest.fail(f"{block.where}: the admin showed no such message; it showed {self.admin_messages}")

    # --- the API --------------------------------------------------------------------------------

    def request(self, block: Block) -> None:
        head, _, body = self.fill(block.text, block.where).partition("\n\n")
        request_line, *header_lines = head.splitlines()
        method, target, version = request_line.split(" ")
        assert version == "HTTP/1.1", f"{block.where}: a request line ends with HTTP/1.1"
        headers = dict(line.split(": ", 1) for line in header_lines)
        headers.pop("Host", None)
        content_type = headers.pop("Content-Type", None)
        if body.strip():
            assert content_type == "application/json", f"{block.where}: a body is sent as application/json"
            parse_example(body, block.where)  # valid JSON once filled in
        meta: dict[str, Any] = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
        self.answer = self.api.generic(
            method, target, data=body.strip(), content_type=content_type or "application/octet-stream", **meta
        )
        self.asked = request_line

    def check_answer(self, block: Block) -> None:
        answer, self.answer = self.answer, None
        assert answer is not None, f"{block.where}: an answer block with no request before it"
        head, _, body = block.text.partition("\n\n")
        status_line, *header_lines = head.splitlines()
        version, status, phrase = status_line.split(" ", 2)
        assert (version, phrase) == ("HTTP/1.1", HTTPStatus(int(status)).phrase), f"{block.where}: {status_line!r}"
        assert answer.status_code == int(status), (
            f"{block.where}: {self.asked} answered {answer.status_code}, not {status}: {answer.content.decode()[:500]}"
        )
        for line in header_lines:
            name, shown = line.split(": ", 1)
            assert name in answer.headers, f"{block.where}: the answer has no {name} header: {dict(answer.headers)}"
            self.match_text(shown, answer.headers[name], f"{block.where}, header {name}")
        if body.strip():
            self.match(parse_example(body, block.where), answer.json(), block.where)

    # --- the integrator's endpoint ---------------------------------------------------------------

    def webhook_received(self, block: Block) -> None:
        seen = len(self.receiver.received)
        for dispatched in event_webhooks_dispatch_due():  # beat's sweep, then each task it queued, as a worker
            deliver_event_webhook(dispatched.webhook_id, str(dispatched.dispatch_id))
        fresh = self.receiver.received[seen:]
        assert len(fresh) == 1, f"{block.where}: the endpoint received {len(fresh)} requests, not one"
        (received,) = fresh
        head, _, body = block.text.partition("\n\n")
        request_line, *header_lines = head.splitlines()
        method, path, version = request_line.split(" ")
        assert (method, version) == ("POST", "HTTP/1.1"), f"{block.where}: a webhook is a POST over HTTP/1.1"
        assert received.path == path, f"{block.where}: the endpoint was asked for {received.path}, not {path}"
        for line in header_lines:
            name, shown = line.split(": ", 1)
            assert name.lower() in received.headers, f"{block.where}: no {name} header in {received.headers}"
            self.match_text(shown, received.headers[name.lower()], f"{block.where}, header {name}")
        self.match(parse_example(body, block.where), json.loads(received.body), block.where)
        assert webhook_signature_valid(
            secret=str(self.values["webhook_secret"]),
            timestamp=int(received.headers["x-wedsync-timestamp"]),
            body=received.body,
            signature=received.headers["x-wedsync-signature"],
        ), f"{block.where}: the signature does not verify with the subscription's secret"

    def finish(self) -> None:
        assert self.answer is None, f"the quick start's last request ({self.asked}) has no answer block"


@pytest.mark.django_db
@pytest.mark.requires_postgres
@pytest.mark.requires_redis
def test_the_quick_start_runs_as_written() -> None:
    blocks = quick_start_blocks()
    kinds = {block.kind for block in blocks}
    assert {"admin", "admin-message", "http"} <= kinds, f"the quick start's blocks were not found: {kinds}"
    with webhook_server() as receiver:
        walk = Walkthrough(make_superuser("root"), receiver=receiver)
        for block in blocks:
            walk.run(block)
        walk.finish()
    assert {"key", "agency_id", "wedding_id", "etag", "new_etag", "webhook_secret", "delivery_id"} <= set(walk.values)


def test_every_api_address_the_guide_names_is_routed() -> None:
    named = set(re.findall(r"/api/v1/[\w{}/.-]*", GUIDE.read_text())) - {"/api/v1/"}
    unrouted = []
    for address in sorted(named):
        try:
            resolve(PLACEHOLDER.sub("1", address))
        except Resolver404:
            unrouted.append(address)
    assert not unrouted, f"docs/api.md names addresses no route serves: {unrouted}"
    assert {"/api/v1/schema/", "/api/v1/docs/", "/api/v1/redoc/"} <= named


@pytest.mark.django_db
@pytest.mark.requires_postgres
@pytest.mark.requires_redis
def test_the_schema_and_swagger_ui_are_where_the_guide_says() -> None:
    client = APIClient()
    schema = client.get("/api/v1/schema/", {"format": "json"})
    assert schema.status_code == 200 and "/api/v1/weddings/{wedding_id}/events/" in json.loads(schema.content)["paths"]
    assert client.get("/api/v1/docs/").status_code == 200
    assert client.get("/api/v1/redoc/").status_code == 200


def _table_rows(title: str) -> list[list[str]]:
    """The cells of the rows of the tables in the guide's ``## title`` section, header rows aside."""
    rows = [line.strip("|").split(" | ") for line in section_text(title).splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row] for row in rows]


def test_the_guide_lists_every_scope_and_error_code() -> None:
    scopes = {row[0].strip("`"): row[1] for row in _table_rows("Scopes")}
    assert scopes == {scope.value: scope.label for scope in ApiScope}
    codes = {row[0].strip("`") for row in _table_rows("Errors")}
    assert codes == set(API_ERROR_CODES)


def test_the_guide_names_the_rate_limit_settings_and_their_defaults() -> None:
    rates = {row[0].strip("`"): row[1].strip("`") for row in _table_rows("Rate limits")}
    assert {"API_KEY_RATE", "API_PUBLISH_RATE"} <= set(rates)
    for name, default in rates.items():
        assert hasattr(settings, name), f"docs/api.md names a setting {name} that does not exist"
        if name not in os.environ:
            assert getattr(settings, name) == default, f"{name}'s default is {getattr(settings, name)}, not {default}"
