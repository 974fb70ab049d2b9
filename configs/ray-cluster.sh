#!/usr/bin/env bash
# Run cdp-actors on a Ray cluster of ordinary machines (one head, any number of workers).
#
#   configs/ray-cluster.sh head                      # on the head machine
#   configs/ray-cluster.sh worker data-a HEAD_IP     # on each worker, each with its own name
#   configs/ray-cluster.sh serve                     # on the head, once the workers have joined
#
# Where the data lives: every node keeps its LMDB files under the same *local* path, $CDP_DATA (a local
# disk, never NFS: LMDB's locking is not safe on network filesystems). The head holds the intake log, the
# identity index, the alerts and placement.json; each worker holds the profile shards placed on it.
#
# Node names: `--labels cdp-node=NAME` is how the platform recognises a machine. The first start records
# which node each profile shard lives on (placement.json on the head) and pins the shard there for good, by
# that name, so keep a name with its machine and its disk across reboots. Start the workers before the
# platform's first start, or their shards will be placed on the nodes that were there. A worker without a
# label is recognised by its IP address instead. A shard whose node is missing waits for it (up to two
# minutes per start), it never starts empty elsewhere.
set -euo pipefail

CDP_DATA=${CDP_DATA:-/var/lib/cdp}           # the same local path on every node
RAY_PORT=${RAY_PORT:-6379}
CPUS=${CPUS:-$(nproc)}
HTTP_PORT=${HTTP_PORT:-8000}
CONFIG=${CONFIG:-configs/workspace.yaml}
# Serve's proxies and replicas on every node answer its own errors (the backpressure 429) in the API's shape
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_apps.errors.ingress_middlewares

case "${1:-}" in
  head)
    mkdir -p "$CDP_DATA"
    ray start --head --port "$RAY_PORT" --num-cpus "$CPUS" --include-dashboard false
    ;;
  worker)
    name=${2:?worker NAME HEAD_IP}; head_ip=${3:?worker NAME HEAD_IP}
    mkdir -p "$CDP_DATA"
    ray start --address "$head_ip:$RAY_PORT" --num-cpus "$CPUS" --labels "cdp-node=$name"
    ;;
  serve)
    # Joins the running cluster (--address auto finds it on this machine). Serve puts an HTTP proxy on every
    # node, listening on $HTTP_PORT; put a load balancer in front of them. Ctrl-C or SIGTERM stops the
    # platform; `ray stop` on each machine stops Ray.
    exec cdp serve --address auto --config "$CONFIG" --data-dir "$CDP_DATA" --host 0.0.0.0 --port "$HTTP_PORT"
    # Alternatively, with Serve's own CLI (set data_dir in the file to $CDP_DATA first):
    #   serve run configs/serve.yaml
    ;;
  *)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
