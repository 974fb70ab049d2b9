"""The configuration store (`cdp_actors/control/`): seeded once from the workspace file, changed only by typed
changes that the workspace models validate, one version per accepted change, stale versions refused, history
kept, export read back equal, all of it durable across a reopen; and the watcher that hands a batch one version."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cdp_actors.config import WorkspaceConfig, load_workspace
from cdp_actors.control import store as store_module
from cdp_actors.control.changes import (
    ENV_REFERENCE,
    AddConnection,
    AddInput,
    AddOutput,
    Change,
    RemoveConnection,
    RemoveInput,
    RemoveOutput,
    UpdateConnection,
    UpdateInput,
    UpdateOutput,
    changed_paths,
    config_document,
)
from cdp_actors.control.store import ClearSecrets, ConfigStore, NotSeeded
from cdp_actors.control.watcher import CONFIG_POLL_INTERVAL_S, ConfigWatcher
from cdp_actors.envvars import expand_env
from cdp_actors.errors import BadRequest, Conflict, NotFound, RequestFailed

DEMO = Path(__file__).resolve().parents[2] / "configs" / "workspace.yaml"
WEBHOOK = {
    "name": "hook",
    "kind": "webhook",
    "settings": {"url": "https://example.com/in", "auth_header": "Bearer t0k"},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = ConfigStore(tmp_path / "control", ClearSecrets(), Clock())
    opened.seed_from(DEMO)
    yield opened
    opened.close()


def reopen(store: ConfigStore, path: Path) -> ConfigStore:
    store.close()
    return ConfigStore(path, store.sealer, store.clock_ms)


# ---- seeding and reading ----


def test_the_file_seeds_an_empty_store_only(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "control", ClearSecrets())
    with pytest.raises(NotSeeded):
        store.current()
    assert store.version() == 0 and store.seed_from(DEMO)
    assert store.current() == (1, load_workspace(DEMO))
    other = load_workspace(DEMO).with_output_url(1, "http://127.0.0.1:1/elsewhere")
    assert not store.seed_from(other) and not store.seed_from(tmp_path / "missing.yaml")  # not even read
    assert store.current() == (1, load_workspace(DEMO))
    assert [(e.version, e.actor, e.change, e.target) for e in store.history()] == [(1, "seed", "seed", str(DEMO))]


def test_an_accepted_change_is_the_next_version_with_its_history(store: ConfigStore) -> None:
    store.clock_ms.now += 5  # type: ignore[attr-defined]
    version, config = store.apply(AddOutput(fields=WEBHOOK), 1, "alice")
    assert version == 2 and store.current() == (2, config)
    assert [(o.id, o.name) for o in config.outputs] == [(1, "demo-webhook"), (2, "hook")]
    store.apply(UpdateOutput(id=2, fields={"settings": {"url": "https://example.com/v2"}}), 2, "bob")
    entries = store.history(after_version=1)
    assert [(e.version, e.actor, e.change, e.target, e.paths) for e in entries] == [
        (2, "alice", "add_output", "outputs/2", ["outputs[id=2]"]),
        (3, "bob", "update_output", "outputs/2", ["outputs[id=2].settings.url"]),
    ]
    assert entries[0].at_ms == 1_700_000_000_005
    assert "t0k" not in repr(entries)


def test_a_stale_version_is_refused_and_changes_nothing(store: ConfigStore) -> None:
    store.apply(AddOutput(fields=WEBHOOK), 1, "alice")
    with pytest.raises(Conflict, match=r"^Version 1 is not the current one \(2\)\.$"):
        store.apply(RemoveConnection(id=1), 1, "bob")
    assert store.version() == 2 and len(store.current()[1].connections) == 1 and len(store.history()) == 2


def test_none_applies_to_whatever_is_current(store: ConfigStore) -> None:
    store.apply(AddOutput(fields=WEBHOOK), None, "alice")
    assert store.apply(AddConnection(fields={"input": 1, "output": 2}), None, "bob")[0] == 3


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [
        (AddOutput(fields={**WEBHOOK, "settings": {"url": "ftp://x"}}), BadRequest, "at `$.settings.url`"),
        (AddOutput(fields={**WEBHOOK, "kind": "carrier_pigeon"}), BadRequest, "unknown output kind; known: amplitude"),
        (AddOutput(fields={"name": "no kind", "settings": {}}), BadRequest, "at `$.kind`"),
        (AddOutput(fields={**WEBHOOK, "surprise": 1}), BadRequest, "at `$.surprise`"),
        (AddOutput(fields={**WEBHOOK, "id": 1}), BadRequest, "at `$.id`"),
        (AddInput(fields={"name": "n", "key": "demo-key", "secret": "s"}), BadRequest, "at `$.key`"),
        (AddInput(fields={"name": "n", "secret": "s"}), BadRequest, "at `$.key`"),
        (AddConnection(fields={"input": 1, "output": 9}), BadRequest, "no output with id 9 - at `$.output`"),
        (AddConnection(fields={"input": 7, "output": 1}), BadRequest, "no input with id 7 - at `$.input`"),
        (AddConnection(fields={"input": 1, "output": 1, "sample_percent": 101}), BadRequest, "`$.sample_percent`"),
        (
            AddConnection(fields={"input": 1, "output": 1, "rules": [{"on": "gdpr", "action": "only_forward"}]}),
            BadRequest,
            "needs a name - at `$.rules[0]`",
        ),  # fmt: skip
        (
            UpdateOutput(id=1, fields={"settings": {"max_batches_per_request": 0}}),
            BadRequest,
            "at `$.settings.max_batches_per_request`",
        ),  # fmt: skip
        (
            UpdateOutput(id=1, fields={"kind": "facebook_audience", "settings": {"access_token": "x"}}),
            BadRequest,
            "connections [1] send it - at `$.kind`",
        ),  # fmt: skip
        (UpdateInput(id=1, fields={"id": 2}), BadRequest, "cannot change - at `$.id`"),
        (UpdateConnection(id=1, fields={"environments": ["staging"]}), BadRequest, "at `$.environments[0]`"),
        (RemoveInput(id=1), BadRequest, "at least one input"),
        (RemoveOutput(id=1), BadRequest, "output 1 is used by connections [1]; remove them first"),
        (UpdateOutput(id=5, fields={"name": "x"}), NotFound, "No output with id 5."),
        (RemoveConnection(id=5), NotFound, "No connection with id 5."),
    ],
)
def test_a_bad_change_names_the_field_and_stores_nothing(
    store: ConfigStore, tmp_path: Path, change: Change, kind: type[RequestFailed], message: str
) -> None:
    with pytest.raises(kind) as refused:
        store.apply(change, 1, "alice")
    assert type(refused.value) is kind and message in refused.value.message
    store = reopen(store, tmp_path / "control")
    assert store.current() == (1, load_workspace(DEMO)) and len(store.history()) == 1
    store.close()


def test_neither_a_refusal_nor_a_change_shows_the_values_it_holds(store: ConfigStore) -> None:
    with pytest.raises(BadRequest) as refused:
        store.apply(AddOutput(fields={**WEBHOOK, "settings": {"url": "ftp://user:s3cr3t@x"}}), 1, "alice")
    assert "s3cr3t" not in str(refused.value)
    changes = [AddOutput(fields=WEBHOOK), UpdateOutput(id=2, fields={"settings": {"auth_header": "Bearer t0k"}})]
    assert repr(changes) == "[AddOutput(fields=<name, kind, settings>), UpdateOutput(id=2, fields=<settings>)]"


def test_a_change_cannot_reach_into_the_server_environment(store: ConfigStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_TEST_KEY", "server-side")
    for change in (AddOutput(fields={**WEBHOOK, "settings": {**WEBHOOK["settings"], "auth_header": "${CDP_TEST_KEY}"}}),
                   UpdateInput(id=1, fields={"secret": "x${CDP_TEST_KEY}"})):  # fmt: skip
        with pytest.raises(BadRequest, match="environment references") as refused:
            store.apply(change, 1, "mallory")
        assert refused.value.path in ("$.settings.auth_header", "$.secret")
    assert store.version() == 1


@given(st.text(alphabet="${}_aZ9-", max_size=12))
def test_the_reference_pattern_is_what_the_workspace_file_expands(text: str) -> None:
    try:
        expanded = expand_env(text)
    except ValueError:  # a reference to an unset variable
        expanded = None
    assert (expanded != text) == bool(ENV_REFERENCE.search(text))


def test_ids_are_never_reused_even_after_a_reopen(store: ConfigStore, tmp_path: Path) -> None:
    store.apply(AddOutput(fields=WEBHOOK), 1, "alice")
    store.apply(RemoveOutput(id=2), 2, "alice")
    store = reopen(store, tmp_path / "control")
    version, config = store.apply(AddOutput(fields=WEBHOOK), 3, "alice")
    assert [o.id for o in config.outputs] == [1, 3]
    with pytest.raises(BadRequest, match="id 2 is taken or was used before"):
        store.apply(AddOutput(fields={**WEBHOOK, "id": 2}), version, "alice")
    assert [o.id for o in store.apply(AddOutput(fields={**WEBHOOK, "id": 10}), version, "a")[1].outputs] == [1, 3, 10]
    assert [o.id for o in store.apply(AddOutput(fields=WEBHOOK), None, "alice")[1].outputs] == [1, 3, 10, 11]
    store.close()


def test_an_update_merges_settings_so_a_secret_need_not_be_sent_again(store: ConfigStore) -> None:
    store.apply(AddOutput(fields=WEBHOOK), 1, "alice")
    config = store.apply(UpdateOutput(id=2, fields={"settings": {"url": "https://example.com/v2"}}), 2, "bob")[1]
    settings = config.outputs[1].settings
    assert settings.url == "https://example.com/v2" and settings.auth_header.get_secret_value() == "Bearer t0k"  # type: ignore[attr-defined]
    firehose = {"kind": "firehose", "settings": {"url": "https://firehose.example.com/"}}
    config = store.apply(UpdateOutput(id=2, fields=firehose), 3, "bob")[1]
    assert config.outputs[1].kind == "firehose" and config.outputs[1].settings.api_key is None  # type: ignore[attr-defined]


def test_everything_survives_a_reopen(store: ConfigStore, tmp_path: Path) -> None:
    store.apply(AddOutput(fields=WEBHOOK), 1, "alice")
    store.apply(AddConnection(fields={"input": 1, "output": 2, "active": False}), 2, "bob")
    before = (store.current(), store.history())
    store = reopen(store, tmp_path / "control")
    assert (store.current(), store.history()) == before
    assert store.snapshot(2) == before[0][1].model_copy(update={"connections": before[0][1].connections[:1]})
    store.close()


def test_old_snapshots_are_pruned_but_history_is_kept(store: ConfigStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "KEPT_SNAPSHOTS", 3)
    for version in range(1, 6):
        store.apply(UpdateConnection(id=1, fields={"active": version % 2 == 0}), version, "alice")
    with pytest.raises(NotFound, match="Version 3 is not kept"):
        store.snapshot(3)
    assert store.snapshot(4).connections[0].active is False and store.snapshot(6) == store.current()[1]
    assert [e.version for e in store.history()] == [1, 2, 3, 4, 5, 6]
    assert [e.version for e in store.history(after_version=4, limit=1)] == [5]


def test_changed_since_answers_only_for_a_new_version(store: ConfigStore) -> None:
    assert store.changed_since(1) is None
    store.apply(UpdateConnection(id=1, fields={"active": False}), 1, "alice")
    assert store.changed_since(1) == store.current()


def test_the_export_reads_back_equal(store: ConfigStore, tmp_path: Path) -> None:
    store.apply(AddOutput(fields=WEBHOOK), 1, "alice")
    store.apply(AddConnection(fields={"input": 1, "output": 2, "rules": [{"on": "identity", "action": "only_forward",
                                                                          "name": "email"}]}), 2, "a")  # fmt: skip
    path = tmp_path / "exported.yaml"
    path.write_text(store.export_yaml())
    assert load_workspace(path) == store.current()[1]
    masked = store.export_yaml(mask=lambda doc: {**doc, "api_clients": []})
    assert "demo-client-secret" not in masked and "Bearer t0k" in store.export_yaml()


class ReversedSecrets:
    """A stand-in sealer: the secrets of inputs and of webhook settings reversed."""

    def seal(self, config: WorkspaceConfig) -> dict[str, Any]:
        return self._flip(config_document(config))

    def unseal(self, document: dict[str, Any]) -> dict[str, Any]:
        return self._flip(document)

    def _flip(self, document: dict[str, Any]) -> dict[str, Any]:
        inputs = [{**i, "secret": i["secret"][::-1]} for i in document["inputs"]]
        outputs = [
            {**o, "settings": {**o["settings"], "auth_header": o["settings"]["auth_header"][::-1]}}
            if o["settings"].get("auth_header") else o
            for o in document["outputs"]
        ]  # fmt: skip
        return {**document, "inputs": inputs, "outputs": outputs}


def test_secrets_are_stored_through_the_sealer_only(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "control", ReversedSecrets())
    store.seed_from(DEMO)
    store.apply(AddOutput(fields={**WEBHOOK, "settings": {**WEBHOOK["settings"], "auth_header": "Bearer zq-secret"}}),
                1, "alice")  # fmt: skip
    store.apply(AddInput(fields={"name": "new", "key": "k2", "secret": "input-secret-xy"}), 2, "alice")
    store = reopen(store, tmp_path / "control")
    config = store.current()[1]
    assert config.inputs[1].credentials_match("k2", "input-secret-xy")
    assert config.outputs[1].settings.auth_header.get_secret_value() == "Bearer zq-secret"  # type: ignore[attr-defined]
    store.close()
    files = b"".join(path.read_bytes() for path in (tmp_path / "control").iterdir())
    for secret in (b"demo-secret", b"Bearer zq-secret", b"input-secret-xy"):
        assert secret not in files and secret[::-1] in files


def test_a_change_crosses_an_actor_call_as_msgpack() -> None:
    changes = [AddOutput(fields=WEBHOOK), UpdateInput(id=1, fields={"name": "n"}), RemoveConnection(id=3)]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(changes), type=list[Change]) == changes


def test_changed_paths_name_items_by_id_and_hold_no_values() -> None:
    before = {"outputs": [{"id": 1, "settings": {"url": "a", "token": "x"}}, {"id": 2}], "retry": {"max": 1}}
    after = {"outputs": [{"id": 1, "settings": {"url": "b", "token": "x"}}, {"id": 3}], "retry": {"max": 1}}
    assert changed_paths(before, after) == ["outputs[id=1].settings.url", "outputs[id=2]", "outputs[id=3]"]


# ---- the watcher ----


class Owner:
    """What a process polls: a version counter and the configuration at it, counting the loads."""

    def __init__(self, config: WorkspaceConfig) -> None:
        self.version, self.config, self.loads, self.failing = 1, config, 0, False

    def read_version(self) -> int:
        if self.failing:
            raise ConnectionError("owner restarting")
        return self.version

    def load(self) -> tuple[int, WorkspaceConfig]:
        self.loads += 1
        return self.version, self.config


def watched() -> tuple[ConfigWatcher[list[int]], Owner, list[float]]:
    now = [0.0]
    owner = Owner(load_workspace(DEMO))
    watcher = ConfigWatcher(
        (1, owner.config), lambda config: [o.id for o in config.outputs], owner.read_version, owner.load,
        clock=lambda: now[0],
    )  # fmt: skip
    return watcher, owner, now


def test_the_poll_interval_keeps_the_promise_of_a_second() -> None:
    assert 0 < CONFIG_POLL_INTERVAL_S <= 1.0


def test_a_batch_keeps_its_snapshot_and_the_next_batch_gets_the_new_version() -> None:
    watcher, owner, now = watched()
    batch = watcher.snapshot()
    owner.version, owner.config = 2, owner.config.model_copy(update={"outputs": []})
    now[0] += CONFIG_POLL_INTERVAL_S / 2
    assert watcher.snapshot() is batch and owner.loads == 0  # not due yet: no look at all
    now[0] += CONFIG_POLL_INTERVAL_S / 2
    fresh = watcher.snapshot()
    assert (fresh.version, fresh.derived, fresh.config.outputs) == (2, [], [])
    assert (batch.version, batch.derived, len(batch.config.outputs)) == (1, [1], 1)  # the old batch's view holds
    now[0] += CONFIG_POLL_INTERVAL_S
    assert watcher.snapshot() is fresh and owner.loads == 1  # same version: looked, not loaded


def test_an_asynchronous_poller_asks_when_due_and_offers() -> None:
    config = load_workspace(DEMO)
    now = [0.0]
    watcher = ConfigWatcher((1, config), lambda c: len(c.outputs), clock=lambda: now[0])
    assert not watcher.is_due()
    now[0] += CONFIG_POLL_INTERVAL_S
    assert watcher.is_due() and watcher.snapshot().version == 1  # offered only: snapshot() never polls
    assert watcher.offer(2, config.model_copy(update={"outputs": []})) and not watcher.is_due()
    assert (watcher.snapshot().version, watcher.snapshot().derived) == (2, 0)


def test_a_failed_look_keeps_the_held_version() -> None:
    watcher, owner, now = watched()
    owner.failing, owner.version = True, 2
    now[0] += CONFIG_POLL_INTERVAL_S
    assert watcher.snapshot().version == 1
    owner.failing = False
    assert watcher.snapshot().version == 1  # the failed look counted as a look: the next is an interval later
    now[0] += CONFIG_POLL_INTERVAL_S
    assert watcher.snapshot().version == 2


def test_offers_take_only_newer_versions_and_a_failed_derive_keeps_the_held_one() -> None:
    config = load_workspace(DEMO)
    derived: list[int] = []

    def derive(c: WorkspaceConfig) -> int:
        if c.runtime.shards == 7:
            raise ValueError("cannot build")
        derived.append(c.runtime.shards)
        return c.runtime.shards

    watcher = ConfigWatcher((3, config), derive)
    assert not watcher.offer(2, config) and not watcher.offer(3, config) and derived == [2]
    with pytest.raises(ValueError, match="cannot build"):
        watcher.offer(4, config.model_copy(update={"runtime": config.runtime.model_copy(update={"shards": 7})}))
    assert watcher.snapshot().version == 3
    assert watcher.offer(5, config) and watcher.version == 5 and derived == [2, 2]


def test_a_watcher_polls_with_both_readers_or_none() -> None:
    with pytest.raises(ValueError, match="go together"):
        ConfigWatcher((1, load_workspace(DEMO)), lambda c: None, read_version=lambda: 1)


# ---- the state machine: random changes against a plain model ----

KEYS = ("demo-key", "k2", "k3")
URLS = ("https://a.example/1", "http://b.example/2", "ftp://bad")
IDS = st.integers(min_value=1, max_value=4)
SECRETS = st.text(alphabet="abcXYZ019-_", min_size=1, max_size=8)


class ConfigStoreMachine(RuleBasedStateMachine):
    """The store against a model of its sections: each item as a tuple of the fields the rules change."""

    @initialize()
    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.store = ConfigStore(self.directory / "control", ClearSecrets())
        self.store.seed_from(DEMO)
        self.version = 1
        self.inputs = {1: ("demo-server", "demo-key", "demo-secret")}
        self.outputs = {1: ("webhook", "http://127.0.0.1:9999/webhook")}
        self.connections = {1: (1, 1, True)}
        self.next_ids = {"inputs": 2, "outputs": 2, "connections": 2}

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            shutil.rmtree(self.directory)

    def expect(self, change: Change, refusal: type[RequestFailed] | None) -> bool:
        """Apply `change` to the store; True if it was accepted, as `refusal` (None: accepted) says it must be."""
        try:
            self.store.apply(change, self.version, "machine")
        except RequestFailed as error:
            assert type(error) is refusal, (change, error)
            return False
        assert refusal is None, change
        self.version += 1
        return True

    def new_id(self, section: str) -> int:
        self.next_ids[section] += 1
        return self.next_ids[section] - 1

    @rule(name=st.sampled_from(["a", "b"]), key=st.sampled_from(KEYS), secret=SECRETS)
    def add_input(self, name: str, key: str, secret: str) -> None:
        taken = key in {k for _, k, _ in self.inputs.values()}
        if self.expect(AddInput(fields={"name": name, "key": key, "secret": secret}), BadRequest if taken else None):
            self.inputs[self.new_id("inputs")] = (name, key, secret)

    @rule(item=IDS, key=st.sampled_from(KEYS))
    def update_input(self, item: int, key: str) -> None:
        taken = key in {k for i, (_, k, _) in self.inputs.items() if i != item}
        refusal = NotFound if item not in self.inputs else BadRequest if taken else None
        if self.expect(UpdateInput(id=item, fields={"key": key}), refusal):
            name, _, secret = self.inputs[item]
            self.inputs[item] = (name, key, secret)

    @rule(item=IDS)
    def remove_input(self, item: int) -> None:
        used = len(self.inputs) == 1 or any(i == item for i, _, _ in self.connections.values())
        if self.expect(RemoveInput(id=item), NotFound if item not in self.inputs else BadRequest if used else None):
            del self.inputs[item]

    @rule(kind=st.sampled_from(["webhook", "facebook_audience"]), url=st.sampled_from(URLS), secret=SECRETS)
    def add_output(self, kind: str, url: str, secret: str) -> None:
        settings = (
            {"url": url, "auth_header": secret} if kind == "webhook" else {"access_token": secret, "api_url": url}
        )
        bad = url.startswith("ftp")
        if self.expect(
            AddOutput(fields={"name": "o", "kind": kind, "settings": settings}), BadRequest if bad else None
        ):
            self.outputs[self.new_id("outputs")] = (kind, url)

    @rule(item=IDS, url=st.sampled_from(URLS))
    def update_output(self, item: int, url: str) -> None:
        field = "url" if self.outputs.get(item, ("webhook",))[0] == "webhook" else "api_url"
        refusal = NotFound if item not in self.outputs else BadRequest if url.startswith("ftp") else None
        if self.expect(UpdateOutput(id=item, fields={"settings": {field: url}}), refusal):
            self.outputs[item] = (self.outputs[item][0], url)

    @rule(item=IDS)
    def remove_output(self, item: int) -> None:
        used = any(o == item for _, o, _ in self.connections.values())
        if self.expect(RemoveOutput(id=item), NotFound if item not in self.outputs else BadRequest if used else None):
            del self.outputs[item]

    @rule(source=IDS, output=IDS)
    def add_connection(self, source: int, output: int) -> None:
        ok = source in self.inputs and output in self.outputs and self.outputs[output][0] == "webhook"
        if self.expect(AddConnection(fields={"input": source, "output": output}), None if ok else BadRequest):
            self.connections[self.new_id("connections")] = (source, output, True)

    @rule(item=IDS, active=st.booleans())
    def update_connection(self, item: int, active: bool) -> None:
        if self.expect(
            UpdateConnection(id=item, fields={"active": active}), None if item in self.connections else NotFound
        ):
            self.connections[item] = (*self.connections[item][:2], active)

    @rule(item=IDS)
    def remove_connection(self, item: int) -> None:
        if self.expect(RemoveConnection(id=item), None if item in self.connections else NotFound):
            del self.connections[item]

    @rule()
    def a_stale_version_is_refused(self) -> None:
        if self.version > 1:
            with pytest.raises(Conflict):
                self.store.apply(UpdateConnection(id=1, fields={"active": True}), self.version - 1, "machine")

    @rule()
    def export_reads_back_equal(self) -> None:
        path = self.directory / "exported.yaml"
        path.write_text(self.store.export_yaml())
        assert load_workspace(path) == self.store.current()[1]

    @rule()
    def reopen(self) -> None:
        self.store = reopen(self.store, self.directory / "control")

    @invariant()
    def store_equals_model(self) -> None:
        if not hasattr(self, "store"):
            return
        version, config = self.store.current()
        assert version == self.version == len(self.store.history()) == self.store.history()[-1].version
        assert {i.id: (i.name, i.key, i.secret.get_secret_value()) for i in config.inputs} == self.inputs
        outputs = {o.id: (o.kind, getattr(o.settings, "url", None) or o.settings.api_url)  # type: ignore[attr-defined]
                   for o in config.outputs}  # fmt: skip
        assert outputs == self.outputs
        assert {c.id: (c.input, c.output, c.active) for c in config.connections} == self.connections


TestConfigStoreMachine = ConfigStoreMachine.TestCase
TestConfigStoreMachine.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
