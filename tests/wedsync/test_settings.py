"""Settings read the environment through typed helpers that stop start-up on a bad value."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from wedsync.env import env_bool, env_choice, env_float, env_int, env_int_map, env_list, env_str
from wedsync.settings import channel_layer_config, redis_database

ROOT = Path(__file__).resolve().parents[2]


def test_env_int_reads_and_bounds() -> None:
    assert env_int("X", default=3, environ={}) == 3
    assert env_int("X", default=3, environ={"X": " 42 "}) == 42
    with pytest.raises(ImproperlyConfigured, match="X must be a whole number, got '64k'"):
        env_int("X", default=3, environ={"X": "64k"})
    with pytest.raises(ImproperlyConfigured, match="X must be at least 10"):
        env_int("X", default=3, minimum=10, environ={"X": "9"})
    with pytest.raises(ImproperlyConfigured, match="X must be at most 5"):
        env_int("X", default=3, maximum=5, environ={"X": "6"})


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False)])
def test_env_bool_accepts_the_usual_spellings(raw: str, expected: bool) -> None:
    assert env_bool("FLAG", default=not expected, environ={"FLAG": raw}) is expected


def test_env_bool_refuses_anything_else() -> None:
    with pytest.raises(ImproperlyConfigured, match="FLAG must be a boolean"):
        env_bool("FLAG", default=False, environ={"FLAG": "maybe"})


def test_env_str_required_and_default() -> None:
    with pytest.raises(ImproperlyConfigured, match="SECRET must be set"):
        env_str("SECRET", environ={})
    assert env_str("S", default="d", environ={"S": ""}) == "d"


def test_env_float_list_and_choice() -> None:
    assert env_float("F", default=1.0, environ={"F": "2.5"}) == 2.5
    with pytest.raises(ImproperlyConfigured, match="F must be a number"):
        env_float("F", default=1.0, environ={"F": "fast"})
    assert env_list("L", default=["a"], environ={"L": "x, y,,z "}) == ["x", "y", "z"]
    with pytest.raises(ImproperlyConfigured, match="C must be one of core, pubsub"):
        env_choice("C", default="core", choices=("core", "pubsub"), environ={"C": "kafka"})


def test_env_int_map_merges_over_defaults_and_names_mistakes() -> None:
    defaults = {"guest": 5, "planner": 50}
    allowed = frozenset(defaults)
    assert env_int_map("M", default=defaults, allowed_keys=allowed, environ={"M": '{"guest": 10}'}) == {
        "guest": 10,
        "planner": 50,
    }
    for raw, complaint in [
        ("{guest: 1}", "M must be a JSON object"),
        ("[1]", "M must be a JSON object, got list"),
        ('{"bouncer": 1}', "unknown key 'bouncer'"),
        ('{"guest": -1}', "'guest' must be a whole number >= 0"),
        ('{"guest": true}', "'guest' must be a whole number"),
    ]:
        with pytest.raises(ImproperlyConfigured, match=complaint):
            env_int_map("M", default=defaults, allowed_keys=allowed, environ={"M": raw})


def _start_with(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    clean = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "wedsync.settings",
        "WEDSYNC_VAR_DIR": os.environ.get("WEDSYNC_VAR_DIR", "/tmp/wedsync-test-var"),
        **env,
    }
    args = command or ("-c", "import django; django.setup(); print('started')")
    return subprocess.run(
        [sys.executable, *args], env=clean, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _production_env() -> dict[str, str]:
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "wedsync.example.com",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }


def test_no_environment_at_all_starts_embedded() -> None:
    result = _start_with(
        {},
        "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], s.CELERY_BROKER_URL)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "True",
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "filesystem://",
    ]


_LAYER = (
    "import django; django.setup(); from django.conf import settings as s; "
    "layer = s.CHANNEL_LAYERS['default']; "
    "print(layer['BACKEND'], layer['CONFIG']['prefix'], layer['CONFIG'].get('capacity'))"
)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ["channels_redis.pubsub.RedisPubSubChannelLayer", "wedsync.db4.", "None"]),
        ({"REALTIME_CHANNEL_LAYER": "core"}, ["channels_redis.core.RedisChannelLayer", "wedsync", "1000"]),
    ],
)
def test_the_channel_layer_is_pubsub_named_by_database_unless_core_is_asked_for(
    extra: dict[str, str], expected: list[str]
) -> None:
    env = {**_production_env(), "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/none"}
    result = _start_with({**env, "REDIS_URL": "redis://127.0.0.1:6379/4", **extra}, "-c", _LAYER)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("redis://h:6379/5", 5),
        ("redis://h:6379", 0),
        ("rediss://u:p@h:1/0", 0),
        ("unix:///run/redis.sock?db=2", 2),
        ("redis://h:6379/2?db=5", 5),  # redis-py's ?db= wins over the path
    ],
)
def test_redis_database_is_the_one_redis_py_connects_to(url: str, database: int) -> None:
    assert redis_database(url=url) == database
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db", 0) == database


def test_a_channel_layer_of_another_kind_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="the channel layer must be core or pubsub, not 'kafka'"):
        channel_layer_config(redis_url="redis://h:6379/0", kind="kafka")  # type: ignore[arg-type]


def test_a_deployment_that_names_its_database_defaults_to_debug_off() -> None:
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/none", "ALLOWED_HOSTS": "wedsync.example.com"}
    result = _start_with(env)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("REALTIME_MAX_FRAME", "64k", "REALTIME_MAX_FRAME must be a whole number"),
        ("REALTIME_RATE_LIMITS", '{"guest": "lots"}', "REALTIME_RATE_LIMITS: 'guest' must be a whole number"),
        ("REALTIME_DEVICE_LIMITS", '{"guest": 0}', "REALTIME_DEVICE_LIMITS: 'guest' must be a whole number >= 1"),
        ("DEBUG", "perhaps", "DEBUG must be a boolean"),
        ("DATABASE_URL", "mysql://db/wedsync", "DATABASE_URL must be a postgres://"),
        ("REDIS_URL", "http://cache", "REDIS_URL must be a redis://"),
        ("REALTIME_CHANNEL_LAYER", "kafka", "REALTIME_CHANNEL_LAYER must be one of core, pubsub"),
        ("WEDSYNC_PERMISSION_OVERRIDES", '{"guest": {"fly": "all"}}', "unknown permission 'fly'"),
        ("WEDSYNC_PERMISSION_OVERRIDES", "[1]", "WEDSYNC_PERMISSION_OVERRIDES must be a JSON object, got list"),
        ("API_LOGIN_USER_RATE", "lots", "API_LOGIN_USER_RATE must look like 30/min"),
        ("API_REFRESH_ADDRESS_RATE", "0/min", "API_REFRESH_ADDRESS_RATE must look like 30/min"),
        ("API_AUTH_RATE", "30/min", "API_AUTH_RATE was split into API_LOGIN_ADDRESS_RATE, API_LOGIN_USER_RATE"),
        ("ADMIN_LOGIN_FAILURE_LIMIT", "0", "ADMIN_LOGIN_FAILURE_LIMIT must be at least 1"),
        ("DATABASE_POOL_MAX_SIZE", "-1", "DATABASE_POOL_MAX_SIZE must be at least 0"),
        ("DATABASE_POOL_MIN_SIZE", "30", "DATABASE_POOL_MIN_SIZE must not be larger than DATABASE_POOL_MAX_SIZE"),
        ("JWT_SIGNING_KEY", "short", "JWT_SIGNING_KEY must be at least 32 characters"),
        ("ALLOWED_HOSTS", ",", "ALLOWED_HOSTS must name at least one host"),
        ("TRUSTED_PROXIES", "-1", "TRUSTED_PROXIES must be at least 0"),
        ("REALTIME_CONFORMANCE_ECHO", "1", "REALTIME_CONFORMANCE_ECHO is a test-only, unauthenticated echo route"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(variable: str, value: str, complaint: str) -> None:
    result = _start_with({**_production_env(), variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert complaint in result.stderr


def test_the_conformance_echo_is_off_by_default_and_on_only_embedded_with_debug() -> None:
    show = "import django; django.setup(); from django.conf import settings as s; print(s.REALTIME_CONFORMANCE_ECHO)"
    assert _start_with(_production_env(), "-c", show).stdout.split() == ["False"]
    assert _start_with({"DEBUG": "1", "REALTIME_CONFORMANCE_ECHO": "1"}, "-c", show).stdout.split() == ["True"]

    database = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/none"}
    refused = _start_with({"DEBUG": "1", "REALTIME_CONFORMANCE_ECHO": "1", **database}, "-c", show)
    assert refused.returncode != 0
    assert "it needs DEBUG=1 and no DATABASE_URL" in refused.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = _production_env()
    del env["SECRET_KEY"]
    result = _start_with(env)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_production_refuses_a_wildcard_host() -> None:
    result = _start_with({**_production_env(), "ALLOWED_HOSTS": "*"})
    assert result.returncode != 0 and "ALLOWED_HOSTS may contain '*' only with DEBUG on" in result.stderr


def test_production_profile_passes_check_deploy_with_no_warnings() -> None:
    result = _start_with(_production_env(), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_environment_overrides_limits_without_code() -> None:
    result = _start_with(
        {
            **_production_env(),
            "REALTIME_RATE_LIMITS": '{"guest": 12}',
            "REALTIME_DEVICE_LIMITS": '{"planner": 9}',
            "REALTIME_MAX_FRAME": "131072",
        },
        "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.REALTIME_RATE_LIMITS['guest'], s.REALTIME_RATE_LIMITS['planner'], "
        "s.REALTIME_DEVICE_LIMITS['planner'], s.REALTIME_DEVICE_LIMITS['guest'], s.REALTIME_MAX_FRAME)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["12", "50", "9", "2", "131072"]


_DATABASE = (
    "import django; django.setup(); from django.conf import settings as s; d = s.DATABASES['default']; "
    "print(d['CONN_MAX_AGE'], d['OPTIONS'].get('pool'), d['OPTIONS'].get('application_name'))"
)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "0 {'min_size': 2, 'max_size': 20, 'timeout': 10.0, 'name': 'wedsync'} wedsync:n7"),
        (
            {"DATABASE_POOL_MAX_SIZE": "6", "DATABASE_POOL_MIN_SIZE": "1", "DATABASE_POOL_TIMEOUT": "2.5"},
            "0 {'min_size': 1, 'max_size': 6, 'timeout': 2.5, 'name': 'wedsync'} wedsync:n7",
        ),
        ({"DATABASE_POOL_MAX_SIZE": "0"}, "60 None wedsync:n7"),  # per-thread connections, e.g. behind PgBouncer
        ({"DATABASE_POOL_MAX_SIZE": "0", "DATABASE_CONN_MAX_AGE": "5"}, "5 None wedsync:n7"),
    ],
)
def test_postgres_connections_come_from_a_pool_per_process_unless_turned_off(
    extra: dict[str, str], expected: str
) -> None:
    env = {**_production_env(), "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/none", "REALTIME_NODE_NAME": "n7"}
    result = _start_with({**env, **extra}, "-c", _DATABASE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_a_per_thread_connection_age_with_the_pool_is_refused() -> None:
    env = {**_production_env(), "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/none"}
    result = _start_with({**env, "DATABASE_CONN_MAX_AGE": "60"})
    assert result.returncode != 0
    assert "DATABASE_CONN_MAX_AGE keeps a connection per thread, which the pool replaces" in result.stderr


def test_sentinels_must_be_host_and_port_and_need_a_plain_redis_url() -> None:
    base = {**_production_env(), "REDIS_URL": "redis://127.0.0.1:6379/3"}
    bad = _start_with({**base, "REDIS_SENTINELS": "10.0.0.1:26379,sentinel-two"})
    assert bad.returncode != 0 and "REDIS_SENTINELS: 'sentinel-two' is not host:port" in bad.stderr
    tls = _start_with({**base, "REDIS_URL": "rediss://127.0.0.1:6379/3", "REDIS_SENTINELS": "10.0.0.1:26379"})
    assert tls.returncode != 0 and "REDIS_URL must be redis://" in tls.stderr
    alone = _start_with({**_production_env(), "REDIS_SENTINELS": "10.0.0.1:26379"})
    assert alone.returncode != 0 and "REDIS_SENTINELS needs REDIS_URL too" in alone.stderr


def test_sentinels_reach_every_redis_use_with_the_urls_database_and_password() -> None:
    """The password is URL-encoded in Celery's sentinel:// URLs (kombu decodes it), the limits'
    storage reads the master only and sends the sentinels no password."""
    env = {
        **_production_env(),
        "REDIS_URL": "redis://app:p%40ss%3Bword@127.0.0.1:6379/3",
        "REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2:26380",
        "REDIS_SENTINEL_MASTER": "weddings",
    }
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "from wedsync.redis_clients import limits_storage_options, limits_storage_uri; "
        "host = s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]; o = limits_storage_options(socket_timeout=0.5); "
        "print(json.dumps({'broker': s.CELERY_BROKER_URL, 'master': s.CELERY_BROKER_TRANSPORT_OPTIONS['master_name'], "
        "'layer': [host['master_name'], host['sentinels'], host['db'], host['password']], "
        "'cache': s.CACHES['default']['OPTIONS']['pool_class'], 'limits': limits_storage_uri(), "
        "'limits_options': {k: v for k, v in o.items() if k != 'sentinel_kwargs'}, "
        "'limits_sentinel_password': o['sentinel_kwargs']['password']}))"
    )
    result = _start_with(env, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        seen["broker"] == "sentinel://app:p%40ss%3Bword@10.0.0.1:26379/3;sentinel://app:p%40ss%3Bword@10.0.0.2:26380/3"
    )
    assert seen["master"] == "weddings"
    assert seen["layer"] == ["weddings", [["10.0.0.1", 26379], ["10.0.0.2", 26380]], 3, "p@ss;word"]
    assert seen["cache"] == "wedsync.redis_clients.SentinelCachePool"
    assert seen["limits"] == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/weddings"
    assert seen["limits_options"] == {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
        "db": 3,
        "username": "app",
        "password": "p@ss;word",
        "use_replicas": False,
    }
    assert seen["limits_sentinel_password"] is None
