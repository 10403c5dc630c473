from __future__ import annotations

from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from wedsync.api.errors import API_ERROR_CODES


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string: DRF's CharField would take ``0`` or ``1.5`` and turn
    them into ``"0"`` and ``"1.5"``, so a request the schema calls invalid would be served."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StorableText(StrictCharField):
    """A string as the schema allows it, whatever its characters: NUL and lone surrogates (which
    PostgreSQL cannot store) are left for the view to refuse with 422 (:func:`unstorable`), since a
    request the schema calls valid must not get the 400 of a malformed one."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)  # "\x1e" is whitespace to Python: trimmed, it would be blank
        super().__init__(**kwargs)
        self.validators = [
            validator
            for validator in self.validators
            if not isinstance(validator, ProhibitNullCharactersValidator | ProhibitSurrogateCharactersValidator)
        ]


def unstorable(value: Any) -> bool:
    """Whether a JSON value holds a string PostgreSQL cannot store: a NUL or a lone surrogate."""
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(unstorable(key) or unstorable(item) for key, item in value.items())
    if isinstance(value, list):
        return any(unstorable(item) for item in value)
    return False


class StrictQuery(serializers.Serializer[None]):
    """Query parameters where a blank value (``?status=``) is refused, not taken as "not given", which
    is what DRF does with blanks in form-style data: the schema calls them invalid."""

    def to_internal_value(self, data: Any) -> Any:
        blank: dict[str, Any] = {
            str(name): ["May not be blank."] for name in self.fields if name in data and data.get(name) == ""
        }
        if blank:
            raise serializers.ValidationError(blank)
        return super().to_internal_value(data)


# Credentials are taken as sent (never trimmed): a wrong one is refused with 401 like any other wrong
# credential, and the schema's minLength is then the whole rule for "blank".
class TokenObtainRequest(serializers.Serializer[None]):
    username = StrictCharField(min_length=1, max_length=150, trim_whitespace=False)
    password = StrictCharField(min_length=1, max_length=256, trim_whitespace=False)


class TokenRefreshRequest(serializers.Serializer[None]):
    refresh = StrictCharField(min_length=1, max_length=4096, trim_whitespace=False)


class LogoutRequest(serializers.Serializer[None]):
    refresh = StrictCharField(max_length=4096, required=False, allow_blank=True)


class TokenPairResponse(serializers.Serializer[None]):
    access = serializers.CharField()
    refresh = serializers.CharField()
    access_expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")
    refresh_expires_in = serializers.IntegerField(help_text="Seconds until the refresh token expires.")


class TicketResponse(serializers.Serializer[None]):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField()
    url = serializers.CharField(help_text="Socket path with the ticket, relative to this host.")


class ErrorResponse(serializers.Serializer[None]):
    """Every refusal and failure of the API (wedsync/api/errors.py); for the schema only."""

    # Inline, because a serializer cannot declare a field named ``fields`` as a class attribute.
    error = inline_serializer(
        name="ErrorDetail",
        fields={
            "code": serializers.ChoiceField(choices=API_ERROR_CODES),
            "message": serializers.CharField(),
            "fields": serializers.DictField(required=False, help_text="invalid: each field's problems, by field."),
            "retry_after": serializers.FloatField(required=False, help_text="rate_limited: seconds to wait."),
        },
    )
