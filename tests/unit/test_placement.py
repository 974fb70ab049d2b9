"""Placement of profile shards over a cluster's nodes: the pure decision, the pins, the record; and the
KubeRay manifest's apps agree with configs/serve.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cdp_actors.placement import (
    HEAD,
    HEAD_RESOURCE,
    NODE_LABEL,
    NodeInfo,
    assign_shards,
    decode_record,
    encode_record,
    missing_nodes,
    node_key,
    pin_options,
    shard_order,
)
from cdp_actors.runtime import settle_placement

ROOT = Path(__file__).resolve().parents[2]


def node(node_id: str, ip: str = "10.0.0.1", head: bool = False, alive: bool = True, **labels: str) -> NodeInfo:
    return NodeInfo(node_id, ip, is_head=head, alive=alive, labels={k.replace("_", "-"): v for k, v in labels.items()})


def test_identity_is_head_then_label_then_ip() -> None:
    assert node_key(node("h", head=True, cdp_node="x")) == HEAD
    assert node_key(node("a", cdp_node="data-a")) == "label:data-a"
    assert node_key(node("b", ip="10.0.0.7")) == "ip:10.0.0.7"


def test_node_info_reads_ray_nodes_entries() -> None:
    entry = {
        "NodeID": "abc",
        "Alive": True,
        "NodeManagerAddress": "10.0.0.2",
        "Resources": {"CPU": 1.0, HEAD_RESOURCE: 1.0, "node:10.0.0.2": 1.0},
        "Labels": {"ray.io/node-id": "abc", NODE_LABEL: "h"},
    }
    info = NodeInfo.from_ray(entry)
    assert (info.node_id, info.ip, info.is_head, info.alive, node_key(info)) == ("abc", "10.0.0.2", True, True, HEAD)
    worker = NodeInfo.from_ray({**entry, "Resources": {"CPU": 1.0}, "Labels": None})
    assert node_key(worker) == "ip:10.0.0.2"


def test_head_resource_name_is_rays() -> None:
    from ray._common.constants import HEAD_NODE_RESOURCE_NAME

    assert HEAD_RESOURCE == HEAD_NODE_RESOURCE_NAME


def test_shards_go_round_robin_over_workers_then_the_head() -> None:
    nodes = [
        node("h", head=True),
        node("2", cdp_node="b"),
        node("1", cdp_node="a"),
        node("3", cdp_node="c", alive=False),
    ]
    order = shard_order(nodes)
    assert order == ["label:a", "label:b", HEAD]
    assert assign_shards(5, order, {}) == {0: "label:a", 1: "label:b", 2: HEAD, 3: "label:a", 4: "label:b"}


def test_order_does_not_depend_on_how_ray_lists_nodes_or_their_ids() -> None:
    nodes = [node("h", head=True), node("x", cdp_node="b"), node("y", cdp_node="a"), node("z", ip="10.0.0.9")]
    renamed = [NodeInfo("new-" + n.node_id, n.ip, n.is_head, labels=n.labels) for n in reversed(nodes)]
    assert shard_order(nodes) == shard_order(renamed) == ["ip:10.0.0.9", "label:a", "label:b", HEAD]


def test_nodes_of_one_identity_count_once() -> None:
    assert shard_order([node("1", ip="10.0.0.5"), node("2", ip="10.0.0.5"), node("h", head=True)]) == [
        "ip:10.0.0.5",
        HEAD,
    ]


def test_single_node_puts_everything_on_the_head() -> None:
    assert assign_shards(4, shard_order([node("h", head=True)]), {}) == dict.fromkeys(range(4), HEAD)


def test_a_recorded_shard_keeps_its_node_whatever_joined_since() -> None:
    recorded = {0: "label:b", 1: HEAD}
    order = ["label:a", "label:b", "label:c", HEAD]
    assert assign_shards(4, order, recorded) == {0: "label:b", 1: HEAD, 2: "label:c", 3: HEAD}
    assert assign_shards(2, [], recorded) == recorded  # nothing alive yet: the record still answers
    with pytest.raises(ValueError):
        assign_shards(3, [], recorded)


@given(
    st.integers(1, 64), st.lists(st.sampled_from(["label:a", "label:b", "ip:10.0.0.3", HEAD]), min_size=1, unique=True)
)
def test_round_robin_is_balanced_and_deterministic(shards: int, order: list[str]) -> None:
    assignment = assign_shards(shards, order, {})
    assert assignment == assign_shards(shards, list(order), {})
    counts = [list(assignment.values()).count(key) for key in order]
    assert max(counts) - min(counts) <= 1
    assert set(assignment.values()) == set(order[: min(shards, len(order))])


def test_missing_nodes_are_the_recorded_ones_not_alive() -> None:
    assignment = {0: "label:a", 1: "label:b", 2: HEAD}
    assert missing_nodes(assignment, ["label:a", HEAD]) == {1: "label:b"}
    assert missing_nodes(assignment, ["label:b", "label:a", HEAD]) == {}


def test_pins_name_machines_not_node_ids() -> None:
    assert pin_options(HEAD) == {"resources": {HEAD_RESOURCE: 0.001}}
    assert pin_options("label:data-a") == {"label_selector": {NODE_LABEL: "data-a"}}
    assert pin_options("ip:10.0.0.4") == {"resources": {"node:10.0.0.4": 0.001}}
    for bad in ("", "label:", "node-id:abc"):
        with pytest.raises(ValueError):
            pin_options(bad)


def test_record_round_trips() -> None:
    assignment = {1: HEAD, 0: "label:a", 10: "ip:10.0.0.1"}
    assert decode_record(encode_record(assignment)) == assignment


def test_settle_records_the_first_decision_and_keeps_it(tmp_path: Path) -> None:
    first = settle_placement(str(tmp_path), 2, ["label:a", "label:b", HEAD])
    assert first == {0: "label:a", 1: "label:b"}
    # the cluster came back with other nodes, in another order: the record wins, new shards are dealt
    again = settle_placement(str(tmp_path), 3, ["label:0", "label:b", HEAD])
    assert again == {0: "label:a", 1: "label:b", 2: HEAD}
    assert decode_record((tmp_path / "placement.json").read_text()) == again
    assert settle_placement(str(tmp_path), 1, [HEAD]) == {0: "label:a"}  # fewer shards: the record stays whole
    assert decode_record((tmp_path / "placement.json").read_text()) == again


def test_kuberay_manifest_parses_and_deploys_the_apps_of_serve_yaml() -> None:
    service = yaml.safe_load((ROOT / "configs" / "kuberay-rayservice.yaml").read_text())
    serve_yaml = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    spec = service["spec"]
    apps = spec["serveConfigV2"]
    apps = yaml.safe_load(apps) if isinstance(apps, str) else apps  # KubeRay takes it as a YAML string

    def shape(app: dict) -> tuple:
        return app["name"], app["route_prefix"], app["import_path"], sorted(app.get("args", {}))

    assert sorted(map(shape, apps["applications"])) == sorted(map(shape, serve_yaml["applications"]))
    cluster = spec["rayClusterConfig"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    groups = cluster["workerGroupSpecs"]
    names = [group["labels"][NODE_LABEL] for group in groups]  # each data group is a named machine
    assert len(set(names)) == len(names) == len(groups)
    for group in [cluster["headGroupSpec"], *groups]:
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["requests"]
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "persistentVolumeClaim" in volumes["cdp-data"]
        data_dirs = {app["args"]["data_dir"] for app in apps["applications"]}
        assert data_dirs == {mounted["cdp-data"]}
    claims = {
        doc["metadata"]["name"] for doc in yaml.safe_load_all((ROOT / "configs" / "kuberay-volumes.yaml").read_text())
    }
    used = {
        group["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        for group in [cluster["headGroupSpec"], *groups]
    }
    assert used == claims and len(used) == len(groups) + 1
    for group in groups:  # one pod per data volume: a pod and its LMDB files belong together
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
