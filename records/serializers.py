"""The REST API's input and output for shared records and conflicts (docs/protocol.md, Shared
records). Record kinds, their fields and their change schemas come from records.registry, so a kind
registered there is served and described here unchanged."""

from __future__ import annotations

import enum
from typing import Any

import msgspec
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from records.models import ConflictResolution, ConflictStatus, Strategy
from records.registry import RecordKind, kinds, record_kind
from records.services import MAX_BATCH_OPS
from records.strategies import Outcome
from wedsync.api.conventions import ID_MAX
from wedsync.api.errors import API_ERROR_CODES
from wedsync.api.serializers import StrictCharField, StrictQuery

RECORDS_PAGE_DEFAULT = 500
RECORDS_PAGE_MAX = 1000
OUTCOMES = (Outcome.APPLIED, Outcome.MERGED, Outcome.OVERRIDDEN, Outcome.CONFLICT)
# An op id as the socket's sync takes it (realtime.protocol.OpId), from the Idempotency-Key header:
# visible ASCII only, as a header carries it unchanged.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,128}$"
# If-Match: the version the change is based on, as the ETag sent it ("3"), bare (3) or weak (W/"3").
IF_MATCH_PATTERN = r'^(W/)?"?[1-9][0-9]{0,9}"?$'


def kind_names() -> list[str]:
    return [kind.name for kind in kinds()]


def text_problem(value: Any, path: str) -> str | None:
    """Where ``value`` holds text PostgreSQL cannot store (NUL, a lone surrogate), or None. The
    socket refuses such text in the frame, the API as an ``invalid`` change (422)."""
    if isinstance(value, str):
        if "\x00" in value or (not value.isascii() and not _utf8(value)):
            return f"{path}: text may not contain NUL or lone surrogate characters"
    elif isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key, path) or text_problem(item, f"{path}.{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = text_problem(item, f"{path}[{index}]")
            if problem:
                return problem
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the schema of each kind's changes, from its msgspec struct -------------------------------------------


def _enum_schema(kind: type) -> dict[str, Any]:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "string", "enum": [member.value for member in kind]}
    raise NotImplementedError(kind)


def _openapi(schema: Any, defs: dict[str, Any]) -> Any:
    """msgspec's JSON Schema as OpenAPI 3.0 says it: ``$ref``s inlined, ``null`` as ``nullable``."""
    if isinstance(schema, list):
        return [_openapi(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _openapi(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    options = schema.get("anyOf")
    if options and {"type": "null"} in options and len(options) == 2:
        [other] = [option for option in options if option != {"type": "null"}]
        nullable = {**_openapi(other, defs), "nullable": True}
        if "enum" in nullable:
            nullable["enum"] = [*nullable["enum"], None]
        return nullable
    converted = {key: _openapi(value, defs) for key, value in schema.items() if key not in ("$defs", "title")}
    if "properties" in schema:  # names, not schemas: a field may be called "title"
        converted["properties"] = {name: _openapi(value, defs) for name, value in schema["properties"].items()}
    if converted.get("required") == []:
        del converted["required"]
    return converted


def changes_schema(kind: RecordKind) -> dict[str, Any]:
    raw = msgspec.json.schema(kind.changes, schema_hook=_enum_schema)
    schema: dict[str, Any] = _openapi(raw, raw.get("$defs", {}))
    schema["description"] = f"{kind.name}: the fields to set"
    return schema


def changes_request_schema() -> dict[str, Any]:
    """The body of a create or a change: the fields to set, as the kind in the path takes them."""
    return {
        "anyOf": [changes_schema(kind) for kind in kinds()],
        "description": "The fields to set (docs/protocol.md, Shared records); unknown fields are refused (422).",
    }


# --- records ------------------------------------------------------------------------------------------


class RecordSerializer(serializers.Serializer[None]):
    """One record as the caller may see it (hidden fields left out)."""

    id = serializers.IntegerField()
    version = serializers.IntegerField(help_text="Send it back as If-Match with a change (it is the ETag).")
    values = serializers.DictField(help_text="The record's fields the caller may see.")


class RecordListQuery(StrictQuery):
    after = serializers.IntegerField(min_value=0, max_value=ID_MAX, default=0, help_text="Ids above this.")
    limit = serializers.IntegerField(min_value=1, max_value=RECORDS_PAGE_MAX, default=RECORDS_PAGE_DEFAULT)


class RecordListResponse(serializers.Serializer[None]):
    record = serializers.ChoiceField(choices=kind_names())
    records = RecordSerializer(many=True, help_text="By id.")
    more = serializers.BooleanField(help_text="More records follow: ask again with after = the last id.")


def _state_records() -> serializers.Serializer[None]:
    return inline_serializer(
        name="WeddingStateRecords",
        fields={name: RecordSerializer(many=True) for name in kind_names()},
        help_text="Every record of each kind the caller may see.",
    )


class WeddingStateResponse(serializers.Serializer[None]):
    wedding = serializers.IntegerField()
    seq = serializers.IntegerField(help_text="The wedding's seq these records are at: subscribe with since = seq.")
    epoch = serializers.CharField(help_text="Subscribe with this epoch.")
    records = _state_records()


class SyncReplySerializer(serializers.Serializer[None]):
    """What became of a change: the socket's ``sync`` reply data (docs/protocol.md, Shared records)."""

    outcome = serializers.ChoiceField(choices=OUTCOMES)
    record = serializers.ChoiceField(choices=kind_names())
    id = serializers.IntegerField()
    version = serializers.IntegerField(help_text="The record's version now (the deletion's, once deleted).")
    op_id = serializers.CharField(allow_null=True, help_text="The op id: the Idempotency-Key, sent or made.")
    values = serializers.DictField(required=False, help_text="The record now, as the caller may see it.")
    changed = serializers.ListField(child=serializers.CharField(), required=False)
    lost = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Fields of the change that lost."
    )
    seq = serializers.IntegerField(required=False, help_text="The seq of the change's event.")
    conflict = serializers.IntegerField(required=False, help_text="conflict: the conflict kept.")
    deleted = serializers.BooleanField(required=False)
    duplicate = serializers.BooleanField(required=False, help_text="A resent op id: the first answer, nothing done.")


_ERROR_DETAIL: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "code": serializers.ChoiceField(choices=API_ERROR_CODES),
    "message": serializers.CharField(),
    "fields": serializers.DictField(required=False, help_text="invalid: each field's problems, by field."),
    "retry_after": serializers.FloatField(required=False, help_text="rate_limited: seconds to wait."),
    "deleted_seq": serializers.IntegerField(
        required=False, help_text="not_found: the seq of the record.deleted event of a deleted record."
    ),
    "op": serializers.IntegerField(required=False, help_text="A batch: the index of the op that failed."),
    "outcome": serializers.ChoiceField(
        choices=OUTCOMES, required=False, help_text="conflict in a batch: what the stale op would have become."
    ),
    "version": serializers.IntegerField(required=False, help_text="conflict in a batch: the record's version."),
    "conflict": serializers.IntegerField(required=False, help_text="conflict: the conflict kept."),
}


class RecordErrorResponse(serializers.Serializer[None]):
    """A refusal of the records API: the API's error shape with what the engine adds."""

    error = inline_serializer(name="RecordErrorDetail", fields=_ERROR_DETAIL)


class SyncConflictResponse(SyncReplySerializer):
    """409 for a change kept as a conflict: the reply, and the error every refusal carries."""

    error = inline_serializer(name="SyncConflictDetail", fields=_ERROR_DETAIL)


class BatchOpSerializer(serializers.Serializer[None]):
    record = serializers.ChoiceField(choices=kind_names())
    id = serializers.IntegerField(
        min_value=1, max_value=ID_MAX, allow_null=True, required=False, help_text="null or absent: create."
    )
    base_version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, allow_null=True, required=False)
    changes = serializers.DictField(required=False, default=dict)
    delete = serializers.BooleanField(required=False, default=False)
    op_id = StrictCharField(
        min_length=1,
        max_length=128,
        required=False,
        trim_whitespace=False,
        validators=[RegexValidator(r"^[^\x00]*$", message="Null characters are not allowed.")],
        help_text="The op's id (default: Idempotency-Key and the op's index, or one made up).",
    )


class BatchRequest(serializers.Serializer[None]):
    ops = serializers.ListField(child=BatchOpSerializer(), min_length=1, max_length=MAX_BATCH_OPS)


class BatchResponse(serializers.Serializer[None]):
    results = SyncReplySerializer(many=True, help_text="One reply per op, in op order.")


# --- conflicts ---------------------------------------------------------------------------------------


class ConflictListQuery(StrictQuery):
    status = serializers.ChoiceField(choices=[*ConflictStatus.values, "all"], default=ConflictStatus.OPEN.value)


class ConflictSerializer(serializers.Serializer[Any]):
    """A conflict as the caller may see it: both sides without the fields their role may not see
    (``role`` in the context)."""

    id = serializers.IntegerField()
    record = serializers.ChoiceField(source="kind", choices=kind_names())
    record_id = serializers.IntegerField()
    strategy = serializers.ChoiceField(choices=Strategy.values)
    base_version = serializers.IntegerField()
    version = serializers.IntegerField(help_text="The record's version when the conflict was kept.")
    theirs = serializers.SerializerMethodField(help_text="The record's values of the contested fields.")
    mine = serializers.SerializerMethodField(help_text="The change submitted ({deleted: true} for a deletion).")
    member = serializers.IntegerField(source="member_id", allow_null=True, help_text="Who submitted it.")
    against = serializers.ListField(child=serializers.IntegerField(), help_text="Members whose changes it contests.")
    status = serializers.ChoiceField(choices=ConflictStatus.values)
    resolution = serializers.SerializerMethodField()
    resolved_values = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)

    def _shown(self, conflict: Any, values: dict[str, Any] | None) -> dict[str, Any] | None:
        kind = record_kind(conflict.kind)
        if values is None or kind is None:
            return values
        return kind.visible_values(values, role=self.context["role"])

    @extend_schema_field(serializers.DictField())
    def get_theirs(self, conflict: Any) -> dict[str, Any] | None:
        return self._shown(conflict, conflict.theirs)

    @extend_schema_field(serializers.DictField())
    def get_mine(self, conflict: Any) -> dict[str, Any] | None:
        return self._shown(conflict, conflict.mine)

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_resolved_values(self, conflict: Any) -> dict[str, Any] | None:
        return self._shown(conflict, conflict.resolved_values)

    @extend_schema_field(serializers.ChoiceField(choices=ConflictResolution.values, allow_null=True))
    def get_resolution(self, conflict: Any) -> str | None:
        return conflict.resolution or None


class ConflictListResponse(serializers.Serializer[None]):
    conflicts = ConflictSerializer(many=True, help_text="Newest first.")


class ConflictResolveRequest(serializers.Serializer[None]):
    resolution = serializers.ChoiceField(
        choices=ConflictResolution.values,
        help_text="theirs: keep the record; mine: apply the submitted change; custom: apply values.",
    )
    values = serializers.DictField(required=False, help_text="custom: the fields to set.")


class ConflictResolveResponse(serializers.Serializer[None]):
    conflict = ConflictSerializer()
    result = SyncReplySerializer(allow_null=True, help_text="What applying the choice did (null for theirs).")
