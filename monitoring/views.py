from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitoring.selectors import readiness_report


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers HTTP. Touches nothing else."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database and the channel layer answer, else 503 naming what is down."""
    report = readiness_report()
    down = sorted(component for component, state in report.items() if state != "ok")
    return JsonResponse(
        {"status": "ok" if not down else "unavailable", "down": down, "checks": report},
        status=200 if not down else 503,
    )
