"""OpenAPI descriptions drf-spectacular cannot infer on its own (imported by the app's ready())."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny

from wedsync.api.permissions import ApiKeyScopes
from wedsync.api.serializers import ErrorResponse


class RevocableJWTScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "wedsync.api.authentication.RevocableJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        definition: dict[str, Any] = build_bearer_security_scheme_object(
            header_name="AUTHORIZATION", token_prefix="Bearer", bearer_format="JWT"
        )
        return definition


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "wedsync.api.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A service account's key: `Api-Key <prefix>.<secret>` (or `Bearer <prefix>.<secret>`).",
        }


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiAutoSchema(AutoSchema):
    """Documents the refusals DRF itself answers with, read off each view's own declarations
    (parameters, body, permissions, authentication, throttles), so an operation's schema names every
    status it can answer and a new view cannot forget them. Refusals a view's own logic makes (403,
    404, 503) are still named in its ``extend_schema``; these never replace a view's own entry."""

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any
    ) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses: dict[str, Any] = operation["responses"]
        for status_code, description in self._framework_refusals(operation):
            if status_code not in responses:
                responses[status_code] = self._get_response_for_code(  # type: ignore[no-untyped-call]
                    OpenApiResponse(ErrorResponse, description=description), status_code
                )
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _framework_refusals(self, operation: dict[str, Any]) -> list[tuple[str, str]]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        refusals: list[tuple[str, str]] = []
        if has_body or any(parameter["in"] == "query" for parameter in parameters):
            refusals.append(("400", "`invalid` (a field is wrong; `fields` says which) or `bad_json`."))
        if not all(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            refusals.append(("401", "`unauthorized`: no credentials, or a malformed, expired or revoked token."))
        if self.method in _UNSAFE_METHODS and any(
            isinstance(authenticator, SessionAuthentication) for authenticator in self.view.get_authenticators()
        ):
            refusals.append(("403", "`forbidden`: a browser session's request without its CSRF token."))
        elif any(isinstance(permission, ApiKeyScopes) for permission in self.view.get_permissions()):
            refusals.append(("403", "`forbidden`: an API key whose service account lacks the scope."))
        if any(parameter["in"] == "path" for parameter in parameters):
            refusals.append(("404", "`not_found`: nothing has these ids."))
        if has_body:
            refusals.append(("415", "`invalid`: a body in a media type this operation does not read."))
        if self.view.get_throttles():
            refusals.append(("429", "`rate_limited`: too many attempts; `retry_after` says when to try again."))
        return refusals
