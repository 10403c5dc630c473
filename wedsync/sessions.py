"""Django's database sessions, refusing a session key that Django could never have made.

A client chooses the session cookie's value, and Django's own check takes any string of 8 or more
characters to the database: one carrying a NUL character (``sessionid="abcdefgh\\000ijk"`` is plain
ASCII in a header, and the cookie parser decodes it) made PostgreSQL raise on every request and
socket that sent it, a server error instead of "not logged in". Django makes keys of 32 lower-case
letters and digits; anything else is no session.
"""

from __future__ import annotations

import re

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

_KEY = re.compile(r"[a-z0-9]{8,40}")


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(key) and _KEY.fullmatch(key or "") is not None
