"""Where the runtime's actors run on a multi-node Ray cluster: the pure placement decision.

Every stateful actor owns LMDB files on the local disk of the node it runs on, so it has to come back to
*that machine* whenever it restarts: after `ray.kill`/a crash (Ray restarts it, `max_restarts=-1`), after a
worker node reboots, and after the whole cluster is restarted. Placement therefore works on a **stable node
identity** (a `NodeKey`), never on Ray node IDs, which are new every time a node's raylet starts:

- `head`: the head node. It holds the data directory the platform was started with (`cdp serve` runs
  there), so the intake log, the dispatcher (which reads the intake log's LMDB), the identity index and the
  alert store are pinned to it. Pinned with the head's built-in resource `node:__internal_head__`.
- `label:<value>`: a worker started with `ray start --labels cdp-node=<value>` (KubeRay: the worker group's
  `labels`). Pinned with Ray's label selector `{"cdp-node": "<value>"}`. This is the recommended identity:
  it survives a node reboot, a new pod IP and a whole-cluster restart.
- `ip:<address>`: an unlabeled worker, by its IP. Pinned with the resource Ray gives every node,
  `node:<address>`. Good enough for fixed machines; wrong where IPs change (Kubernetes pods): label those.

Why labels and resources instead of `NodeAffinitySchedulingStrategy(node_id, soft=False)`: a hard node
affinity names one raylet incarnation. When that node restarts it gets a new ID, and an actor pinned to the
old one is unschedulable and stays dead (measured with `ray.cluster_utils.Cluster`), and after a full cluster
restart every recorded ID is meaningless. A label selector or a node resource is a hard constraint too (the
actor never runs anywhere else) but it names the machine, so Ray itself restarts a shard on its rejoined
node, and the recorded assignment stays valid forever.

The decision: profile shards go round-robin over the alive identities, workers first in sorted order and the
head last (it already carries the singletons and Serve's proxy), and **the first decision for a shard is
final**: `ensure_runtime` records it in `placement.json` in the head's data directory and later starts keep
it, so a shard always reopens the LMDB it wrote, even if other nodes joined, left or changed order since. A
shard whose machine has not (re)joined waits for it instead of starting empty elsewhere. On a single node
every identity is `head`, so nothing changes there, and if that data directory later serves a cluster its
shards stay on the head, where their data is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NODE_LABEL = "cdp-node"
HEAD = "head"
HEAD_RESOURCE = "node:__internal_head__"  # ray._common.constants.HEAD_NODE_RESOURCE_NAME
PIN_AMOUNT = 0.001  # of a node resource whose total is 1: a constraint, not a capacity limit
PLACEMENT_FILE = "placement.json"

NodeKey = str


@dataclass(frozen=True)
class NodeInfo:
    """What placement needs to know about one node, as read from `ray.nodes()`."""

    node_id: str
    ip: str
    is_head: bool = False
    alive: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_ray(cls, entry: Mapping[str, Any]) -> NodeInfo:
        return cls(
            node_id=entry["NodeID"],
            ip=entry["NodeManagerAddress"],
            is_head=HEAD_RESOURCE in entry.get("Resources", {}),
            alive=bool(entry["Alive"]),
            labels=dict(entry.get("Labels") or {}),
        )


def node_key(node: NodeInfo) -> NodeKey:
    """The node's stable identity: `head`, else its `cdp-node` label, else its IP."""
    if node.is_head:
        return HEAD
    label = node.labels.get(NODE_LABEL)
    return f"label:{label}" if label else f"ip:{node.ip}"


def shard_order(nodes: Iterable[NodeInfo]) -> list[NodeKey]:
    """The alive identities in the order shards are dealt to them: workers sorted, then the head."""
    keys = {node_key(node) for node in nodes if node.alive}
    workers = sorted(keys - {HEAD})
    return workers + ([HEAD] if HEAD in keys else [])


def assign_shards(shards: int, order: Sequence[NodeKey], recorded: Mapping[int, NodeKey]) -> dict[int, NodeKey]:
    """Shard index -> identity: a recorded shard keeps its node; shard i otherwise goes to order[i % n]."""
    if not order and len(recorded) < shards:
        raise ValueError("no alive node to place shards on")
    return {i: recorded[i] if i in recorded else order[i % len(order)] for i in range(shards)}


def missing_nodes(assignment: Mapping[int, NodeKey], alive: Iterable[NodeKey]) -> dict[int, NodeKey]:
    """The shards whose recorded node is not in the cluster now (they would wait for it)."""
    present = set(alive)
    return {shard: key for shard, key in assignment.items() if key not in present}


def pin_options(key: NodeKey) -> dict[str, Any]:
    """Actor options that keep an actor on the node `key` names, across restarts of the actor and the node."""
    if key == HEAD:
        return {"resources": {HEAD_RESOURCE: PIN_AMOUNT}}
    kind, _, value = key.partition(":")
    if kind == "label" and value:
        return {"label_selector": {NODE_LABEL: value}}
    if kind == "ip" and value:
        return {"resources": {f"node:{value}": PIN_AMOUNT}}
    raise ValueError(f"not a node identity: {key!r}")


def describe(key: NodeKey) -> str:
    """How an operator recognises the node `key` names."""
    if key == HEAD:
        return "the head node"
    kind, _, value = key.partition(":")
    return f"the node started with --labels {NODE_LABEL}={value}" if kind == "label" else f"the node at {value}"


def decode_record(text: str) -> dict[int, NodeKey]:
    """The recorded assignment in `placement.json` (shard index -> identity)."""
    data = json.loads(text)
    return {int(shard): str(key) for shard, key in data.get("shards", {}).items()}


def encode_record(assignment: Mapping[int, NodeKey]) -> str:
    shards = {str(shard): key for shard, key in sorted(assignment.items())}
    return json.dumps({"node_label": NODE_LABEL, "shards": shards}, indent=2) + "\n"
