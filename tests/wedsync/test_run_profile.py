"""`make run` (bin/run) serves the production profile when it is given production services, and the
development key never signs anything outside DEBUG, by any path (settings in a subprocess)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wedsync.test_settings import ROOT, _production_env, _start_with
from wedsync.run_profile import RunRefused, run_profile_decide

DEV_KEY = "django-insecure-wedsync-development-only-key-never-use-in-production"
KEY = "k" * 60


@pytest.mark.parametrize(
    ("environ", "dotenv", "profile", "debug"),
    [
        ({}, {}, "embedded", "1"),
        ({"DATABASE_URL": "postgres://db/w", "SECRET_KEY": KEY}, {}, "production", "0"),
        ({"REDIS_URL": "redis://r:6379/0", "SECRET_KEY": KEY}, {}, "production", "0"),
        ({"SECRET_KEY": KEY}, {"DATABASE_URL": "postgres://db/w"}, "production", "0"),  # .env counts
        ({"DATABASE_URL": "postgres://db/w"}, {"DEBUG": "yes"}, "production", "1"),  # asked for explicitly
        ({"DEBUG": "1"}, {"DEBUG": "0", "DATABASE_URL": "postgres://db/w", "SECRET_KEY": KEY}, "production", "0"),
    ],
)
def test_the_profile_follows_the_services_named(environ, dotenv, profile: str, debug: str) -> None:
    decided = run_profile_decide(environ=environ, dotenv=dotenv)
    assert (decided.name, decided.exports["DEBUG"]) == (profile, debug)


@pytest.mark.parametrize(
    ("environ", "dotenv"),
    [
        ({"DATABASE_URL": "postgres://db/w"}, {}),
        ({"REDIS_URL": "redis://r:6379/0"}, {"SECRET_KEY": "  "}),
        ({}, {"DATABASE_URL": "postgres://db/w"}),  # honcho would hand it to the servers
    ],
)
def test_production_without_a_secret_key_is_refused_saying_what_to_do(environ, dotenv) -> None:
    with pytest.raises(RunRefused, match="needs SECRET_KEY") as refused:
        run_profile_decide(environ=environ, dotenv=dotenv)
    assert "set DEBUG=1 instead" in str(refused.value)


def _checkout_with_bin_run(tmp_path: Path) -> Path:
    """bin/run as the repository has it, beside this venv and the code (what `make run` runs)."""
    (tmp_path / "bin").mkdir()
    shutil.copy2(ROOT / "bin" / "run", tmp_path / "bin" / "run")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "wedsync").symlink_to(ROOT / "wedsync")
    return tmp_path


def _bin_run(checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(checkout / "bin" / "run"), "--check"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bin_run_with_production_urls_runs_the_production_profile(tmp_path: Path) -> None:
    checkout = _checkout_with_bin_run(tmp_path)
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/none", "SECRET_KEY": KEY}
    assert _bin_run(checkout, env).stdout.strip() == "# profile: production, DEBUG=0"
    assert _bin_run(checkout, {}).stdout.strip() == "# profile: embedded, DEBUG=1"


def test_bin_run_refuses_production_urls_without_a_secret_key_even_from_dotenv(tmp_path: Path) -> None:
    checkout = _checkout_with_bin_run(tmp_path)
    (checkout / ".env").write_text("DATABASE_URL=postgres://postgres@127.0.0.1:5432/none\n")
    result = _bin_run(checkout, {})
    assert result.returncode == 2
    assert "production profile (DEBUG=0), which needs SECRET_KEY" in result.stderr
    assert not (checkout / "var").exists()  # refused before migrating anything


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"JWT_SIGNING_KEY": DEV_KEY}, "JWT_SIGNING_KEY must not be the development key with DEBUG off"),
        ({"JWT_SIGNING_KEY": "django-insecure-" + "j" * 40}, "JWT_SIGNING_KEY must not be the development key"),
        ({"SECRET_KEY": DEV_KEY}, "SECRET_KEY must be a random string"),
        ({"SECRET_KEY": "django-insecure-" + "s" * 60}, "SECRET_KEY must be a random string"),
    ],
)
def test_the_development_key_never_signs_outside_debug(extra: dict[str, str], complaint: str) -> None:
    result = _start_with({**_production_env(), **extra})
    assert result.returncode != 0 and complaint in result.stderr


def test_naming_only_redis_is_production_too() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/4", "ALLOWED_HOSTS": "wedsync.example.com"}
    result = _start_with(env)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_tokens_are_signed_with_the_configured_key_in_production() -> None:
    signing_key = secrets.token_urlsafe(40)
    result = _start_with(
        {**_production_env(), "JWT_SIGNING_KEY": signing_key},
        "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "from rest_framework_simplejwt.state import token_backend as b; "
        f"print(s.DEBUG, b.signing_key == {signing_key!r}, b.signing_key != s.SECRET_KEY)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]
