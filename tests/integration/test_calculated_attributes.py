"""Calculated attributes and a real-time audience in the running platform (real Ray, Serve, HTTP, a local
partner): values from `/v2/bulkevents` reach the Profile API, `/cdp/users/{mpid}` and the outbound batches, and
a `within 1 day` value and the audience it feeds drop out when the shards' tick runs two days later."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
import requests
import yaml

from cdp_actors import handles
from cdp_actors.config import WorkspaceConfig, parse_workspace
from cdp_actors.reports import DAY_MS
from tests.integration.test_profiles_api import token
from tests.samples import batch, custom
from tests.support import Api, Receiver, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = """
calculated_attributes:
  - id: 1
    name: plays today
    generation: 1
    active_definition:
      data_point: {type: event, event_name: Played, event_type: custom_event}
      calculation_type: count
      time_period: {type: within, within: 1, within_unit: days}
  - id: 2
    name: spent
    generation: 1
    active_definition:
      datapoint: {type: event_attribute, event_name: Bought, attribute_name: amount}
      calculation_type: sum
audiences:
  - id: 1
    name: players
    kind: real_time
    criteria:
      event: {event_type: custom_event, event_name: Played}
      count: {operator: at_least, value: 2}
      within_days: 1
"""


def workspace(webhook_url: str) -> WorkspaceConfig:
    data = yaml.safe_load((ROOT / "configs" / "workspace.yaml").read_text())
    data["outputs"][0]["settings"]["url"] = webhook_url
    data.update(yaml.safe_load(SECTIONS))
    return parse_workspace(data)


def profile_api(api: Api, mpid: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token(api).json()['access_token']}"}
    url = f"{api.base}/userprofile/v1/1/1/1/{mpid}"
    return requests.get(url, params={"fields": "user_attributes"}, headers=auth, timeout=30).json()


def test_calculated_attributes_and_an_audience_over_http(platform: Any, receiver: Receiver) -> None:
    api = platform(workspace(receiver.url))
    now = int(time.time() * 1000)
    sent = [
        batch("ca-1", [custom("Played", now - 2000), custom("Bought", now - 1000, amount=5)]),
        batch("ca-1", [custom("Played", now - 500), custom("Bought", now, amount=7.5)]),
    ]
    assert api.post("/v2/bulkevents", sent).status_code == 202
    delivered = wait_for(
        lambda: [b for b in receiver.bodies() if b["user_attributes"].get("spent") == "12.5"],
        what="an outbound batch carrying the calculated attribute",
    )[-1]
    assert delivered["user_attributes"]["plays today"] == "2"
    mpid = delivered["mpid"]

    assert profile_api(api, mpid)["user_attributes"] == {"plays today": "2", "spent": "12.5"}
    detail = api.get(f"/cdp/users/{mpid}").json()
    assert detail["calculated"] == {"plays today": "2", "spent": "12.5"}
    assert list(detail["audiences"]) == ["1"]
    status = api.status()["calculated_attributes"]
    assert status["1"]["finished"] and status["2"]["generation"] == 1

    later = now + 2 * DAY_MS  # the injectable clock: the window has passed
    shards = api.status()["shards"]
    for shard in range(len(shards)):
        ray.get(handles.shard(shard).tick.remote(now_ms=later))
    assert profile_api(api, mpid)["user_attributes"] == {"plays today": "0", "spent": "12.5"}
    detail = api.get(f"/cdp/users/{mpid}").json()
    assert detail["calculated"] == {"plays today": "0", "spent": "12.5"} and detail["audiences"] == {}
