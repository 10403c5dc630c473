"""WedSync Realtime settings, driven by the environment.

With no environment at all the service runs *embedded*: SQLite, the in-memory channel layer, the
local-memory cache and a Celery broker on the filesystem, so ``make run`` works on a bare machine.
``DATABASE_URL`` switches to PostgreSQL; ``REDIS_URL`` switches the channel layer, the cache, and
Celery's broker and result backend to Redis. Every variable is read through :mod:`wedsync.env`,
which stops start-up with the variable's name when a value is malformed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import quote, urlsplit

import dj_database_url
import django_stubs_ext
from csp.constants import NONE as CSP_NONE
from csp.constants import SELF as CSP_SELF
from csp.constants import UNSAFE_INLINE as CSP_UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from redis import ConnectionPool
from redis.connection import parse_url as parse_redis_url

from monitoring.webhooks import webhook_url_problem  # standard library only: safe to import here
from wedsync.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_int_map,
    env_json_object,
    env_list,
    env_optional_str,
    env_rate,
    env_str,
)
from wedsync.logs import logging_config
from wedsync.permissions import Role, build_matrix
from wedsync.redis_keys import CACHE_PREFIX, CHANNEL_LAYER_PREFIX

# Lets admin and queryset classes be subscripted at run time (ModelAdmin[Wedding]) for mypy.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("WEDSYNC_VAR_DIR", default=str(BASE_DIR / "var")))

# --- Core -----------------------------------------------------------------------------------------

# Embedded mode (no DATABASE_URL) is a developer's machine: debug defaults on there, off elsewhere,
# so that a deployment, which always names its database or its Redis, never starts in debug by
# omission (bin/run decides the same way: wedsync/run_profile.py).
EMBEDDED = env_optional_str("DATABASE_URL") is None
DEBUG = env_bool("DEBUG", default=EMBEDDED and env_optional_str("REDIS_URL") is None)

# The development key signs nothing outside DEBUG: neither as SECRET_KEY nor as JWT_SIGNING_KEY
# (below), nor any other key of Django's insecure kind.
_DEV_SECRET_KEY = "django-insecure-wedsync-development-only-key-never-use-in-production"


def _is_development_key(key: str) -> bool:
    return key == _DEV_SECRET_KEY or key.startswith("django-insecure")


if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", default=_DEV_SECRET_KEY)
else:
    SECRET_KEY = env_str("SECRET_KEY")  # required: a production process must not start without one
    if _is_development_key(SECRET_KEY) or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("SECRET_KEY must be a random string of at least 50 characters")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
if "*" in ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured("ALLOWED_HOSTS may contain '*' only with DEBUG on")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must name at least one host")

CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS",
    # These are also the origins a browser socket may come from: plain http only while developing.
    default=[
        f"{scheme}://{host}"
        for host in ALLOWED_HOSTS
        if host != "*"
        for scheme in (("http", "https") if DEBUG else ("https",))
    ],
)
for _origin in CSRF_TRUSTED_ORIGINS:
    _parts = urlsplit(_origin)
    if _parts.scheme not in ("http", "https") or not _parts.netloc:
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS: {_origin!r} must look like https://host[:port]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    # Integrators' API keys (wedsync.models.service_accounts); its own APIKey model stays unused.
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "wedsync",
    "realtime",
    "presence",
    "records",
    "monitoring",
    "web",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "wedsync.access_revocation.SessionRevocationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Innermost, so the lockout page it answers with is what the other middleware (and metrics) see.
    "axes.middleware.AxesMiddleware",
]

# Django's database sessions, refusing malformed keys before they reach the database (wedsync/sessions.py).
SESSION_ENGINE = "wedsync.sessions"

ROOT_URLCONF = "wedsync.urls"
WSGI_APPLICATION = "wedsync.wsgi.application"
ASGI_APPLICATION = "wedsync.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------

DATABASE_URL = env_optional_str("DATABASE_URL")
# PostgreSQL connections per process (decision 0024, docs/operations.md): a pool of at most this
# many (psycopg's, through Django), shared by all of the process's threads; a thread holds one only
# for the length of a database hop. Size it so that every process's maximum, summed, stays under
# PostgreSQL's max_connections. 0 turns the pool off: then each thread keeps its own connection for
# DATABASE_CONN_MAX_AGE seconds (for a PgBouncer in front, which pools instead).
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", default=20, minimum=0, maximum=1000)
DATABASE_POOL_MIN_SIZE = env_int("DATABASE_POOL_MIN_SIZE", default=min(2, DATABASE_POOL_MAX_SIZE), minimum=0)
# Seconds a hop waits for a free connection before it fails (the client sees server_error).
DATABASE_POOL_TIMEOUT = env_float("DATABASE_POOL_TIMEOUT", default=10.0, minimum=0.1)
if DATABASE_POOL_MIN_SIZE > DATABASE_POOL_MAX_SIZE:
    raise ImproperlyConfigured("DATABASE_POOL_MIN_SIZE must not be larger than DATABASE_POOL_MAX_SIZE")
if DATABASE_URL:
    _scheme = urlsplit(DATABASE_URL).scheme
    if _scheme not in ("postgres", "postgresql", "pgsql", "sqlite"):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// (or sqlite://) URL")
    DATABASE_POOLED = _scheme != "sqlite" and DATABASE_POOL_MAX_SIZE > 0
    if DATABASE_POOLED and env_optional_str("DATABASE_CONN_MAX_AGE") not in (None, "0"):
        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE keeps a connection per thread, which the pool replaces: unset it, "
            "or set DATABASE_POOL_MAX_SIZE=0 to turn the pool off"
        )
    _database = dj_database_url.parse(
        DATABASE_URL,
        # Django's pool requires connections to be given back after each use (CONN_MAX_AGE 0).
        conn_max_age=0 if DATABASE_POOLED else env_int("DATABASE_CONN_MAX_AGE", default=60, minimum=0),
        conn_health_checks=True,  # with the pool: psycopg checks a connection before lending it
    )
    if DATABASE_POOLED:
        _database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": DATABASE_POOL_MIN_SIZE,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT,
            "name": "wedsync",
        }
else:
    DATABASE_POOLED = False
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # embedded mode keeps its files here
    _database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "wedsync.sqlite3")}
    # SQLite serialises writers; waiting beats failing with "database is locked" under bursts.
    _database["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
_database.setdefault("TEST", {})
DATABASES: dict[str, dict[str, Any]] = {"default": _database}  # type: ignore[dict-item]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery ------------------------------------------------------------

REDIS_URL = env_optional_str("REDIS_URL")
if REDIS_URL and urlsplit(REDIS_URL).scheme not in ("redis", "rediss", "unix"):
    raise ImproperlyConfigured("REDIS_URL must be a redis://, rediss:// or unix:// URL")


def _sentinel_address(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {item!r} is not host:port")
    return host, int(port)


# Redis Sentinel (decision 0044): every Redis use (channel layer, cache, limits, presence, Celery)
# connects to whichever server these sentinels name master of REDIS_SENTINEL_MASTER; REDIS_URL's
# database and password still apply, its host and port do not.
REDIS_SENTINELS = [_sentinel_address(item) for item in env_list("REDIS_SENTINELS", default=[])]
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", default="wedsync")
if REDIS_SENTINELS and not REDIS_URL:
    raise ImproperlyConfigured("REDIS_SENTINELS needs REDIS_URL too: its database number and password still apply")
if REDIS_SENTINELS and REDIS_URL and urlsplit(REDIS_URL).scheme != "redis":
    raise ImproperlyConfigured(
        "with REDIS_SENTINELS, REDIS_URL must be redis:// (TLS and Unix sockets are not supported)"
    )

# redis-py 8 defaults to a 5 s socket timeout, which races channels-redis's 5 s blocking read and
# kills idle channel-layer readers (channels_redis issue 422); 30 s is safely above the read, and
# keepalives plus health checks still notice a dead peer. Its pool raises past 100 connections
# instead of waiting, so it is sized for a busy node.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", default=30.0, minimum=6.0)
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", default=2000, minimum=10)


def redis_connection_options() -> dict[str, Any]:
    """Options for every redis-py connection pool the service opens."""
    return {
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "max_connections": REDIS_MAX_CONNECTIONS,
    }


# pubsub: one PUBLISH per event per wedding, read by each node as a stream; core queues each node's
# messages in a Redis sorted set, popped one at a time with two round trips each, which held a
# 10,000-socket node's events for 0.3-1.3 s (decision 0014). Either may lose a message (a
# reconnect, a full queue): nodes repair gaps from the event log.
REALTIME_CHANNEL_LAYER = env_choice("REALTIME_CHANNEL_LAYER", default="pubsub", choices=("core", "pubsub"))


def redis_database(*, url: str) -> int:
    """The database number redis-py connects to for ``url`` (``?db=`` over the path; 0 if neither)."""
    # A pool object only: it opens no connection until asked for one.
    return int(ConnectionPool.from_url(url).connection_kwargs.get("db") or 0)


REALTIME_LAYER_CAPACITY = env_int("REALTIME_LAYER_CAPACITY", default=1000, minimum=1)
# Memberships of a SIGKILLed node expire instead of lingering for a day (core layer).
REALTIME_GROUP_EXPIRY = env_int("REALTIME_GROUP_EXPIRY", default=600, minimum=60)


def redis_layer_host(*, redis_url: str, sentinels: list[tuple[str, int]], master_name: str) -> dict[str, Any]:
    """A channels-redis host: the URL, or the sentinels, the master's name and the URL's database and password."""
    if not sentinels:
        return {"address": redis_url, **redis_connection_options()}
    return {
        "sentinels": sentinels,
        "master_name": master_name,
        **redis_url_credentials(redis_url),
        **redis_connection_options(),
        "sentinel_kwargs": {"socket_timeout": 5, "socket_connect_timeout": 5},
    }


def redis_url_credentials(url: str) -> dict[str, Any]:
    """What a Sentinel-found master still takes from REDIS_URL: database, username, password."""
    parsed: dict[str, Any] = parse_redis_url(url)  # type: ignore[no-untyped-call]
    return {key: parsed[key] for key in ("db", "username", "password") if parsed.get(key) is not None}


def channel_layer_config(
    *,
    redis_url: str,
    kind: Literal["core", "pubsub"],
    capacity: int = REALTIME_LAYER_CAPACITY,
    sentinels: list[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """The channels-redis layer of ``kind`` (``core`` or ``pubsub``) on ``redis_url``."""
    if kind not in ("core", "pubsub"):
        raise ImproperlyConfigured(f"the channel layer must be core or pubsub, not {kind!r}")
    host = redis_layer_host(
        redis_url=redis_url,
        sentinels=REDIS_SENTINELS if sentinels is None else sentinels,
        master_name=REDIS_SENTINEL_MASTER,
    )
    if kind == "core":
        return {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [host],
                "capacity": capacity,
                "group_expiry": REALTIME_GROUP_EXPIRY,
                "prefix": CHANNEL_LAYER_PREFIX,
            },
        }
    # Pub/Sub channels belong to the whole Redis server, not to a database: without the database in
    # their names, two deployments (or the tests and a bench) on one server would receive each
    # other's events.
    return {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [host], "prefix": f"{CHANNEL_LAYER_PREFIX}.db{redis_database(url=redis_url)}."},
    }


if REDIS_URL:
    CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
        "default": channel_layer_config(
            redis_url=REDIS_URL, kind=cast(Literal["core", "pubsub"], REALTIME_CHANNEL_LAYER)
        )
    }
    CACHES: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_PREFIX,
            "OPTIONS": {
                "socket_timeout": 5,
                "socket_connect_timeout": 5,
                "health_check_interval": 15,
                # With sentinels, a pool on the master they name (wedsync/redis_clients.py).
                **({"pool_class": "wedsync.redis_clients.SentinelCachePool"} if REDIS_SENTINELS else {}),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "wedsync"}}

# Celery: Redis in production; embedded, a filesystem broker that needs no server.
CELERY_TIMEZONE = "UTC"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep our JSON log lines
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {}
if REDIS_URL and REDIS_SENTINELS:
    # kombu's and Celery's own Sentinel support: one sentinel:// URL per sentinel, the master by name.
    _credentials = redis_url_credentials(REDIS_URL)
    _auth = (
        f"{quote(_credentials.get('username') or '', safe='')}:{quote(_credentials['password'], safe='')}@"
        if _credentials.get("password")
        else ""
    )
    _sentinel_timeouts = {"socket_timeout": 5, "socket_connect_timeout": 5}  # asking a sentinel, never forever
    CELERY_BROKER_URL = ";".join(
        f"sentinel://{_auth}{host}:{port}/{_credentials.get('db', 0)}" for host, port in REDIS_SENTINELS
    )
    CELERY_RESULT_BACKEND = CELERY_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "master_name": REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": _sentinel_timeouts,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
        "master_name": REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": _sentinel_timeouts,
    }
elif REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": REDIS_SOCKET_TIMEOUT}
else:
    _broker_dir = VAR_DIR / "celery-broker"
    _broker_folders = ("queue", "processed", "control")
    for _folder in (*(_broker_dir / name for name in _broker_folders), VAR_DIR / "celery-results"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    # kombu's own filesystem transport lets a reader take a message half written (wedsync/celery_filesystem.py).
    CELERY_BROKER_TRANSPORT = "wedsync.celery_filesystem:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # Broadcast exchanges too, or kombu writes them to ./control wherever the process started.
        "control_folder": str(_broker_dir / "control"),
    }
    CELERY_RESULT_BACKEND = f"file://{VAR_DIR / 'celery-results'}"

# --- Auth -----------------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Not a rule: told of every password change, so that it revokes the user's tokens and sessions.
    {"NAME": "wedsync.access_revocation.PasswordChangeRevokes"},
]

# The admin's sign-in lockout (django-axes, wedsync/admin_login.py): this many failures for one
# username, or from one address, lock both out for the cool-off after the last of them. Counters
# live in the cache (Redis in production, so every node sees them) and expire with the cool-off.
ADMIN_LOGIN_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", default=5, minimum=1, maximum=100)
ADMIN_LOGIN_COOLOFF_SECONDS = env_int("ADMIN_LOGIN_COOLOFF_SECONDS", default=900, minimum=60, maximum=7 * 24 * 3600)
AUTHENTICATION_BACKENDS = [
    "wedsync.admin_login.AdminLoginLockoutBackend",  # first: a locked-out sign-in is refused unchecked
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "wedsync.admin_login.AuditedAdminLoginHandler"
AXES_CACHE = "default"
AXES_ONLY_ADMIN_SITE = True  # the token API has throttles of its own (wedsync/api/throttles.py)
AXES_FAILURE_LIMIT = ADMIN_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=ADMIN_LOGIN_COOLOFF_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks: one account, or one address
# Attempts while locked out do not extend it: the page's "try again in N minutes" holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "wedsync.client_address.request_client_address"
AXES_LOCKOUT_CALLABLE = "wedsync.admin_login.lockout_response"
AXES_ENABLE_ADMIN = False  # its pages list the database handler's rows; the cache handler writes none
AXES_VERBOSE = False

JWT_SIGNING_KEY = env_str("JWT_SIGNING_KEY", default=SECRET_KEY)
if len(JWT_SIGNING_KEY) < 32:
    raise ImproperlyConfigured("JWT_SIGNING_KEY must be at least 32 characters (HS256 wants 256 bits)")
if not DEBUG and _is_development_key(JWT_SIGNING_KEY):
    raise ImproperlyConfigured("JWT_SIGNING_KEY must not be the development key with DEBUG off")
JWT_ACCESS_TTL = env_int("JWT_ACCESS_TTL", default=15 * 60, minimum=30, maximum=24 * 3600)
JWT_REFRESH_TTL = env_int("JWT_REFRESH_TTL", default=24 * 3600, minimum=60)
REALTIME_TICKET_TTL = env_int("REALTIME_TICKET_TTL", default=60, minimum=5, maximum=600)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=JWT_ACCESS_TTL),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=JWT_REFRESH_TTL),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "AUDIENCE": "wedsync",
    "ISSUER": "wedsync",
    "LEEWAY": 5,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# Token endpoints (wedsync/api/throttles.py): logins and refreshes each per client address and per
# user (the username tried; a refresh token's user). A venue's guests may share one address.
if env_optional_str("API_AUTH_RATE") is not None:
    raise ImproperlyConfigured(
        "API_AUTH_RATE was split into API_LOGIN_ADDRESS_RATE, API_LOGIN_USER_RATE, API_REFRESH_ADDRESS_RATE "
        "and API_REFRESH_USER_RATE: set those instead"
    )
API_LOGIN_ADDRESS_RATE = env_rate("API_LOGIN_ADDRESS_RATE", default="60/min")
API_LOGIN_USER_RATE = env_rate("API_LOGIN_USER_RATE", default="10/min")
API_REFRESH_ADDRESS_RATE = env_rate("API_REFRESH_ADDRESS_RATE", default="120/min")
API_REFRESH_USER_RATE = env_rate("API_REFRESH_USER_RATE", default="30/min")
# Requests per API key (service accounts, decision 0030), shared by every node; past it, 429.
API_KEY_RATE = env_rate("API_KEY_RATE", default="600/min")
# Events a person or key that is not a member may publish over the API (announcements), per credential.
API_PUBLISH_RATE = env_rate("API_PUBLISH_RATE", default="120/min")
# How long the answer to a creating POST is kept for retries with its Idempotency-Key (hours).
API_IDEMPOTENCY_KEY_HOURS = env_int("API_IDEMPOTENCY_KEY_HOURS", default=24, minimum=1)
# How long a rotated key keeps working beside its replacement (seconds).
API_KEY_ROTATION_GRACE_SECONDS = env_int("API_KEY_ROTATION_GRACE_SECONDS", default=86400, minimum=0)
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", default=0, minimum=0, maximum=5)

# Unauthenticated refusals (bad handshakes, API 401s and 429s) are audited once per source address,
# action and reason per window, plus one row with the count of the rest (wedsync/services/audit.py,
# docs/decisions/0025). Beat writes the rows of windows that closed.
AUDIT_REFUSAL_WINDOW_SECONDS = env_int("AUDIT_REFUSAL_WINDOW_SECONDS", default=60, minimum=1, maximum=3600)
CELERY_BEAT_SCHEDULE["wedsync-flush-audit-refusals"] = {
    "task": "wedsync.tasks.flush_audit_refusals",
    "schedule": float(AUDIT_REFUSAL_WINDOW_SECONDS),
    "options": {"expires": float(AUDIT_REFUSAL_WINDOW_SECONDS)},
}
# API requests without valid credentials (no credentials, a bad bearer token, the token endpoints)
# per source address; past it, 429 until the period ends. Shared by every node through Redis.
API_UNAUTHENTICATED_RATE = env_rate("API_UNAUTHENTICATED_RATE", default="300/min")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: it takes only API keys (one dot; a JWT has two) and leaves every other header alone.
        "wedsync.api.authentication.ApiKeyAuthentication",
        "wedsync.api.authentication.RevocableJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Not a login: counts what nobody above accepted against its address (decision 0025).
        "wedsync.api.authentication.UnauthenticatedAddressCap",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "wedsync.api.permissions.ApiKeyScopes",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["wedsync.api.throttles.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "wedsync.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "wedsync.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "wedsync.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Client addresses come from REMOTE_ADDR unless this many proxies in front are trusted to set
    # X-Forwarded-For; trusting the header blindly would let anyone dodge a throttle. Our throttles
    # read addresses through wedsync/client_address.py, which applies this same rule.
    "NUM_PROXIES": TRUSTED_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "WedSync Realtime staff API",
    "DESCRIPTION": "Tokens, tickets and the staff API of the WedSync real-time service.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from the sidecar package, so the docs work without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The schema's security schemes: the last authenticator only counts anonymous requests.
    "AUTHENTICATION_WHITELIST": [
        "wedsync.api.authentication.ApiKeyAuthentication",
        "wedsync.api.authentication.RevocableJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ErrorCodeEnum": "wedsync.api.errors.API_ERROR_CODES",
        "WeddingStatusEnum": "wedsync.models.WeddingStatus",
        "AuditOutcomeEnum": "wedsync.models.AuditOutcome",
        "SyncOutcomeEnum": "records.serializers.OUTCOMES",
        # The events' type filter and publish body, and event webhooks' event_types: one enum.
        "TypeEnum": "monitoring.webhook_views.EVENT_TYPES",
    },
}

# --- Realtime protocol ------------------------------------------------------------------------------

REALTIME_MAX_FRAME = env_int("REALTIME_MAX_FRAME", default=64 * 1024, minimum=1024, maximum=16 * 1024 * 1024)
# Every server process is a node; two on one machine need different names.
REALTIME_NODE_NAME = env_str("REALTIME_NODE_NAME", default=f"{socket.gethostname()}-{os.getpid()}")
if _database["ENGINE"].endswith("postgresql"):
    # pg_stat_activity says which process holds each connection (docs/operations.md).
    _database.setdefault("OPTIONS", {}).setdefault("application_name", f"wedsync:{REALTIME_NODE_NAME}"[:63])
# The release this process runs, as a node reports it in the registry (monitoring/node_reports.py):
# set it at deploy (a tag or a commit), so an operator sees which nodes run what.
WEDSYNC_VERSION = env_str("WEDSYNC_VERSION", default="dev")
# How often a node reports itself into the registry; a report expires after three of these.
REALTIME_NODE_REPORT_SECONDS = env_float("REALTIME_NODE_REPORT_SECONDS", default=5.0, minimum=0.2)
# A node an operator drains closes this many sockets a second (1001), so the others take them gradually.
REALTIME_DRAIN_SOCKETS_PER_SECOND = env_int("REALTIME_DRAIN_SOCKETS_PER_SECOND", default=100, minimum=1)
# Load shedding (realtime/limits/shedding.py): past 90 % of this many open sockets a node refuses new
# guests' sockets, past all of it vendors' too (1013 with retry_after); 0 turns it off.
REALTIME_SOCKET_BUDGET = env_int("REALTIME_SOCKET_BUDGET", default=12000, minimum=0)
# ... and likewise when its event loop has run this many seconds late lately (vendors at twice it).
REALTIME_SHED_LOOP_LAG_SECONDS = env_float("REALTIME_SHED_LOOP_LAG_SECONDS", default=0.5, minimum=0.0)
REALTIME_RETENTION_DAYS = env_int("REALTIME_RETENTION_DAYS", default=7, minimum=1)
# A resume further behind than this many events reloads over REST instead of replaying.
REALTIME_REPLAY_MAX = env_int("REALTIME_REPLAY_MAX", default=5000, minimum=100)
# Events one wedding's feed may hold on a node before it drops the next and reads it from the log.
REALTIME_FEED_INBOX_MAX = env_int("REALTIME_FEED_INBOX_MAX", default=1000, minimum=1)
# A socket whose unsent frames pass either bound is too slow: it is closed with 4008 and resumes.
REALTIME_OUTBOX_MAX_FRAMES = env_int("REALTIME_OUTBOX_MAX_FRAMES", default=1000, minimum=10)
# Kernel send buffer per socket (bytes; Linux doubles it): bounds memory and lets a slow reader show.
REALTIME_SOCKET_SEND_BUFFER = env_int("REALTIME_SOCKET_SEND_BUFFER", default=64 * 1024, minimum=4096)
# The accept queue daphne listens with (Twisted's default is 50; the kernel caps it at somaxconn):
# deep enough for a venue's worth of phones reconnecting at once (docs/benchmarks.md, storm).
REALTIME_LISTEN_BACKLOG = env_int("REALTIME_LISTEN_BACKLOG", default=2048, minimum=50)
# Seconds a socket may take from TCP connect to accepted (daphne's --websocket_connect_timeout, 5 by
# default, applies only when longer). Past it daphne drops the connection, and the work already done
# for it (authentication, the audit) is lost: in a reconnect storm, queued handshakes were dropped
# and came back to queue again (docs/benchmarks.md, storm).
REALTIME_HANDSHAKE_TIMEOUT = env_int("REALTIME_HANDSHAKE_TIMEOUT", default=15, minimum=1, maximum=120)
# Threads a node runs its sockets' database and presence calls on (the event loop's default pool).
REALTIME_THREAD_POOL = env_int("REALTIME_THREAD_POOL", default=24, minimum=1, maximum=256)
# A node's cache of publishers' memberships (realtime/member_cache.py, decision 0039): entries live
# this long at most (a change reaches it at once by control message, or within the node's 5 s access
# check when that message is lost; this bounds the rest, such as a renamed user), and this many at most.
# 0 seconds turns the cache off.
REALTIME_MEMBER_CACHE_SECONDS = env_int("REALTIME_MEMBER_CACHE_SECONDS", default=60, minimum=0, maximum=3600)
REALTIME_MEMBER_CACHE_SIZE = env_int("REALTIME_MEMBER_CACHE_SIZE", default=20_000, minimum=1, maximum=1_000_000)
# Threads a node runs its HTTP requests on, each request's middleware and view on one of them
# (wedsync/http_handler.py); more requests at once wait on the event loop for a free one. Few: the
# node has one GIL, which more threads only queue for beside the loop (decision 0034).
HTTP_REQUEST_THREADS = env_int("HTTP_REQUEST_THREADS", default=4, minimum=1, maximum=256)
# malloc arenas a socket node keeps (realtime/daphne/memory.py, decision 0016); 0 keeps glibc's
# default of 8 per core, whose per-thread high-water marks cost RSS per idle socket.
REALTIME_MALLOC_ARENAS = env_int("REALTIME_MALLOC_ARENAS", default=2, minimum=0, maximum=64)
# Garbage collection on a socket node (realtime/gc_policy.py, decision 0007): freeze long-lived
# objects this often (0 turns the policy off), and collect everything this often.
REALTIME_GC_FREEZE_SECONDS = env_int("REALTIME_GC_FREEZE_SECONDS", default=10, minimum=0)
REALTIME_GC_FULL_SECONDS = env_int("REALTIME_GC_FULL_SECONDS", default=1800, minimum=60)
REALTIME_OUTBOX_MAX_BYTES = env_int("REALTIME_OUTBOX_MAX_BYTES", default=2 * 1024 * 1024, minimum=64 * 1024)
# A socket's frames read but not yet handled: past either bound the node stops reading that socket
# (TCP back-pressure) until half is handled; a flood four times past them closes it 1008.
REALTIME_INBOX_MAX_FRAMES = env_int("REALTIME_INBOX_MAX_FRAMES", default=64, minimum=4)
REALTIME_INBOX_MAX_BYTES = env_int(
    "REALTIME_INBOX_MAX_BYTES", default=max(256 * 1024, 2 * REALTIME_MAX_FRAME), minimum=2 * REALTIME_MAX_FRAME
)
# TEST ONLY: a WebSocket echo route for the Autobahn conformance run (make conformance, decision
# 0020). It answers anyone without authentication, so only an embedded debug process may serve it:
# one with DEBUG off or with a database of its own (a deployment) refuses to start.
REALTIME_CONFORMANCE_ECHO = env_bool("REALTIME_CONFORMANCE_ECHO", default=False)
if REALTIME_CONFORMANCE_ECHO and not (DEBUG and EMBEDDED):
    raise ImproperlyConfigured(
        "REALTIME_CONFORMANCE_ECHO is a test-only, unauthenticated echo route: "
        "it needs DEBUG=1 and no DATABASE_URL, and never runs in a deployment"
    )

# --- Presence (presence/, docs/decisions/0008) ---------------------------------------------------------
# How often a node hands the heartbeats it heard to the presence store (one batch per node).
REALTIME_PRESENCE_FLUSH_SECONDS = env_float("REALTIME_PRESENCE_FLUSH_SECONDS", default=2.0, minimum=0.1)
# A node that has not said it is alive for this long is dead: the sweep takes its devices away.
REALTIME_PRESENCE_NODE_TTL = env_int("REALTIME_PRESENCE_NODE_TTL", default=15, minimum=5)
# How often a node compares the presence it has shown with the store, repairing lost diffs.
REALTIME_PRESENCE_RECONCILE_SECONDS = env_float("REALTIME_PRESENCE_RECONCILE_SECONDS", default=10.0, minimum=0.1)
# How often Celery beat sweeps devices that missed their heartbeats or whose node died.
PRESENCE_SWEEP_SECONDS = env_float("PRESENCE_SWEEP_SECONDS", default=2.0, minimum=1.0)
CELERY_BEAT_SCHEDULE["presence-sweep"] = {
    "task": "presence.tasks.sweep_presence",
    "schedule": PRESENCE_SWEEP_SECONDS,
    "options": {"expires": PRESENCE_SWEEP_SECONDS},  # a late sweep is dropped: the next one does it
}

_ROLE_KEYS = frozenset(role.value for role in Role)
# Messages per member per minute, shared across nodes (PROTOCOL.md section 5).
REALTIME_RATE_LIMITS = env_int_map(
    "REALTIME_RATE_LIMITS",
    default={
        role.value: (50 if role in (Role.PLANNER, Role.COUPLE) else 5 if role == Role.GUEST else 20) for role in Role
    },
    allowed_keys=_ROLE_KEYS,
)
# Operations per user per minute, shared across nodes (heartbeat: per socket, on its node; 0: no
# budget). Acks are bounded per socket by the events it was asked to ack (realtime/consumers.py).
# Past one the op is answered rate_limited; REALTIME_ABUSE_REFUSALS refusals within a minute close
# the socket 4029 with an audit entry.
REALTIME_OP_LIMITS = env_int_map(
    "REALTIME_OP_LIMITS",
    default={"subscribe": 60, "unsubscribe": 60, "presence": 120, "auth": 10, "heartbeat": 30},
    allowed_keys=frozenset({"subscribe", "unsubscribe", "presence", "auth", "heartbeat"}),
)
if 0 < REALTIME_OP_LIMITS["heartbeat"] < 12:
    # Clients heartbeat every 10 s on a wedding day (6 a minute): a budget below twice that would
    # refuse, then close, every client that follows the protocol.
    raise ImproperlyConfigured("REALTIME_OP_LIMITS: heartbeat must be 0 (no budget) or at least 12 a minute")
REALTIME_ABUSE_REFUSALS = env_int("REALTIME_ABUSE_REFUSALS", default=30, minimum=1)
# Weddings one staff observer socket (a coordinators' board, decision 0029) may follow at once.
REALTIME_OBSERVE_MAX_WEDDINGS = env_int("REALTIME_OBSERVE_MAX_WEDDINGS", default=50, minimum=1)
# Devices per member at once.
REALTIME_DEVICE_LIMITS = env_int_map(
    "REALTIME_DEVICE_LIMITS",
    default={
        role.value: (5 if role in (Role.PLANNER, Role.COUPLE) else 2 if role == Role.GUEST else 3) for role in Role
    },
    allowed_keys=_ROLE_KEYS,
    minimum=1,
)
REALTIME_DEVICE_LIMIT_POLICY = env_choice(
    "REALTIME_DEVICE_LIMIT_POLICY", default="close_oldest", choices=("close_oldest", "refuse_newest")
)
# Per source address, shared across nodes (realtime/limits/addresses.py, decision 0025): socket handshakes per
# window and sockets open at once; past either, the socket is closed 1013. 0 turns a cap off. A
# venue's guests share its Wi-Fi's one public address, so these are far above one person's needs.
REALTIME_ADDRESS_HANDSHAKES = env_int("REALTIME_ADDRESS_HANDSHAKES", default=1200, minimum=0)
REALTIME_ADDRESS_HANDSHAKE_WINDOW_SECONDS = env_int(
    "REALTIME_ADDRESS_HANDSHAKE_WINDOW_SECONDS", default=60, minimum=1, maximum=3600
)
REALTIME_ADDRESS_CONNECTIONS = env_int("REALTIME_ADDRESS_CONNECTIONS", default=2000, minimum=0)

PERMISSION_MATRIX = build_matrix(overrides=env_json_object("WEDSYNC_PERMISSION_OVERRIDES"))

# --- Wedding-day alerts (presence/attendance.py, presence/alerts/, docs/decisions/0009) --------------

# Expected attendance: key people at the venue this many minutes before the ceremony, and still for
# this many after it starts; a vendor this many minutes before a timeline item assigned to it starts.
PRESENCE_KEY_PERSON_LEAD_MINUTES = env_int("PRESENCE_KEY_PERSON_LEAD_MINUTES", default=30, minimum=0)
PRESENCE_CEREMONY_MINUTES = env_int("PRESENCE_CEREMONY_MINUTES", default=60, minimum=0)
PRESENCE_VENDOR_LEAD_MINUTES = env_int("PRESENCE_VENDOR_LEAD_MINUTES", default=15, minimum=0)
# key_person_missing: the severity a missing key person's alert has from this many minutes before the
# ceremony (one alert, escalated step by step).
PRESENCE_KEY_PERSON_ALERT_MINUTES = env_int_map(
    "PRESENCE_KEY_PERSON_ALERT_MINUTES",
    default={"info": 60, "warning": 30, "critical": 15},
    allowed_keys=frozenset({"info", "warning", "critical"}),
)
if not (
    PRESENCE_KEY_PERSON_ALERT_MINUTES["info"]
    >= PRESENCE_KEY_PERSON_ALERT_MINUTES["warning"]
    >= PRESENCE_KEY_PERSON_ALERT_MINUTES["critical"]
):
    raise ImproperlyConfigured("PRESENCE_KEY_PERSON_ALERT_MINUTES must give info >= warning >= critical minutes")
# low_battery: a device under this percentage and not charging, at most one alert per device this often.
PRESENCE_LOW_BATTERY_PERCENT = env_int("PRESENCE_LOW_BATTERY_PERCENT", default=15, minimum=1, maximum=100)
PRESENCE_LOW_BATTERY_ALERT_SECONDS = env_int("PRESENCE_LOW_BATTERY_ALERT_SECONDS", default=3600, minimum=60)
# Open alerts nobody acknowledged are told again this often; in emergency mode, this often.
PRESENCE_ALERT_RENOTIFY_SECONDS = env_int("PRESENCE_ALERT_RENOTIFY_SECONDS", default=1800, minimum=60)
PRESENCE_ALERT_RENOTIFY_EMERGENCY_SECONDS = env_int(
    "PRESENCE_ALERT_RENOTIFY_EMERGENCY_SECONDS", default=300, minimum=30
)
# How often beat runs the rules; a run not started within that is dropped (the next one does its work).
PRESENCE_ALERT_CHECK_SECONDS = env_int("PRESENCE_ALERT_CHECK_SECONDS", default=30, minimum=5)
CELERY_BEAT_SCHEDULE["presence-evaluate-alerts"] = {
    "task": "presence.tasks.evaluate_alerts",
    "schedule": float(PRESENCE_ALERT_CHECK_SECONDS),
    "options": {"expires": float(PRESENCE_ALERT_CHECK_SECONDS)},
}

# --- Emergencies (presence/emergency/, docs/decisions/0011) -----------------------------------------
# A member's alarm while one of theirs is open updates it; a member may open at most this many new
# emergencies in this many seconds (counted from the Emergency rows, under the wedding's stream lock).
PRESENCE_EMERGENCY_NEW_PER_MEMBER = env_int("PRESENCE_EMERGENCY_NEW_PER_MEMBER", default=3, minimum=1)
PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS = env_int("PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS", default=600, minimum=1)

# --- Escalation (monitoring/services/escalation.py, docs/decisions/0010, docs/webhooks.md) -----------
# A critical alert or an emergency no planner acknowledged this long after it was raised goes to
# the integrator's webhook (SMS, push); older than the look-back, it is no longer looked for.
WEDSYNC_ESCALATION_AFTER_SECONDS = env_int("WEDSYNC_ESCALATION_AFTER_SECONDS", default=120, minimum=1)
WEDSYNC_ESCALATION_LOOKBACK_SECONDS = env_int("WEDSYNC_ESCALATION_LOOKBACK_SECONDS", default=24 * 3600, minimum=60)
if WEDSYNC_ESCALATION_LOOKBACK_SECONDS <= WEDSYNC_ESCALATION_AFTER_SECONDS:
    raise ImproperlyConfigured(
        "WEDSYNC_ESCALATION_LOOKBACK_SECONDS must be longer than WEDSYNC_ESCALATION_AFTER_SECONDS"
    )
WEDSYNC_ESCALATION_SWEEP_SECONDS = env_float("WEDSYNC_ESCALATION_SWEEP_SECONDS", default=20.0, minimum=1.0)
# A pending delivery whose next attempt is overdue by this much is queued again (a lost message).
WEDSYNC_ESCALATION_STALL_SECONDS = env_int("WEDSYNC_ESCALATION_STALL_SECONDS", default=120, minimum=10)
WEDSYNC_ESCALATION_WEBHOOK_URL = env_optional_str("WEDSYNC_ESCALATION_WEBHOOK_URL")
WEDSYNC_ESCALATION_WEBHOOK_SECRET = env_optional_str("WEDSYNC_ESCALATION_WEBHOOK_SECRET") or ""
if WEDSYNC_ESCALATION_WEBHOOK_URL:
    _hook_problem = webhook_url_problem(WEDSYNC_ESCALATION_WEBHOOK_URL, debug=DEBUG)
    if _hook_problem is not None:
        raise ImproperlyConfigured(f"WEDSYNC_ESCALATION_WEBHOOK_URL {_hook_problem}")
    if len(WEDSYNC_ESCALATION_WEBHOOK_SECRET) < 32:
        raise ImproperlyConfigured(
            "WEDSYNC_ESCALATION_WEBHOOK_SECRET must be set (at least 32 characters) with WEDSYNC_ESCALATION_WEBHOOK_URL"
        )
# Attempts per delivery run, the first backoff step (doubling per attempt, with jitter, up to the
# cap) and the HTTP timeout of one attempt.
WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS = env_int("WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS", default=6, minimum=1, maximum=20)
WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS = env_float(
    "WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS", default=5.0, minimum=0.0
)
WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_MAX_SECONDS = env_float(
    "WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_MAX_SECONDS", default=300.0, minimum=0.0
)
WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS = env_float(
    "WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS", default=5.0, minimum=0.1
)
CELERY_BEAT_SCHEDULE["monitoring-escalate-unacknowledged"] = {
    "task": "monitoring.tasks.escalate_unacknowledged",
    "schedule": WEDSYNC_ESCALATION_SWEEP_SECONDS,
}

# --- Event webhooks (monitoring/services/event_webhooks/, docs/decisions/0032, docs/webhooks.md) ---
# Integrators' subscriptions to a wedding's events. Beat sweeps this often; each subscription with
# events after its cursor (or a batch waiting for its next attempt) gets one delivery task, which
# POSTs up to BATCHES_PER_RUN batches of up to BATCH_MAX events, in seq order. A sweep dispatches
# at most SUBSCRIPTIONS_PER_SWEEP (those waiting longest first); the rest go in the next sweep.
WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS = env_float("WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS", default=5.0, minimum=1.0)
WEDSYNC_EVENT_WEBHOOK_BATCH_MAX = env_int("WEDSYNC_EVENT_WEBHOOK_BATCH_MAX", default=100, minimum=1, maximum=500)
WEDSYNC_EVENT_WEBHOOK_BATCHES_PER_RUN = env_int(
    "WEDSYNC_EVENT_WEBHOOK_BATCHES_PER_RUN", default=10, minimum=1, maximum=100
)
WEDSYNC_EVENT_WEBHOOK_SUBSCRIPTIONS_PER_SWEEP = env_int(
    "WEDSYNC_EVENT_WEBHOOK_SUBSCRIPTIONS_PER_SWEEP", default=200, minimum=1, maximum=10_000
)
# Attempts at one batch before it is dead-lettered and its subscription paused (retried as the
# escalation webhook is: exponential backoff with equal jitter, capped), and one attempt's timeout
# for the whole request. More attempts than an escalation's: an event is worth having late.
WEDSYNC_EVENT_WEBHOOK_ATTEMPTS = env_int("WEDSYNC_EVENT_WEBHOOK_ATTEMPTS", default=10, minimum=1, maximum=30)
WEDSYNC_EVENT_WEBHOOK_BACKOFF_SECONDS = env_float("WEDSYNC_EVENT_WEBHOOK_BACKOFF_SECONDS", default=5.0, minimum=0.0)
WEDSYNC_EVENT_WEBHOOK_BACKOFF_MAX_SECONDS = env_float(
    "WEDSYNC_EVENT_WEBHOOK_BACKOFF_MAX_SECONDS", default=300.0, minimum=0.0
)
WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS = env_float("WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS", default=5.0, minimum=0.1)
if WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS > 60:
    raise ImproperlyConfigured("WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS must be at most 60")
CELERY_BEAT_SCHEDULE["monitoring-deliver-event-webhooks"] = {
    "task": "monitoring.tasks.deliver_event_webhooks",
    "schedule": WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS,
    "options": {"expires": WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS},  # a late sweep is dropped: the next one does it
}

# --- Retention (wedsync/services/retention.py, docs/decisions/0023) ---------------------------------
# Events older than REALTIME_RETENTION_DAYS go, with their acks, except what open alerts,
# emergencies and undelivered escalations still point at. Audit entries older than this many days
# go too (0 keeps them for ever); the database refuses any younger than 29 days whatever it is told.
WEDSYNC_AUDIT_RETENTION_DAYS = env_int("WEDSYNC_AUDIT_RETENTION_DAYS", default=365, minimum=0)
if 0 < WEDSYNC_AUDIT_RETENTION_DAYS < 30:
    raise ImproperlyConfigured("WEDSYNC_AUDIT_RETENTION_DAYS must be 0 (keep for ever) or at least 30")
# Expired socket tickets, refresh tokens (outstanding and blacklisted) and sessions are kept this
# long past their expiry (past JWT leeway, for a look at what just happened) before they go.
WEDSYNC_EXPIRED_GRACE_SECONDS = env_int("WEDSYNC_EXPIRED_GRACE_SECONDS", default=3600, minimum=60)
# Each purge deletes at most this many rows per transaction, and at most this many batches per run
# (the next run goes on): no long lock on a busy day.
WEDSYNC_RETENTION_BATCH_SIZE = env_int("WEDSYNC_RETENTION_BATCH_SIZE", default=1000, minimum=1, maximum=50_000)
WEDSYNC_RETENTION_MAX_BATCHES = env_int("WEDSYNC_RETENTION_MAX_BATCHES", default=100, minimum=1)
WEDSYNC_RETENTION_SWEEP_SECONDS = env_int("WEDSYNC_RETENTION_SWEEP_SECONDS", default=3600, minimum=60)
for _name, _task in (
    ("realtime-purge-expired-events", "realtime.tasks.purge_expired_events"),
    ("realtime-purge-expired-tickets", "realtime.tasks.purge_expired_tickets"),
    ("records-purge-expired-sync-history", "records.tasks.purge_expired_sync_history"),
    ("wedsync-purge-expired-tokens", "wedsync.tasks.purge_expired_tokens"),
    ("wedsync-purge-expired-sessions", "wedsync.tasks.purge_expired_sessions"),
    ("wedsync-purge-expired-audit-entries", "wedsync.tasks.purge_expired_audit_entries"),
    ("wedsync-purge-expired-idempotent-requests", "wedsync.tasks.purge_expired_idempotent_requests"),
):
    CELERY_BEAT_SCHEDULE[_name] = {
        "task": _task,
        "schedule": float(WEDSYNC_RETENTION_SWEEP_SECONDS),
        "options": {"expires": float(WEDSYNC_RETENTION_SWEEP_SECONDS)},  # a late run is dropped: the next does it
    }

# --- HTTP security (check --deploy clean when DEBUG is off) -------------------------------------------

# Only behind a proxy that sets (and strips client-sent) X-Forwarded-Proto.
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Health and metrics are probed over plain HTTP by the load balancer and Prometheus.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Beat's checks of the service itself (monitoring/services/ops_checks.py, docs/operations.md).
OPS_CHECK_SECONDS = env_float("OPS_CHECK_SECONDS", default=30.0, minimum=1.0)
OPS_DELIVERY_P99_MS = env_float("OPS_DELIVERY_P99_MS", default=100.0, minimum=1.0)
OPS_PRESENCE_P99_MS = env_float("OPS_PRESENCE_P99_MS", default=200.0, minimum=1.0)
OPS_ERROR_CLOSES_PER_MINUTE = env_float("OPS_ERROR_CLOSES_PER_MINUTE", default=10.0, minimum=0.0)
OPS_REDIS_LATENCY_MS = env_float("OPS_REDIS_LATENCY_MS", default=50.0, minimum=1.0)
OPS_DATABASE_LATENCY_MS = env_float("OPS_DATABASE_LATENCY_MS", default=50.0, minimum=1.0)
OPS_TASK_BACKLOG = env_int("OPS_TASK_BACKLOG", default=200, minimum=1)
# How long a latency SLO or error rate must breach to be raised, and any check but a missing node's
# or the capacity's be healthy to be resolved ...
OPS_SLO_WINDOW_SECONDS = env_float("OPS_SLO_WINDOW_SECONDS", default=300.0, minimum=0.0)
# ... and a missing node, a slow Redis or database, a backlog, the capacity to be raised (a missing
# node and the capacity also resolve after this).
OPS_QUICK_WINDOW_SECONDS = env_float("OPS_QUICK_WINDOW_SECONDS", default=60.0, minimum=0.0)
# A node silent for longer than this is forgotten, not missing (a crashed node's name does not return).
OPS_NODE_FORGET_SECONDS = env_float("OPS_NODE_FORGET_SECONDS", default=3600.0, minimum=60.0)
# The capacity forecast (monitoring/capacity.py, decision 0038). Per-node capacities default to the
# full Saturday bench's 10,000 sockets and 10,000 deliveries/s at p99 near 50 ms, less 30 % headroom.
CAPACITY_SOCKETS_PER_NODE = env_int("CAPACITY_SOCKETS_PER_NODE", default=7000, minimum=1)
CAPACITY_DELIVERIES_PER_NODE = env_int("CAPACITY_DELIVERIES_PER_NODE", default=7000, minimum=1)
CAPACITY_SPARE_NODES = env_int("CAPACITY_SPARE_NODES", default=1, minimum=0)
CAPACITY_GUEST_ONLINE_SHARE = env_float("CAPACITY_GUEST_ONLINE_SHARE", default=0.5, minimum=0.0)
CAPACITY_SOCKETS_PER_MEMBER = env_float("CAPACITY_SOCKETS_PER_MEMBER", default=1.2, minimum=0.0)
CAPACITY_EVENTS_PER_WEDDING_PER_SECOND = env_float("CAPACITY_EVENTS_PER_WEDDING_PER_SECOND", default=1.0, minimum=0.0)
CAPACITY_PEAK_BEFORE_HOURS = env_float("CAPACITY_PEAK_BEFORE_HOURS", default=2.0, minimum=0.0)
CAPACITY_PEAK_AFTER_HOURS = env_float("CAPACITY_PEAK_AFTER_HOURS", default=6.0, minimum=0.0)
CELERY_BEAT_SCHEDULE["monitoring-ops-checks"] = {
    "task": "monitoring.tasks.run_ops_checks",
    "schedule": OPS_CHECK_SECONDS,
    # Late rather than lost: behind a backlog it still runs, and sees the backlog.
    "options": {"expires": max(OPS_CHECK_SECONDS, 300.0)},
}
# A Celery worker serves /metrics on this port (0: it does not); daphne nodes serve it on their own port.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", default=0, minimum=0, maximum=65535)
WORKER_METRICS_ADDRESS = env_str("WORKER_METRICS_ADDRESS", default="127.0.0.1")
# Who may read /metrics (monitoring/access.py, decision 0024): scrapers presenting this bearer token,
# and, when METRICS_ALLOWED_IPS is set, only from those addresses or networks. Without a token only
# a DEBUG process answers (to METRICS_ALLOWED_IPS, loopback by default); production is closed.
METRICS_TOKEN = env_optional_str("METRICS_TOKEN")
if METRICS_TOKEN is not None and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters")
METRICS_ALLOWED_NETWORKS: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
for _entry in env_list("METRICS_ALLOWED_IPS", default=[]):
    try:
        METRICS_ALLOWED_NETWORKS.append(ipaddress.ip_network(_entry, strict=False))
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {_entry!r} is not an address or network") from None

# --- The pages: sign-in and Content-Security-Policy ------------------------------------------------

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "my-weddings"
LOGOUT_REDIRECT_URL = "login"

# No inline script on any page (the wedding-day page boots from a JSON script block); sockets and
# API calls go to this origin only ('self' covers ws: and wss: of it). Inline style attributes stay
# allowed for the admin's templates. Swagger UI starts itself with an inline script, so its page is
# left out (decision 0028).
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs/"],
    "DIRECTIVES": {
        "default-src": [CSP_SELF],
        "script-src": [CSP_SELF],
        "style-src": [CSP_SELF],
        "style-src-attr": [CSP_UNSAFE_INLINE],
        "img-src": [CSP_SELF, "data:"],
        "connect-src": [CSP_SELF],
        "object-src": [CSP_NONE],
        "base-uri": [CSP_SELF],
        "form-action": [CSP_SELF],
        "frame-ancestors": [CSP_NONE],
    },
}

# --- I18n, static ---------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "wedsync.static_storage.HashedModulesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# --- Logging: one JSON line per record, rendered by structlog ------------------------------------------

LOG_LEVEL = env_choice("LOG_LEVEL", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = logging_config(level=LOG_LEVEL)
