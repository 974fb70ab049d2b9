"""The console's sessions, shared by every replica: the core of the `sessions` actor (runtime.py makes it one).

Why an actor-owned store and not a stateless signed cookie: a signed cookie cannot be ended before it expires, so
a logout, a password change or a removed user would leave a copied cookie working for hours, and an idle expiry
would need the cookie rewritten on every answer. One actor holds the `SessionTable` (sessions.py); every admin
replica asks it once per session request (~1 ms, a Ray call: admin requests are few), so a logout on one replica
ends the session on all of them at once. Bearer-token requests never call it.

The actor loads the access key itself (setup.py) to derive the CSRF key, so no key travels in a task spec. The
table lies in LMDB (`sessions/` in the data directory, `StoredSessions`), keyed by the SHA-256 of each session id
(the id itself, a credential, is never stored): a restart of the actor, or of the platform, keeps people logged in
until their sessions expire. Each session request writes its `last_seen_s` (one synced commit, ~1-3 ms: admin
requests come at human speed; bearer-token requests never write).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import msgspec

from cdp_actors.access.sessions import Session, SessionTable, StartedSession
from cdp_actors.access.setup import load_access_key
from cdp_actors.access.tokens import derive_key
from cdp_actors.storage.lmdb_env import Store

CSRF_KEY_PURPOSE = "csrf"
SESSIONS_DIR = "sessions"
_SESSIONS_DB = "sessions"
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(Session).decode


class StoredSessions(MutableMapping[str, Session]):
    """The session table's mapping (session key → `Session`) in LMDB: what survives a restart."""

    def __init__(self, path: str | Path) -> None:
        self.store = Store(path, (_SESSIONS_DB,))
        self.db = self.store.db(_SESSIONS_DB)

    def __getitem__(self, key: str) -> Session:
        with self.store.read() as txn:
            raw = txn.get(key.encode(), db=self.db)
        if raw is None:
            raise KeyError(key)
        return _decode(raw)

    def __setitem__(self, key: str, session: Session) -> None:
        with self.store.write() as txn:
            txn.put(key.encode(), _encode(session), db=self.db)

    def __delitem__(self, key: str) -> None:
        with self.store.write() as txn:
            if not txn.delete(key.encode(), db=self.db):
                raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        with self.store.read() as txn:
            keys = [key.decode() for key in txn.cursor(db=self.db).iternext(keys=True, values=False)]
        return iter(keys)

    def __len__(self) -> int:
        with self.store.read() as txn:
            return txn.stat(self.db)["entries"]

    def close(self) -> None:
        self.store.close()


class SessionStore:
    """Start, resume (with the CSRF check of a state change) and end sessions; one per platform."""

    def __init__(self, data_dir: str | Path) -> None:
        self._stored = StoredSessions(Path(data_dir) / SESSIONS_DIR)
        self._table = SessionTable(derive_key(load_access_key(os.environ, data_dir), CSRF_KEY_PURPOSE), self._stored)

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

    def close(self) -> None:
        self._stored.close()
