"""Settings for the test suite.

Tests talk to the real PostgreSQL and Redis. They are found through ``DATABASE_URL`` and
``REDIS_URL`` or, when those are unset, on their default local ports; a service that does not
answer is recorded in ``WEDSYNC_TEST_SERVICES`` and the tests that need it are reported as not run
(or fail the run outright with ``WEDSYNC_REQUIRE_SERVICES=1``; see ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

DEFAULT_TEST_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/wedsync"
# Database 1, so that a flush in a test never touches a development server's data in database 0.
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/1"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


_database_url = os.environ.get("DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
_redis_url = os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
WEDSYNC_TEST_SERVICES = {
    "postgres": _answers(_database_url, 5432),
    "redis": _answers(_redis_url, 6379),
}
WEDSYNC_TEST_SERVICE_URLS = {"postgres": _database_url, "redis": _redis_url}
for _variable, _service, _url in (("DATABASE_URL", "postgres", _database_url), ("REDIS_URL", "redis", _redis_url)):
    if WEDSYNC_TEST_SERVICES[_service]:
        os.environ[_variable] = _url
    else:
        os.environ.pop(_variable, None)

# The suite runs the production profile (DEBUG off), as Django's test runner does anyway.
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "k" * 50)
os.environ.setdefault("METRICS_TOKEN", "test-metrics-token-" + "m" * 32)
os.environ.setdefault("WEDSYNC_VAR_DIR", "/tmp/wedsync-test-var")  # noqa: S108
# A loaded machine's late loop would shed guests in tests about something else: load shedding by
# lag is switched on by the tests of it (tests/realtime/test_shedding.py).
os.environ.setdefault("REALTIME_SHED_LOOP_LAG_SECONDS", "0")

from wedsync.settings import *  # noqa: E402, F403
from wedsync.settings import STATIC_ROOT  # noqa: E402

STATIC_ROOT.mkdir(parents=True, exist_ok=True)
SECURE_SSL_REDIRECT = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; the hasher is not under test
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Each test has its own event loop, whose pool threads (realtime.db.per_socket_db) go away with
# it: their connections go back after every call (to the psycopg pool, as in production, which
# Django closes before it drops the test database), never kept per thread past it.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# The garbage-collection policy freezes the whole process's objects: not in the test runner
# (tests/realtime/test_gc_policy.py drives it directly; the nodes the tests start run it).
REALTIME_GC_FREEZE_SECONDS = 0
