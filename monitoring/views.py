from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView

from monitoring.selectors import readiness_report


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers HTTP. Touches nothing else."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database and the channel layer answer, else 503 naming what is down.

    The reasons go to the log only: hosts and driver messages are not for the public.
    """
    report = readiness_report()
    down = sorted(component for component, problem in report.items() if problem is not None)
    return JsonResponse(
        {
            "status": "ok" if not down else "unavailable",
            "down": down,
            "checks": {component: "down" if problem else "ok" for component, problem in report.items()},
        },
        status=200 if not down else 503,
    )


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for the scrapers in ``METRICS_ALLOWED_IPS`` only."""
    if request.META.get("REMOTE_ADDR") not in settings.METRICS_ALLOWED_IPS:
        return HttpResponseForbidden("metrics are for the monitoring network only\n")
    response: HttpResponse = ExportToDjangoView(request)
    return response
