"""Console login sessions: opaque random ids in an HttpOnly, SameSite cookie, stored only as hashes; a CSRF token
per session; idle and absolute expiry.

A session id is 256 random bits, given to the browser once in `Set-Cookie` and kept here only as its SHA-256 (a
stolen session table names no usable cookie; the id's entropy makes a salt or a slow hash pointless). The CSRF
token is a synchronizer token derived from the session (OWASP's CSRF cheat sheet, HMAC-based token): an HMAC of the
session id under a server key, handed to the console with the login answer and sent back in the `X-CSRF-Token`
header on every state-changing request. Another site's page can make the browser send the cookie (SameSite=Strict
already stops most of that) but cannot read the token, and nothing needs storing for it. Requests authenticated
with a bearer token carry no cookie and need no CSRF token.

Wiring (next session): sessions must be shared by every replica of the admin and Platform API apps, so the
`SessionTable` is the core of one actor (or of the configuration actor), over an LMDB-backed mapping so a restart
keeps people logged in; admin requests are few, one actor call each (~1 ms) is affordable (`resume` itself is ~1 µs
over a dict, `check_csrf` ~3 µs: one HMAC-SHA256). Login: verify the password (passwords.py), `table.start(user,
now_s)`, answer with `set_cookie(started.session_id, secure=...)` and the CSRF token in the body. Every request
with the cookie: `table.resume(session_id, now_s)` gives the user name, whose current grants come from the
configuration (a role change applies at once); for a method outside `SAFE_METHODS` then `table.check_csrf(method,
session_id, header)`. Logout: `table.end(...)`, `clear_cookie()`. A password change or a deleted user:
`table.end_all(user)`. A periodic `sweep(now_s)` drops expired sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass

import msgspec

from cdp_actors.errors import Forbidden, Unauthorized

SESSION_COOKIE = "cdp_session"
COOKIE_ATTRIBUTES = "Path=/; HttpOnly; SameSite=Strict"
"""HttpOnly: no script reads the cookie. SameSite=Strict: a browser sends it only on requests our own pages make.
No Max-Age: the cookie ends with the browser; the server ends the session anyway at its expiry."""
SECURE_ATTRIBUTE = "; Secure"
"""Added when the console is served over HTTPS; left out on the demo's http://127.0.0.1, where a browser would
drop a Secure cookie."""
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing (RFC 9110 §9.2.1), so they need no CSRF token."""
SESSION_ID_BYTES = 32
"""256 random bits: guessing a live session is hopeless however many are open."""
IDLE_TIMEOUT_S = 30 * 60
"""A session unused this long ends: the console shows personal data, and a forgotten open browser should not
stay logged in past a coffee break (OWASP suggests 15 to 30 minutes for such applications)."""
ABSOLUTE_TIMEOUT_S = 8 * 3600
"""A session ends this long after login however active: a working day, the same as an API token's life."""
LAST_SEEN_STEP_S = 60
"""A session's last use is written back only when it moved by this much: one store write per session a minute,
not one per request (a synced LMDB commit each), for an idle expiry at most a minute late."""
MAX_SESSIONS_PER_USER = 20
"""Open sessions one user may hold (browsers, machines); a new login past it ends the oldest, so repeated logins
cannot grow the table without bound."""

_REFUSED = "Log in: the session is missing, expired or ended."


class Session(msgspec.Struct, frozen=True):
    """A login, as stored (msgspec so an LMDB-backed mapping can keep it): no session id in it."""

    user: str
    started_s: int
    last_seen_s: int

    def expired(self, now_s: int) -> bool:
        return now_s - self.last_seen_s >= IDLE_TIMEOUT_S or now_s - self.started_s >= ABSOLUTE_TIMEOUT_S


@dataclass(frozen=True)
class StartedSession:
    """What a login hands out once: the cookie's value and the CSRF token. Masked in repr."""

    session_id: str
    csrf_token: str

    def __repr__(self) -> str:
        return "StartedSession(session_id='***', csrf_token='***')"


def session_key(session_id: str) -> str:
    """How a session is stored: the SHA-256 of its id."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def set_cookie(session_id: str, secure: bool) -> str:
    """The `Set-Cookie` header value that hands a session to the browser."""
    return f"{SESSION_COOKIE}={session_id}; {COOKIE_ATTRIBUTES}{SECURE_ATTRIBUTE if secure else ''}"


def clear_cookie(secure: bool) -> str:
    """The `Set-Cookie` header value that removes it (logout)."""
    return f"{SESSION_COOKIE}=; Max-Age=0; {COOKIE_ATTRIBUTES}{SECURE_ATTRIBUTE if secure else ''}"


class SessionTable:
    """Open sessions by the hash of their id, over any mutable mapping (a dict in tests, LMDB in the actor)."""

    def __init__(self, csrf_key: bytes, store: MutableMapping[str, Session] | None = None) -> None:
        self._csrf_key = csrf_key
        self._sessions: MutableMapping[str, Session] = {} if store is None else store

    def __repr__(self) -> str:
        return f"SessionTable({len(self._sessions)} sessions)"

    def start(self, user: str, now_s: int) -> StartedSession:
        self._limit_sessions_of(user)
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        self._sessions[session_key(session_id)] = Session(user, now_s, now_s)
        return StartedSession(session_id, self.csrf_token(session_id))

    def resume(self, session_id: str | None, now_s: int) -> str:
        """The user of a live session, whose idle clock restarts; Unauthorized if it is unknown or expired."""
        key = session_key(session_id or "")
        session = self._sessions.get(key) if session_id else None
        if session is None:
            raise Unauthorized(_REFUSED)
        if session.expired(now_s):
            del self._sessions[key]
            raise Unauthorized(_REFUSED)
        if now_s - session.last_seen_s >= LAST_SEEN_STEP_S:
            self._sessions[key] = msgspec.structs.replace(session, last_seen_s=now_s)
        return session.user

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_key(session_id), None)

    def end_all(self, user: str) -> int:
        """End every session of `user` (password changed, user removed); how many were open."""
        keys = [key for key, session in self._sessions.items() if session.user == user]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def sweep(self, now_s: int) -> int:
        """Drop expired sessions; how many."""
        keys = [key for key, session in self._sessions.items() if session.expired(now_s)]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self._csrf_key, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, method: str, session_id: str, given: str | None) -> None:
        """Forbidden when a state-changing request does not carry its session's CSRF token."""
        if method.upper() in SAFE_METHODS:
            return
        expected = self.csrf_token(session_id).encode()
        if not hmac.compare_digest(expected, (given or "").strip().encode("utf-8", "replace")):
            raise Forbidden(f"A state-changing request needs the session's {CSRF_HEADER} header.")

    def _limit_sessions_of(self, user: str) -> None:
        open_sessions = sorted((s.started_s, key) for key, s in self._sessions.items() if s.user == user)
        for _, key in open_sessions[: max(0, len(open_sessions) - MAX_SESSIONS_PER_USER + 1)]:
            del self._sessions[key]
