"""Service accounts for integrators (a CRM, an SMS gateway, a venue's system) and their API keys.

A service account oversees weddings as a coordinator does (an agency's, or some by name) through a
user of its own that has no password: every staff check reads :func:`wedsync.selectors.weddings_overseen`,
which counts a service account's scope too. What it may *do* there is its scopes. Its keys come
from djangorestframework-api-key (prefix, hashed secret, shown once, revocable, expiring); decision 0030.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiScope(models.TextChoices):
    READ = "read", "Read weddings, members, events and the audit log"
    PUBLISH = "publish", "Publish events"
    MEMBERS = "members", "Add, change and remove members"
    WEDDINGS = "weddings", "Create, change and archive weddings"
    WEBHOOKS = "webhooks", "Subscribe to a wedding's events by webhook"


class ServiceAccount(models.Model):
    name = models.CharField(max_length=100, unique=True, help_text="Who uses it, e.g. 'Luz CRM'.")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="service_account", editable=False
    )
    agency = models.ForeignKey(
        "wedsync.Agency",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="service_accounts",
        help_text="Every wedding of this agency is in the account's scope.",
    )
    weddings = models.ManyToManyField(
        "wedsync.Wedding", blank=True, related_name="service_accounts", help_text="Weddings in scope by name."
    )
    scopes = models.JSONField(
        default=list, blank=True, help_text="What its keys may do: read, publish, members, weddings."
    )
    is_active = models.BooleanField(default=True, help_text="An inactive account's keys are refused.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def allows(self, scope: ApiScope | str) -> bool:
        return str(scope) in self.scopes


class ServiceAccountKey(AbstractAPIKey):
    """One API key of a service account: ``<prefix>.<secret>``, stored as the prefix and a hash."""

    service_account = models.ForeignKey(ServiceAccount, on_delete=models.CASCADE, related_name="keys")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
