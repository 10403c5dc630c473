from __future__ import annotations

from rest_framework import serializers


class TokenObtainRequest(serializers.Serializer[None]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class TokenRefreshRequest(serializers.Serializer[None]):
    refresh = serializers.CharField(max_length=4096)


class LogoutRequest(serializers.Serializer[None]):
    refresh = serializers.CharField(max_length=4096, required=False, allow_blank=True)


class TokenPairResponse(serializers.Serializer[None]):
    access = serializers.CharField()
    refresh = serializers.CharField()
    access_expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")
    refresh_expires_in = serializers.IntegerField(help_text="Seconds until the refresh token expires.")


class TicketResponse(serializers.Serializer[None]):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField()
    url = serializers.CharField(help_text="Socket path with the ticket, relative to this host.")
