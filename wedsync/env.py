"""Typed readers for environment variables that fail loudly.

Every setting that the environment may change goes through one of these, so that a typo in a
deployment (``REALTIME_MAX_FRAME=64k``) stops the process at start-up with the variable's name,
instead of running with a silently wrong value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    source = os.environ if environ is None else environ
    value = source.get(name)
    return None if value is None else value.strip()


def env_str(name: str, *, default: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"{name} must be set")
        return default
    return value


def env_optional_str(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, environ)
    return value or None


def env_bool(name: str, *, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}")


def env_int(
    name: str,
    *,
    default: int,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None or value == "":
        result = default
    else:
        try:
            result = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {result}")
    return result


def env_float(
    name: str, *, default: float, minimum: float | None = None, environ: Mapping[str, str] | None = None
) -> float:
    value = _raw(name, environ)
    if value is None or value == "":
        result = default
    else:
        try:
            result = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {result}")
    return result


def env_list(name: str, *, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list; blank items are dropped."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, *, default: str, choices: tuple[str, ...], environ: Mapping[str, str] | None = None) -> str:
    value = env_str(name, default=default, environ=environ)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_int_map(
    name: str,
    *,
    default: Mapping[str, int],
    allowed_keys: frozenset[str],
    minimum: int = 0,
    environ: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """A JSON object of ``key -> whole number``, merged over ``default``.

    Used for per-role limits: ``REALTIME_RATE_LIMITS='{"guest": 10}'`` changes guests only.
    """
    merged = dict(default)
    parsed = env_json_object(name, environ=environ)
    if parsed is None:
        return merged
    for key, item in parsed.items():
        if key not in allowed_keys:
            raise ImproperlyConfigured(f"{name}: unknown key {key!r}; allowed: {', '.join(sorted(allowed_keys))}")
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ImproperlyConfigured(f"{name}: {key!r} must be a whole number >= {minimum}, got {item!r}")
        merged[key] = item
    return merged


def env_json_object(name: str, *, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """A JSON object, or None when unset."""
    value = _raw(name, environ)
    if not value:
        return None
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {type(parsed).__name__}")
    return parsed


_RATE = re.compile(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)")


def env_rate(name: str, *, default: str, environ: Mapping[str, str] | None = None) -> str:
    """A rate like ``30/min``: a whole number per second, minute, hour or day (DRF's format)."""
    value = env_str(name, default=default, environ=environ)
    if not _RATE.fullmatch(value):
        raise ImproperlyConfigured(f"{name} must look like 30/min (N/s, /min, /hour or /day), got {value!r}")
    return value
