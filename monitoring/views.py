from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView

from monitoring.access import MetricsRefusal, metrics_scrape_refusal
from monitoring.selectors import readiness_report
from wedsync.client_address import request_client_address
from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record

_REFUSALS: dict[MetricsRefusal, tuple[int, str]] = {
    MetricsRefusal.NOT_CONFIGURED: (403, "metrics are closed: set METRICS_TOKEN to scrape them\n"),
    MetricsRefusal.BAD_TOKEN: (401, "metrics need the bearer token (METRICS_TOKEN)\n"),
    MetricsRefusal.ADDRESS: (403, "metrics are for the monitoring network only\n"),
}


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
    """Prometheus exposition, for scrapers with the bearer token (monitoring/access.py)."""
    refusal = metrics_scrape_refusal(
        authorization=request.headers.get("Authorization"), address=request_client_address(request)
    )
    if refusal is not None:
        audit_refusal_record(
            action=AuditAction.METRICS_REFUSE,
            reason=refusal.value,
            client=ClientInfo.from_request(request),
            target="GET /metrics",
        )
        status, text = _REFUSALS[refusal]
        refused = HttpResponse(text, status=status, content_type="text/plain")
        if refusal is MetricsRefusal.BAD_TOKEN:
            refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    response: HttpResponse = ExportToDjangoView(request)
    return response
