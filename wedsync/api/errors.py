"""One error shape for the whole API, using the protocol's error codes.

``{"error": {"code": "invalid", "message": "...", "fields": {...}}}``; never a traceback, and never
an HTML page under ``/api/``: Django's own 400, 403, 404 and 500 answers there (a path no route
matches, a middleware's refusal) take the same shape through the ``handler*`` views below.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record

logger = structlog.get_logger(__name__)

# The protocol's error codes (docs/protocol.md) that an HTTP answer may carry, and the API's own
# precondition_required (a change without If-Match).
API_ERROR_CODES: tuple[str, ...] = (
    "bad_json",
    "invalid",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "precondition_required",
    "rate_limited",
    "unavailable",
    "server_error",
)


class Unauthorized(exceptions.APIException):
    """401 for endpoints that take credentials in the body (DRF would otherwise answer 403)."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Not authorised."
    default_code = "unauthorized"


class PreconditionRequired(exceptions.APIException):
    """428 for a change that must name the version it is based on (``If-Match``) and did not."""

    status_code = status.HTTP_428_PRECONDITION_REQUIRED
    default_detail = "If-Match: send the version your change is based on (the record's ETag)."
    default_code = "precondition_required"


_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (Unauthorized, "unauthorized"),
    (exceptions.NotAuthenticated, "unauthorized"),
    (exceptions.AuthenticationFailed, "unauthorized"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.ValidationError, "invalid"),
    (exceptions.ParseError, "bad_json"),
    (exceptions.Throttled, "rate_limited"),
    (PreconditionRequired, "precondition_required"),
    (exceptions.MethodNotAllowed, "invalid"),
    (exceptions.UnsupportedMediaType, "invalid"),
)


# Refusals raised here without an audit entry of their own (bad tokens and passwords are audited
# where they are judged).
_AUDITED_HERE: tuple[type[exceptions.APIException], ...] = (
    exceptions.NotAuthenticated,
    exceptions.PermissionDenied,
    exceptions.Throttled,
)


def _audit_refusal(exc: exceptions.APIException, context: dict[str, Any]) -> None:
    """One row per refusal of a known user; anyone else's are aggregated per address (decision 0025)."""
    request = context.get("request")
    if request is None:
        return
    audit_refusal_record(
        action=AuditAction.API_REFUSE,
        reason=str(exc.default_code),  # not_authenticated, permission_denied, throttled: a closed set
        actor=getattr(request, "user", None),
        target=f"{request.method} {request.path}"[:200],
        client=ClientInfo.from_request(request),
        details={"status": exc.status_code, "message": str(exc.detail)[:200]},
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, _AUDITED_HERE):
        _audit_refusal(exc, context)
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("api.unhandled_error", view=type(context.get("view")).__name__)
        return Response(
            {"error": {"code": "server_error", "message": "Something went wrong on our side."}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code = next((name for kind, name in _CODES if isinstance(exc, kind)), "server_error")
    error: dict[str, Any] = {"code": code}
    if isinstance(exc, exceptions.ValidationError):
        error["message"] = "Some fields are invalid."
        # A serializer's errors are by field; a bare ValidationError's are a list: same shape for both.
        fields = response.data
        error["fields"] = fields if isinstance(fields, dict) else {"non_field_errors": fields}
    else:
        error["message"] = str(getattr(exc, "detail", exc))
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        error["retry_after"] = wait
    response.data = {"error": error}
    return response


def _under_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def _django_error(*, code: str, message: str, status_code: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status_code)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _under_api(request):
        return _django_error(code="invalid", message="Bad request.", status_code=status.HTTP_400_BAD_REQUEST)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _under_api(request):
        return _django_error(code="forbidden", message="Forbidden.", status_code=status.HTTP_403_FORBIDDEN)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _under_api(request):
        return _django_error(code="not_found", message="Not found.", status_code=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _under_api(request):
        return _django_error(
            code="server_error",
            message="Something went wrong on our side.",
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return defaults.server_error(request)
