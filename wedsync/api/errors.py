"""One error shape for the whole API, using the protocol's error codes.

``{"error": {"code": "invalid", "message": "...", "fields": {...}}}``; never a traceback.
"""

from __future__ import annotations

from typing import Any

import structlog
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record

logger = structlog.get_logger(__name__)


class Unauthorized(exceptions.APIException):
    """401 for endpoints that take credentials in the body (DRF would otherwise answer 403)."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Not authorised."
    default_code = "unauthorized"


_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (Unauthorized, "unauthorized"),
    (exceptions.NotAuthenticated, "unauthorized"),
    (exceptions.AuthenticationFailed, "unauthorized"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.ValidationError, "invalid"),
    (exceptions.ParseError, "bad_json"),
    (exceptions.Throttled, "rate_limited"),
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
        error["fields"] = response.data
    else:
        error["message"] = str(getattr(exc, "detail", exc))
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        error["retry_after"] = wait
    response.data = {"error": error}
    return response
