"""REST API for shared records and conflicts, over the same engine as the socket's ``sync``
(records.services), so a REST edit and a socket edit conflict the same way (docs/protocol.md,
Shared records). Thin: read the headers and body, call one selector or service, shape the reply."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from records.api_access import record_actor, record_visible, records_page
from records.registry import Actor, RecordKind, record_kind
from records.selectors import conflicts_visible, wedding_state
from records.serializers import (
    IDEMPOTENCY_KEY_PATTERN,
    IF_MATCH_PATTERN,
    BatchRequest,
    BatchResponse,
    ConflictListQuery,
    ConflictListResponse,
    ConflictResolveRequest,
    ConflictResolveResponse,
    ConflictSerializer,
    RecordErrorResponse,
    RecordListQuery,
    RecordListResponse,
    RecordSerializer,
    SyncConflictResponse,
    SyncReplySerializer,
    WeddingStateResponse,
    changes_request_schema,
    kind_names,
    text_problem,
)
from records.services import SyncRefused, SyncRequest, conflict_resolve, records_sync_submit
from records.strategies import Outcome
from wedsync.api.errors import PreconditionRequired
from wedsync.api.parsers import JSONParser
from wedsync.api.serializers import ErrorResponse
from wedsync.refusals import Refused
from wedsync.services.audit import ClientInfo

_ID_MAX = 2**63 - 1  # path ids beyond a bigint name nothing
# A batch's op ids default to "<Idempotency-Key>:<index>", which must fit an op id (128).
BATCH_KEY_PATTERN = r"^[!-~]{1,120}$"
_STATUS = {
    "invalid": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
}

KIND = OpenApiParameter(
    "kind", str, OpenApiParameter.PATH, enum=kind_names(), description="The record kind (records.registry)."
)
IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    required=True,
    pattern=IF_MATCH_PATTERN,
    description='The version the change is based on: the record\'s ETag ("3"). Missing: 428.',
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    pattern=IDEMPOTENCY_KEY_PATTERN,
    description="The change's op id, shared with the socket's sync: sent again, the first answer comes back and "
    "nothing changes. Made up by the server when absent (and sent back in this header).",
)
BATCH_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    pattern=BATCH_KEY_PATTERN,
    description='The default op id of each op without one: "<key>:<index>".',
)
KEY_SENT_BACK = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, response=[200, 201, 409], description="The op id used."
)
ETAG = OpenApiParameter("ETag", str, OpenApiParameter.HEADER, response=[200], description='The version: "3".')
_ERRORS: dict[int, Any] = {
    403: OpenApiResponse(RecordErrorResponse, description="`forbidden` (audited)."),
    404: OpenApiResponse(RecordErrorResponse, description="`not_found`; a deleted record's carries `deleted_seq`."),
}
_WRITE_ERRORS: dict[int, Any] = {
    **_ERRORS,
    422: OpenApiResponse(RecordErrorResponse, description="`invalid`: the change cannot apply; `message` says why."),
    429: OpenApiResponse(RecordErrorResponse, description="`rate_limited`: the member's sync budget is spent."),
}
_CONFLICT = OpenApiResponse(
    SyncConflictResponse, description="`conflict`: kept as a conflict for a planner to resolve; nothing applied."
)


def _refused(refused: Refused) -> Response:
    """The API's error shape for a refusal the engine already audited, with what it adds
    (``deleted_seq``, ``op``, ``outcome``, ``version``, ``retry_after``)."""
    details = getattr(refused, "details", {})
    error = {"code": refused.code, "message": refused.message, **details}
    headers = {}
    if refused.code == "rate_limited" and details.get("retry_after") is not None:
        headers["Retry-After"] = str(math.ceil(details["retry_after"]))
    return Response({"error": error}, status=_STATUS.get(refused.code, status.HTTP_400_BAD_REQUEST), headers=headers)


def _header(request: Request, name: str, pattern: str) -> str | None:
    value = request.headers.get(name)
    if value is not None and not re.fullmatch(pattern, value):
        raise exceptions.ValidationError({name: [f"Does not match {pattern}."]})
    return value


def _base_version(request: Request) -> int:
    value = _header(request, "If-Match", IF_MATCH_PATTERN)
    if value is None:
        raise PreconditionRequired()
    return int(value.removeprefix("W/").strip('"'))


def _op_id(request: Request) -> str:
    return _header(request, "Idempotency-Key", IDEMPOTENCY_KEY_PATTERN) or f"rest-{uuid.uuid4().hex}"


def _record_id(record_id: int) -> int:
    if record_id > _ID_MAX:
        raise exceptions.NotFound("No such record.")
    return record_id


class _RecordsView(APIView):
    parser_classes = [JSONParser]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, Refused):
            return _refused(exc)
        return super().handle_exception(exc)

    def actor(self, request: Request, wedding_id: int) -> Actor:
        if wedding_id > _ID_MAX:
            raise exceptions.NotFound("No such wedding.")
        return record_actor(user=request.user, wedding_id=wedding_id, client=ClientInfo.from_request(request))

    def kind(self, name: str) -> RecordKind:
        kind = record_kind(name)
        if kind is None:
            raise exceptions.NotFound(f"No record kind {name[:40]!r}.")
        return kind

    def sync(self, request: Request, actor: Actor, sync_request: SyncRequest) -> Response:
        """One op through the engine, answered with the socket's reply and the status it calls for."""
        [result] = records_sync_submit(
            actor=actor, requests=[sync_request], atomic=False, client=ClientInfo.from_request(request)
        )
        reply = result.answer
        if result.duplicate and (
            reply["record"] != sync_request.kind
            or (sync_request.record_id is not None and reply["id"] != sync_request.record_id)
        ):
            raise SyncRefused(
                code="invalid",
                message=f"Idempotency-Key: already used for another change ({reply['record']} {reply['id']}).",
            )
        headers = {"Idempotency-Key": str(reply["op_id"])}
        if not reply.get("deleted"):
            headers["ETag"] = f'"{reply["version"]}"'
        if reply["outcome"] == Outcome.CONFLICT:
            message = f"Kept as conflict {reply['conflict']} for a planner to resolve: nothing of your change applied."
            error = {"code": "conflict", "message": message, "conflict": reply["conflict"]}
            return Response({**reply, "error": error}, status=status.HTTP_409_CONFLICT, headers=headers)
        if sync_request.record_id is None:
            headers["Location"] = reverse(
                "wedding-record",
                kwargs={"wedding_id": actor.wedding_id, "kind": reply["record"], "record_id": reply["id"]},
            )
            return Response(reply, status=status.HTTP_201_CREATED, headers=headers)
        return Response(reply, headers=headers)


class WeddingStateView(_RecordsView):
    @extend_schema(
        responses={200: WeddingStateResponse, **_ERRORS},
        summary="Every record the caller may see, with the wedding's seq and epoch, in one snapshot: reload, then "
        "subscribe since that seq",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        return Response(wedding_state(actor=self.actor(request, wedding_id)))


class RecordListView(_RecordsView):
    @extend_schema(
        operation_id="weddings_records_list",
        parameters=[KIND, RecordListQuery],
        responses={200: RecordListResponse, **_ERRORS},
        summary="The records of a kind the caller may see, by id (hidden fields left out)",
    )
    def get(self, request: Request, wedding_id: int, kind: str) -> Response:
        actor = self.actor(request, wedding_id)
        served = self.kind(kind)
        query = RecordListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        records, more = records_page(kind=served, actor=actor, **query.validated_data)
        return Response({"record": served.name, "records": records, "more": more})

    @extend_schema(
        parameters=[KIND, IDEMPOTENCY_KEY, KEY_SENT_BACK],
        request={"application/json": changes_request_schema()},
        responses={201: SyncReplySerializer, **_WRITE_ERRORS},
        summary="Create a record (201 with the sync reply, Location: the record)",
    )
    def post(self, request: Request, wedding_id: int, kind: str) -> Response:
        actor = self.actor(request, wedding_id)
        served = self.kind(kind)
        op_id = _op_id(request)
        changes = _body_changes(request)
        return self.sync(
            request,
            actor,
            SyncRequest(kind=served.name, record_id=None, base_version=None, changes=changes, op_id=op_id),
        )


def _body_changes(request: Request) -> dict[str, Any]:
    """The body of a create or a change: a JSON object (else 400); text the database cannot store
    is an ``invalid`` change (422), as the fields the engine judges."""
    if not isinstance(request.data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object of the fields to set."]})
    return _storable(request.data, path="body")


def _storable(changes: dict[str, Any], *, path: str, **details: Any) -> dict[str, Any]:
    problem = text_problem(changes, path)
    if problem:
        raise SyncRefused(code="invalid", message=problem, **details)
    return changes


class RecordDetailView(_RecordsView):
    @extend_schema(
        parameters=[KIND, ETAG],
        responses={200: RecordSerializer, **_ERRORS},
        summary="One record as the caller may see it; its ETag is its version",
    )
    def get(self, request: Request, wedding_id: int, kind: str, record_id: int) -> Response:
        actor = self.actor(request, wedding_id)
        view = record_visible(
            kind=self.kind(kind), actor=actor, record_id=_record_id(record_id), client=ClientInfo.from_request(request)
        )
        return Response(view, headers={"ETag": f'"{view["version"]}"'})

    @extend_schema(
        parameters=[KIND, IF_MATCH, IDEMPOTENCY_KEY, KEY_SENT_BACK, ETAG],
        request={"application/json": changes_request_schema()},
        responses={
            200: SyncReplySerializer,
            409: _CONFLICT,
            428: OpenApiResponse(RecordErrorResponse, description="`precondition_required`: no If-Match."),
            **_WRITE_ERRORS,
        },
        summary="Change a record based on the If-Match version: applied, merged or overridden (200), or a conflict "
        "(409), as the socket's sync",
    )
    def patch(self, request: Request, wedding_id: int, kind: str, record_id: int) -> Response:
        actor = self.actor(request, wedding_id)
        served = self.kind(kind)
        base_version, op_id = _base_version(request), _op_id(request)
        changes = _body_changes(request)
        return self.sync(
            request,
            actor,
            SyncRequest(
                kind=served.name,
                record_id=_record_id(record_id),
                base_version=base_version,
                changes=changes,
                op_id=op_id,
            ),
        )

    @extend_schema(
        parameters=[KIND, IF_MATCH, IDEMPOTENCY_KEY, KEY_SENT_BACK],
        responses={
            200: SyncReplySerializer,
            400: OpenApiResponse(ErrorResponse, description="`invalid`: a malformed If-Match or Idempotency-Key."),
            409: _CONFLICT,
            428: OpenApiResponse(RecordErrorResponse, description="`precondition_required`: no If-Match."),
            **_WRITE_ERRORS,
        },
        summary="Delete a record based on the If-Match version (200 with deleted: true, or what the strategy decided)",
    )
    def delete(self, request: Request, wedding_id: int, kind: str, record_id: int) -> Response:
        actor = self.actor(request, wedding_id)
        served = self.kind(kind)
        base_version, op_id = _base_version(request), _op_id(request)
        return self.sync(
            request,
            actor,
            SyncRequest(
                kind=served.name,
                record_id=_record_id(record_id),
                base_version=base_version,
                changes={},
                delete=True,
                op_id=op_id,
            ),
        )


class RecordBatchView(_RecordsView):
    @extend_schema(
        parameters=[BATCH_KEY],
        request=BatchRequest,
        responses={
            200: BatchResponse,
            409: OpenApiResponse(
                RecordErrorResponse, description="`conflict`: an op would not fully apply (`op`, `outcome`, `version`)."
            ),
            **_WRITE_ERRORS,
        },
        summary="Apply 1-50 ops all or nothing: one that fails rolls every op back, sends nothing and is named (op)",
    )
    def post(self, request: Request, wedding_id: int) -> Response:
        actor = self.actor(request, wedding_id)
        key = _header(request, "Idempotency-Key", BATCH_KEY_PATTERN)
        body = BatchRequest(data=request.data)
        body.is_valid(raise_exception=True)
        requests = [
            SyncRequest(
                kind=op["record"],
                record_id=op.get("id"),
                base_version=op.get("base_version"),
                changes=_storable(op["changes"], path=f"ops[{index}]: changes", op=index),
                delete=op["delete"],
                op_id=op.get("op_id") or (f"{key}:{index}" if key else f"rest-{uuid.uuid4().hex}"),
            )
            for index, op in enumerate(body.validated_data["ops"])
        ]
        results = records_sync_submit(
            actor=actor, requests=requests, atomic=True, client=ClientInfo.from_request(request)
        )
        return Response({"results": [result.answer for result in results]})


class ConflictListView(_RecordsView):
    @extend_schema(
        parameters=[ConflictListQuery],
        responses={200: ConflictListResponse, **_ERRORS},
        summary="The wedding's conflicts (open unless status says otherwise), newest first: all of them for roles "
        "that resolve them, else the caller's own",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        actor = self.actor(request, wedding_id)
        query = ConflictListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data["status"]
        conflicts = conflicts_visible(actor=actor, status=None if wanted == "all" else wanted)
        return Response({"conflicts": ConflictSerializer(conflicts, many=True, context={"role": actor.role}).data})


class ConflictResolveView(_RecordsView):
    @extend_schema(
        request=ConflictResolveRequest,
        responses={
            200: ConflictResolveResponse,
            409: OpenApiResponse(RecordErrorResponse, description="`conflict`: already resolved."),
            **_ERRORS,
            422: OpenApiResponse(RecordErrorResponse, description="`invalid`: the values cannot apply."),
        },
        summary="Resolve a conflict (needs manage_members): keep theirs, apply mine, or custom values; everyone "
        "concerned hears conflict.resolved",
    )
    def post(self, request: Request, wedding_id: int, conflict_id: int) -> Response:
        actor = self.actor(request, wedding_id)
        body = ConflictResolveRequest(data=request.data)
        body.is_valid(raise_exception=True)
        conflict, result = conflict_resolve(
            actor=actor,
            conflict_id=_record_id(conflict_id),
            resolution=body.validated_data["resolution"],
            values=_storable(body.validated_data.get("values") or {}, path="values") or None,
            client=ClientInfo.from_request(request),
        )
        return Response(
            {
                "conflict": ConflictSerializer(conflict, context={"role": actor.role}).data,
                "result": None if result is None else result.answer,
            }
        )
