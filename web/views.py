from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from web.selectors import member_weddings_list, wedding_day_boot


@login_required
def my_weddings(request: HttpRequest) -> HttpResponse:
    return render(request, "web/weddings.html", {"memberships": member_weddings_list(user=request.user)})


@login_required
def wedding_day(request: HttpRequest, wedding_id: int) -> HttpResponse:
    boot = wedding_day_boot(user=request.user, wedding_id=wedding_id)
    if boot is None:
        # The same answer whether or not the wedding exists: the page never tells which ids do.
        raise Http404("You are not a member of this wedding.")
    boot["endpoints"] = {
        "socket": "/ws/v1/",
        "ticket": reverse("realtime-ticket"),
        "state": reverse("wedding-state", kwargs={"wedding_id": wedding_id}),
        "emergencies": reverse("wedding-emergencies", kwargs={"wedding_id": wedding_id}),
        "presence": reverse("wedding-presence", kwargs={"wedding_id": wedding_id}),
    }
    return render(request, "web/wedding_day.html", {"boot": boot, "wedding": boot["wedding"], "me": boot["me"]})
