"""The coordinators' board in the admin (decision 0029): the page, one wedding's card as JSON for
its live refresh, and acknowledging an alert or resolving an emergency in place. Each view is
wrapped by the admin site (staff only, else its login); the services check the staff scope."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from presence.admin import wedding_presence_html
from presence.alerts.services import alert_acknowledge
from presence.emergency.services import emergency_resolve
from realtime.selectors import stream_head
from web.board.selectors import BoardCard, board_card, board_wedding_ids
from wedsync.refusals import Refused
from wedsync.selectors import weddings_overseen
from wedsync.services.audit import ClientInfo

NOT_OVERSEEN = "This wedding is not one you oversee."


def _card_context(request: HttpRequest, card: BoardCard) -> dict[str, Any]:
    return {
        "card": card,
        "may_acknowledge": request.user.has_perm("presence.change_alert"),
        "may_resolve": request.user.has_perm("presence.change_emergency"),
    }


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@require_GET
def board(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    cards = [
        card
        for wedding_id in board_wedding_ids(user=request.user, now=now)
        if (card := board_card(user=request.user, wedding_id=wedding_id, now=now)) is not None
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Today's weddings",
        "is_nav_sidebar_enabled": False,  # the width goes to the cards: a board is often a wall screen
        "cards": [_card_context(request, card) for card in cards],
        "boot": {
            "weddings": [card.wedding_id for card in cards],
            "endpoints": {
                "socket": "/ws/v1/?observe=1",
                "ticket": reverse("realtime-ticket"),
                "card": reverse("board-card", kwargs={"wedding_id": 0}),
            },
        },
    }
    return render(request, "web/board.html", context)


@require_GET
def card(request: HttpRequest, wedding_id: int) -> HttpResponse:
    """One card as ``{seq, epoch, html}``: what the board's socket resumes from, and what to show."""
    return _card_answer(request, wedding_id)


def _card_answer(request: HttpRequest, wedding_id: int) -> HttpResponse:
    found = board_card(user=request.user, wedding_id=wedding_id, now=timezone.now())
    if found is None:
        return JsonResponse({"error": {"code": "not_found", "message": NOT_OVERSEEN}}, status=404)
    html = render_to_string("web/board_card.html", _card_context(request, found), request=request)
    return JsonResponse({"wedding": wedding_id, "seq": found.seq, "epoch": found.epoch, "html": html})


def _answer(request: HttpRequest, wedding_id: int, refused: Refused | None, done: str) -> HttpResponse:
    if _wants_json(request):
        if refused is not None:
            status = 404 if refused.code == "not_found" else 403
            return JsonResponse({"error": {"code": refused.code, "message": refused.message}}, status=status)
        return _card_answer(request, wedding_id)
    if refused is not None:
        messages.error(request, refused.message)
    else:
        messages.success(request, done)
    return redirect("board")


def _act(request: HttpRequest, wedding_id: int, act: Callable[[], object], done: str) -> HttpResponse:
    try:
        act()
    except Refused as refused:
        return _answer(request, wedding_id, refused, "")
    return _answer(request, wedding_id, None, done)


@require_POST
@permission_required("presence.change_alert", raise_exception=True)
def alert_acknowledge_view(request: HttpRequest, wedding_id: int, alert_id: int) -> HttpResponse:
    client = ClientInfo.from_request(request)
    act = partial(alert_acknowledge, wedding_id=wedding_id, alert_id=alert_id, user=request.user, client=client)
    return _act(request, wedding_id, act, "Alert acknowledged.")


@require_POST
@permission_required("presence.change_emergency", raise_exception=True)
def emergency_resolve_view(request: HttpRequest, wedding_id: int, emergency_id: int) -> HttpResponse:
    client = ClientInfo.from_request(request)
    act = partial(emergency_resolve, wedding_id=wedding_id, emergency_id=emergency_id, user=request.user, client=client)
    return _act(request, wedding_id, act, "Emergency resolved: everyone in the wedding was told.")


@require_GET
def presence_fragment(request: HttpRequest, wedding_id: int) -> HttpResponse:
    """A wedding admin page's "Who is here now" table as ``{seq, epoch, html}``, for its live refresh."""
    wedding = weddings_overseen(user=request.user).filter(pk=wedding_id).first()
    if wedding is None:
        return JsonResponse({"error": {"code": "not_found", "message": NOT_OVERSEEN}}, status=404)
    seq, epoch = stream_head(wedding_id=wedding_id)  # first, as for a card (web.board.selectors)
    html = wedding_presence_html(wedding)
    return JsonResponse({"wedding": wedding_id, "seq": seq, "epoch": epoch, "html": html})
