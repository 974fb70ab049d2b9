"""Scoring write-back without Ray: a run's chunks appended to a real intake log (IntakeLogCore, LMDB), once per
user however often the run is sent again or resumed after it was cut off between an append and its note."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cdp_actors.errors import BadRequest
from cdp_actors.intake.log import AppendResult, IntakeLogCore, _Pending
from cdp_actors.predict import registry, writeback
from cdp_actors.schema.events import decode_batch
from cdp_actors.schema.records import decode_log_record

INPUT = 7
USERS = 1_200  # three chunks: 500, 500, 200


def scores(users: int = USERS) -> pd.DataFrame:
    mpids = list(range(1_000, 1_000 + users))
    return pd.DataFrame({"mpid": mpids, "score": [i / users for i in range(users)],
                         "percentile": [100 * i // users for i in range(users)]})  # fmt: skip


def appender(log: IntakeLogCore) -> writeback.Append:
    def append(batches: list[tuple[str | None, bytes]]) -> AppendResult:
        return log.write([_Pending(INPUT, 1, batches, None)])[0]  # type: ignore[arg-type]

    return append


def logged_users(log: IntakeLogCore) -> list[int]:
    with log.store.read() as txn:
        records = [decode_log_record(value) for _, value in txn.cursor(log.store.db("log"))]
    users = []
    for record in records:
        assert record.input_id == INPUT
        batch = decode_batch(record.raw)
        assert batch.events == []
        assert set(batch.user_attributes or {}) == {"predicted_buy_score", "predicted_buy_percentile"}
        assert batch.mpid is not None
        users.append(batch.mpid)
    return users


@pytest.fixture
def log(tmp_path: Path) -> IntakeLogCore:
    return IntakeLogCore(tmp_path / "intake", max_lag=10**9)


def test_a_run_sends_one_eventless_batch_per_user_and_notes_every_chunk(tmp_path: Path, log: IntakeLogCore) -> None:
    run = writeback.start_run(tmp_path, "buy", scores(), now_ms=1)
    seen: list[int] = []
    writeback.send_run(tmp_path, run, appender(log), lambda r: seen.append(len(r.done)))
    assert seen == [1, 2, 3]
    assert sorted(logged_users(log)) == list(scores()["mpid"])
    again = writeback.load_run(tmp_path, run.run_id)
    assert again.finished and (again.accepted, again.duplicates) == (USERS, 0)
    assert writeback.unfinished_run(tmp_path, "buy") is None


def test_a_run_cut_off_after_an_append_resumes_without_writing_twice(tmp_path: Path, log: IntakeLogCore) -> None:
    run = writeback.start_run(tmp_path, "buy", scores(), now_ms=1)
    table = pd.read_parquet(writeback.run_dir(tmp_path, run.run_id) / writeback.SCORES_FILE)
    appender(log)(writeback.chunk_batches(run, table, 0))  # appended, then killed before the note
    resumed = writeback.unfinished_run(tmp_path, "buy")
    assert resumed is not None and resumed.done == []
    writeback.send_run(tmp_path, resumed, appender(log), lambda r: None)
    assert sorted(logged_users(log)) == list(scores()["mpid"])  # each user exactly once
    assert (resumed.accepted, resumed.duplicates) == (USERS - writeback.CHUNK_USERS, writeback.CHUNK_USERS)


def test_sending_the_same_run_again_writes_nothing(tmp_path: Path, log: IntakeLogCore) -> None:
    run = writeback.start_run(tmp_path, "buy", scores(), now_ms=1)
    writeback.send_run(tmp_path, run, appender(log), lambda r: None)
    run.done, run.accepted = [], 0
    writeback.send_run(tmp_path, run, appender(log), lambda r: None)
    assert (run.accepted, run.duplicates) == (0, USERS)
    with log.store.read() as txn:
        assert txn.stat(log.store.db("log"))["entries"] == USERS


def test_a_prediction_name_is_a_plain_attribute_word_by_one_rule_for_training_and_scoring(tmp_path: Path) -> None:
    assert registry.check_name("churn_30d") == "churn_30d"
    assert registry.check_name("x" * 48) == "x" * 48
    for bad in ("", "Buy", "9lives", "a-b", "x" * 49):
        with pytest.raises(BadRequest):
            registry.check_name(bad)
        with pytest.raises(BadRequest):
            writeback.start_run(tmp_path, bad, scores(), now_ms=1)  # scoring refuses what the registry refuses


def test_a_run_id_names_a_run_and_nothing_else(tmp_path: Path) -> None:
    run = writeback.start_run(tmp_path, "buy", scores(), now_ms=1)
    assert writeback.load_run(tmp_path, run.run_id).run_id == run.run_id
    for bad in ("../../etc", "buy-1", run.run_id + "/..", ""):
        with pytest.raises(BadRequest):
            writeback.load_run(tmp_path, bad)


def test_the_internal_input_keeps_no_secret_a_client_could_use() -> None:
    change = writeback.new_internal_input()
    assert change.fields["kind"] == "feed" and "secret" not in change.fields
    assert change.fields["secret_hash"].startswith("scrypt$")
    assert writeback.new_internal_input().fields["key"] != change.fields["key"]


def test_source_request_ids_fit_the_intakes_limit() -> None:
    run = writeback.ScoringRun("x" * 48 + "-1764547200000-abcdef", "x" * 48, 1, 1, 1)
    table = pd.DataFrame({"mpid": [-(2**63)], "score": [0.5], "percentile": [50]})
    [(srid, _)] = writeback.chunk_batches(run, table, 0)
    assert srid is not None and len(srid) <= 120
