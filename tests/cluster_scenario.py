"""The end-to-end flow on a simulated multi-node Ray cluster (`ray.cluster_utils.Cluster`): a head and two
labelled workers, each a separate raylet on this machine. Then predictive attributes on that cluster: synthetic
users through the Events API, `cdp predict train` (export tasks on the shards' nodes, feature tasks on any node),
`cdp predict score` writing the scores back, read through the Profile API.

Run as `python -m tests.cluster_scenario WORK_DIR`: a process of its own, because a `Cluster` cannot share a
process with the test session's embedded Ray. Checks as it goes (an AssertionError exits non-zero) and prints
a JSON summary as its last line of output. tests/integration/test_cluster.py runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import requests
from ray import serve
from ray.cluster_utils import Cluster

from cdp_actors.cli import ingress_env, main
from cdp_actors.handles import named as actor
from cdp_actors.partition import (
    ALERTS_NAME,
    DISPATCHER_NAME,
    IDENTITY_NAME,
    INTAKE_NAME,
    NAMESPACE,
    partition_of,
    shard_name,
)
from cdp_actors.placement import NODE_LABEL, PLACEMENT_FILE, decode_record
from cdp_actors.predict import api as predict
from cdp_actors.predict import registry, writeback
from cdp_actors.runtime import ensure_runtime, shard_placement, stop_runtime
from serve_apps.app import APPS, deploy
from tests.conftest import demo_config
from tests.integration.test_recovery import PATIENT_RETRY, check_profiles, send_load, wait_delivered
from tests.support import Api, Receiver, free_port, token_of, wait_for

NODE_ARGS: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
SINGLETONS = (INTAKE_NAME, DISPATCHER_NAME, IDENTITY_NAME, ALERTS_NAME)

SYNTH_USERS = 400
"""Enough for 100 users who reach the goal and 100 who do not among the training set's ~310 (`MIN_CLASS_EXAMPLES`):
about 155 and 135 with this seed and goal. ~500 batches, ~27k events."""
SYNTH_SEED = 1
SYNTH_HISTORY_DAYS = 30  # a month of history: a third of synth's default, to keep the ingest short
HOUR_MS = 3_600_000
MODEL = "wishers"
GOAL = ("--goal-event", "add_to_wishlist", "--window-days", "7", "--lookback-days", "30")
"""A custom event about half the users perform in a week: both classes large with a few hundred users."""
WITHOUT_COUPON = {"type": "string", "operator": "not_exists", "attribute_name": "coupon"}
WITH_COUPON = {"type": "string", "operator": "exists", "attribute_name": "coupon"}
"""Synth's events carry no custom attributes: with this condition no user reaches the goal."""


def where(handle: Any) -> tuple[str, int]:
    """The node and the process the actor answers from."""
    here = ray.get(
        handle.__ray_call__.remote(lambda _self: (ray.get_runtime_context().get_node_id(), os.getpid())), timeout=30
    )
    return here[0], here[1]


def node_of(handle: Any) -> str:
    return where(handle)[0]


def restarted(name: str, old_pid: int) -> str | None:
    """The node the named actor answers from in a new process, or None while it is restarting."""
    try:
        node, pid = where(actor(name))
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return None
    return node if pid != old_pid else None


def start(config: Any, data_dir: Path) -> None:
    """What `cdp serve` does once Ray is up (cli.start_platform), with Serve already started."""
    ensure_runtime(config, data_dir)
    deploy(config, str(data_dir))


def run(work: Path) -> dict[str, Any]:
    started = time.monotonic()
    # Serve's Python proxy: the simulated nodes share this machine, and HAProxy's replica ports, allocated per
    # node from the same range and bound with SO_REUSEPORT, would be shared between nodes.
    os.environ.update(ingress_env("proxy")[0])
    cluster = Cluster(initialize_head=True, head_node_args={**NODE_ARGS, "include_dashboard": False})
    workers = {name: cluster.add_node(**NODE_ARGS, labels={NODE_LABEL: name}) for name in ("data-a", "data-b")}
    cluster.wait_for_nodes()
    receiver = Receiver().start()
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        head = cluster.head_node.node_id
        nodes = {head: "head"} | {handle.node_id: name for name, handle in workers.items()}  # every node ever
        config = demo_config(receiver.url, retry=PATIENT_RETRY)
        data_dir, port = work / "data", free_port()
        # One proxy: the simulated nodes share this machine's address, so one port per node cannot work here.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        start(config, data_dir)
        api = Api(port)
        up_s = time.monotonic() - started

        # Shards spread over the workers by label, the actors owning the intake and index files on the head.
        shard_nodes = [node_of(actor(shard_name(i))) for i in range(config.runtime.shards)]
        assert shard_nodes == [workers["data-a"].node_id, workers["data-b"].node_id], shard_nodes
        assert all(node_of(actor(name)) == head for name in SINGLETONS)
        record = decode_record((data_dir / PLACEMENT_FILE).read_text())
        assert record == {0: "label:data-a", 1: "label:data-b"}, record

        # The end-to-end flow across nodes: HTTP on the head, profiles on the workers, deliveries to the partner.
        sent = send_load(api, users=16, requests_=6, per_request=10, tag="cluster")
        wait_delivered(api, receiver, sent)
        check_profiles(api, receiver, sent)

        # A killed shard comes back on its node, with its LMDB.
        _, old_pid = where(actor(shard_name(1)))
        ray.kill(actor(shard_name(1)), no_restart=False)
        restarted_on = wait_for(lambda: restarted(shard_name(1), old_pid), timeout=60, what="shard-1 restarted")
        assert restarted_on == workers["data-b"].node_id
        check_profiles(api, receiver, sent)  # read back from the restarted shard's files
        sent += send_load(api, users=16, requests_=3, per_request=10, tag="cluster")
        wait_delivered(api, receiver, sent)
        check_profiles(api, receiver, sent)

        # The whole runtime restarts on a changed cluster: data-b's raylet is replaced (a new node ID) and a
        # new worker joins whose name sorts first. The record, not a fresh round-robin, places the shards.
        for name in APPS:
            serve.delete(name)
        stop_runtime(config)
        cluster.remove_node(workers["data-b"])
        workers["data-b"] = cluster.add_node(**NODE_ARGS, labels={NODE_LABEL: "data-b"})
        workers["data-0"] = cluster.add_node(**NODE_ARGS, labels={NODE_LABEL: "data-0"})
        cluster.wait_for_nodes()
        nodes |= {workers[name].node_id: f"{name} (new)" for name in ("data-b", "data-0")}
        # A start from a worker node (a Serve replica under `serve run`) settles placement on the head too.
        from_worker = ray.remote(shard_placement).options(num_cpus=0, label_selector={NODE_LABEL: "data-0"})
        assert ray.get(from_worker.remote(str(data_dir), config.runtime.shards), timeout=60) == record
        start(config, data_dir)
        after_restart = [node_of(actor(shard_name(i))) for i in range(config.runtime.shards)]
        assert after_restart == [workers["data-a"].node_id, workers["data-b"].node_id], after_restart
        check_profiles(api, receiver, sent)
        sent += send_load(api, users=16, requests_=3, per_request=10, tag="cluster")
        wait_delivered(api, receiver, sent)
        check_profiles(api, receiver, sent)
        assert len(receiver.received) == len(sent)  # the partner never answered an error: each batch once
        delivered = len(receiver.received)
        prediction = predict_on_cluster(work, api, data_dir, after_restart, config.runtime.shards)

        return {
            "nodes_alive": sum(1 for entry in ray.nodes() if entry["Alive"]),
            "shard_nodes": [nodes[node] for node in shard_nodes],
            "restarted_shard_node": nodes[restarted_on],
            "shard_nodes_after_cluster_change": [nodes[node] for node in after_restart],
            "batches_sent": len(sent),
            "batches_delivered": delivered,
            "users": len({b["user_identities"]["customer_id"] for b in sent}),
            "predict": {**prediction, "export_nodes": [nodes[node] for node in prediction["export_nodes"]]},
            "startup_s": round(up_s, 1),
            "total_s": round(time.monotonic() - started, 1),
        }
    finally:
        ray.shutdown()
        with contextlib.suppress(Exception):
            cluster.shutdown()
        receiver.stop()


def predict_on_cluster(work: Path, api: Api, data_dir: Path, shard_nodes: list[str], shards: int) -> dict[str, Any]:
    """synth (the Python API, a history ending now) -> train -> score on the cluster, through the command line as a
    data scientist runs it (in this process, which is already in the cluster's Ray: the commands attach to it)."""
    started = time.monotonic()
    audience_id = create_audience(api, {"user_attribute": writeback.percentile_attribute(MODEL), "type": "number",
                                        "operator": "greater_or_equal", "value": "80"})  # fmt: skip
    ends_ms = int(time.time() * 1000) - HOUR_MS  # the history ends now, so scoring "as of now" sees it
    sent = predict.synth(SYNTH_USERS, work / "synth", SYNTH_SEED, history_days=SYNTH_HISTORY_DAYS, window_days=7,
                         as_of=ends_ms, url=api.base)  # fmt: skip
    wait_for(api.settled, timeout=180, what="the synthetic users applied")
    synth_s = time.monotonic() - started

    # the goal's condition reaches the labels: with a coupon required, nobody reached the goal, so nothing trains
    shared = work / "shared"  # --snapshot-dir: a directory every node sees (here every node's disk is this one)
    train = ["predict", "train", "--name", MODEL, *GOAL, "--data-dir", str(data_dir), "--snapshot-dir", str(shared)]
    assert main([*train, "--goal-condition", json.dumps(WITH_COUPON)]) == 2
    assert registry.list_models(data_dir) == []
    assert main([*train, "--goal-condition", json.dumps(WITHOUT_COUPON), "--out", str(work / "report")]) == 0
    trained_s = time.monotonic() - started
    shown = registry.show(data_dir, MODEL)
    assert shown["description"]["goal"]["condition"] == WITHOUT_COUPON
    assert (work / "report" / "index.html").exists() and list(shared.iterdir()) == []  # the snapshot is gone
    # each shard's files were written by a task on the node holding the shard
    export_nodes = shown["description"]["snapshot"]["nodes"]
    assert export_nodes == {str(index): node for index, node in enumerate(shard_nodes)}, export_nodes

    assert main(["predict", "score", "--name", MODEL, "--data-dir", str(data_dir)]) == 0
    [run_dir] = writeback.runs_dir(data_dir).iterdir()
    run = writeback.load_run(data_dir, run_dir.name)
    assert run.finished and (run.accepted, run.duplicates) == (run.users, 0)
    wait_for(api.settled, timeout=180, what="the scores applied")
    scored_s = time.monotonic() - started
    scores = pd.read_parquet(run_dir / writeback.SCORES_FILE)
    assert run.users == len(scores) >= SYNTH_USERS and scores["percentile"].nunique() > 10  # real scores, ranked
    per_shard = check_scores(api, scores, shards)
    assert all(per_shard.values()) and len(per_shard) == shards, per_shard
    # the real-time audience on the percentile holds exactly the users scored at 80 or above
    top = int((scores["percentile"] >= 80).sum())
    assert 0 < top < run.users
    wait_for(lambda: audience_size(api, audience_id) == top, timeout=120, what="the audience's members")
    return {
        "synth_batches": sent,
        "users_scored": run.users,
        "users_checked_per_shard": per_shard,
        "auc": shown["metrics"]["auc"],
        "audience_members": top,
        "export_nodes": [export_nodes[str(index)] for index in range(shards)],
        "synth_s": round(synth_s, 1),
        "train_s": round(trained_s - synth_s, 1),
        "score_s": round(scored_s - trained_s, 1),
    }


def create_audience(api: Api, criteria: dict[str, Any]) -> int:
    body = {"name": "Top wishers", "criteria": criteria}
    answer = api.http.post(f"{api.base}/platform/v1/audiences", params={"accountId": "1"}, json=body, timeout=30,
                           headers={"Authorization": api.bearer()})  # fmt: skip
    assert answer.status_code == 201, answer.text
    return int(answer.json()["data"][0]["id"])


def audience_size(api: Api, audience_id: int) -> int:
    answer = api.http.get(f"{api.base}/platform/v1/audiences/{audience_id}", params={"accountId": "1"}, timeout=30,
                          headers={"Authorization": api.bearer()})  # fmt: skip
    return int(answer.json()["data"][0]["size"])


def check_scores(api: Api, scores: pd.DataFrame, shards: int) -> dict[int, int]:
    """Every user's two attributes as the Profile API shows them equal the run's scores; users checked per shard."""
    reader = {"Authorization": "Bearer " + token_of(api.base, "demo-client", "demo-client-secret")}
    checked = dict.fromkeys(range(shards), 0)
    with requests.Session() as http:
        for mpid, score, percentile in zip(scores["mpid"], scores["score"], scores["percentile"], strict=True):
            url = f"{api.base}/userprofile/v1/1/1/1/{int(mpid)}"
            shown = http.get(url, params={"fields": "user_attributes"}, headers=reader, timeout=30).json()
            attributes = shown["user_attributes"]
            assert float(attributes[writeback.score_attribute(MODEL)]) == round(float(score), 6), (mpid, attributes)
            assert attributes[writeback.percentile_attribute(MODEL)] == str(int(percentile)), (mpid, attributes)
            checked[partition_of(int(mpid), shards)] += 1
    return checked


if __name__ == "__main__":
    summary = run(Path(sys.argv[1]))
    print(json.dumps(summary), flush=True)
