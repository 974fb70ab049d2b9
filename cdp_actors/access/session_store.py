"""The console's sessions, shared by every replica: the core of the `sessions` actor (runtime.py makes it one).

Why an actor-owned store and not a stateless signed cookie: a signed cookie cannot be ended before it expires, so
a logout, a password change or a removed user would leave a copied cookie working for hours, and an idle expiry
would need the cookie rewritten on every answer. One actor holds the `SessionTable` (sessions.py); every admin
replica asks it once per session request (~1 ms, a Ray call: admin requests are few), so a logout on one replica
ends the session on all of them at once. Bearer-token requests never call it.

The actor loads the access key itself (setup.py) to derive the CSRF key, so no key travels in a task spec. The
table is in memory: a restart of the actor (or of the platform) logs everybody out, which is safe; keeping people
logged in across restarts (an LMDB-backed mapping under the table) is left for the next step.
"""

from __future__ import annotations

import os
from pathlib import Path

from cdp_actors.access.sessions import SessionTable, StartedSession
from cdp_actors.access.setup import load_access_key
from cdp_actors.access.tokens import derive_key

CSRF_KEY_PURPOSE = "csrf"


class SessionStore:
    """Start, resume (with the CSRF check of a state change) and end sessions; one per platform."""

    def __init__(self, data_dir: str | Path) -> None:
        self._table = SessionTable(derive_key(load_access_key(os.environ, data_dir), CSRF_KEY_PURPOSE))

    def __repr__(self) -> str:
        return f"SessionStore({self._table!r})"

    def start(self, user: str, now_s: int) -> StartedSession:
        return self._table.start(user, now_s)

    def resume(self, session_id: str, now_s: int, method: str, csrf_token: str | None) -> str:
        """The session's user; Unauthorized if the session is unknown or expired, Forbidden if a state-changing
        `method` lacks the session's CSRF token."""
        user = self._table.resume(session_id, now_s)
        self._table.check_csrf(method, session_id, csrf_token)
        return user

    def end(self, session_id: str) -> None:
        self._table.end(session_id)

    def end_all(self, user: str) -> int:
        return self._table.end_all(user)

    def sweep(self, now_s: int) -> int:
        return self._table.sweep(now_s)
