"""Token endpoints. Thin: validate input, call one service, shape the reply."""

from __future__ import annotations

from dataclasses import asdict

from django.contrib.auth import logout as django_logout
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wedsync.api.authentication import UnauthenticatedAddressThrottle
from wedsync.api.errors import Unauthorized
from wedsync.api.parsers import JSONParser
from wedsync.api.serializers import (
    ErrorResponse,
    LogoutRequest,
    TokenObtainRequest,
    TokenPairResponse,
    TokenRefreshRequest,
)
from wedsync.api.throttles import (
    LoginAddressThrottle,
    LoginUserThrottle,
    RefreshAddressThrottle,
    RefreshUserThrottle,
)
from wedsync.services.audit import ClientInfo
from wedsync.services.auth import TokenRefused, session_logout, token_pair_obtain, token_pair_refresh


class TokenObtainView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    # Slows password guessing from one address and against one account (wedsync/api/throttles.py).
    throttle_classes = [LoginAddressThrottle, LoginUserThrottle, UnauthenticatedAddressThrottle]

    @extend_schema(
        request=TokenObtainRequest,
        responses={200: TokenPairResponse, 401: ErrorResponse},
        summary="Log in: get tokens (401: wrong username or password, or an inactive user)",
    )
    def post(self, request: Request) -> Response:
        body = TokenObtainRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            pair = token_pair_obtain(
                username=body.validated_data["username"],
                password=body.validated_data["password"],
                client=ClientInfo.from_request(request),
                request=request._request,
            )
        except TokenRefused as exc:
            raise Unauthorized(exc.message) from None
        return Response(asdict(pair))


class TokenRefreshView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [RefreshAddressThrottle, RefreshUserThrottle, UnauthenticatedAddressThrottle]

    @extend_schema(
        request=TokenRefreshRequest,
        responses={200: TokenPairResponse, 401: ErrorResponse},
        summary="Rotate a refresh token (401: used, expired, revoked or malformed)",
    )
    def post(self, request: Request) -> Response:
        body = TokenRefreshRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            pair = token_pair_refresh(refresh=body.validated_data["refresh"], client=ClientInfo.from_request(request))
        except TokenRefused as exc:
            raise Unauthorized(exc.message) from None
        return Response(asdict(pair))


class LogoutView(APIView):
    # JSON only: every field is optional, so a form or multipart body that parses to nothing would
    # pass for an empty one and log out on a malformed request.
    parser_classes = [JSONParser]

    @extend_schema(request=LogoutRequest, responses={204: None}, summary="Log out everywhere: revoke every token")
    def post(self, request: Request) -> Response:
        body = LogoutRequest(data=request.data)
        body.is_valid(raise_exception=True)
        session_logout(
            user=request.user,  # type: ignore[arg-type]
            refresh=body.validated_data.get("refresh") or None,
            client=ClientInfo.from_request(request),
        )
        django_logout(request._request)  # a browser session ends too
        return Response(status=status.HTTP_204_NO_CONTENT)
