"""The sessions actor's table in LMDB: a login survives a restart of the actor, a logout too, and the stored files
hold neither a session id nor its CSRF token."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdp_actors.access.session_store import SESSIONS_DIR, SessionStore
from cdp_actors.access.sessions import IDLE_TIMEOUT_S
from cdp_actors.errors import Unauthorized

NOW_S = 1_700_000_000


def reopened(store: SessionStore, data_dir: Path) -> SessionStore:
    store.close()
    return SessionStore(data_dir)


def test_a_session_survives_a_restart_and_so_does_its_end(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    kept, ended = store.start("ada", NOW_S), store.start("bob", NOW_S)
    store.end(ended.session_id)
    store = reopened(store, tmp_path)
    assert store.resume(kept.session_id, NOW_S + 60, "POST", kept.csrf_token) == "ada"
    with pytest.raises(Unauthorized):
        store.resume(ended.session_id, NOW_S + 60, "GET", None)
    content = b"".join(path.read_bytes() for path in (tmp_path / SESSIONS_DIR).iterdir())
    for credential in (kept.session_id, kept.csrf_token, ended.session_id):
        assert credential.encode() not in content
    store.close()


def test_an_idle_session_expires_across_a_restart(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    started = store.start("ada", NOW_S)
    store = reopened(store, tmp_path)
    with pytest.raises(Unauthorized):
        store.resume(started.session_id, NOW_S + IDLE_TIMEOUT_S + 1, "GET", None)
    assert store.sweep(NOW_S + IDLE_TIMEOUT_S + 1) == 0
    assert store.end_all("ada") == 0
    store.close()
