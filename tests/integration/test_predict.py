"""Predictive attributes' runtime over real Ray and HTTP: users sent through `/v2/bulkevents`, exported per shard by
Ray tasks beside the running shards (pandas, polars and Ray Data read the files; rows match the Profile API), scored
with a tiny scikit-learn model and written back through the platform's internal input: the Profile API shows both
attributes for every user, the same run sent again adds no batch to the intake, and a real-time audience on
`predicted_NAME_percentile >= 80` (Platform API) gets exactly the top users."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import ray
import requests
from sklearn.linear_model import LogisticRegression

from cdp_actors import handles
from cdp_actors.cli import main
from cdp_actors.predict import export, writeback
from cdp_actors.predict.snapshot import EVENTS_DIR, MANIFEST, PROFILES_DIR
from tests.integration.test_platform_api import platform_config
from tests.samples import batch, custom
from tests.support import DEMO_AUTH, token_of, wait_for

USERS = 300
T0 = 1_760_000_000_000
ACCOUNT = {"accountId": "1"}
ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 180  # a `cdp export` process: Ray attach (~5 s on 2 cores) and two shards' files


def plays(i: int) -> int:
    return i % 5 + 1


def send_users(base: str, tag: str) -> None:
    batches = [
        batch(
            f"pr-{tag}-{i}",
            [custom("Played", T0 + n * 1000, round=n) for n in range(plays(i))],
            user_attributes={"tag": tag, "n": i, "bucket": f"b{i % 3}"},
        )  # fmt: skip
        for i in range(USERS)
    ]
    for first in range(0, USERS, 100):
        sent = requests.post(base + "/v2/bulkevents", json=batches[first : first + 100],
                             headers={"Authorization": DEMO_AUTH}, timeout=30)  # fmt: skip
        assert sent.status_code == 202, sent.text


def cdp(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_ADDRESS")}
    command = [sys.executable, "-m", "cdp_actors.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def shard_count() -> int:
    return ray.get(handles.control().current.remote())[1].runtime.shards


def percentiles(scores: pd.Series) -> pd.Series:
    """0-100: the share of users scored strictly lower, in percent (the top fifth is >= 80)."""
    return ((scores.rank(method="min") - 1) * 100 // len(scores)).astype(int)


def profile_attributes(base: str, reader: dict[str, str], mpid: int) -> dict[str, Any]:
    url = f"{base}/userprofile/v1/1/1/1/{mpid}"
    return requests.get(url, params={"fields": "user_attributes"}, headers=reader, timeout=30).json()["user_attributes"]


def test_export_score_write_back_and_an_audience_on_the_percentile(platforms, receiver, tmp_path: Path) -> None:
    api = platforms(platform_config(receiver.url))
    base, tag = api.base, uuid.uuid4().hex[:8]
    name = f"buy_{tag}"
    admin = {"Authorization": "Bearer " + token_of(base, "demo-admin", "demo-admin-secret")}
    reader = {"Authorization": "Bearer " + token_of(base, "demo-client", "demo-client-secret")}
    top = {"user_attribute": writeback.percentile_attribute(name), "type": "number", "operator": "greater_or_equal",
           "value": "80"}  # fmt: skip
    created = requests.post(base + "/platform/v1/audiences", params=ACCOUNT, headers=admin, timeout=30,
                            json={"name": f"Top {tag}", "criteria": top})  # fmt: skip
    assert created.status_code == 201, created.text
    audience_id = created.json()["data"][0]["id"]
    send_users(base, tag)
    wait_for(api.settled, timeout=120, what="the users applied")

    # export: every file set loads as it is, in three readers; our users' rows match the Profile API
    out, data_dir = tmp_path / "snapshot", platforms.data_dir
    exported = cdp("export", "all", "--out", str(out), "--data-dir", str(data_dir))  # a separate process attaches
    assert exported.returncode == 0, exported.stderr[-3000:]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["shards"] == len(list((out / PROFILES_DIR).glob("*.parquet"))) == shard_count()
    profiles = pd.read_parquet(out / PROFILES_DIR)
    mine = [row for row in profiles.to_dict("records") if json.loads(row["user_attributes"]).get("tag") == tag]
    assert len(mine) == USERS
    assert ray.data.read_parquet(str(out / PROFILES_DIR)).count() == len(profiles) == manifest["profiles"]
    events = pl.read_parquet(out / EVENTS_DIR / "*.parquet").filter(pl.col("mpid").is_in([row["mpid"] for row in mine]))
    per_user = dict(events.group_by("mpid").len().iter_rows())
    for row in mine:
        attributes = json.loads(row["user_attributes"])
        assert per_user[row["mpid"]] == plays(attributes["n"])
        shown = profile_attributes(base, reader, row["mpid"])
        assert shown == {key: str(value) for key, value in attributes.items()}

    # score with a tiny model (plays -> bucket b0) and write back through the internal input
    features = pd.DataFrame({"mpid": list(per_user), "plays": list(per_user.values())})
    buckets = {row["mpid"]: json.loads(row["user_attributes"])["bucket"] for row in mine}
    features["label"] = features["mpid"].map(lambda mpid: buckets[mpid] == "b0")
    model = LogisticRegression().fit(features[["plays"]], features["label"])
    scores = pd.DataFrame({"mpid": features["mpid"], "score": model.predict_proba(features[["plays"]])[:, 1]})
    scores["percentile"] = percentiles(scores["score"])
    run = writeback.start_run(data_dir, name, scores, now_ms=T0)
    append = writeback.intake_append(writeback.ensure_internal_input(handles.control()))
    writeback.send_run(data_dir, run, append, lambda r: None)
    assert (run.accepted, run.duplicates) == (USERS, 0)
    wait_for(api.settled, timeout=120, what="the scores applied")
    expected = {int(m): (float(s), int(p)) for m, s, p in zip(*(scores[c] for c in scores.columns), strict=True)}
    for mpid, (score, percentile) in expected.items():
        shown = profile_attributes(base, reader, mpid)
        assert float(shown[writeback.score_attribute(name)]) == round(score, 6)
        assert shown[writeback.percentile_attribute(name)] == str(percentile)

    # the same run again: every batch a duplicate, nothing new in the intake log
    accepted_before = api.accepted_batches()
    run.done, run.accepted = [], 0
    writeback.save_run(data_dir, run)
    assert main(["predict", "score", "--name", name, "--run-id", run.run_id, "--data-dir", str(data_dir)]) == 0
    again = writeback.load_run(data_dir, run.run_id)
    assert again.finished and (again.accepted, again.duplicates) == (0, USERS)
    assert api.accepted_batches() == accepted_before

    # the audience on the percentile: exactly the users at 80 or above
    top_users = sum(1 for _, percentile in expected.values() if percentile >= 80)
    assert 0 < top_users < USERS

    def size() -> int | None:
        answer = requests.get(f"{base}/platform/v1/audiences/{audience_id}", params=ACCOUNT, headers=admin, timeout=30)
        found = answer.json()["data"][0]["size"]
        return found if found == top_users else None

    wait_for(size, timeout=120, what="the audience's members")
    internal = writeback.internal_input(ray.get(handles.control().current.remote())[1])
    assert internal is not None and internal.kind == "feed"


KILLED_USERS = 100  # one /v2/bulkevents request (limits.max_bulk_batches)


def test_a_scoring_run_killed_mid_way_completes_after_a_restart_with_one_batch_per_user(
    platforms, receiver, tmp_path: Path
) -> None:
    api = platforms(platform_config(receiver.url))
    base, tag = api.base, uuid.uuid4().hex[:8]
    name, data_dir = f"kill_{tag}", platforms.data_dir
    reader = {"Authorization": "Bearer " + token_of(base, "demo-client", "demo-client-secret")}
    users = [batch(f"pk-{tag}-{i}", [], user_attributes={"tag": tag}) for i in range(KILLED_USERS)]
    assert requests.post(base + "/v2/bulkevents", json=users, headers={"Authorization": DEMO_AUTH},
                         timeout=30).status_code == 202  # fmt: skip
    wait_for(api.settled, timeout=120, what="the users applied")
    export.export_snapshot(tmp_path, (PROFILES_DIR,), export.Window())
    profiles = pd.read_parquet(tmp_path / PROFILES_DIR)
    mpids = [m for m, a in zip(profiles["mpid"], profiles["user_attributes"], strict=True) if tag in a]
    assert len(mpids) == KILLED_USERS
    scores = pd.DataFrame({"mpid": mpids, "score": [i / KILLED_USERS for i in range(KILLED_USERS)]})
    scores["percentile"] = percentiles(scores["score"])
    run = writeback.start_run(data_dir, name, scores, now_ms=T0, chunk_users=1)  # one fsynced note per user
    accepted_before = api.accepted_batches()

    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_ADDRESS")}
    command = [sys.executable, "-m", "cdp_actors.cli", "predict", "score", "--name", name, "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(writeback.load_run(data_dir, run.run_id).done) >= 3, timeout=CLI_TIMEOUT_S,
                 what="the run under way")  # fmt: skip
    finally:
        process.kill()  # SIGKILL
        process.wait(timeout=30)
    cut = writeback.load_run(data_dir, run.run_id)
    assert 0 < len(cut.done) < cut.chunks, "killed mid-way"

    assert main(["predict", "score", "--name", name, "--data-dir", str(data_dir)]) == 0  # resumes the unfinished run
    done = writeback.load_run(data_dir, run.run_id)
    assert done.finished and writeback.unfinished_run(data_dir, name) is None
    wait_for(api.settled, timeout=120, what="the scores applied")
    assert api.accepted_batches() - accepted_before == KILLED_USERS  # exactly one batch per user
    for mpid, percentile in zip(scores["mpid"], scores["percentile"], strict=True):
        url = f"{base}/userprofile/v1/1/1/1/{mpid}"
        shown = requests.get(url, params={"fields": "user_attributes"}, headers=reader, timeout=30).json()
        assert shown["user_attributes"][writeback.percentile_attribute(name)] == str(percentile)
