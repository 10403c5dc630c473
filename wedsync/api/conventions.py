"""What the staff API's resources share (decision 0031): refusals and invalid objects in the one
error shape, the ``Idempotency-Key`` header and the replay of a stored answer."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError as ModelValidationError
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, status
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from wedsync.api.errors import PreconditionRequired
from wedsync.refusals import Refused
from wedsync.services.idempotency import Answer, idempotent_create

# The largest id PostgreSQL stores (bigint): a bigger one in a path or a query names nothing.
ID_MAX = 2**63 - 1

IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,128}$")
IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    pattern=IDEMPOTENCY_KEY.pattern,
    description="Any unique string: a retry with the same key gets the first answer. Missing: 428.",
)


class CheckedCursorPagination(CursorPagination):
    """DRF's cursor pages, with the position a cursor carries checked against ``position_format``
    before it reaches a query: a forged cursor (``p=abc``, a NUL) is a bad cursor, 404, not a 500."""

    position_format: re.Pattern[str]

    def decode_cursor(self, request: Request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        position = None if cursor is None else cursor.position
        if position is not None and not self.position_format.fullmatch(str(position)):
            raise exceptions.NotFound(self.invalid_cursor_message)
        return cursor


def refused_response(refused: Refused, *, conflict: int = status.HTTP_409_CONFLICT) -> Response:
    """A service's refusal (audited there) in the error shape; ``conflict`` is 412 where it means a
    stale ``If-Match``."""
    codes = {"not_found": 404, "conflict": conflict, "invalid": 422}
    return Response({"error": {"code": refused.code, "message": refused.message}}, status=codes.get(refused.code, 403))


def unstorable_response() -> Response:
    """422 for text PostgreSQL cannot store (``wedsync.api.serializers.unstorable``)."""
    error = {"code": "invalid", "message": "NUL characters and lone surrogates are not allowed."}
    return Response({"error": error}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)


def invalid_response(error: ModelValidationError) -> Response:
    """422: the request is well-formed (the schema's 400 is for that), the object it describes is not."""
    fields = error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}
    return Response(
        {"error": {"code": "invalid", "message": "Some fields are invalid.", "fields": fields}},
        status=status.HTTP_422_UNPROCESSABLE_ENTITY,
    )


def idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise PreconditionRequired("Send an Idempotency-Key header (any unique string up to 128 characters).")
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise exceptions.ValidationError({"Idempotency-Key": ["1 to 128 visible ASCII characters."]})
    return key


def replayed_response(answer: Answer) -> Response:
    response = Response(answer.body, status=answer.status_code)
    if answer.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def created_once(request: Request, *, key: str, create: Callable[[], tuple[int, dict[str, Any]]]) -> Response:
    """``create``'s answer, stored with ``key`` (idempotent_create), or the stored answer of an
    earlier request with it; an invalid object is 422 and a refusal in its error shape."""
    try:
        answer = idempotent_create(
            user=request.user,  # type: ignore[arg-type]  # the views' permission makes it a signed-in user
            key=key,
            path=request.path,
            payload=request.data,
            create=create,
        )
    except ModelValidationError as error:
        return invalid_response(error)
    except Refused as refused:
        return refused_response(refused)
    return replayed_response(answer)
