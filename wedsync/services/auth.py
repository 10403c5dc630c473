"""Issuing, refreshing, verifying and revoking the signed tokens phones and services use.

Tokens are simplejwt's HS256 JWTs (audience and issuer ``wedsync``). Each carries the user's token
generation as the ``gen`` claim; bumping the generation (:func:`tokens_revoke_for_user`) makes
every outstanding access and refresh token unusable at once. Refresh tokens rotate: a refresh
token works once, then is blacklisted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from wedsync.models import AuditOutcome, UserTokenGeneration
from wedsync.refusals import Refused
from wedsync.selectors import token_generation_current, user_with_token_generation
from wedsync.services.audit import AuditAction, ClientInfo, audit_record, audit_refusal_record
from wedsync.signals import tokens_revoked

GENERATION_CLAIM = "gen"


class TokenRefused(Refused):
    """A credential or token was not accepted; ``reason`` is a short stable code for the audit log."""

    def __init__(self, *, reason: str, message: str, user: User | None = None) -> None:
        super().__init__(code="unauthorized", message=message)
        self.reason = reason
        self.user = user  # when the token named a real user (revoked, deactivated)


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """What a valid access token grants: its live user, the generation it was checked against, and
    when it expires (seconds since the epoch, None if the token carries no ``exp``)."""

    user: User
    generation: int
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: str
    refresh: str
    access_expires_in: int
    refresh_expires_in: int


def _token_refused_from(exc: TokenError) -> TokenRefused:
    if isinstance(exc, ExpiredTokenError):
        return TokenRefused(reason="expired", message="The token has expired.")
    return TokenRefused(reason="invalid", message="The token is invalid.")


def _user_for_claims(*, user_id: object, generation: object) -> tuple[User, int]:
    """The live user a verified token names and its current generation (one query), or
    :class:`TokenRefused` if it was revoked."""
    user, current = user_with_token_generation(user_id=user_id)
    if user is None or not user.is_active:
        raise TokenRefused(reason="inactive", message="The user is unknown or deactivated.", user=user)
    if generation != current:
        raise TokenRefused(reason="revoked", message="The token has been revoked.", user=user)
    return user, current


def _refresh_token_for(user: User) -> RefreshToken:
    token = RefreshToken.for_user(user)  # also recorded as outstanding, so it can be blacklisted
    token[GENERATION_CLAIM] = token_generation_current(user_id=user.pk)
    return token


def _pair_for(user: User) -> TokenPair:
    refresh = _refresh_token_for(user)
    return TokenPair(
        access=str(refresh.access_token),  # copies the user id and ``gen`` claims
        refresh=str(refresh),
        access_expires_in=settings.JWT_ACCESS_TTL,
        refresh_expires_in=settings.JWT_REFRESH_TTL,
    )


def token_pair_obtain(
    *, username: str, password: str, client: ClientInfo, request: HttpRequest | None = None
) -> TokenPair:
    """Exchange a username and password for an access and a refresh token.

    ``request`` is the HTTP request it came in, for the authentication backends (django-axes reads
    it to tell the admin's logins, which it locks out, from the API's, which are throttled)."""
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        audit_record(
            action=AuditAction.TOKEN_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor_label=username,
            client=client,
            details={"reason": "bad_credentials", "grant": "password"},
        )
        raise TokenRefused(reason="bad_credentials", message="Unknown username or wrong password.")
    pair = _pair_for(user)
    audit_record(
        action=AuditAction.TOKEN_ISSUE,
        outcome=AuditOutcome.SUCCESS,
        actor=user,
        client=client,
        details={"grant": "password"},
    )
    return pair


def token_pair_refresh(*, refresh: str, client: ClientInfo) -> TokenPair:
    """Rotate a refresh token: the old one is blacklisted, a new pair is issued."""
    try:
        with transaction.atomic():
            old = RefreshToken(refresh)  # type: ignore[arg-type]  # checks signature, expiry, type, blacklist
            user, _generation = _user_for_claims(
                user_id=old[jwt_settings.USER_ID_CLAIM], generation=old.get(GENERATION_CLAIM)
            )
            # Two refreshes racing with one token: the row lock lets one through, the other then
            # finds it blacklisted. Without it both could rotate and the token would branch.
            outstanding = OutstandingToken.objects.select_for_update().filter(jti=old[jwt_settings.JTI_CLAIM]).first()
            if outstanding is None or BlacklistedToken.objects.filter(token=outstanding).exists():
                raise TokenRefused(reason="reused", message="The refresh token has already been used.", user=user)
            BlacklistedToken.objects.create(token=outstanding)
            pair = _pair_for(user)
    except (TokenError, TokenRefused) as exc:
        refused = _token_refused_from(exc) if isinstance(exc, TokenError) else exc
        audit_refusal_record(  # aggregated per address unless the token named a user (decision 0025)
            action=AuditAction.TOKEN_REFUSE,
            reason=refused.reason,
            actor=refused.user,
            client=client,
            details={"grant": "refresh"},
        )
        raise refused from None
    audit_record(action=AuditAction.TOKEN_REFRESH, outcome=AuditOutcome.SUCCESS, actor=user, client=client)
    return pair


def access_token_issue(*, user: User, lifetime: timedelta | None = None, generation: int | None = None) -> str:
    """A bare access token (no refresh), for the demo seed and load generators.

    ``generation`` lets a bulk caller pass the user's token generation it already read.
    """
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    token[GENERATION_CLAIM] = token_generation_current(user_id=user.pk) if generation is None else generation
    return str(token)


def access_token_verify(*, raw: str) -> User:
    """The user a presented access token belongs to; :class:`TokenRefused` says why not.

    Refuses malformed tokens, ``alg: none`` and any algorithm but HS256, a wrong signature,
    audience or issuer, expired tokens, refresh tokens, and revoked ones.
    """
    return access_token_grant(raw=raw).user


def access_token_grant(*, raw: str) -> AccessGrant:
    """:func:`access_token_verify`, also giving the generation and expiry it read (sockets keep both)."""
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        raise _token_refused_from(exc) from None
    user, generation = _user_for_claims(
        user_id=token[jwt_settings.USER_ID_CLAIM], generation=token.get(GENERATION_CLAIM)
    )
    expires = token.get("exp")
    return AccessGrant(user=user, generation=generation, expires_at=float(expires) if expires else None)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    generation: int | None
    expires_at: datetime | None


def access_token_claims(*, raw: str) -> AccessClaims:
    """The generation and expiry an access token that was already verified carries."""
    token = AccessToken(raw, verify=False)  # type: ignore[arg-type]
    generation, expires = token.get(GENERATION_CLAIM), token.get("exp")
    return AccessClaims(
        generation=generation if isinstance(generation, int) else None,
        expires_at=datetime.fromtimestamp(float(expires), tz=UTC) if expires else None,
    )


def tokens_revoke_for_user(
    *, user_id: int, reason: str, actor: User | None = None, client: ClientInfo | None = None
) -> int:
    """Make every token issued to the user so far unusable; returns the new generation."""
    with transaction.atomic():
        state, _created = UserTokenGeneration.objects.select_for_update().get_or_create(user_id=user_id)
        state.generation += 1  # the row is locked, so concurrent revocations each count
        state.reason = reason[:64]
        state.save(update_fields=["generation", "reason", "changed_at"])
        tokens_revoked.send(sender=UserTokenGeneration, user_id=user_id, generation=state.generation)
        audit_record(
            action=AuditAction.TOKENS_REVOKE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            target=f"user:{user_id}",
            client=client,
            details={"reason": reason, "generation": state.generation},
        )
    return state.generation


def session_logout(*, user: User, refresh: str | None, client: ClientInfo) -> None:
    """Log the user out everywhere: blacklist the presented refresh token and revoke all tokens."""
    if refresh:
        with contextlib.suppress(TokenError):  # already unusable: the revocation below covers it anyway
            RefreshToken(refresh).blacklist()  # type: ignore[arg-type]
    tokens_revoke_for_user(user_id=user.pk, reason="logout", actor=user, client=client)
    audit_record(action=AuditAction.LOGOUT, outcome=AuditOutcome.SUCCESS, actor=user, client=client)
