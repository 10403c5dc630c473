"""Which profile ``make run`` (``bin/run``) serves, decided from the environment its servers will get.

``bin/run`` starts daphne and Celery through honcho, which lays a ``.env`` file over the shell's
environment. The decision reads the same two, merged the same way, so that a ``DATABASE_URL`` kept
in ``.env`` cannot end up served with ``DEBUG`` on and the development signing key:

- nothing names a service: the embedded profile, ``DEBUG=1``;
- ``DATABASE_URL`` or ``REDIS_URL`` is set: the production profile, ``DEBUG=0``, which needs a
  ``SECRET_KEY`` (refused here with a clear message, before anything is migrated);
- an explicit ``DEBUG`` wins (a local run against local services may ask for ``DEBUG=1``).

Only a DEBUG run seeds the demo wedding: its accounts share a published password.

``python -m wedsync.run_profile`` prints the ``export`` lines for ``bin/run`` to evaluate, or
explains the refusal on stderr and exits 2.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from honcho.environ import parse as parse_dotenv  # type: ignore[import-untyped]

from wedsync.env import env_bool


class RunRefused(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RunProfile:
    name: str  # "embedded" or "production"
    exports: dict[str, str]  # what bin/run exports before it migrates and starts honcho


def run_profile_decide(*, environ: Mapping[str, str], dotenv: Mapping[str, str]) -> RunProfile:
    merged = {**environ, **dotenv}  # honcho: the .env file wins over the shell
    names_services = bool(merged.get("DATABASE_URL", "").strip() or merged.get("REDIS_URL", "").strip())
    debug = merged.get("DEBUG", "").strip() or ("0" if names_services else "1")
    try:
        debug_on = env_bool("DEBUG", default=False, environ={"DEBUG": debug})
    except ImproperlyConfigured as exc:
        raise RunRefused(str(exc)) from None
    if not debug_on and not merged.get("SECRET_KEY", "").strip():
        raise RunRefused(
            "DATABASE_URL/REDIS_URL name real services, so `make run` serves the production profile "
            "(DEBUG=0), which needs SECRET_KEY: 50+ random characters, e.g. from "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`, in the environment or .env. "
            "For a local run against local services, set DEBUG=1 instead."
        )
    name = "production" if names_services else "embedded"
    return RunProfile(name=name, exports={**dotenv, "DEBUG": "1" if debug_on else "0"})


def main() -> int:
    dotenv_path = Path(".env")
    dotenv = parse_dotenv(dotenv_path.read_text()) if dotenv_path.is_file() else {}
    try:
        profile = run_profile_decide(environ=os.environ, dotenv=dotenv)
    except RunRefused as refused:
        print(f"bin/run: {refused}", file=sys.stderr)
        return 2
    print(f"# profile: {profile.name}, DEBUG={profile.exports['DEBUG']}")
    for name, value in profile.exports.items():
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
