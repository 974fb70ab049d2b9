"""Console sessions: hashed storage, idle and absolute expiry, logout, CSRF, cookie attributes; a state machine
checked against a plain model."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from cdp_actors.access.sessions import (
    ABSOLUTE_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    LAST_SEEN_STEP_S,
    MAX_SESSIONS_PER_USER,
    SessionTable,
    clear_cookie,
    session_key,
    set_cookie,
)
from cdp_actors.errors import Forbidden, Unauthorized

CSRF_KEY = b"c" * 32
T0 = 1_800_000_000


def test_a_session_resumes_and_its_id_is_stored_only_hashed():
    store: dict = {}
    table = SessionTable(CSRF_KEY, store)
    started = table.start("admin", T0)
    assert table.resume(started.session_id, T0 + 1) == "admin"
    assert list(store) == [session_key(started.session_id)]
    assert started.session_id not in repr(store) and started.session_id not in repr(started)
    assert started.csrf_token not in repr(started)


def test_use_is_written_back_at_most_once_a_step():
    store: dict = {}
    table = SessionTable(CSRF_KEY, store)
    started = table.start("admin", T0)
    table.resume(started.session_id, T0 + LAST_SEEN_STEP_S - 1)
    assert store[session_key(started.session_id)].last_seen_s == T0
    table.resume(started.session_id, T0 + LAST_SEEN_STEP_S)
    assert store[session_key(started.session_id)].last_seen_s == T0 + LAST_SEEN_STEP_S


def test_an_idle_session_expires():
    table = SessionTable(CSRF_KEY)
    started = table.start("admin", T0)
    table.resume(started.session_id, T0 + IDLE_TIMEOUT_S - 1)  # restarts the idle clock
    table.resume(started.session_id, T0 + 2 * IDLE_TIMEOUT_S - 2)
    with pytest.raises(Unauthorized):
        table.resume(started.session_id, T0 + 3 * IDLE_TIMEOUT_S - 2)
    with pytest.raises(Unauthorized):  # and it stays ended
        table.resume(started.session_id, T0 + 3 * IDLE_TIMEOUT_S - 2)


def test_an_active_session_ends_at_the_absolute_timeout():
    table = SessionTable(CSRF_KEY)
    started = table.start("admin", T0)
    now = T0
    while now + IDLE_TIMEOUT_S // 2 < T0 + ABSOLUTE_TIMEOUT_S:
        now += IDLE_TIMEOUT_S // 2
        table.resume(started.session_id, now)
    with pytest.raises(Unauthorized):
        table.resume(started.session_id, T0 + ABSOLUTE_TIMEOUT_S)


def test_unknown_missing_and_ended_sessions_are_unauthorized():
    table = SessionTable(CSRF_KEY)
    started = table.start("admin", T0)
    for session_id in (None, "", "x", started.session_id + "x"):
        with pytest.raises(Unauthorized):
            table.resume(session_id, T0)
    table.end(started.session_id)
    with pytest.raises(Unauthorized):
        table.resume(started.session_id, T0)


def test_end_all_ends_only_that_users_sessions():
    table = SessionTable(CSRF_KEY)
    first, second, other = table.start("ada", T0), table.start("ada", T0), table.start("bob", T0)
    assert table.end_all("ada") == 2
    for started in (first, second):
        with pytest.raises(Unauthorized):
            table.resume(started.session_id, T0)
    assert table.resume(other.session_id, T0) == "bob"


def test_a_user_holds_a_bounded_number_of_sessions_oldest_ended_first():
    store: dict = {}
    table = SessionTable(CSRF_KEY, store)
    sessions = [table.start("ada", T0 + i) for i in range(MAX_SESSIONS_PER_USER + 3)]
    assert len(store) == MAX_SESSIONS_PER_USER
    with pytest.raises(Unauthorized):
        table.resume(sessions[2].session_id, T0 + 30)
    assert table.resume(sessions[3].session_id, T0 + 30) == "ada"


def test_sweep_drops_expired_sessions():
    store: dict = {}
    table = SessionTable(CSRF_KEY, store)
    table.start("ada", T0)
    kept = table.start("bob", T0 + IDLE_TIMEOUT_S)
    assert table.sweep(T0 + IDLE_TIMEOUT_S) == 1
    assert list(store) == [session_key(kept.session_id)]


def test_state_changes_need_the_sessions_csrf_token():
    table = SessionTable(CSRF_KEY)
    mine, theirs = table.start("ada", T0), table.start("bob", T0)
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        table.check_csrf(method, mine.session_id, None)
    for method in ("POST", "PUT", "PATCH", "DELETE", "post"):
        table.check_csrf(method, mine.session_id, mine.csrf_token)
        for given in (None, "", theirs.csrf_token, mine.csrf_token[:-1], "é"):
            with pytest.raises(Forbidden):
                table.check_csrf(method, mine.session_id, given)
    assert SessionTable(b"d" * 32).csrf_token(mine.session_id) != mine.csrf_token


def test_cookie_attributes():
    cookie = set_cookie("abc", secure=False)
    assert cookie.startswith("cdp_session=abc; ")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie and set_cookie("abc", secure=True).endswith("; Secure")
    assert "Max-Age=0" in clear_cookie(secure=True) and clear_cookie(secure=True).startswith("cdp_session=;")


class SessionMachine(RuleBasedStateMachine):
    """Logins, requests after some time, logouts and sweeps, against a model: user, login time, last use."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.store: dict = {}
        self.table = SessionTable(CSRF_KEY, self.store)
        self.model: dict[str, tuple[str, int, int]] = {}
        self.now = T0

    def _live(self, session_id: str) -> bool:
        entry = self.model.get(session_id)
        return entry is not None and self.now - entry[2] < IDLE_TIMEOUT_S and self.now - entry[1] < ABSOLUTE_TIMEOUT_S

    @rule(target=ids, user=st.sampled_from(["ada", "bob"]))
    def login(self, user):
        mine = sorted((started, session_key(i), i) for i, (u, started, _) in self.model.items() if u == user)
        for _, _, oldest in mine[: max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
            del self.model[oldest]
        started = self.table.start(user, self.now)
        self.model[started.session_id] = (user, self.now, self.now)
        return started.session_id

    @rule(seconds=st.sampled_from([1, 60, IDLE_TIMEOUT_S - 1, IDLE_TIMEOUT_S, 3 * 3600]))
    def wait(self, seconds):
        self.now += seconds

    @rule(session_id=ids)
    def request(self, session_id):
        if self._live(session_id):
            user, started, _ = self.model[session_id]
            assert self.table.resume(session_id, self.now) == user
            if self.now - self.model[session_id][2] >= LAST_SEEN_STEP_S:
                self.model[session_id] = (user, started, self.now)
        else:
            self.model.pop(session_id, None)
            with pytest.raises(Unauthorized):
                self.table.resume(session_id, self.now)

    @rule(session_id=ids)
    def logout(self, session_id):
        self.table.end(session_id)
        self.model.pop(session_id, None)

    @rule()
    def sweep(self):
        self.table.sweep(self.now)
        self.model = {i: entry for i, entry in self.model.items() if self._live(i)}

    @invariant()
    def the_table_holds_what_the_model_holds(self):
        assert {key: session.user for key, session in self.store.items()} == {
            session_key(i): user for i, (user, _, _) in self.model.items()
        }


SessionMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
test_session_state_machine = SessionMachine.TestCase
