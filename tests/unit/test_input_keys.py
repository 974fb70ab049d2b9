"""Inputs' keys as the runtime keeps them: the seed stores hashes (the secret only for inputs that take signed
requests), and each replica's `InputKeys` follows the configuration's versions with one cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cdp_actors.access import keys
from cdp_actors.access.keys import InputKeys, Secret, hash_secret, hashed_inputs, stored_keys
from cdp_actors.config import ConfigError, WorkspaceConfig, parse_workspace
from cdp_actors.control.changes import RemoveInput, UpdateInput
from cdp_actors.control.owner import ControlCore
from cdp_actors.errors import BadRequest, Forbidden

PLAIN_SECRET = "plain-input-secret-0123"
SIGNED_SECRET = "signed-input-secret-4567"


def workspace(**signed_input: Any) -> WorkspaceConfig:
    return parse_workspace({
        "inputs": [
            {"id": 1, "name": "plain", "key": "plain-key", "secret": PLAIN_SECRET},
            {"id": 2, "name": "signed", "key": "signed-key", "secret": SIGNED_SECRET, "signed_requests": True,
             **signed_input},
        ],
    })  # fmt: skip


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = keys._scrypt

    def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(keys, "_scrypt", counted)
    return calls


def test_the_stored_configuration_keeps_hashes_and_only_signed_inputs_keep_their_secret():
    stored = hashed_inputs(workspace())
    plain, signed = stored.inputs
    assert plain.secret is None and plain.secret_hash and keys.verify_secret(plain.secret_hash, Secret(PLAIN_SECRET))
    assert signed.clear_secret() == SIGNED_SECRET and signed.secret_hash
    assert keys.verify_secret(signed.secret_hash, Secret(SIGNED_SECRET))
    assert PLAIN_SECRET not in repr(stored) and PLAIN_SECRET not in stored.model_dump_json()
    assert hashed_inputs(stored).inputs[0] == plain  # nothing clear left to hash: unchanged


def test_an_input_that_takes_signed_requests_needs_its_secret():
    document: dict[str, Any] = {"inputs": [{"id": 1, "name": "n", "key": "k", "secret_hash": "scrypt$x",
                                            "signed_requests": True}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.secret: an input that takes signed requests"):
        parse_workspace(document)


def test_the_seed_stores_no_clear_secret_of_an_input_without_signed_requests(tmp_path: Path):
    control = ControlCore(tmp_path)
    assert control.seed(workspace())
    _, config = control.current()
    assert config.inputs[0].secret is None and config.inputs[1].clear_secret() == SIGNED_SECRET
    raw = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert PLAIN_SECRET.encode() not in raw
    assert not control.seed(workspace())  # a seeded store ignores its seed (and hashes nothing)


def test_stored_keys_name_each_input_with_its_revision():
    stored = hashed_inputs(workspace(key_revision=4))
    table = stored_keys(stored)
    assert set(table) == {"plain-key", "signed-key"}
    assert table["signed-key"].input_id == 2 and table["signed-key"].revision == 4
    assert table["plain-key"].secret_hash == stored.inputs[0].secret_hash


def test_a_replica_keeps_its_cache_across_versions_that_leave_a_key_alone(hashes: list[str]):
    stored = hashed_inputs(workspace())
    derive = InputKeys()
    verifier = derive(stored)
    hashes.clear()
    assert verifier.verify("plain-key", PLAIN_SECRET) == 1
    renamed = stored.model_copy(update={"inputs": [stored.inputs[0].model_copy(update={"name": "renamed"}),
                                                   stored.inputs[1]]})  # fmt: skip
    assert derive(renamed) is verifier
    assert verifier.cached("plain-key", PLAIN_SECRET) == 1
    assert len(hashes) == 1


def test_revocation_and_rotation_through_the_control_actor_reach_the_replica(tmp_path: Path):
    control = ControlCore(tmp_path)
    control.seed(workspace())
    derive = InputKeys()
    verifier = derive(control.current()[1])
    assert verifier.verify("plain-key", PLAIN_SECRET) == 1
    assert verifier.verify("signed-key", SIGNED_SECRET) == 2
    new_hash = hash_secret(Secret("the-new-secret"))
    derive(control.apply(UpdateInput(id=1, fields={"secret_hash": new_hash, "key_revision": 2}), None, "test")[1])
    with pytest.raises(Forbidden):
        verifier.verify("plain-key", PLAIN_SECRET)
    assert verifier.verify("plain-key", "the-new-secret") == 1
    derive(control.apply(RemoveInput(id=2), None, "test")[1])
    with pytest.raises(Forbidden):
        verifier.cached("signed-key", SIGNED_SECRET)


def test_a_key_revision_cannot_go_below_one(tmp_path: Path):
    control = ControlCore(tmp_path)
    control.seed(workspace())
    with pytest.raises(BadRequest) as refused:
        control.apply(UpdateInput(id=1, fields={"key_revision": 0}), None, "test")
    assert refused.value.path == "$.key_revision"


def test_an_input_given_in_clear_is_hashed_once_per_secret_not_per_version(hashes: list[str]):
    config = workspace()  # as a file gives it: no hashes
    derive = InputKeys()
    verifier = derive(config)
    assert len(hashes) == 2
    derive(config.model_copy(update={"workspace": config.workspace.model_copy(update={"name": "v2"})}))
    assert len(hashes) == 2
    assert verifier.verify("plain-key", PLAIN_SECRET) == 1
    assert verifier.cached("plain-key", PLAIN_SECRET) == 1
    rotated = parse_workspace({"inputs": [{"id": 1, "name": "plain", "key": "plain-key", "secret": "rotated"}]})
    derive(rotated)
    with pytest.raises(Forbidden):
        verifier.verify("plain-key", PLAIN_SECRET)
    assert verifier.verify("plain-key", "rotated") == 1
