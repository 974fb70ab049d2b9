"""Predictive attributes' runtime over real Ray and HTTP: users sent through `/v2/bulkevents`, exported per shard by
Ray tasks beside the running shards (pandas, polars and Ray Data read the files; rows match the Profile API), scored
with a tiny scikit-learn model and written back through the platform's internal input: the Profile API shows both
attributes for every user, the same run sent again adds no batch to the intake, and a real-time audience on
`predicted_NAME_percentile >= 80` (Platform API) gets exactly the top users."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import ray
import requests
from sklearn.linear_model import LogisticRegression

from cdp_actors import handles
from cdp_actors.predict import export, writeback
from cdp_actors.predict.snapshot import EVENTS_DIR, MANIFEST, PROFILES_DIR
from tests.integration.test_platform_api import platform_config
from tests.samples import batch, custom
from tests.support import DEMO_AUTH, token_of, wait_for

USERS = 300
T0 = 1_760_000_000_000
ACCOUNT = {"accountId": "1"}


def plays(i: int) -> int:
    return i % 5 + 1


def send_users(base: str, tag: str) -> None:
    batches = [
        batch(f"pr-{tag}-{i}", [custom("Played", T0 + n * 1000, round=n) for n in range(plays(i))],
              user_attributes={"tag": tag, "n": i, "bucket": f"b{i % 3}"})  # fmt: skip
        for i in range(USERS)
    ]
    for first in range(0, USERS, 100):
        sent = requests.post(base + "/v2/bulkevents", json=batches[first : first + 100],
                             headers={"Authorization": DEMO_AUTH}, timeout=30)  # fmt: skip
        assert sent.status_code == 202, sent.text


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
    out = tmp_path / "snapshot"
    manifest = export.export_snapshot(out, export.KINDS, export.Window())
    shards = json.loads((out / MANIFEST).read_text())["shards"]
    assert manifest.shards == shards == len(list((out / PROFILES_DIR).glob("*.parquet")))
    profiles = pd.read_parquet(out / PROFILES_DIR)
    mine = profiles[profiles["user_attributes"].map(lambda text: json.loads(text).get("tag") == tag)]
    assert len(mine) == USERS
    assert ray.data.read_parquet(str(out / PROFILES_DIR)).count() == len(profiles) == manifest.profiles
    events = pl.read_parquet(out / EVENTS_DIR / "*.parquet").filter(pl.col("mpid").is_in(list(mine["mpid"])))
    per_user = dict(events.group_by("mpid").len().iter_rows())
    for row in mine.to_dict("records"):
        attributes = json.loads(row["user_attributes"])
        assert per_user[row["mpid"]] == plays(attributes["n"])
        shown = profile_attributes(base, reader, row["mpid"])
        assert shown == {key: str(value) for key, value in attributes.items()}

    # score with a tiny model (plays -> bucket b0) and write back through the internal input
    features = pd.DataFrame({"mpid": list(per_user), "plays": list(per_user.values())})
    buckets = {row["mpid"]: json.loads(row["user_attributes"])["bucket"] for row in mine.to_dict("records")}
    features["label"] = features["mpid"].map(lambda mpid: buckets[mpid] == "b0")
    model = LogisticRegression().fit(features[["plays"]], features["label"])
    scores = pd.DataFrame({"mpid": features["mpid"], "score": model.predict_proba(features[["plays"]])[:, 1]})
    scores["percentile"] = percentiles(scores["score"])
    data_dir = platforms.data_dir
    run = writeback.start_run(data_dir, name, scores, now_ms=T0)
    append = writeback.intake_append(writeback.ensure_internal_input(handles.control()))
    writeback.send_run(data_dir, run, append, lambda r: None)
    assert (run.accepted, run.duplicates) == (USERS, 0)
    wait_for(api.settled, timeout=120, what="the scores applied")
    expected = {int(r.mpid): (r.score, r.percentile) for r in scores.itertuples()}
    for mpid, (score, percentile) in expected.items():
        shown = profile_attributes(base, reader, mpid)
        assert float(shown[writeback.score_attribute(name)]) == round(score, 6)
        assert shown[writeback.percentile_attribute(name)] == str(percentile)

    # the same run again: every batch a duplicate, nothing new in the intake log
    accepted_before = api.accepted_batches()
    run.done = []
    writeback.send_run(data_dir, run, append, lambda r: None)
    assert (run.accepted, run.duplicates) == (USERS, USERS)
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
